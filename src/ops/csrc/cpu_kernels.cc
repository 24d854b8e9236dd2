// Fused float32 CPU kernels for MindSpore's Custom "aot" ops (see cpu_kernels.py): exact GELU, bias addition,
// layer scale, the mean of a ViT's patch tokens, rows gathered by index, a mean squared error per row, a max pool
// over zero-padded input, LayerNorm and GroupNorm (also with ReLU), forward and backward, parallel over rows /
// groups / planes; images cut into patch rows; squared sums, the EMA and the AdamW, momentum-SGD and RMSProp updates
// for the train step.
//
// Every entry point has the signature MindSpore calls: its inputs then its outputs in `params`, with
// `ndims[i]` / `shapes[i]` describing params[i]. Weight gradients are summed per fixed block of rows and
// then over the blocks in order, so that results do not depend on the number of threads.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "fast_exp.h"
#include "parallel.h"

namespace {

constexpr int64_t kRowsPerBlock = 64;
constexpr int64_t kElementsPerBlock = 1 << 16;

int64_t NumElements(int ndim, const int64_t *shape) {
  int64_t n = 1;
  for (int i = 0; i < ndim; ++i) n *= shape[i];
  return n;
}

// Runs body(row, dim) for every row of a tensor of `shape` seen as rows of its last dimension, in parallel.
template <typename Body>
void ForEachRow(int ndim, const int64_t *shape, Body body) {
  const int64_t dim = shape[ndim - 1];
  ParallelFor(NumElements(ndim, shape) / dim, dim, [&](int64_t row) { body(row, dim); });
}

constexpr float kSqrtHalf = 0.70710678118654752f;
constexpr float kInvSqrt2Pi = 0.39894228040143268f;

// Phi(x) = (1 + erf(x / sqrt 2)) / 2 by Abramowitz & Stegun 7.1.26 (|error of erf| < 1.5e-7); also
// returns exp(-x^2 / 2), which the gradient needs too.
inline float NormalCdf(float x, float *gauss) {
  const float a = std::fabs(x) * kSqrtHalf;
  const float t = 1.0f / (1.0f + 0.3275911f * a);
  const float poly = t * (0.254829592f + t * (-0.284496736f + t * (1.421413741f + t * (-1.453152027f +
                                                                                       t * 1.061405429f))));
  *gauss = FastExp(-a * a);
  const float erf_abs = 1.0f - poly * *gauss;
  return 0.5f + 0.5f * std::copysign(erf_abs, x);
}

// out[j] = sum over b of parts[b * dim + j], in order of b
void SumBlocks(const float *parts, int64_t blocks, int64_t dim, float *out) {
  ParallelFor(dim, blocks, [&](int64_t j) {
    float sum = 0.0f;
    for (int64_t block = 0; block < blocks; ++block) sum += parts[block * dim + j];
    out[j] = sum;
  });
}

// out (D) = the sum over the rows of a (rows, D) tensor of terms that add_row(row, part) adds to part (D): per
// fixed block of rows, then over the blocks in order (the same sum on any number of threads)
template <typename AddRow>
void SumOverRows(int ndim, const int64_t *shape, float *out, AddRow add_row) {
  const int64_t dim = shape[ndim - 1];
  const int64_t rows = NumElements(ndim, shape) / dim;
  const int64_t blocks = (rows + kRowsPerBlock - 1) / kRowsPerBlock;
  std::vector<float> block_sums(blocks * dim, 0.0f);
  ParallelFor(blocks, kRowsPerBlock * dim, [&](int64_t block) {
    const int64_t end = std::min(rows, (block + 1) * kRowsPerBlock);
    for (int64_t row = block * kRowsPerBlock; row < end; ++row) add_row(row, block_sums.data() + block * dim);
  });
  SumBlocks(block_sums.data(), blocks, dim, out);
}

bool IndicesBelow(const int32_t *index, int64_t n, int64_t limit) {
  return std::all_of(index, index + n, [limit](int32_t i) { return i >= 0 && i < limit; });
}

// out (planes, length, dim) = zeros, plus row k of rows (planes, count, dim) added at row index[k] of its plane
// where index[k] >= 0: the gradient of picking rows by index, parallel over the planes
void ScatterAddRows(const float *rows, const int32_t *index, int64_t planes, int64_t count, int64_t length,
                    int64_t dim, float *out) {
  ParallelFor(planes, length * dim, [&](int64_t plane) {
    std::fill_n(out + plane * length * dim, length * dim, 0.0f);
    for (int64_t k = plane * count; k < (plane + 1) * count; ++k) {
      if (index[k] < 0) continue;
      float *to = out + (plane * length + index[k]) * dim;
      const float *from = rows + k * dim;
#pragma omp simd
      for (int64_t j = 0; j < dim; ++j) to[j] += from[j];
    }
  });
}

void GeluForwardSpan(const float *__restrict x, float *__restrict y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    float gauss;
    y[i] = x[i] * NormalCdf(x[i], &gauss);
  }
}

