// 2-d convolution (NCHW, one group, no dilation), forward and backward, for MindSpore's Custom "aot" ops
// (see cpu_kernels.py). MindSpore 2.10's CPU Conv2D took ~1 s for a 3x3, 64-channel convolution of a
// (16, 64, 32, 32) batch that PyTorch does in 3 ms. Here convolutions run oneDNN's convolution primitives (what
// PyTorch runs), 1x1 ones on large inputs and a ViT's patch embedding im2col + sgemm, both from the oneDNN
// library MindSpore itself ships and has loaded. That library has the threadpool runtime: a primitive runs over
// the whole batch on our threads (onednn::SpawnedThreads). Where oneDNN cannot build a primitive,
// im2col + sgemm serves every kernel, each thread taking a span of the batch; the weight gradient is then summed
// per span and over the spans in order. Results are the same from run to run on the same number of threads.
//
// Inputs: x (B, C, H, W), weight (O, C, KH, KW), geometry (int32: stride_h, stride_w, pad_h, pad_w, tokens);
// the output is (B, O, OH, OW), or with `tokens` (B, OH * OW, O): a ViT's patch embedding, untransposed.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

#include "onednn.h"
#include "parallel.h"

namespace {

struct Geometry {
  int64_t batch, channels, height, width, out_channels, kernel_h, kernel_w;
  int64_t stride_h, stride_w, pad_h, pad_w, out_h, out_w;
  bool tokens;
  int64_t rows() const { return channels * kernel_h * kernel_w; }  // of the im2col matrix
  int64_t pixels() const { return out_h * out_w; }                 // its columns
  // a 1x1, stride-1 convolution needs no im2col: the input is the matrix
  bool direct() const {
    return kernel_h == 1 && kernel_w == 1 && stride_h == 1 && stride_w == 1 && pad_h == 0 && pad_w == 0;
  }
};

Geometry ReadGeometry(void **params, int64_t **shapes, int weight_index) {
  const int32_t *values = static_cast<const int32_t *>(params[weight_index + 1]);
  Geometry g{};
  g.batch = shapes[0][0];
  g.channels = shapes[0][1];
  g.height = shapes[0][2];
  g.width = shapes[0][3];
  g.out_channels = shapes[weight_index][0];
  g.kernel_h = shapes[weight_index][2];
  g.kernel_w = shapes[weight_index][3];
  g.stride_h = values[0];
  g.stride_w = values[1];
  g.pad_h = values[2];
  g.pad_w = values[3];
  g.tokens = values[4] != 0;
  g.out_h = (g.height + 2 * g.pad_h - g.kernel_h) / g.stride_h + 1;
  g.out_w = (g.width + 2 * g.pad_w - g.kernel_w) / g.stride_w + 1;
  return g;
}

// The three convolutions of a layer: y from (x, weight); dx from (dy, weight); dweight from (x, dy).
enum class Pass { kForward, kBackwardData, kBackwardWeights };

dnnl_engine *Engine() {
  static dnnl_engine *const engine = [] {
    dnnl_engine *created = nullptr;
    return dnnl_engine_create(&created, onednn::kCpuEngine, 0) == 0 ? created : nullptr;
  }();
  return engine;
}

struct AlignedFree {
  void operator()(float *data) const { std::free(data); }
};
using Buffer = std::unique_ptr<float, AlignedFree>;

Buffer Allocate(size_t bytes) {
  return Buffer(static_cast<float *>(std::aligned_alloc(64, (bytes + 63) / 64 * 64)));
}

// A oneDNN convolution primitive for one pass, geometry and batch size, built once and reused. Its operands
// (two inputs, one output) are plain NCHW / OIHW for the caller; the primitive picks its own layouts
// (channel-blocked for its JIT kernels), and reorders convert where they differ.
class ConvPlan {
 public:
  // the plan for geometry g, or nullptr where oneDNN cannot build it
  static const ConvPlan *Get(const Geometry &g, Pass pass) {
    static std::mutex mutex;
    static std::map<std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                               int64_t, int64_t, int>,
                    std::unique_ptr<ConvPlan>>
        plans;
    const auto key = std::make_tuple(g.batch, g.channels, g.height, g.width, g.out_channels, g.kernel_h, g.kernel_w,
                                     g.stride_h, g.stride_w, g.pad_h, g.pad_w, static_cast<int>(pass));
    std::lock_guard<std::mutex> lock(mutex);
    auto found = plans.find(key);
    if (found == plans.end()) {
      std::unique_ptr<ConvPlan> plan(new ConvPlan());
      dnnl_threadpool_interop_set_max_concurrency(NumThreads());  // (thread-local) primitives for our threads
      if (!plan->Build(g, pass)) plan.reset();
      found = plans.emplace(key, std::move(plan)).first;
    }
    return found->second.get();
  }

