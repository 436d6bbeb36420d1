// 16-float vectors for the few kernels jitfuse writes itself (Winograd transforms, add+LayerNorm,
// the dynamic int8 linears' row passes).
// GCC compiles their arithmetic to one AVX-512, two AVX2 or four SSE instructions per operation in
// the clone of each function marked JITFUSE_CLONES, picked at load time for the CPU at hand.
// bfloat16 data is widened on load and rounded to nearest even on store; arithmetic is float32.
#pragma once

#include <algorithm>
#include <bit>
#include <cstdint>
#include <cstring>

#define JITFUSE_CLONES [[gnu::target_clones("avx512f", "avx2", "default")]]

namespace jitfuse::vec {

constexpr int64_t kLanes = 16;
using Vec = float __attribute__((vector_size(kLanes * sizeof(float))));
using Bits = uint32_t __attribute__((vector_size(kLanes * sizeof(uint32_t))));
using Ints = int32_t __attribute__((vector_size(kLanes * sizeof(int32_t))));
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
// The bits of floats as integers, and back.
[[gnu::always_inline]] inline Ints bits_of(Vec v) { return std::bit_cast<Ints>(v); }
[[gnu::always_inline]] inline Vec float_of(Ints b) { return std::bit_cast<Vec>(b); }
[[gnu::always_inline]] inline int32_t bits_of(float x) { return std::bit_cast<int32_t>(x); }
[[gnu::always_inline]] inline float float_of(int32_t b) { return std::bit_cast<float>(b); }
// max(v, 0) lane-wise; NaN stays NaN, as aten::relu. Integer operations only: GCC 12 turns a
// comparison of 16-lane float vectors into 16 scalar steps on AVX2, integer ones it splits into
// two native halves.
[[gnu::always_inline]] inline Vec relu(Vec v) {
  const Ints bits = bits_of(v);
  const Ints nan = (bits & 0x7FFFFFFF) > 0x7F800000;  // all ones for NaN
  return float_of(bits & ~((bits >> 31) & ~nan));      // negative numbers (and -0) to +0
}

// GELU, erf form: x Phi(x) = 0.5 x + 0.5 |x| erf(|x| / sqrt 2), the erf by a rational function
// fitted for it by scripts/fit_gelu_erf.py (a P(a^2) / Q(a^2), a = |x|, weighted least squares
// toward minimax on [0, 5.2]; beyond, erf is 1 within 2e-7). Error against float64: below 8.5e-7
// absolute, 2e-7 relative for x > 0 (with FMA; 1.2e-6 and 2.8e-7 without), against ATen's float32
// erf GELU's 1.5e-7 absolute in erf. It costs about 2/3 of ATen's on AVX-512: no exp, no table, one division.
// No comparisons: GCC splits those of 16-lane vectors into scalars on AVX2. NaN stays NaN,
// -inf gives NaN (as ATen).
[[gnu::always_inline]] inline Vec gelu_erf(Vec x) {
  const Vec h = 0.5f * x;
  const Vec abs_h = float_of(bits_of(h) & 0x7FFFFFFF);
  const Vec a = abs_h + abs_h, t = a * a;
  const Vec p = ((((4.946212683876183e-08f * t + 1.2815767149731982e-05f) * t + 3.137235180474818e-04f) * t +
                  9.217292070388794e-03f) * t + 6.5089151263237e-02f) * t + 0.7978845238685608f;
  const Vec q = ((((1.258866291209415e-06f * t + 7.04961275914684e-05f) * t + 1.8172034760937095e-03f) * t +
                  2.7926700189709663e-02f) * t + 0.24824349582195282f) * t + 1.f;
  const Vec erf = a * p / q;
  // erf where a < 5.2, else 1: a >= 0, so its bits order as integers and the sign of their
  // difference is the comparison.
  constexpr int32_t kLimitBits = 0x40A66666;  // 5.2f
  const Ints inside = (bits_of(a) - kLimitBits) >> 31;
  const Vec e = float_of((bits_of(erf) & inside) | (0x3F800000 & ~inside));  // 0x3F800000: 1.0f
  return h + abs_h * e;
}

// An integer that orders as the float of `bits` does (NaN aside); the mapping is its own inverse.
// Floats are compared through it: GCC 12 splits a comparison of 16-lane float vectors into 16
// scalar steps on AVX2, integer ones into two native halves.
[[gnu::always_inline]] inline Ints order_key(Ints b) { return b ^ ((b >> 31) & 0x7FFFFFFF); }
[[gnu::always_inline]] inline int32_t order_key(float x) { return bits_of(x) ^ ((bits_of(x) >> 31) & 0x7FFFFFFF); }
[[gnu::always_inline]] inline float from_order_key(int32_t key) { return float_of(key ^ ((key >> 31) & 0x7FFFFFFF)); }
[[gnu::always_inline]] inline Ints max(Ints a, Ints b) { return a > b ? a : b; }

// exp(x) for the x <= 0 of a softmax, within 2 ulp (Cody-Waite reduction to |r| <= ln2 / 2, a
// degree-7 polynomial). Below -87, where exp leaves float32's normal range, it gives exp(-87)
// (1.6e-38): against the row maximum's exp(0) = 1 in the sum, nothing. A NaN may come out as a
// number: callers check for NaN themselves.
[[gnu::always_inline]] inline Vec exp_nonpositive(Vec x) {
  const Ints lowest = Ints{} + order_key(-87.f);
  x = float_of(order_key(max(order_key(bits_of(x)), lowest)));
  constexpr float kShift = 12582912.f;  // 1.5 * 2^23: adding it rounds to an integer
  const Vec t = x * 1.44269504088896341f + kShift;
  const Vec n = t - kShift;
  const Ints exponent = bits_of(t) - bits_of(kShift);  // n as an integer
  Vec r = x - n * 0.693359375f;  // ln 2 in two parts: the first exact in n * part
  r = r - n * -2.12194440e-4f;
  Vec p = 1.9875691500e-4f * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const Vec e = p * (r * r) + r + 1.f;
  return e * float_of((exponent + 127) << 23);  // * 2^n
}

// Lanes [0, valid) of a vector: all ones, the rest zero.
[[gnu::always_inline]] inline Ints first_lanes(int64_t valid) {
  Ints lane;
  for (int l = 0; l < kLanes; ++l) lane[l] = l;
  return lane < static_cast<int32_t>(valid);
}

// The lanes' sum, halves added pairwise: 4 vector steps instead of 15 dependent scalar additions.
[[gnu::always_inline]] inline float sum(Vec v) {
  using Vec8 = float __attribute__((vector_size(8 * sizeof(float))));
  using Vec4 = float __attribute__((vector_size(4 * sizeof(float))));
  const Vec8 a = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7) +
                 __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
  const Vec4 b = __builtin_shufflevector(a, a, 0, 1, 2, 3) + __builtin_shufflevector(a, a, 4, 5, 6, 7);
  return (b[0] + b[2]) + (b[1] + b[3]);
}
// The lanes' largest value.
[[gnu::always_inline]] inline int32_t max(Ints v) {
  using Ints8 = int32_t __attribute__((vector_size(8 * sizeof(int32_t))));
  using Ints4 = int32_t __attribute__((vector_size(4 * sizeof(int32_t))));
  const Ints8 h0 = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7),
              h1 = __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
  const Ints8 a = h0 > h1 ? h0 : h1;
  const Ints4 b0 = __builtin_shufflevector(a, a, 0, 1, 2, 3), b1 = __builtin_shufflevector(a, a, 4, 5, 6, 7);
  const Ints4 b = b0 > b1 ? b0 : b1;
  return std::max(std::max(b[0], b[1]), std::max(b[2], b[3]));
}

}  // namespace jitfuse::vec
