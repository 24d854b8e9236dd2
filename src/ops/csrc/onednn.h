// The parts of oneDNN's (v3) C API that cpu_conv_kernels.cc and cpu_linear_kernels.cc use, declared here because
// MindSpore ships its libdnnl.so.3 without headers (handles are opaque; enum values are those of
// oneapi/dnnl/dnnl_types.h), and the thread pool they give it.
#ifndef SRC_OPS_CSRC_ONEDNN_H_
#define SRC_OPS_CSRC_ONEDNN_H_

#include <cstddef>
#include <cstdint>
#include <functional>

#include "parallel.h"

extern "C" {
struct dnnl_engine;
struct dnnl_stream;
struct dnnl_memory_desc;
struct dnnl_memory;
struct dnnl_primitive_desc;
struct dnnl_primitive;
struct dnnl_primitive_attr;
struct dnnl_exec_arg_t {
  int arg;
  dnnl_memory *memory;
};
int dnnl_engine_create(dnnl_engine **engine, int kind, size_t index);
int dnnl_stream_destroy(dnnl_stream *stream);
int dnnl_stream_wait(dnnl_stream *stream);
int dnnl_memory_desc_create_with_strides(dnnl_memory_desc **md, int ndims, const int64_t *dims, int data_type,
                                         const int64_t *strides);
int dnnl_memory_desc_create_with_tag(dnnl_memory_desc **md, int ndims, const int64_t *dims, int data_type, int tag);
int dnnl_memory_desc_destroy(dnnl_memory_desc *md);
int dnnl_memory_desc_equal(const dnnl_memory_desc *lhs, const dnnl_memory_desc *rhs);
size_t dnnl_memory_desc_get_size(const dnnl_memory_desc *md);
int dnnl_memory_create(dnnl_memory **memory, const dnnl_memory_desc *md, dnnl_engine *engine, void *handle);
int dnnl_memory_destroy(dnnl_memory *memory);
int dnnl_primitive_attr_create(dnnl_primitive_attr **attr);
int dnnl_primitive_attr_destroy(dnnl_primitive_attr *attr);
int dnnl_primitive_attr_set_scratchpad_mode(dnnl_primitive_attr *attr, int mode);
int dnnl_convolution_forward_primitive_desc_create(dnnl_primitive_desc **pd, dnnl_engine *engine, int prop_kind,
                                                   int alg_kind, const dnnl_memory_desc *src,
                                                   const dnnl_memory_desc *weights, const dnnl_memory_desc *bias,
                                                   const dnnl_memory_desc *dst, const int64_t *strides,
                                                   const int64_t *dilates, const int64_t *padding_l,
                                                   const int64_t *padding_r, const dnnl_primitive_attr *attr);
int dnnl_convolution_backward_data_primitive_desc_create(dnnl_primitive_desc **pd, dnnl_engine *engine, int alg_kind,
                                                         const dnnl_memory_desc *diff_src,
                                                         const dnnl_memory_desc *weights,
                                                         const dnnl_memory_desc *diff_dst, const int64_t *strides,
                                                         const int64_t *dilates, const int64_t *padding_l,
                                                         const int64_t *padding_r, const dnnl_primitive_desc *hint,
                                                         const dnnl_primitive_attr *attr);
int dnnl_convolution_backward_weights_primitive_desc_create(
    dnnl_primitive_desc **pd, dnnl_engine *engine, int alg_kind, const dnnl_memory_desc *src,
    const dnnl_memory_desc *diff_weights, const dnnl_memory_desc *diff_bias, const dnnl_memory_desc *diff_dst,
    const int64_t *strides, const int64_t *dilates, const int64_t *padding_l, const int64_t *padding_r,
    const dnnl_primitive_desc *hint, const dnnl_primitive_attr *attr);
int dnnl_reorder_primitive_desc_create(dnnl_primitive_desc **pd, const dnnl_memory_desc *src, dnnl_engine *src_engine,
                                       const dnnl_memory_desc *dst, dnnl_engine *dst_engine,
                                       const dnnl_primitive_attr *attr);
const dnnl_memory_desc *dnnl_primitive_desc_query_md(const dnnl_primitive_desc *pd, int what, int index);
int dnnl_primitive_desc_destroy(dnnl_primitive_desc *pd);
int dnnl_primitive_create(dnnl_primitive **primitive, const dnnl_primitive_desc *pd);
int dnnl_primitive_destroy(dnnl_primitive *primitive);
int dnnl_primitive_execute(const dnnl_primitive *primitive, dnnl_stream *stream, int nargs,
                           const dnnl_exec_arg_t *args);
// row-major C (m x n) = alpha op(A) op(B) + beta C, op(X) = X or X^T as trans is 'N' or 'T'
int dnnl_sgemm(char transa, char transb, int64_t m, int64_t n, int64_t k, float alpha, const float *a, int64_t lda,
               const float *b, int64_t ldb, float beta, float *c, int64_t ldc);
// sgemm as dnnl_sgemm, its work split over the threads of `threadpool` (a dnnl::threadpool_interop::threadpool_iface)
int dnnl_threadpool_interop_sgemm(char transa, char transb, int64_t m, int64_t n, int64_t k, float alpha,
                                  const float *a, int64_t lda, const float *b, int64_t ldb, float beta, float *c,
                                  int64_t ldc, void *threadpool);
// a stream whose primitives run on `threadpool` (a dnnl::threadpool_interop::threadpool_iface)
int dnnl_threadpool_interop_stream_create(dnnl_stream **stream, dnnl_engine *engine, void *threadpool);
// the concurrency oneDNN assumes for primitives built on the calling thread (thread-local)
int dnnl_threadpool_interop_set_max_concurrency(int max_concurrency);
}