void GeluBackwardSpan(const float *__restrict dy, const float *__restrict x, float *__restrict dx, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    float gauss;
    const float cdf = NormalCdf(x[i], &gauss);
    dx[i] = dy[i] * (cdf + x[i] * gauss * kInvSqrt2Pi);
  }
}

// best / best_index over out_w windows updated with values[ow * stride] (indices[ow * stride]) where greater or NaN,
// or set to them (`first`). A stride known when compiled (kStride > 0) makes the loads vector shuffles, not gathers;
// the index is loaded whether taken or not, since a load under the condition kept the loop scalar.
template <int64_t kStride>
void UpdateWindowMaxima(const float *__restrict values, const int32_t *__restrict indices, int64_t runtime_stride,
                        int64_t out_w, bool first, float *__restrict best, int32_t *__restrict best_index) {
  const int64_t stride = kStride > 0 ? kStride : runtime_stride;
  if (first) {
    for (int64_t ow = 0; ow < out_w; ++ow) {
      best[ow] = values[ow * stride];
      best_index[ow] = indices[ow * stride];
    }
    return;
  }
#pragma omp simd
  for (int64_t ow = 0; ow < out_w; ++ow) {
    const float value = values[ow * stride];
    const int32_t index = indices[ow * stride];
    const bool take = value > best[ow] || value != value;
    best[ow] = take ? value : best[ow];
    best_index[ow] = take ? index : best_index[ow];
  }
}

}  // namespace

