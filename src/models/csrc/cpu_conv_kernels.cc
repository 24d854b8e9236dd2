// 2-d convolution (NCHW, one group, no dilation) as im2col + sgemm, forward and backward, for MindSpore's
// Custom "aot" ops (see cpu_kernels.py). MindSpore 2.10's CPU Conv2D took ~1 s for a 3x3, 64-channel
// convolution of a (16, 64, 32, 32) batch that PyTorch does in 3 ms; the sgemm is oneDNN's, from the
// library MindSpore itself ships and has loaded (single-threaded there: samples run in parallel instead).
// The weight gradient is summed per thread's span of samples, then over the spans in order: results are
// the same from run to run on the same number of threads.
//
// Inputs: x (B, C, H, W), weight (O, C, KH, KW), geometry (int32: stride_h, stride_w, pad_h, pad_w, tokens);
// the output is (B, O, OH, OW), or with `tokens` (B, OH * OW, O): a ViT's patch embedding, untransposed.
#include <cstdint>
#include <vector>

#include "parallel.h"

extern "C" int dnnl_sgemm(char transa, char transb, int64_t m, int64_t n, int64_t k, float alpha, const float *a,
                          int64_t lda, const float *b, int64_t ldb, float beta, float *c, int64_t ldc);

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
      for (int64_t c = 0; c < g.channels; ++c) {
        for (int64_t i = 0; i < g.kernel_h; ++i) {
          const int64_t ih = oh * g.stride_h - g.pad_h + i;
          float *part = row + (c * g.kernel_h + i) * g.kernel_w;
          for (int64_t j = 0; j < g.kernel_w; ++j) {
            const int64_t iw = ow * g.stride_w - g.pad_w + j;
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

// multiply-adds of one sample's convolution: how much work ParallelRanges shares out
int64_t SampleWork(const Geometry &g) { return g.out_channels * g.rows() * g.pixels(); }

// dweight, and dx unless it is null, from dy and the forward's x, weight and geometry in params[1..3]
void Backward(void **params, int64_t **shapes, float *dx, float *dweight) {
  const float *dy = static_cast<const float *>(params[0]);
  const float *x = static_cast<const float *>(params[1]);
  const float *weight = static_cast<const float *>(params[2]);
  const Geometry g = ReadGeometry(params + 1, shapes + 1, 1);
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