  // output = the pass applied to inputs first and second (plain layouts)
  bool Run(const float *first, const float *second, float *output) const {
    static onednn::SpawnedThreads threads;
    dnnl_stream *stream = nullptr;
    if (dnnl_threadpool_interop_stream_create(&stream, Engine(), &threads) != 0) return false;
    float *plain[3] = {const_cast<float *>(first), const_cast<float *>(second), output};
    Buffer buffers[3];
    dnnl_memory *user[3] = {}, *inner[3] = {}, *scratchpad = nullptr;
    Buffer scratch = Allocate(scratchpad_bytes_);
    bool ok = scratch && dnnl_memory_create(&scratchpad, scratchpad_md_, Engine(), scratch.get()) == 0;
    std::vector<dnnl_exec_arg_t> args;
    for (int i = 0; i < 3 && ok; ++i) {
      const Operand &operand = operands_[i];
      ok = dnnl_memory_create(&user[i], operand.plain, Engine(), plain[i]) == 0;
      if (ok && operand.reorder) {
        buffers[i] = Allocate(dnnl_memory_desc_get_size(operand.inner));
        ok = buffers[i] && dnnl_memory_create(&inner[i], operand.inner, Engine(), buffers[i].get()) == 0;
      }
      if (ok && operand.reorder && i < 2) ok = Reorder(operand.reorder, user[i], inner[i], stream);
      args.push_back({operand.arg, operand.reorder ? inner[i] : user[i]});
    }
    args.push_back({onednn::kArgScratchpad, scratchpad});
    if (ok) ok = dnnl_primitive_execute(convolution_, stream, static_cast<int>(args.size()), args.data()) == 0;
    if (ok && operands_[2].reorder) ok = Reorder(operands_[2].reorder, inner[2], user[2], stream);
    if (ok) ok = dnnl_stream_wait(stream) == 0;
    for (int i = 0; i < 3; ++i) {
      if (user[i]) dnnl_memory_destroy(user[i]);
      if (inner[i]) dnnl_memory_destroy(inner[i]);
    }
    if (scratchpad) dnnl_memory_destroy(scratchpad);
    dnnl_stream_destroy(stream);
    return ok;
  }

  ~ConvPlan() {
    for (Operand &operand : operands_) {
      if (operand.plain) dnnl_memory_desc_destroy(operand.plain);
      if (operand.reorder) dnnl_primitive_destroy(operand.reorder);
    }
    if (convolution_) dnnl_primitive_destroy(convolution_);
    for (dnnl_primitive_desc *pd : descriptors_) dnnl_primitive_desc_destroy(pd);
  }

 private:
  struct Operand {
    int arg = 0;
    dnnl_memory_desc *plain = nullptr;        // the caller's layout (owned)
    const dnnl_memory_desc *inner = nullptr;  // the primitive's (owned by its descriptor)
    dnnl_primitive *reorder = nullptr;        // between the two, where they differ
  };

  ConvPlan() = default;

  static bool Reorder(dnnl_primitive *reorder, dnnl_memory *from, dnnl_memory *to, dnnl_stream *stream) {
    const dnnl_exec_arg_t args[2] = {{onednn::kArgSrc, from}, {onednn::kArgDst, to}};
    return dnnl_primitive_execute(reorder, stream, 2, args) == 0;
  }