extern "C" {

// GeluForward(x) -> y = x * Phi(x)
int GeluForward(int, void **params, int *ndims, int64_t **shapes, const char **, void *, void *) {
  const float *x = static_cast<const float *>(params[0]);
  float *y = static_cast<float *>(params[1]);
  ParallelRanges(NumElements(ndims[0], shapes[0]), 1, [=](int64_t begin, int64_t end) {
    GeluForwardSpan(x + begin, y + begin, end - begin);
  });
  return 0;
}

// GeluBackward(dy, x) -> dx = dy * (Phi(x) + x * phi(x))
int GeluBackward(int, void **params, int *ndims, int64_t **shapes, const char **, void *, void *) {
  const float *dy = static_cast<const float *>(params[0]);
  const float *x = static_cast<const float *>(params[1]);
  float *dx = static_cast<float *>(params[2]);
  ParallelRanges(NumElements(ndims[0], shapes[0]), 1, [=](int64_t begin, int64_t end) {
    GeluBackwardSpan(dy + begin, x + begin, dx + begin, end - begin);
  });
  return 0;
}

// SquaredSum(x) -> (1): the sum of x's squares, accumulated in double (a gradient's share of the global norm)
int SquaredSum(int, void **params, int *ndims, int64_t **shapes, const char **, void *, void *) {
  const float *x = static_cast<const float *>(params[0]);
  const int64_t n = NumElements(ndims[0], shapes[0]);
  const int64_t blocks = (n + kElementsPerBlock - 1) / kElementsPerBlock;
  std::vector<double> block_sums(blocks);
  ParallelFor(blocks, kElementsPerBlock, [&](int64_t block) {
    const float *in = x + block * kElementsPerBlock;
    const int64_t size = std::min(kElementsPerBlock, n - block * kElementsPerBlock);
    double sum = 0.0;
#pragma omp simd reduction(+ : sum)
    for (int64_t i = 0; i < size; ++i) sum += static_cast<double>(in[i]) * in[i];
    block_sums[block] = sum;
  });
  double total = 0.0;
  for (double sum : block_sums) total += sum;
  *static_cast<float *>(params[1]) = static_cast<float>(total);
  return 0;
}

// EmaUpdate(ema, weight, decay (a scalar)) -> dummy: ema = decay * ema + (1 - decay) * weight, in place and in one
// pass (MindSpore's CPU ops take three and an Assign)
int EmaUpdate(int, void **params, int *ndims, int64_t **shapes, const char **, void *, void *) {
  float *ema = static_cast<float *>(params[0]);
  const float *weight = static_cast<const float *>(params[1]);
  const float decay = *static_cast<const float *>(params[2]);
  ParallelRanges(NumElements(ndims[0], shapes[0]), 1, [&](int64_t begin, int64_t end) {
#pragma omp simd
    for (int64_t i = begin; i < end; ++i) ema[i] = decay * ema[i] + (1.0f - decay) * weight[i];
  });
  *static_cast<float *>(params[3]) = 0.0f;
  return 0;
}

// AdamWUpdate(param, exp_avg, exp_avg_sq, grad, hyper (1 - lr * weight_decay, lr, beta1, beta2, eps,
// bias_correction1, bias_correction2, grad_scale)) -> dummy: one torch-style AdamW step of param, exp_avg and
// exp_avg_sq from grad * grad_scale, in place and in one pass (MindSpore's CPU ops take about ten, each over the
// whole parameter)
int AdamWUpdate(int, void **params, int *ndims, int64_t **shapes, const char **, void *, void *) {
  float *param = static_cast<float *>(params[0]);
  float *exp_avg = static_cast<float *>(params[1]);
  float *exp_avg_sq = static_cast<float *>(params[2]);
  const float *grad = static_cast<const float *>(params[3]);
  const float *hyper = static_cast<const float *>(params[4]);
  const float decay = hyper[0], step_size = hyper[1] / hyper[5], beta1 = hyper[2], beta2 = hyper[3], eps = hyper[4];
  const float sqrt_bias_correction2 = std::sqrt(hyper[6]), grad_scale = hyper[7];
  ParallelRanges(NumElements(ndims[0], shapes[0]), 1, [&](int64_t begin, int64_t end) {
#pragma omp simd
    for (int64_t i = begin; i < end; ++i) {
      const float g = grad[i] * grad_scale;
      const float m = beta1 * exp_avg[i] + (1.0f - beta1) * g;
      const float v = beta2 * exp_avg_sq[i] + (1.0f - beta2) * g * g;
      exp_avg[i] = m;
      exp_avg_sq[i] = v;
      param[i] = param[i] * decay - step_size * m / (std::sqrt(v) / sqrt_bias_correction2 + eps);
    }
  });
  *static_cast<float *>(params[5]) = 0.0f;
  return 0;
}

// MomentumUpdate(param, moment, grad, hyper (lr, momentum, weight_decay, grad_scale)) -> dummy: one step of SGD
// with momentum (torch.optim.SGD's, as MindSpore's ApplyMomentum) from g = grad * grad_scale + weight_decay * param:
// moment = momentum * moment + g, param -= lr * moment, in place and in one pass (MindSpore's CPU ops: three)
int MomentumUpdate(int, void **params, int *ndims, int64_t **shapes, const char **, void *, void *) {
  float *param = static_cast<float *>(params[0]);
  float *moment = static_cast<float *>(params[1]);
  const float *grad = static_cast<const float *>(params[2]);
  const float *hyper = static_cast<const float *>(params[3]);
  const float lr = hyper[0], momentum = hyper[1], weight_decay = hyper[2], grad_scale = hyper[3];
  ParallelRanges(NumElements(ndims[0], shapes[0]), 1, [&](int64_t begin, int64_t end) {
#pragma omp simd
    for (int64_t i = begin; i < end; ++i) {
      const float m = momentum * moment[i] + (grad[i] * grad_scale + weight_decay * param[i]);
      moment[i] = m;
      param[i] -= lr * m;
    }
  });
  *static_cast<float *>(params[4]) = 0.0f;
  return 0;
}

// RmsPropUpdate(param, mean_square, moment, grad, hyper (lr, weight_decay, decay, momentum, eps, grad_scale)) ->
// dummy: one step of TensorFlow-style RMSProp (MindSpore's ApplyRMSProp) from g = grad * grad_scale + weight_decay *
// param: mean_square = decay * mean_square + (1 - decay) g^2, moment = momentum * moment + lr g / sqrt(mean_square +
// eps), param -= moment, in place and in one pass
int RmsPropUpdate(int, void **params, int *ndims, int64_t **shapes, const char **, void *, void *) {
  float *param = static_cast<float *>(params[0]);
  float *mean_square = static_cast<float *>(params[1]);
  float *moment = static_cast<float *>(params[2]);
  const float *grad = static_cast<const float *>(params[3]);
  const float *hyper = static_cast<const float *>(params[4]);
  const float lr = hyper[0], weight_decay = hyper[1], decay = hyper[2], momentum = hyper[3], eps = hyper[4];
  const float grad_scale = hyper[5];
  ParallelRanges(NumElements(ndims[0], shapes[0]), 1, [&](int64_t begin, int64_t end) {
#pragma omp simd
    for (int64_t i = begin; i < end; ++i) {
      const float g = grad[i] * grad_scale + weight_decay * param[i];
      const float s = decay * mean_square[i] + (1.0f - decay) * g * g;
      const float m = momentum * moment[i] + lr * g / std::sqrt(s + eps);
      mean_square[i] = s;
      moment[i] = m;
      param[i] -= m;
    }
  });
  *static_cast<float *>(params[5]) = 0.0f;
  return 0;
}

// BiasAddForward(x (rows, D), bias (D)) -> y = x + bias
int BiasAddForward(int, void **params, int *ndims, int64_t **shapes, const char **, void *, void *) {
  const float *x = static_cast<const float *>(params[0]);
  const float *bias = static_cast<const float *>(params[1]);
  float *y = static_cast<float *>(params[2]);
  ForEachRow(ndims[0], shapes[0], [&](int64_t row, int64_t dim) {
#pragma omp simd
    for (int64_t j = 0; j < dim; ++j) y[row * dim + j] = x[row * dim + j] + bias[j];
  });
  return 0;
}

// BiasGrad(dy (rows, D)) -> dbias = dy summed over the rows
int BiasGrad(int, void **params, int *ndims, int64_t **shapes, const char **, void *, void *) {
  const float *dy = static_cast<const float *>(params[0]);
  const int64_t dim = shapes[0][ndims[0] - 1];
  SumOverRows(ndims[0], shapes[0], static_cast<float *>(params[1]), [&](int64_t row, float *part) {
#pragma omp simd
    for (int64_t j = 0; j < dim; ++j) part[j] += dy[row * dim + j];
  });
  return 0;
}

// ScaleForward(x (rows, D), gamma (D)) -> y = x * gamma (a layer scale)
int ScaleForward(int, void **params, int *ndims, int64_t **shapes, const char **, void *, void *) {
  const float *x = static_cast<const float *>(params[0]);
  const float *gamma = static_cast<const float *>(params[1]);
  float *y = static_cast<float *>(params[2]);
  ForEachRow(ndims[0], shapes[0], [&](int64_t row, int64_t dim) {
#pragma omp simd
    for (int64_t j = 0; j < dim; ++j) y[row * dim + j] = x[row * dim + j] * gamma[j];
  });
  return 0;
}

// ScaleBackward(dy, x, gamma) -> dx = dy * gamma, dgamma = dy * x summed over the rows
int ScaleBackward(int, void **params, int *ndims, int64_t **shapes, const char **, void *, void *) {
  const float *dy = static_cast<const float *>(params[0]);
  const float *x = static_cast<const float *>(params[1]);
  const float *gamma = static_cast<const float *>(params[2]);
  float *dx = static_cast<float *>(params[3]);
  const int64_t dim = shapes[0][ndims[0] - 1];
  SumOverRows(ndims[0], shapes[0], static_cast<float *>(params[4]), [&](int64_t row, float *part) {
#pragma omp simd
    for (int64_t j = 0; j < dim; ++j) {
      dx[row * dim + j] = dy[row * dim + j] * gamma[j];
      part[j] += dy[row * dim + j] * x[row * dim + j];
    }
  });
  return 0;
}

// PatchTokenMeanForward(x (B, 1 + N, D)) -> y (B, D): the mean of each sample's tokens after the first (a ViT's
// class token), added in token order
int PatchTokenMeanForward(int, void **params, int *, int64_t **shapes, const char **, void *, void *) {
  const float *x = static_cast<const float *>(params[0]);
  float *y = static_cast<float *>(params[1]);
  const int64_t tokens = shapes[0][1], dim = shapes[0][2];
  const float inverse = 1.0f / static_cast<float>(tokens - 1);
  ParallelFor(shapes[0][0], tokens * dim, [&](int64_t sample) {
    float *mean = y + sample * dim;
    std::fill_n(mean, dim, 0.0f);
    for (int64_t token = 1; token < tokens; ++token) {
      const float *row = x + (sample * tokens + token) * dim;
#pragma omp simd
      for (int64_t j = 0; j < dim; ++j) mean[j] += row[j];
    }
#pragma omp simd
    for (int64_t j = 0; j < dim; ++j) mean[j] *= inverse;
  });
  return 0;
}

// PatchTokenMeanBackward(dy (B, D), x) -> dx (B, 1 + N, D): zero for the first token, dy / N for the others
int PatchTokenMeanBackward(int, void **params, int *, int64_t **shapes, const char **, void *, void *) {
  const float *dy = static_cast<const float *>(params[0]);
  float *dx = static_cast<float *>(params[2]);
  const int64_t tokens = shapes[1][1], dim = shapes[1][2];
  const float inverse = 1.0f / static_cast<float>(tokens - 1);
  ParallelFor(shapes[1][0], tokens * dim, [&](int64_t sample) {
    float *grad = dx + sample * tokens * dim;
    std::fill_n(grad, dim, 0.0f);
    for (int64_t token = 1; token < tokens; ++token) {
#pragma omp simd
      for (int64_t j = 0; j < dim; ++j) grad[token * dim + j] = dy[sample * dim + j] * inverse;
    }
  });
  return 0;
}

// GatherRowsForward(x (B, L, D), index (B, K) int32) -> y (B, K, D), y[b, k] = x[b, index[b, k]]; 1 (an error)
// for an index outside [0, L)
int GatherRowsForward(int, void **params, int *, int64_t **shapes, const char **, void *, void *) {
  const float *x = static_cast<const float *>(params[0]);
  const int32_t *index = static_cast<const int32_t *>(params[1]);
  float *y = static_cast<float *>(params[2]);
  const int64_t length = shapes[0][1], dim = shapes[0][2], keep = shapes[1][1];
  if (!IndicesBelow(index, shapes[1][0] * keep, length)) return 1;
  ParallelFor(shapes[1][0] * keep, dim, [&](int64_t row) {
    std::copy_n(x + ((row / keep) * length + index[row]) * dim, dim, y + row * dim);
  });
  return 0;
}

// GatherRowsBackward(dy (B, K, D), index (B, K), x (B, L, D)) -> dx (B, L, D): zeros, plus dy[b, k] at row
// index[b, k] of sample b (x gives the shape only)
int GatherRowsBackward(int, void **params, int *, int64_t **shapes, const char **, void *, void *) {
  const float *dy = static_cast<const float *>(params[0]);
  const int32_t *index = static_cast<const int32_t *>(params[1]);
  float *dx = static_cast<float *>(params[3]);
  const int64_t length = shapes[2][1], dim = shapes[2][2], keep = shapes[1][1];
  if (!IndicesBelow(index, shapes[1][0] * keep, length)) return 1;
  ScatterAddRows(dy, index, shapes[1][0], keep, length, dim, dx);
  return 0;
}

// PatchifyForward(images (N, C, H, W)) -> patches (N, L, p * p * C): the p x p patches in row-major order, each
// patch's pixels in (row, column, channel) order (MAE's targets). Each (image, row of patches) reads the C planes'
// pixel rows side by side, in memory order.
int PatchifyForward(int, void **params, int *, int64_t **shapes, const char **, void *, void *) {
  const float *images = static_cast<const float *>(params[0]);
  float *patches = static_cast<float *>(params[1]);
  const int64_t channels = shapes[0][1], height = shapes[0][2], width = shapes[0][3], features = shapes[1][2];
  const int64_t size = std::llround(std::sqrt(static_cast<double>(features / channels)));
  const int64_t grid_h = height / size, grid_w = width / size;
  ParallelFor(shapes[0][0] * grid_h, grid_w * features, [&](int64_t strip) {
    const int64_t b = strip / grid_h, top = strip % grid_h * size;
    std::vector<const float *> rows(channels);
    for (int64_t i = 0; i < size; ++i) {
      for (int64_t c = 0; c < channels; ++c) rows[c] = images + ((b * channels + c) * height + top + i) * width;
      for (int64_t patch = 0; patch < grid_w; ++patch) {
        float *out = patches + (strip * grid_w + patch) * features + i * size * channels;
        for (int64_t j = patch * size; j < (patch + 1) * size; ++j) {
          for (int64_t c = 0; c < channels; ++c) *out++ = rows[c][j];
        }
      }
    }
  });
  return 0;
}

// ZeroPaddedMaxPoolForward(x (B, C, H, W), geometry (int32: kernel, stride, padding)) -> y (B, C, OH, OW), argmax
// (int32, B, C, OH, OW): the max over each window of x with `padding` zeros around it, and the index in H x W of
// the maximum (-1: a zero of the padding; the first of equal values in the window's row-major order, as PyTorch,
// NaN wins). An output row is found one window position at a time across the whole row, from a copy of the input
// row between its padding, so that the inner loop has no branches and runs on vectors.
int ZeroPaddedMaxPoolForward(int, void **params, int *, int64_t **shapes, const char **, void *, void *) {
  const float *x = static_cast<const float *>(params[0]);
  const int32_t *geometry = static_cast<const int32_t *>(params[1]);
  float *y = static_cast<float *>(params[2]);
  int32_t *argmax = static_cast<int32_t *>(params[3]);
  const int64_t height = shapes[0][2], width = shapes[0][3], out_h = shapes[2][2], out_w = shapes[2][3];
  const int64_t kernel = geometry[0], stride = geometry[1], padding = geometry[2];
  const auto update = stride == 1 ? UpdateWindowMaxima<1> : stride == 2 ? UpdateWindowMaxima<2> : UpdateWindowMaxima<0>;
  ParallelRanges(shapes[0][0] * shapes[0][1], height * width, [&](int64_t begin, int64_t end) {
    std::vector<float> row(width + 2 * padding, 0.0f);
    std::vector<int32_t> row_index(width + 2 * padding, -1);
    for (int64_t plane = begin; plane < end; ++plane) {
      const float *in = x + plane * height * width;
      for (int64_t oh = 0; oh < out_h; ++oh) {
        float *best = y + (plane * out_h + oh) * out_w;
        int32_t *best_index = argmax + (plane * out_h + oh) * out_w;
        for (int64_t kh = 0; kh < kernel; ++kh) {
          const int64_t ih = oh * stride - padding + kh;
          if (ih >= 0 && ih < height) {
            std::copy(in + ih * width, in + (ih + 1) * width, row.begin() + padding);
            for (int64_t iw = 0; iw < width; ++iw) row_index[padding + iw] = static_cast<int32_t>(ih * width + iw);
          } else {
            std::fill(row.begin() + padding, row.end() - padding, 0.0f);
            std::fill(row_index.begin() + padding, row_index.end() - padding, -1);
          }
          for (int64_t kw = 0; kw < kernel; ++kw) {
            update(row.data() + kw, row_index.data() + kw, stride, out_w, kh == 0 && kw == 0, best, best_index);
          }
        }
      }
    }
  });
  return 0;
}

// ZeroPaddedMaxPoolBackward(dy (B, C, OH, OW), argmax, x (B, C, H, W)) -> dx: zeros, plus each dy at the position
// of its window's maximum (none for the padding's zeros; x gives the shape only)
int ZeroPaddedMaxPoolBackward(int, void **params, int *, int64_t **shapes, const char **, void *, void *) {
  const float *dy = static_cast<const float *>(params[0]);
  const int32_t *argmax = static_cast<const int32_t *>(params[1]);
  float *dx = static_cast<float *>(params[3]);
  ScatterAddRows(dy, argmax, shapes[2][0] * shapes[2][1], shapes[0][2] * shapes[0][3], shapes[2][2] * shapes[2][3],
                 1, dx);
  return 0;
}

// SquaredErrorForward(pred (..., D), target (..., D)) -> (...), the mean of (pred - target)^2 over the last
// dimension
int SquaredErrorForward(int, void **params, int *ndims, int64_t **shapes, const char **, void *, void *) {
  const float *pred = static_cast<const float *>(params[0]);
  const float *target = static_cast<const float *>(params[1]);
  float *loss = static_cast<float *>(params[2]);
  ForEachRow(ndims[0], shapes[0], [&](int64_t row, int64_t dim) {
    const float *p = pred + row * dim, *t = target + row * dim;
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int64_t j = 0; j < dim; ++j) sum += (p[j] - t[j]) * (p[j] - t[j]);
    loss[row] = sum / dim;
  });
  return 0;
}

