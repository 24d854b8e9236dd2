// Multi-head self-attention, softmax(q k^T * scale + bias) v, forward and backward, for MindSpore's Custom "aot"
// ops (see cpu_kernels.py). One (sample, head) pair is one unit of work: its two products run through oneDNN's
// single-threaded sgemm straight on the strided q, k, v columns of the qkv projection's rows, and its (N, N)
// logits are biased and softmaxed while in cache. Against MindSpore's graph (heads split out into copies, two
// BatchMatMuls and a softmax over tensors in memory, heads merged back) this saves four passes over the
// (B, H, N, N) attention and the copies of q, k and v. Each unit runs on one thread and the bias gradient is
// summed over the batch in order, so results do not depend on the number of threads.
//
// Inputs: qkv (B, N, 3 * H * d) as [q | k | v], each H heads of d; scale (1); bias (H, N, N) (BEiT's relative
// position bias) for the Bias entries. The forward gives out (B, N, H * d), heads side by side, and the
// attention probabilities (B, H, N, N), which the backward takes; the Inference entries give out only, each
// unit's probabilities staying in a plane per thread in cache (no (B, H, N, N) tensor written to memory).
#include <algorithm>
#include <cstdint>
#include <memory>
#include <vector>

#include "fast_exp.h"
#include "onednn.h"
#include "parallel.h"

namespace {

struct Shape {
  int64_t batch, tokens, heads, head_dim;
  int64_t width() const { return heads * head_dim; }  // of out; qkv rows are 3 * width() long
  int64_t units() const { return batch * heads; }
  int64_t plane() const { return tokens * tokens; }  // one unit's attention
};

// from qkv's shape (B, N, 3 * H * d) and the head count H
Shape ShapeOf(const int64_t *qkv, int64_t heads) { return Shape{qkv[0], qkv[1], heads, qkv[2] / (3 * heads)}; }

// q, k and v of unit (sample, head) inside qkv: column blocks of row stride 3 * width
struct UnitColumns {
  int64_t q, k, v;  // offsets into qkv
  int64_t out;      // offset of the unit's columns in out (row stride width)
};

UnitColumns Columns(const Shape &s, int64_t unit) {
  const int64_t sample = unit / s.heads, head = unit % s.heads;
  const int64_t q = sample * s.tokens * 3 * s.width() + head * s.head_dim;
  return UnitColumns{q, q + s.width(), q + 2 * s.width(), sample * s.tokens * s.width() + head * s.head_dim};
}

void SoftmaxRowInPlace(float *row, int64_t dim) {
  float max = row[0];
#pragma omp simd reduction(max : max)
  for (int64_t j = 0; j < dim; ++j) max = row[j] > max ? row[j] : max;
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (int64_t j = 0; j < dim; ++j) {
    row[j] = FastExp(row[j] - max);
    sum += row[j];
  }
  const float inverse = 1.0f / sum;
#pragma omp simd
  for (int64_t j = 0; j < dim; ++j) row[j] *= inverse;
}

// out from qkv; each unit's probabilities go to probs (B, H, N, N) when given (for the backward), else to a
// plane per thread that stays in cache (inference)
void Forward(void **params, const Shape &s, const float *bias, float *out, float *probs) {
  const float *qkv = static_cast<const float *>(params[0]);
  const float scale = *static_cast<const float *>(params[1]);
  const int64_t n = s.tokens, d = s.head_dim, qkv_stride = 3 * s.width();
  ParallelRanges(s.units(), s.plane() * d, [&](int64_t begin, int64_t end) {
    std::vector<float> scratch(probs == nullptr ? s.plane() : 0);
    for (int64_t unit = begin; unit < end; ++unit) {
      const UnitColumns at = Columns(s, unit);
      float *p = probs == nullptr ? scratch.data() : probs + unit * s.plane();
      dnnl_sgemm('N', 'T', n, n, d, scale, qkv + at.q, qkv_stride, qkv + at.k, qkv_stride, 0.0f, p, n);
      const float *unit_bias = bias == nullptr ? nullptr : bias + unit % s.heads * s.plane();
      for (int64_t i = 0; i < n; ++i) {
        float *row = p + i * n;
        if (unit_bias != nullptr) {
#pragma omp simd
          for (int64_t j = 0; j < n; ++j) row[j] += unit_bias[i * n + j];
        }
        SoftmaxRowInPlace(row, n);
      }
      dnnl_sgemm('N', 'N', n, d, n, 1.0f, p, n, qkv + at.v, qkv_stride, 0.0f, out + at.out, s.width());
    }
  });
}

// dqkv from dout, qkv and the probabilities; each unit's logits' gradient goes to dlogits (B, H, N, N) when
// given (for the bias's gradient), else to a scratch plane per thread
void Backward(void **params, int64_t **shapes, float *dqkv, float *dlogits) {
  const float *dout = static_cast<const float *>(params[0]);
  const float *qkv = static_cast<const float *>(params[1]);
  const float *probs = static_cast<const float *>(params[2]);
  const float scale = *static_cast<const float *>(params[3]);
  const Shape s = ShapeOf(shapes[1], shapes[2][1]);
  const int64_t n = s.tokens, d = s.head_dim, qkv_stride = 3 * s.width();
  ParallelRanges(s.units(), s.plane() * d, [&](int64_t begin, int64_t end) {
    std::vector<float> scratch(dlogits == nullptr ? s.plane() : 0);
    for (int64_t unit = begin; unit < end; ++unit) {
      const UnitColumns at = Columns(s, unit);
      const float *p = probs + unit * s.plane();
      float *ds = dlogits == nullptr ? scratch.data() : dlogits + unit * s.plane();
      // dv = p^T dout; dp = dout v^T
      dnnl_sgemm('T', 'N', n, d, n, 1.0f, p, n, dout + at.out, s.width(), 0.0f, dqkv + at.v, qkv_stride);
      dnnl_sgemm('N', 'T', n, n, d, 1.0f, dout + at.out, s.width(), qkv + at.v, qkv_stride, 0.0f, ds, n);
      // the softmax's gradient: ds = p * (dp - sum(dp * p)) per row
      for (int64_t i = 0; i < n; ++i) {
        const float *p_row = p + i * n;
        float *row = ds + i * n;
        float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
        for (int64_t j = 0; j < n; ++j) dot += row[j] * p_row[j];
#pragma omp simd
        for (int64_t j = 0; j < n; ++j) row[j] = p_row[j] * (row[j] - dot);
      }
      // logits = scale q k^T: dq = scale ds k, dk = scale ds^T q
      dnnl_sgemm('N', 'N', n, d, n, scale, ds, n, qkv + at.k, qkv_stride, 0.0f, dqkv + at.q, qkv_stride);
      dnnl_sgemm('T', 'N', n, d, n, scale, ds, n, qkv + at.q, qkv_stride, 0.0f, dqkv + at.k, qkv_stride);
    }
  });
}

// out (size) = the sum of `count` consecutive blocks of `size` in `blocks`, added in order
void SumBlocksInOrder(const float *blocks, int64_t count, int64_t size, float *out) {
  ParallelRanges(size, count, [&](int64_t begin, int64_t end) {
    std::copy(blocks + begin, blocks + end, out + begin);
    for (int64_t block = 1; block < count; ++block) {
      const float *from = blocks + block * size;
#pragma omp simd
      for (int64_t j = begin; j < end; ++j) out[j] += from[j];
    }
  });
}

}  // namespace