  // builds the descriptor of `pass` and its operands' reorders; false on any failure
  bool Build(const Geometry &g, Pass pass) {
    if (!Engine()) return false;
    const int64_t src_dims[4] = {g.batch, g.channels, g.height, g.width};
    const int64_t weight_dims[4] = {g.out_channels, g.channels, g.kernel_h, g.kernel_w};
    const int64_t dst_dims[4] = {g.batch, g.out_channels, g.out_h, g.out_w};
    const int64_t strides[2] = {g.stride_h, g.stride_w}, dilates[2] = {0, 0}, padding[2] = {g.pad_h, g.pad_w};
    dnnl_memory_desc *any[3] = {};  // src, weights, dst in layouts of the primitive's choice
    bool ok = dnnl_memory_desc_create_with_tag(&any[0], 4, src_dims, onednn::kFloat32, onednn::kAnyFormat) == 0 &&
              dnnl_memory_desc_create_with_tag(&any[1], 4, weight_dims, onednn::kFloat32, onednn::kAnyFormat) == 0 &&
              dnnl_memory_desc_create_with_tag(&any[2], 4, dst_dims, onednn::kFloat32, onednn::kAnyFormat) == 0;
    dnnl_primitive_attr *attr = nullptr;
    ok = ok && dnnl_primitive_attr_create(&attr) == 0 &&
         dnnl_primitive_attr_set_scratchpad_mode(attr, onednn::kUserScratchpad) == 0;
    dnnl_primitive_desc *forward = nullptr, *pd = nullptr;
    ok = ok && dnnl_convolution_forward_primitive_desc_create(&forward, Engine(), onednn::kForwardTraining,
                                                              onednn::kConvolutionDirect, any[0], any[1], nullptr,
                                                              any[2], strides, dilates, padding, padding, attr) == 0;
    if (ok) descriptors_.push_back(forward);
    // operands as (query, argument, dims) of the pass's two inputs and output
    const int64_t *dims[3];
    int queries[3], arguments[3];
    if (pass == Pass::kForward) {
      pd = forward;
      dims[0] = src_dims, queries[0] = onednn::kQuerySrc, arguments[0] = onednn::kArgSrc;
      dims[1] = weight_dims, queries[1] = onednn::kQueryWeights, arguments[1] = onednn::kArgWeights;
      dims[2] = dst_dims, queries[2] = onednn::kQueryDst, arguments[2] = onednn::kArgDst;
    } else if (pass == Pass::kBackwardData) {
      ok = ok && dnnl_convolution_backward_data_primitive_desc_create(
                     &pd, Engine(), onednn::kConvolutionDirect, any[0], any[1], any[2], strides, dilates, padding,
                     padding, forward, attr) == 0;
      dims[0] = dst_dims, queries[0] = onednn::kQueryDiffDst, arguments[0] = onednn::kArgDiffDst;
      dims[1] = weight_dims, queries[1] = onednn::kQueryWeights, arguments[1] = onednn::kArgWeights;
      dims[2] = src_dims, queries[2] = onednn::kQueryDiffSrc, arguments[2] = onednn::kArgDiffSrc;
    } else {
      ok = ok && dnnl_convolution_backward_weights_primitive_desc_create(
                     &pd, Engine(), onednn::kConvolutionDirect, any[0], any[1], nullptr, any[2], strides, dilates,
                     padding, padding, forward, attr) == 0;
      dims[0] = src_dims, queries[0] = onednn::kQuerySrc, arguments[0] = onednn::kArgSrc;
      dims[1] = dst_dims, queries[1] = onednn::kQueryDiffDst, arguments[1] = onednn::kArgDiffDst;
      dims[2] = weight_dims, queries[2] = onednn::kQueryDiffWeights, arguments[2] = onednn::kArgDiffWeights;
    }
    if (ok && pd != forward) descriptors_.push_back(pd);
    for (dnnl_memory_desc *md : any) {
      if (md) dnnl_memory_desc_destroy(md);
    }
    for (int i = 0; i < 3 && ok; ++i) {
      Operand &operand = operands_[i];
      operand.arg = arguments[i];
      const int64_t plain_strides[4] = {dims[i][1] * dims[i][2] * dims[i][3], dims[i][2] * dims[i][3], dims[i][3], 1};
      operand.inner = dnnl_primitive_desc_query_md(pd, queries[i], 0);
      ok = operand.inner &&
           dnnl_memory_desc_create_with_strides(&operand.plain, 4, dims[i], onednn::kFloat32, plain_strides) == 0;
      if (ok && !dnnl_memory_desc_equal(operand.plain, operand.inner)) {
        dnnl_primitive_desc *reorder = nullptr;
        ok = i < 2 ? dnnl_reorder_primitive_desc_create(&reorder, operand.plain, Engine(), operand.inner, Engine(),
                                                        nullptr) == 0
                   : dnnl_reorder_primitive_desc_create(&reorder, operand.inner, Engine(), operand.plain, Engine(),
                                                        nullptr) == 0;
        if (ok) descriptors_.push_back(reorder);
        ok = ok && dnnl_primitive_create(&operand.reorder, reorder) == 0;
      }
    }
    if (ok) {
      scratchpad_md_ = dnnl_primitive_desc_query_md(pd, onednn::kQueryScratchpad, 0);
      ok = scratchpad_md_ != nullptr;
    }
    if (ok) {
      scratchpad_bytes_ = std::max<size_t>(dnnl_memory_desc_get_size(scratchpad_md_), 64);
      ok = dnnl_primitive_create(&convolution_, pd) == 0;
    }
    if (attr) dnnl_primitive_attr_destroy(attr);
    return ok;
  }