// SquaredErrorBackward(dy (...), pred, target) -> dpred = 2 (pred - target) dy / D
int SquaredErrorBackward(int, void **params, int *ndims, int64_t **shapes, const char **, void *, void *) {
  const float *dy = static_cast<const float *>(params[0]);
  const float *pred = static_cast<const float *>(params[1]);
  const float *target = static_cast<const float *>(params[2]);
  float *dpred = static_cast<float *>(params[3]);
  ForEachRow(ndims[1], shapes[1], [&](int64_t row, int64_t dim) {
    const float factor = 2.0f * dy[row] / dim;
    const float *p = pred + row * dim, *t = target + row * dim;
    float *grad = dpred + row * dim;
#pragma omp simd
    for (int64_t j = 0; j < dim; ++j) grad[j] = factor * (p[j] - t[j]);
  });
  return 0;
}

// LayerNormForward(x (..., D), gamma (D), beta (D), eps (1)) -> y, mean (rows), rstd (rows): normalises over
// the trailing elements of x, as many as gamma has (D: the last dimension, or several)
int LayerNormForward(int, void **params, int *ndims, int64_t **shapes, const char **, void *, void *) {
  const float *x = static_cast<const float *>(params[0]);
  const float *gamma = static_cast<const float *>(params[1]);
  const float *beta = static_cast<const float *>(params[2]);
  const float eps = *static_cast<const float *>(params[3]);
  float *y = static_cast<float *>(params[4]);
  float *mean_out = static_cast<float *>(params[5]);
  float *rstd_out = static_cast<float *>(params[6]);
  const int64_t dim = NumElements(ndims[1], shapes[1]);
  const int64_t rows = NumElements(ndims[0], shapes[0]) / dim;
  ParallelFor(rows, dim, [&](int64_t row) {
    const float *in = x + row * dim;
    float *out = y + row * dim;
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int64_t j = 0; j < dim; ++j) sum += in[j];
    const float mean = sum / dim;
    float squares = 0.0f;
#pragma omp simd reduction(+ : squares)
    for (int64_t j = 0; j < dim; ++j) squares += (in[j] - mean) * (in[j] - mean);
    const float rstd = 1.0f / std::sqrt(squares / dim + eps);
#pragma omp simd
    for (int64_t j = 0; j < dim; ++j) out[j] = (in[j] - mean) * rstd * gamma[j] + beta[j];
    mean_out[row] = mean;
    rstd_out[row] = rstd;
  });
  return 0;
}