namespace dnnl::threadpool_interop {
// The interface through which the library's threadpool runtime runs its parallel loops
// (include/dnnl_threadpool_iface.hpp): called through its virtual table, so the declaration order is the ABI.
struct threadpool_iface {
  virtual int get_num_threads() const = 0;
  virtual bool get_in_parallel() const = 0;
  virtual void parallel_for(int n, const std::function<void(int, int)> &fn) = 0;  // fn(i, n) for i < n
  virtual uint64_t get_flags() const = 0;  // 0: parallel_for returns when every fn(i, n) has
  virtual ~threadpool_iface() {}
};
}  // namespace dnnl::threadpool_interop

namespace onednn {
constexpr int kCpuEngine = 1;
constexpr int kFloat32 = 3;
constexpr int kAnyFormat = 1;
constexpr int kForwardTraining = 64;
constexpr int kConvolutionDirect = 0x1;
constexpr int kUserScratchpad = 1;
// dnnl_query_t: memory descriptors of a primitive descriptor
constexpr int kQuerySrc = 129, kQueryDiffSrc = 130, kQueryWeights = 131, kQueryDiffWeights = 132;
constexpr int kQueryDst = 133, kQueryDiffDst = 134, kQueryScratchpad = 136;
// DNNL_ARG_*: execution arguments (a reorder reads SRC and writes DST)
constexpr int kArgSrc = 1, kArgDst = 17, kArgWeights = 33, kArgScratchpad = 80;
constexpr int kArgDiffSrc = 129, kArgDiffDst = 145, kArgDiffWeights = 161;

// oneDNN's parallel loops on threads started per loop, as the other kernels' (parallel.h): MindSpore's oneDNN has
// the threadpool runtime, single-threaded unless given a pool
class SpawnedThreads final : public dnnl::threadpool_interop::threadpool_iface {
 public:
  int get_num_threads() const override { return NumThreads(); }
  bool get_in_parallel() const override { return in_parallel_; }
  void parallel_for(int n, const std::function<void(int, int)> &fn) override {
    if (in_parallel_) {
      for (int i = 0; i < n; ++i) fn(i, n);
      return;
    }
    ParallelRanges(n, kMinElementsPerThread, [&](int64_t begin, int64_t end) {
      in_parallel_ = true;
      for (int64_t i = begin; i < end; ++i) fn(static_cast<int>(i), n);
      in_parallel_ = false;
    });
  }
  uint64_t get_flags() const override { return 0; }

 private:
  static inline thread_local bool in_parallel_ = false;
};
}  // namespace onednn

#endif  // SRC_OPS_CSRC_ONEDNN_H_