extern "C" {

// params: qkv, scale | out, probs
int AttentionForward(int, void **params, int *, int64_t **shapes, const char **, void *, void *) {
  Forward(params, ShapeOf(shapes[0], shapes[3][1]), nullptr, static_cast<float *>(params[2]),
          static_cast<float *>(params[3]));
  return 0;
}

// params: qkv, scale, bias (H, N, N) | out, probs
int AttentionBiasForward(int, void **params, int *, int64_t **shapes, const char **, void *, void *) {
  Forward(params, ShapeOf(shapes[0], shapes[2][0]), static_cast<const float *>(params[2]),
          static_cast<float *>(params[3]), static_cast<float *>(params[4]));
  return 0;
}

// params: qkv, scale, heads (1, int32) | out; no probabilities kept (inference)
int AttentionInferenceForward(int, void **params, int *, int64_t **shapes, const char **, void *, void *) {
  Forward(params, ShapeOf(shapes[0], *static_cast<const int32_t *>(params[2])), nullptr,
          static_cast<float *>(params[3]), nullptr);
  return 0;
}

// params: qkv, scale, bias (H, N, N) | out; no probabilities kept (inference)
int AttentionBiasInferenceForward(int, void **params, int *, int64_t **shapes, const char **, void *, void *) {
  Forward(params, ShapeOf(shapes[0], shapes[2][0]), static_cast<const float *>(params[2]),
          static_cast<float *>(params[3]), nullptr);
  return 0;
}

// params: dout, qkv, probs, scale | dqkv
int AttentionBackward(int, void **params, int *, int64_t **shapes, const char **, void *, void *) {
  Backward(params, shapes, static_cast<float *>(params[4]), nullptr);
  return 0;
}

// params: dout, qkv, probs, scale, bias | dqkv, dbias (H, N, N): the logits' gradient summed over the batch
int AttentionBiasBackward(int, void **params, int *, int64_t **shapes, const char **, void *, void *) {
  const int64_t units = shapes[2][0] * shapes[2][1], plane = shapes[2][2] * shapes[2][3];
  const std::unique_ptr<float[]> dlogits(new float[units * plane]);  // every element written before read
  Backward(params, shapes, static_cast<float *>(params[5]), dlogits.get());
  SumBlocksInOrder(dlogits.get(), shapes[2][0], shapes[2][1] * plane, static_cast<float *>(params[6]));
  return 0;
}

}  // extern "C"