// LayerNormBackward(dy, x, mean, rstd, gamma) -> dx, dgamma, dbeta
int LayerNormBackward(int, void **params, int *ndims, int64_t **shapes, const char **, void *, void *) {
  const float *dy = static_cast<const float *>(params[0]);
  const float *x = static_cast<const float *>(params[1]);
  const float *mean = static_cast<const float *>(params[2]);
  const float *rstd = static_cast<const float *>(params[3]);
  const float *gamma = static_cast<const float *>(params[4]);
  float *dx = static_cast<float *>(params[5]);
  float *dgamma = static_cast<float *>(params[6]);
  float *dbeta = static_cast<float *>(params[7]);
  const int64_t dim = NumElements(ndims[4], shapes[4]);
  const int64_t rows = NumElements(ndims[0], shapes[0]) / dim;
  const int64_t blocks = (rows + kRowsPerBlock - 1) / kRowsPerBlock;
  std::vector<float> block_dgamma(blocks * dim, 0.0f), block_dbeta(blocks * dim, 0.0f);
  ParallelFor(blocks, kRowsPerBlock * dim, [&](int64_t block) {
    float *part_dgamma = block_dgamma.data() + block * dim;
    float *part_dbeta = block_dbeta.data() + block * dim;
    const int64_t end = std::min(rows, (block + 1) * kRowsPerBlock);
    for (int64_t row = block * kRowsPerBlock; row < end; ++row) {
      const float *in = x + row * dim;
      const float *grad = dy + row * dim;
      float *grad_in = dx + row * dim;
      const float mu = mean[row], r = rstd[row];
      float sum_g = 0.0f, sum_gx = 0.0f;
#pragma omp simd reduction(+ : sum_g, sum_gx)
      for (int64_t j = 0; j < dim; ++j) {
        const float xhat = (in[j] - mu) * r;
        const float g = grad[j] * gamma[j];
        sum_g += g;
        sum_gx += g * xhat;
        part_dgamma[j] += grad[j] * xhat;
        part_dbeta[j] += grad[j];
      }
      const float mean_g = sum_g / dim, mean_gx = sum_gx / dim;
#pragma omp simd
      for (int64_t j = 0; j < dim; ++j) {
        const float xhat = (in[j] - mu) * r;
        grad_in[j] = r * (grad[j] * gamma[j] - mean_g - xhat * mean_gx);
      }
    }
  });
  SumBlocks(block_dgamma.data(), blocks, dim, dgamma);
  SumBlocks(block_dbeta.data(), blocks, dim, dbeta);
  return 0;
}

}  // extern "C"

