// 16-float vectors for the few kernels jitfuse writes itself (Winograd transforms, add+LayerNorm).
// GCC compiles their arithmetic to one AVX-512, two AVX2 or four SSE instructions per operation in
// the clone of each function marked JITFUSE_CLONES, picked at load time for the CPU at hand.
// bfloat16 data is widened on load and rounded to nearest even on store; arithmetic is float32.
#pragma once

#include <cstdint>
#include <cstring>

#define JITFUSE_CLONES [[gnu::target_clones("avx512f", "avx2", "default")]]

namespace jitfuse::vec {

constexpr int64_t kLanes = 16;
using Vec = float __attribute__((vector_size(kLanes * sizeof(float))));
using Bits = uint32_t __attribute__((vector_size(kLanes * sizeof(uint32_t))));
using Halves = uint16_t __attribute__((vector_size(kLanes * sizeof(uint16_t))));
using bf16 = uint16_t;  // bfloat16 storage

[[gnu::always_inline]] inline Vec load(const float* p) {
  Vec v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
[[gnu::always_inline]] inline void store(float* p, Vec v) { std::memcpy(p, &v, sizeof v); }
[[gnu::always_inline]] inline Vec load(const bf16* p) {
  Halves h;
  std::memcpy(&h, p, sizeof h);
  const Bits b = __builtin_convertvector(h, Bits) << 16;
  Vec v;
  std::memcpy(&v, &b, sizeof v);
  return v;
}
[[gnu::always_inline]] inline void store(bf16* p, Vec v) {
  Bits b;
  std::memcpy(&b, &v, sizeof b);
  b += 0x7FFF + ((b >> 16) & 1);
  const Halves h = __builtin_convertvector(b >> 16, Halves);
  std::memcpy(p, &h, sizeof h);
}
// One element, the same conversions.
[[gnu::always_inline]] inline float widen(float x) { return x; }
[[gnu::always_inline]] inline float widen(bf16 x) {
  const uint32_t b = uint32_t{x} << 16;
  float f;
  std::memcpy(&f, &b, sizeof f);
  return f;
}
[[gnu::always_inline]] inline void narrow(float* p, float x) { *p = x; }
[[gnu::always_inline]] inline void narrow(bf16* p, float x) {
  uint32_t b;
  std::memcpy(&b, &x, sizeof b);
  b += 0x7FFF + ((b >> 16) & 1);
  *p = static_cast<bf16>(b >> 16);
}
[[gnu::always_inline]] inline float sum(Vec v) {
  float s = 0.f;
  for (int64_t l = 0; l < kLanes; ++l) s += v[l];
  return s;
}

}  // namespace jitfuse::vec
