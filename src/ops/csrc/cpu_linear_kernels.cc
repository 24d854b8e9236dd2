// A linear layer's matrix products (y = x w^T and its two gradients) for MindSpore's Custom "aot" ops (see
// cpu_kernels.py), with the sgemm of the oneDNN library MindSpore ships. MindSpore 2.10's CPU MatMul took 1.3x
// to 2.5x PyTorch's time on a ViT's shapes, most of all for the gradients (bench/matmul.py). The output and the
// input's gradient run oneDNN's threaded sgemm on our threads (onednn::SpawnedThreads), which splits the work its
// own way. The weight's and the bias's gradients, sums over the rows, are instead split into spans of their
// output, one per thread, so that every element is computed by one thread in the same order whatever the number
// of threads: the gradients are the same on any number of cores.
//
// Inputs: x (M, K), weight (N, K) and bias (N) as nn.Dense's; LinearForward gives y (M, N), LinearBackward takes
// dy (M, N), x and weight and gives dx (M, K) and dweight (N, K); the LinearBias kernels also add the bias and give
// its gradient.
#include <algorithm>
#include <cstdint>
#include <vector>

#include "onednn.h"
#include "parallel.h"

namespace {

constexpr int64_t kSpanAlign = 16;  // output rows / columns per unit of work: one AVX-512 vector of floats

// Row-major C (m x n) = op(A) op(B) (+ bias (n) on every row, when given), op(X) = X or X^T as trans is 'N' or
// 'T', by oneDNN's sgemm threaded over our threads (faster on a ViT's layers than SpanSgemm's one single-threaded
// sgemm per span: bench/matmul.py)
void ThreadedSgemm(char trans_a, char trans_b, int64_t m, int64_t n, int64_t k, const float *a, const float *b,
                   float *c, const float *bias = nullptr) {
  static onednn::SpawnedThreads threads;
  static thread_local const int concurrency = dnnl_threadpool_interop_set_max_concurrency(NumThreads());
  (void)concurrency;  // (thread-local) the calling thread's work is split for our threads
  const int64_t lda = trans_a == 'N' ? k : m, ldb = trans_b == 'N' ? n : k;
  dnnl_threadpool_interop_sgemm(trans_a, trans_b, m, n, k, 1.0f, a, lda, b, ldb, 0.0f, c, n, &threads);
  if (bias == nullptr) return;
  ParallelRanges(m, n, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) c[i * n + j] += bias[j];
    }
  });
}

// C = op(A) op(B) as ThreadedSgemm (no bias), the larger of C's dimensions split into spans, one single-threaded
// sgemm per thread: each element of C from one thread, in an order that does not depend on the thread count
void SpanSgemm(char trans_a, char trans_b, int64_t m, int64_t n, int64_t k, const float *a, const float *b,
               float *c) {
  const int64_t lda = trans_a == 'N' ? k : m, ldb = trans_b == 'N' ? n : k;
  const bool split_rows = m >= n;
  const int64_t units = ((split_rows ? m : n) + kSpanAlign - 1) / kSpanAlign;
  const int64_t unit_work = kSpanAlign * (split_rows ? n : m) * k;
  ParallelRanges(units, unit_work, [&](int64_t begin, int64_t end) {
    const int64_t first = begin * kSpanAlign;
    const int64_t count = std::min(end * kSpanAlign, split_rows ? m : n) - first;
    if (count <= 0) return;
    float *c_span = split_rows ? c + first * n : c + first;
    if (split_rows) {
      const float *a_span = trans_a == 'N' ? a + first * lda : a + first;
      dnnl_sgemm(trans_a, trans_b, count, n, k, 1.0f, a_span, lda, b, ldb, 0.0f, c_span, n);
    } else {
      const float *b_span = trans_b == 'N' ? b + first : b + first * ldb;
      dnnl_sgemm(trans_a, trans_b, m, count, k, 1.0f, a, lda, b_span, ldb, 0.0f, c_span, n);
    }
  });
}

// dx (M, K) and dweight (N, K) of y = x weight^T from dy (M, N); with dbias, also dy summed over its rows (a
// product with ones, split as dweight's)
void LinearGradients(int64_t m, int64_t n, int64_t k, const float *dy, const float *x, const float *weight,
                     float *dx, float *dweight, float *dbias) {
  ThreadedSgemm('N', 'N', m, k, n, dy, weight, dx);
  SpanSgemm('T', 'N', n, k, m, dy, x, dweight);
  if (dbias == nullptr) return;
  const std::vector<float> ones(m, 1.0f);
  SpanSgemm('N', 'N', 1, n, m, ones.data(), dy, dbias);
}

}  // namespace

extern "C" {

// params: x (M, K), weight (N, K) | y (M, N)
int LinearForward(int, void **params, int *, int64_t **shapes, const char **, void *, void *) {
  ThreadedSgemm('N', 'T', shapes[0][0], shapes[1][0], shapes[0][1], static_cast<const float *>(params[0]),
                static_cast<const float *>(params[1]), static_cast<float *>(params[2]));
  return 0;
}

// params: x (M, K), weight (N, K), bias (N) | y (M, N)
int LinearBiasForward(int, void **params, int *, int64_t **shapes, const char **, void *, void *) {
  ThreadedSgemm('N', 'T', shapes[0][0], shapes[1][0], shapes[0][1], static_cast<const float *>(params[0]),
                static_cast<const float *>(params[1]), static_cast<float *>(params[3]),
                static_cast<const float *>(params[2]));
  return 0;
}

// params: dy (M, N), x (M, K), weight (N, K) | dx (M, K), dweight (N, K)
int LinearBackward(int, void **params, int *, int64_t **shapes, const char **, void *, void *) {
  LinearGradients(shapes[0][0], shapes[0][1], shapes[1][1], static_cast<const float *>(params[0]),
                  static_cast<const float *>(params[1]), static_cast<const float *>(params[2]),
                  static_cast<float *>(params[3]), static_cast<float *>(params[4]), nullptr);
  return 0;
}

// params: dy (M, N), x (M, K), weight (N, K), bias (N) | dx (M, K), dweight (N, K), dbias (N)
int LinearBiasBackward(int, void **params, int *, int64_t **shapes, const char **, void *, void *) {
  LinearGradients(shapes[0][0], shapes[0][1], shapes[1][1], static_cast<const float *>(params[0]),
                  static_cast<const float *>(params[1]), static_cast<const float *>(params[2]),
                  static_cast<float *>(params[4]), static_cast<float *>(params[5]), static_cast<float *>(params[6]));
  return 0;
}

}  // extern "C"