namespace {

// GroupNorm of x (B, G, C / G, S), then ReLU when `relu`: y, mean (B, G), rstd (B, G). The statistics take
// one pass (sums of x and x^2 in double, which keeps E[x^2] - mean^2 exact enough for float32 data).
void GroupNormForwardImpl(void **params, int64_t **shapes, bool relu) {
  const float *x = static_cast<const float *>(params[0]);
  const float *gamma = static_cast<const float *>(params[1]);
  const float *beta = static_cast<const float *>(params[2]);
  const float eps = *static_cast<const float *>(params[3]);
  float *y = static_cast<float *>(params[4]);
  float *mean_out = static_cast<float *>(params[5]);
  float *rstd_out = static_cast<float *>(params[6]);
  const int64_t groups = shapes[0][1], group_channels = shapes[0][2], spatial = shapes[0][3];
  const int64_t size = group_channels * spatial;
  const float floor = relu ? 0.0f : -INFINITY;
  ParallelFor(shapes[0][0] * groups, size, [&](int64_t index) {
    const float *in = x + index * size;
    double sum = 0.0, squares = 0.0;
#pragma omp simd reduction(+ : sum, squares)
    for (int64_t i = 0; i < size; ++i) {
      sum += in[i];
      squares += static_cast<double>(in[i]) * in[i];
    }
    const double mean = sum / size;
    const double var = std::max(squares / size - mean * mean, 0.0);
    const float rstd = static_cast<float>(1.0 / std::sqrt(var + eps));
    const int64_t first_channel = (index % groups) * group_channels;
    for (int64_t k = 0; k < group_channels; ++k) {
      const float scale = rstd * gamma[first_channel + k];
      const float shift = beta[first_channel + k] - static_cast<float>(mean) * scale;
      const float *in_channel = in + k * spatial;
      float *out_channel = y + index * size + k * spatial;
#pragma omp simd
      for (int64_t s = 0; s < spatial; ++s) {
        const float value = in_channel[s] * scale + shift;
        out_channel[s] = value < floor ? floor : value;  // (std::max kept this loop scalar)
      }
    }
    mean_out[index] = static_cast<float>(mean);
    rstd_out[index] = rstd;
  });
}

// dx, dgamma, dbeta of GroupNorm from dy, x, mean, rstd, gamma (params[0..4]); with `relu`, of GroupNorm +
// ReLU, whose output is params[5] (dy counts where it is positive)
void GroupNormBackwardImpl(void **params, int64_t **shapes, bool relu) {
  const float *dy = static_cast<const float *>(params[0]);
  const float *x = static_cast<const float *>(params[1]);
  const float *mean = static_cast<const float *>(params[2]);
  const float *rstd = static_cast<const float *>(params[3]);
  const float *gamma = static_cast<const float *>(params[4]);
  const float *y = relu ? static_cast<const float *>(params[5]) : nullptr;
  float *dx = static_cast<float *>(params[relu ? 6 : 5]);
  float *dgamma = static_cast<float *>(params[relu ? 7 : 6]);
  float *dbeta = static_cast<float *>(params[relu ? 8 : 7]);
  const int64_t batch = shapes[0][0], groups = shapes[0][1], group_channels = shapes[0][2];
  const int64_t spatial = shapes[0][3];
  const int64_t size = group_channels * spatial;
  const int64_t channels = groups * group_channels;
  // per (sample, channel): sum of dy and of dy * xhat; summed over the batch in order at the end
  std::vector<float> sample_dgamma(batch * channels), sample_dbeta(batch * channels);
  ParallelFor(batch * groups, size, [&](int64_t index) {
    const int64_t sample = index / groups, first_channel = (index % groups) * group_channels;
    const float mu = mean[index], r = rstd[index];
    // dy through the ReLU: dy where the output is positive, else 0
    std::vector<float> masked(relu ? size : 0);
    const float *grads = dy + index * size;
    if (relu) {
      const float *out = y + index * size;
#pragma omp simd
      for (int64_t i = 0; i < size; ++i) masked[i] = out[i] > 0.0f ? grads[i] : 0.0f;
      grads = masked.data();
    }
    double sum_g = 0.0, sum_gx = 0.0;
    for (int64_t k = 0; k < group_channels; ++k) {
      const float *in = x + index * size + k * spatial;
      const float *grad = grads + k * spatial;
      double sum_dy = 0.0, sum_dy_x = 0.0;
#pragma omp simd reduction(+ : sum_dy, sum_dy_x)
      for (int64_t s = 0; s < spatial; ++s) {
        sum_dy += grad[s];
        sum_dy_x += grad[s] * in[s];
      }
      const int64_t channel = first_channel + k;
      const double channel_dgamma = (sum_dy_x - mu * sum_dy) * r;  // sum of dy * xhat
      sample_dgamma[sample * channels + channel] = static_cast<float>(channel_dgamma);
      sample_dbeta[sample * channels + channel] = static_cast<float>(sum_dy);
      sum_g += gamma[channel] * sum_dy;
      sum_gx += gamma[channel] * channel_dgamma;
    }
    const float mean_g = static_cast<float>(sum_g / size), mean_gx = static_cast<float>(sum_gx / size);
    for (int64_t k = 0; k < group_channels; ++k) {
      const float *in = x + index * size + k * spatial;
      const float *grad = grads + k * spatial;
      float *grad_in = dx + index * size + k * spatial;
      const float g = gamma[first_channel + k];
#pragma omp simd
      for (int64_t s = 0; s < spatial; ++s) {
        grad_in[s] = r * (grad[s] * g - mean_g - (in[s] - mu) * r * mean_gx);
      }
    }
  });
  SumBlocks(sample_dgamma.data(), batch, channels, dgamma);
  SumBlocks(sample_dbeta.data(), batch, channels, dbeta);
}

}  // namespace