  Operand operands_[3];
  std::vector<dnnl_primitive_desc *> descriptors_;  // owned; the operands' inner layouts live in them
  const dnnl_memory_desc *scratchpad_md_ = nullptr;
  size_t scratchpad_bytes_ = 0;
  dnnl_primitive *convolution_ = nullptr;
};

// cols (rows, pixels) of one sample: cols[(c, i, j), (oh, ow)] = x[c, oh * s - p + i, ow * s - p + j], or 0
void Im2Col(const float *x, const Geometry &g, float *cols) {
  for (int64_t row = 0; row < g.rows(); ++row) {
    const int64_t c = row / (g.kernel_h * g.kernel_w);
    const int64_t i = row / g.kernel_w % g.kernel_h, j = row % g.kernel_w;
    float *out = cols + row * g.pixels();
    for (int64_t oh = 0; oh < g.out_h; ++oh) {
      const int64_t ih = oh * g.stride_h - g.pad_h + i;
      float *out_row = out + oh * g.out_w;
      if (ih < 0 || ih >= g.height) {
        for (int64_t ow = 0; ow < g.out_w; ++ow) out_row[ow] = 0.0f;
        continue;
      }
      const float *in_row = x + (c * g.height + ih) * g.width;
      for (int64_t ow = 0; ow < g.out_w; ++ow) {
        const int64_t iw = ow * g.stride_w - g.pad_w + j;
        out_row[ow] = iw >= 0 && iw < g.width ? in_row[iw] : 0.0f;
      }
    }
  }
}

// dx of one sample from dcols (rows, pixels): the transpose of Im2Col, summing where windows overlap
void Col2Im(const float *cols, const Geometry &g, float *dx) {
  for (int64_t c = 0; c < g.channels; ++c) {
    float *channel = dx + c * g.height * g.width;
    for (int64_t k = 0; k < g.height * g.width; ++k) channel[k] = 0.0f;
    for (int64_t i = 0; i < g.kernel_h; ++i) {
      for (int64_t j = 0; j < g.kernel_w; ++j) {
        const float *in = cols + ((c * g.kernel_h + i) * g.kernel_w + j) * g.pixels();
        for (int64_t oh = 0; oh < g.out_h; ++oh) {
          const int64_t ih = oh * g.stride_h - g.pad_h + i;
          if (ih < 0 || ih >= g.height) continue;
          float *out_row = channel + ih * g.width;
          for (int64_t ow = 0; ow < g.out_w; ++ow) {
            const int64_t iw = ow * g.stride_w - g.pad_w + j;
            if (iw >= 0 && iw < g.width) out_row[iw] += in[oh * g.out_w + ow];
          }
        }
      }
    }
  }
}

// rows (pixels, rows()) of one sample, Im2Col's matrix transposed: a ViT's patches, one per row
void Im2Row(const float *x, const Geometry &g, float *out) {
  for (int64_t oh = 0; oh < g.out_h; ++oh) {
    for (int64_t ow = 0; ow < g.out_w; ++ow) {
      float *row = out + (oh * g.out_w + ow) * g.rows();
      const int64_t first = ow * g.stride_w - g.pad_w;  // the window's first column
      for (int64_t c = 0; c < g.channels; ++c) {
        for (int64_t i = 0; i < g.kernel_h; ++i) {
          const int64_t ih = oh * g.stride_h - g.pad_h + i;
          float *part = row + (c * g.kernel_h + i) * g.kernel_w;
          if (ih >= 0 && ih < g.height && first >= 0 && first + g.kernel_w <= g.width) {  // a patch's inner rows
            std::copy_n(x + (c * g.height + ih) * g.width + first, g.kernel_w, part);
            continue;
          }
          for (int64_t j = 0; j < g.kernel_w; ++j) {
            const int64_t iw = first + j;
            const bool inside = ih >= 0 && ih < g.height && iw >= 0 && iw < g.width;
            part[j] = inside ? x[(c * g.height + ih) * g.width + iw] : 0.0f;
          }
        }
      }
    }
  }
}

// dx of one sample from Im2Row's layout: its transpose, summing where windows overlap
void Row2Im(const float *rows, const Geometry &g, float *dx) {
  std::fill(dx, dx + g.channels * g.height * g.width, 0.0f);
  for (int64_t oh = 0; oh < g.out_h; ++oh) {
    for (int64_t ow = 0; ow < g.out_w; ++ow) {
      const float *row = rows + (oh * g.out_w + ow) * g.rows();
      for (int64_t c = 0; c < g.channels; ++c) {
        for (int64_t i = 0; i < g.kernel_h; ++i) {
          const int64_t ih = oh * g.stride_h - g.pad_h + i;
          if (ih < 0 || ih >= g.height) continue;
          for (int64_t j = 0; j < g.kernel_w; ++j) {
            const int64_t iw = ow * g.stride_w - g.pad_w + j;
            if (iw < 0 || iw >= g.width) continue;
            dx[(c * g.height + ih) * g.width + iw] += row[(c * g.kernel_h + i) * g.kernel_w + j];
          }
        }
      }
    }
  }
}

// 1x1 convolutions of inputs this small run as oneDNN primitives; larger ones as one sgemm per sample
constexpr int64_t kMaxPixelsOfOneDnn1x1 = 14 * 14;

// oneDNN's direct convolutions (JIT kernels on channel-blocked copies, on the whole batch with our threads) beat
// im2col + sgemm per sample for k x k kernels, and for 1x1 ones on small inputs, where each sample's product has
// few columns; on larger inputs the blocked copies of a 1x1 convolution cost more than they save (a BiT-R50 train
// step: ~5% slower with every 1x1 convolution in oneDNN, ~5% faster with those up to 14x14). A patch embedding
// stays on sgemm, which writes its tokens directly. CPU_CONV_ONEDNN=0 turns them off (read per call, so tests can
// compare both paths in one process).
bool UseOneDnn(const Geometry &g) {
  const char *setting = std::getenv("CPU_CONV_ONEDNN");
  const bool small_or_spatial = g.kernel_h * g.kernel_w > 1 || g.height * g.width <= kMaxPixelsOfOneDnn1x1;
  return !g.tokens && small_or_spatial && !(setting && std::string(setting) == "0");
}

// multiply-adds of one sample's convolution: how much work ParallelRanges shares out
int64_t SampleWork(const Geometry &g) { return g.out_channels * g.rows() * g.pixels(); }

// dweight, and dx unless it is null, from dy and the forward's x, weight and geometry in params[1..3]
void Backward(void **params, int64_t **shapes, float *dx, float *dweight) {
  const float *dy = static_cast<const float *>(params[0]);
  const float *x = static_cast<const float *>(params[1]);
  const float *weight = static_cast<const float *>(params[2]);
  const Geometry g = ReadGeometry(params + 1, shapes + 1, 1);
  if (UseOneDnn(g)) {
    const ConvPlan *weights_plan = ConvPlan::Get(g, Pass::kBackwardWeights);
    const ConvPlan *data_plan = dx ? ConvPlan::Get(g, Pass::kBackwardData) : nullptr;
    if (weights_plan && (!dx || data_plan) && weights_plan->Run(x, dy, dweight) &&
        (!dx || data_plan->Run(dy, weight, dx))) {
      return;
    }
  }
  const int64_t weight_size = g.out_channels * g.rows();
  const int64_t spans = NumSpans(g.batch, SampleWork(g));
  std::vector<float> span_dweight(spans * weight_size);
  const int64_t sample_size = g.channels * g.height * g.width, out_size = g.out_channels * g.pixels();
  ParallelFor(spans, g.batch * SampleWork(g), [&](int64_t span) {
    const int64_t begin = g.batch * span / spans, end = g.batch * (span + 1) / spans;
    float *part = span_dweight.data() + span * weight_size;
    if (g.tokens) {  // the span's patches as one (samples * pixels, rows) matrix, dy as (samples * pixels, O)
      const int64_t patches = (end - begin) * g.pixels();
      std::vector<float> matrix(patches * g.rows());
      for (int64_t b = begin; b < end; ++b) {
        Im2Row(x + b * sample_size, g, matrix.data() + (b - begin) * g.pixels() * g.rows());
      }
      const float *grad = dy + begin * out_size;
      dnnl_sgemm('T', 'N', g.out_channels, g.rows(), patches, 1.0f, grad, g.out_channels, matrix.data(), g.rows(),
                 0.0f, part, g.rows());
      if (!dx) return;
      dnnl_sgemm('N', 'N', patches, g.rows(), g.out_channels, 1.0f, grad, g.out_channels, weight, g.rows(), 0.0f,
                 matrix.data(), g.rows());
      for (int64_t b = begin; b < end; ++b) {
        Row2Im(matrix.data() + (b - begin) * g.pixels() * g.rows(), g, dx + b * sample_size);
      }
      return;
    }
    std::vector<float> cols(g.direct() ? 0 : g.rows() * g.pixels());
    std::vector<float> dcols(g.direct() || !dx ? 0 : g.rows() * g.pixels());
    for (int64_t b = begin; b < end; ++b) {
      const float *sample = x + b * sample_size;
      const float *grad = dy + b * out_size;
      if (!g.direct()) Im2Col(sample, g, cols.data());
      // dweight (O, rows) += dy_b (O, pixels) @ cols_b^T
      dnnl_sgemm('N', 'T', g.out_channels, g.rows(), g.pixels(), 1.0f, grad, g.pixels(),
                 g.direct() ? sample : cols.data(), g.pixels(), b == begin ? 0.0f : 1.0f, part, g.rows());
      if (!dx) continue;
      // dcols_b (rows, pixels) = weight^T @ dy_b, folded back into the image
      float *grad_in = dx + b * sample_size;
      dnnl_sgemm('T', 'N', g.rows(), g.pixels(), g.out_channels, 1.0f, weight, g.rows(), grad, g.pixels(), 0.0f,
                 g.direct() ? grad_in : dcols.data(), g.pixels());
      if (!g.direct()) Col2Im(dcols.data(), g, grad_in);
    }
  });
  ParallelFor(weight_size, spans, [&](int64_t i) {
    float sum = 0.0f;
    for (int64_t span = 0; span < spans; ++span) sum += span_dweight[span * weight_size + i];
    dweight[i] = sum;
  });
}

}  // namespace

