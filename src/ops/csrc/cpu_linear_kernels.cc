// A linear layer's matrix products (y = x w^T and its two gradients) for MindSpore's Custom "aot" ops (see
// cpu_kernels.py), with the sgemm of the oneDNN library MindSpore ships. MindSpore 2.10's CPU MatMul took 1.3x
// to 2.5x PyTorch's time on a ViT's shapes, most of all for the gradients (bench/matmul.py). That library runs
// single-threaded here (its threadpool runtime gets no pool), so each product is split into spans of its
// output, one per thread; every output element is computed by one thread, in the same order whatever the
// number of threads.
//
// Inputs: x (M, K), weight (N, K) as nn.Dense's; LinearForward gives y (M, N), LinearBackward takes dy (M, N),
// x and weight and gives dx (M, K) and dweight (N, K).
#include <algorithm>
#include <cstdint>

#include "onednn.h"
#include "parallel.h"

namespace {

constexpr int64_t kSpanAlign = 16;  // output rows / columns per unit of work: one AVX-512 vector of floats

// Row-major C (m x n) = op(A) op(B), op(X) = X or X^T as trans is 'N' or 'T': the larger of C's dimensions is
// split into spans, one sgemm per thread.
void ParallelSgemm(char trans_a, char trans_b, int64_t m, int64_t n, int64_t k, const float *a, const float *b,
                   float *c) {
  const int64_t lda = trans_a == 'N' ? k : m, ldb = trans_b == 'N' ? n : k;
  const bool split_rows = m >= n;
  const int64_t units = ((split_rows ? m : n) + kSpanAlign - 1) / kSpanAlign;
  const int64_t unit_work = kSpanAlign * (split_rows ? n : m) * k;
  ParallelRanges(units, unit_work, [&](int64_t begin, int64_t end) {
    const int64_t first = begin * kSpanAlign;
    const int64_t count = std::min(end * kSpanAlign, split_rows ? m : n) - first;
    if (count <= 0) return;
    if (split_rows) {
      const float *a_span = trans_a == 'N' ? a + first * lda : a + first;
      dnnl_sgemm(trans_a, trans_b, count, n, k, 1.0f, a_span, lda, b, ldb, 0.0f, c + first * n, n);
    } else {
      const float *b_span = trans_b == 'N' ? b + first : b + first * ldb;
      dnnl_sgemm(trans_a, trans_b, m, count, k, 1.0f, a, lda, b_span, ldb, 0.0f, c + first, n);
    }
  });
}

}  // namespace

extern "C" {

// params: x (M, K), weight (N, K) | y (M, N)
int LinearForward(int, void **params, int *, int64_t **shapes, const char **, void *, void *) {
  const int64_t m = shapes[0][0], k = shapes[0][1], n = shapes[1][0];
  ParallelSgemm('N', 'T', m, n, k, static_cast<const float *>(params[0]), static_cast<const float *>(params[1]),
                static_cast<float *>(params[2]));
  return 0;
}

// params: dy (M, N), x (M, K), weight (N, K) | dx (M, K), dweight (N, K)
int LinearBackward(int, void **params, int *, int64_t **shapes, const char **, void *, void *) {
  const int64_t m = shapes[0][0], n = shapes[0][1], k = shapes[1][1];
  const float *dy = static_cast<const float *>(params[0]);
  ParallelSgemm('N', 'N', m, k, n, dy, static_cast<const float *>(params[2]), static_cast<float *>(params[3]));
  ParallelSgemm('T', 'N', n, k, m, dy, static_cast<const float *>(params[1]), static_cast<float *>(params[4]));
  return 0;
}

}  // extern "C"
