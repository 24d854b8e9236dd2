// exp for float32 kernels whose loops must vectorise (GELU, softmax), shared by cpu_kernels.cc and
// cpu_attention_kernels.cc.
#ifndef SRC_OPS_CSRC_FAST_EXP_H_
#define SRC_OPS_CSRC_FAST_EXP_H_

#include <cstdint>

namespace {

// exp, branch-free so that loops over it vectorise (GELU's and softmax's arguments): 2^n * p(r) with
// x = n ln2 + r, |r| <= ln2 / 2, p a degree-6 Taylor polynomial (relative error < 2e-7 on that range).
inline float FastExp(float x) {
  x = x < -87.0f ? -87.0f : x;  // (std::fmax keeps loops from vectorising)
  constexpr float kRound = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer, and vectorises
  const float n = (x * 1.44269504f + kRound) - kRound;
  const float r = x - n * 0.693359375f + n * 2.12194440e-4f;  // ln2 split in two for an exact n * ln2
  float p = 1.0f / 720;
  p = p * r + 1.0f / 120;
  p = p * r + 1.0f / 24;
  p = p * r + 1.0f / 6;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  return p * __builtin_bit_cast(float, (static_cast<int32_t>(n) + 127) << 23);
}

}  // namespace

#endif  // SRC_OPS_CSRC_FAST_EXP_H_
