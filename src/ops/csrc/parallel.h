// Parallel loops for the kernels in this folder: plain threads, started per call and joined. An OpenMP
// team spins between kernels and took the cores from MindSpore's own thread pool (a tiny ViT's train step
// ran 350 ms instead of 200 ms); OpenMP is used for `simd` pragmas only.
#ifndef SRC_OPS_CSRC_PARALLEL_H_
#define SRC_OPS_CSRC_PARALLEL_H_

#include <sched.h>

#include <algorithm>
#include <cstdint>
#include <thread>
#include <vector>

namespace {

constexpr int64_t kMinElementsPerThread = 16384;

int NumThreads() {
  static const int threads = [] {
    cpu_set_t cpus;
    return sched_getaffinity(0, sizeof(cpus), &cpus) == 0 ? CPU_COUNT(&cpus)
                                                          : static_cast<int>(std::thread::hardware_concurrency());
  }();
  return std::max(threads, 1);
}

// How many threads share n items of `item_size` elements: at least kMinElementsPerThread elements each.
int64_t NumSpans(int64_t n, int64_t item_size) {
  const int64_t most = std::max<int64_t>(1, std::min<int64_t>(NumThreads(), n));
  return std::clamp<int64_t>(n * item_size / kMinElementsPerThread, 1, most);
}

// Runs body(begin, end) on NumSpans contiguous spans of [0, n), one per thread.
template <typename Body>
void ParallelRanges(int64_t n, int64_t item_size, Body body) {
  const int64_t threads = NumSpans(n, item_size);
  std::vector<std::thread> workers;
  for (int64_t t = 1; t < threads; ++t) workers.emplace_back(body, n * t / threads, n * (t + 1) / threads);
  body(0, n / threads);
  for (auto &worker : workers) worker.join();
}

// Runs body(i) for every i in [0, n), in parallel (see ParallelRanges).
template <typename Body>
void ParallelFor(int64_t n, int64_t item_size, Body body) {
  ParallelRanges(n, item_size, [&body](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) body(i);
  });
}

}  // namespace

#endif  // SRC_OPS_CSRC_PARALLEL_H_