extern "C" {

// GroupNormForward(x (B, G, C / G, S), gamma (C), beta (C), eps (1)) -> y, mean (B, G), rstd (B, G)
int GroupNormForward(int, void **params, int *, int64_t **shapes, const char **, void *, void *) {
  GroupNormForwardImpl(params, shapes, false);
  return 0;
}

// GroupNormBackward(dy, x, mean, rstd, gamma) -> dx, dgamma, dbeta (x, dy as in the forward)
int GroupNormBackward(int, void **params, int *, int64_t **shapes, const char **, void *, void *) {
  GroupNormBackwardImpl(params, shapes, false);
  return 0;
}

// GroupNormReluForward(x, gamma, beta, eps) -> relu(GroupNorm), mean, rstd (as GroupNormForward)
int GroupNormReluForward(int, void **params, int *, int64_t **shapes, const char **, void *, void *) {
  GroupNormForwardImpl(params, shapes, true);
  return 0;
}

// GroupNormReluBackward(dy, x, mean, rstd, gamma, y) -> dx, dgamma, dbeta; y: the forward's output
int GroupNormReluBackward(int, void **params, int *, int64_t **shapes, const char **, void *, void *) {
  GroupNormBackwardImpl(params, shapes, true);
  return 0;
}

}  // extern "C"