extern "C" {

// ConvForward(x, weight, geometry) -> y (B, O, OH, OW)
int ConvForward(int, void **params, int *, int64_t **shapes, const char **, void *, void *) {
  const float *x = static_cast<const float *>(params[0]);
  const float *weight = static_cast<const float *>(params[1]);
  float *y = static_cast<float *>(params[3]);
  const Geometry g = ReadGeometry(params, shapes, 1);
  const int64_t sample_size = g.channels * g.height * g.width, out_size = g.out_channels * g.pixels();
  if (UseOneDnn(g)) {
    const ConvPlan *plan = ConvPlan::Get(g, Pass::kForward);
    if (plan && plan->Run(x, weight, y)) return 0;
  }
  ParallelRanges(g.batch, SampleWork(g), [&](int64_t begin, int64_t end) {
    if (g.tokens) {  // y (samples * pixels, O) = the span's patches (samples * pixels, rows) @ weight^T
      const int64_t patches = (end - begin) * g.pixels();
      std::vector<float> matrix(patches * g.rows());
      for (int64_t b = begin; b < end; ++b) {
        Im2Row(x + b * sample_size, g, matrix.data() + (b - begin) * g.pixels() * g.rows());
      }
      dnnl_sgemm('N', 'T', patches, g.out_channels, g.rows(), 1.0f, matrix.data(), g.rows(), weight, g.rows(), 0.0f,
                 y + begin * out_size, g.out_channels);
      return;
    }
    std::vector<float> cols(g.direct() ? 0 : g.rows() * g.pixels());
    for (int64_t b = begin; b < end; ++b) {
      const float *sample = x + b * sample_size;
      if (!g.direct()) Im2Col(sample, g, cols.data());
      // y_b (O, pixels) = weight @ cols_b
      dnnl_sgemm('N', 'N', g.out_channels, g.pixels(), g.rows(), 1.0f, weight, g.rows(),
                 g.direct() ? sample : cols.data(), g.pixels(), 0.0f, y + b * out_size, g.pixels());
    }
  });
  return 0;
}

// ConvBackward(dy, x, weight, geometry) -> dx, dweight
int ConvBackward(int, void **params, int *, int64_t **shapes, const char **, void *, void *) {
  Backward(params, shapes, static_cast<float *>(params[4]), static_cast<float *>(params[5]));
  return 0;
}

// ConvWeightBackward(dy, x, weight, geometry) -> dweight, for inputs that need no gradient (images)
int ConvWeightBackward(int, void **params, int *, int64_t **shapes, const char **, void *, void *) {
  Backward(params, shapes, nullptr, static_cast<float *>(params[4]));
  return 0;
}

}  // extern "C"
