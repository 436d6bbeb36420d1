// quantize_per_tensor / dequantize_per_tensor on plain uint8/int8 tensors: the reference graph's
// conversions of activations (and what runs where no int8 op took them), one vectorized pass each.
// (Weights are dequantized with stock ops, aten::dequantize(int8) * scales: aten::dequantize is on
// constant propagation's skip list, so freezing keeps a constant int8 weight int8; an op of ours
// would be folded back into a float weight.) Schemas at the bottom.
#include "ops/quantize.h"

#include "ops/allocator.h"
#include "ops/cpu.h"
#include "ops/vec.h"

#include <ATen/Parallel.h>
#include <c10/util/accumulate.h>
#include <torch/library.h>

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

namespace jitfuse::quantize {
namespace {

using vec::Ints;
using vec::kLanes;
using vec::load;
using vec::Vec;
using U8 = uint8_t __attribute__((vector_size(kLanes)));
using S8 = int8_t __attribute__((vector_size(kLanes)));

// Round half to even, exact for |v| < 2^22 (callers clamp first): what std::nearbyint does.
[[gnu::always_inline]] inline Vec round_even(Vec v) {
  const float magic = 12582912.f;  // 1.5 * 2^23
  return (v + magic) - magic;
}
[[gnu::always_inline]] inline float round_even(float v) { return std::nearbyint(v); }

[[gnu::always_inline]] inline Vec clamp(Vec v, float lo, float hi) {
  v = v < lo ? Vec{} + lo : v;
  return v > hi ? Vec{} + hi : v;
}

// One value of quantize_span: the clamp before rounding keeps round_even exact, the one after
// lands in [lo, hi]. The scalar tail of both builds.
template <class Q>
[[gnu::always_inline]] inline Q quantize_one(float x, float inv_scale, float zero_point, float lo, float hi) {
  return static_cast<Q>(
      std::clamp(round_even(std::clamp(x * inv_scale, lo - zero_point - 1, hi - zero_point + 1)) + zero_point, lo, hi));
}

template <class Q, class QV>
[[gnu::always_inline]] inline void quantize_span(const float* x, int64_t n, float inv_scale,
                                                 float zero_point, float lo, float hi, Q* q) {
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    const Vec v = clamp(round_even(clamp(load(x + i) * inv_scale, lo - zero_point - 1, hi - zero_point + 1)) + zero_point, lo, hi);
    const QV out = __builtin_convertvector(__builtin_convertvector(v, Ints), QV);
    __builtin_memcpy(q + i, &out, sizeof out);
  }
  for (; i < n; ++i) q[i] = quantize_one<Q>(x[i], inv_scale, zero_point, lo, hi);
}

template <class Q, class QV>
[[gnu::always_inline]] inline void dequantize_span(const Q* q, int64_t n, float scale, float zero_point, float* x) {
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    QV in;
    __builtin_memcpy(&in, q + i, sizeof in);
    vec::store(x + i, (__builtin_convertvector(in, Vec) - zero_point) * scale);
  }
  for (; i < n; ++i) x[i] = (static_cast<float>(q[i]) - zero_point) * scale;
}

JITFUSE_CLONES
void quantize_u8(const float* x, int64_t n, float inv_scale, float zp, uint8_t* q) {
  quantize_span<uint8_t, U8>(x, n, inv_scale, zp, 0.f, 255.f, q);
}
JITFUSE_CLONES
void quantize_s8(const float* x, int64_t n, float inv_scale, float zp, int8_t* q) {
  quantize_span<int8_t, S8>(x, n, inv_scale, zp, -128.f, 127.f, q);
}
JITFUSE_CLONES
void dequantize_u8(const uint8_t* q, int64_t n, float scale, float zp, float* x) {
  dequantize_span<uint8_t, U8>(q, n, scale, zp, x);
}
JITFUSE_CLONES
void dequantize_s8(const int8_t* q, int64_t n, float scale, float zp, float* x) {
  dequantize_span<int8_t, S8>(q, n, scale, zp, x);
}

// The scalar pieces of a row's quantization, shared by both builds of it. A row's parameters:
// its minimum and maximum (zero included) over 255 steps.
struct RowScale {
  float scale, inv, zero_point;
};
[[gnu::always_inline]] inline RowScale row_scale(float row_lo, float row_hi) {
  const float scale = row_hi > row_lo ? (row_hi - row_lo) / 255.f : 1.f;
  const float inv = 1.f / scale;
  return {scale, inv, std::clamp(std::nearbyint(-row_lo * inv), 0.f, 255.f)};
}
// Columns [j, k) of the first pass: smoothed into out[0, k - j), the range widened.
template <class T>
[[gnu::always_inline]] inline void smooth_columns(const T* x, const float* inv_smooth, int64_t j, int64_t k,
                                                  float* out, float& row_lo, float& row_hi) {
  for (; j < k; ++j, ++out) {
    *out = vec::widen(x[j]) * (inv_smooth ? inv_smooth[j] : 1.f);
    row_lo = std::min(row_lo, *out);
    row_hi = std::max(row_hi, *out);
  }
}
// Columns [j, k) of the second pass: the smoothed values[0, k - j) into q[j, k).
[[gnu::always_inline]] inline void quantize_columns(const float* values, int64_t j, int64_t k, const RowScale& p,
                                                    uint8_t* q) {
  for (; j < k; ++j, ++values)
    q[j] = static_cast<uint8_t>(std::clamp(std::nearbyint(*values * p.inv + p.zero_point), 0.f, 255.f));
}

// One row: x_k * inv_smooth_k quantized to uint8 with the row's own scale and zero point. The
// values land in [0, 255] by construction; the clamp only guards rounding at the ends.
template <class T>
[[gnu::always_inline]] inline void quantize_row(const T* x, const float* inv_smooth, int64_t k, float* scratch,
                                                uint8_t* q, float* scale_out, float* zero_point_out) {
  Vec lo{}, hi{};
  float row_lo = 0.f, row_hi = 0.f;
  const int64_t body = k - k % kLanes;
  for (int64_t j = 0; j < body; j += kLanes) {
    Vec v = load(x + j);
    if (inv_smooth) v *= load(inv_smooth + j);
    vec::store(scratch + j, v);
    lo = v < lo ? v : lo;
    hi = v > hi ? v : hi;
  }
  smooth_columns(x, inv_smooth, body, k, scratch + body, row_lo, row_hi);
  for (int64_t l = 0; l < kLanes; ++l) {
    row_lo = std::min(row_lo, lo[l]);
    row_hi = std::max(row_hi, hi[l]);
  }
  const RowScale p = row_scale(row_lo, row_hi);
  for (int64_t j = 0; j < body; j += kLanes) {
    const Vec v = clamp(round_even(load(scratch + j) * p.inv + p.zero_point), 0.f, 255.f);
    const U8 out = __builtin_convertvector(__builtin_convertvector(v, Ints), U8);
    __builtin_memcpy(q + j, &out, sizeof out);
  }
  quantize_columns(scratch + body, body, k, p, q);
  *scale_out = p.scale;
  *zero_point_out = p.zero_point;
}

JITFUSE_CLONES
void quantize_rows(const float* x, const float* inv_smooth, int64_t begin, int64_t end, int64_t k,
                   float* scratch, uint8_t* q, float* scales, float* zero_points) {
  for (int64_t r = begin; r < end; ++r)
    quantize_row(x + r * k, inv_smooth, k, scratch, q + r * k, scales + r, zero_points + r);
}
JITFUSE_CLONES
void quantize_rows(const vec::bf16* x, const float* inv_smooth, int64_t begin, int64_t end, int64_t k,
                   float* scratch, uint8_t* q, float* scales, float* zero_points) {
  for (int64_t r = begin; r < end; ++r)
    quantize_row(x + r * k, inv_smooth, k, scratch, q + r * k, scales + r, zero_points + r);
}

// The AVX2 build of quantize_row, in 8-lane intrinsics: GCC 12 compiles the 16-lane comparisons
// above (the row's minimum and maximum, the clamp) to 16 scalar steps each on AVX2, 21x slower
// than on AVX-512. Same values as the AVX-512 build bit for bit (FMA where it contracts).
[[gnu::target("avx2,fma")]] inline __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
[[gnu::target("avx2,fma")]] inline __m256 load8(const vec::bf16* p) {
  const __m256i wide = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16));
}

template <class T>
[[gnu::target("avx2,fma")]] void quantize_rows_avx2(const T* x, const float* inv_smooth, int64_t begin, int64_t end,
                                                    int64_t k, float* scratch, uint8_t* q, float* scales,
                                                    float* zero_points) {
  const int64_t body = k - k % 8;
  for (int64_t r = begin; r < end; ++r) {
    const T* row = x + r * k;
    __m256 lo = _mm256_setzero_ps(), hi = _mm256_setzero_ps();
    for (int64_t j = 0; j < body; j += 8) {
      __m256 v = load8(row + j);
      if (inv_smooth) v = _mm256_mul_ps(v, _mm256_loadu_ps(inv_smooth + j));
      _mm256_storeu_ps(scratch + j, v);
      lo = _mm256_min_ps(v, lo);  // v < lo ? v : lo, as the generic code: NaN leaves lo
      hi = _mm256_max_ps(v, hi);
    }
    float row_lo = 0.f, row_hi = 0.f;
    smooth_columns(row, inv_smooth, body, k, scratch + body, row_lo, row_hi);
    alignas(32) float lanes_lo[8], lanes_hi[8];
    _mm256_store_ps(lanes_lo, lo);
    _mm256_store_ps(lanes_hi, hi);
    for (int l = 0; l < 8; ++l) {
      row_lo = std::min(row_lo, lanes_lo[l]);
      row_hi = std::max(row_hi, lanes_hi[l]);
    }
    const RowScale p = row_scale(row_lo, row_hi);
    const __m256 inv8 = _mm256_set1_ps(p.inv), zp8 = _mm256_set1_ps(p.zero_point), magic = _mm256_set1_ps(12582912.f);
    const __m256 top = _mm256_set1_ps(255.f);
    uint8_t* out = q + r * k;
    for (int64_t j = 0; j < body; j += 8) {
      __m256 v = _mm256_fmadd_ps(_mm256_loadu_ps(scratch + j), inv8, zp8);
      v = _mm256_sub_ps(_mm256_add_ps(v, magic), magic);  // round half to even
      v = _mm256_min_ps(top, _mm256_max_ps(_mm256_setzero_ps(), v));  // NaN stays NaN (then 0), as above
      const __m256i ints = _mm256_cvttps_epi32(v);
      const __m128i halves = _mm_packus_epi32(_mm256_castsi256_si128(ints), _mm256_extracti128_si256(ints, 1));
      _mm_storel_epi64(reinterpret_cast<__m128i*>(out + j), _mm_packus_epi16(halves, halves));
    }
    quantize_columns(scratch + body, body, k, p, out);
    scales[r] = p.scale;
    zero_points[r] = p.zero_point;
  }
}

// The AVX-512 build of quantize_row, the dynamic linears' hot path. A row of 384 takes 24 vectors
// per pass but about 150 cycles of scalar work between the passes (its range, two divisions), so
// rows go in groups: the first pass of 8 rows, their 8 scales, then their second passes, the
// scalar chains overlapping. Nothing goes through scratch: the second pass reads the row again
// (from L1) and smooths it again, the same product. Its loop is five instructions per 16 values
// (clamping before rounding is the same as after, the bounds being integers). Same values as the
// generic build bit for bit.
[[gnu::target("avx512f")]] inline __m512 load16(const float* p) { return _mm512_loadu_ps(p); }
[[gnu::target("avx512f")]] inline __m512 load16(const vec::bf16* p) {
  const __m512i wide = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  return _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16));
}
template <class T>
[[gnu::target("avx512f")]] inline __m512 smoothed16(const T* row, const float* inv_smooth, int64_t j) {
  const __m512 v = load16(row + j);
  return inv_smooth ? _mm512_mul_ps(v, _mm512_loadu_ps(inv_smooth + j)) : v;
}

template <class T>
[[gnu::target("avx512f")]] void quantize_rows_avx512(const T* x, const float* inv_smooth, int64_t begin, int64_t end,
                                                     int64_t k, uint8_t* q, float* scales, float* zero_points) {
  constexpr int64_t kGroup = 8;
  const int64_t body = k - k % 16;
  for (int64_t first = begin; first < end; first += kGroup) {
    const int64_t count = std::min(kGroup, end - first);
    RowScale p[kGroup];
    float tail[kGroup][16];  // the last k % 16 columns, smoothed
    for (int64_t i = 0; i < count; ++i) {
      const T* row = x + (first + i) * k;
      __m512 lo = _mm512_setzero_ps(), hi = _mm512_setzero_ps();
      for (int64_t j = 0; j < body; j += 16) {
        const __m512 v = smoothed16(row, inv_smooth, j);
        lo = _mm512_min_ps(v, lo);  // v < lo ? v : lo, as the generic code: NaN leaves lo
        hi = _mm512_max_ps(v, hi);
      }
      float row_lo = 0.f, row_hi = 0.f;
      smooth_columns(row, inv_smooth, body, k, tail[i], row_lo, row_hi);
      // Lanes hold no NaN and no -0 (min and max keep the +0 they start from), so the order of
      // the reduction cannot change the result.
      row_lo = std::min(row_lo, _mm512_reduce_min_ps(lo));
      row_hi = std::max(row_hi, _mm512_reduce_max_ps(hi));
      p[i] = row_scale(row_lo, row_hi);
    }
    for (int64_t i = 0; i < count; ++i) {
      const T* row = x + (first + i) * k;
      const __m512 inv16 = _mm512_set1_ps(p[i].inv), zp16 = _mm512_set1_ps(p[i].zero_point);
      const __m512 bottom = _mm512_setzero_ps(), top = _mm512_set1_ps(255.f);
      uint8_t* out = q + (first + i) * k;
      for (int64_t j = 0; j < body; j += 16) {
        __m512 v = _mm512_fmadd_ps(smoothed16(row, inv_smooth, j), inv16, zp16);
        v = _mm512_min_ps(_mm512_max_ps(v, bottom), top);  // NaN becomes 0, as the generic conversion makes it
        const __m512i ints = _mm512_cvt_roundps_epi32(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        _mm_storeu_si128(reinterpret_cast<__m128i*>(out + j), _mm512_cvtepi32_epi8(ints));
      }
      quantize_columns(tail[i], body, k, p[i], out);
      scales[first + i] = p[i].scale;
      zero_points[first + i] = p[i].zero_point;
    }
  }
}

// The AVX2 build of quantize_span (per-tensor quantization), for the same reason. Same values
// as the generic build bit for bit: the same clamps (NaN passes them, as there), the low byte of
// each int32 as the generic conversion truncates.
template <class Q>
[[gnu::target("avx2,fma")]] void quantize_span_avx2(const float* x, int64_t n, float inv_scale, float zero_point,
                                                    float lo, float hi, Q* q) {
  const __m256 inv = _mm256_set1_ps(inv_scale), zp = _mm256_set1_ps(zero_point), magic = _mm256_set1_ps(12582912.f);
  const __m256 pre_lo = _mm256_set1_ps(lo - zero_point - 1), pre_hi = _mm256_set1_ps(hi - zero_point + 1);
  const __m256 out_lo = _mm256_set1_ps(lo), out_hi = _mm256_set1_ps(hi);
  // In each 128-bit half: bytes 0, 4, 8, 12 (each int32's low byte) to the first 4 places.
  const __m256i low_bytes = _mm256_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
                                             0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 v = _mm256_mul_ps(_mm256_loadu_ps(x + i), inv);
    v = _mm256_min_ps(pre_hi, _mm256_max_ps(pre_lo, v));
    v = _mm256_add_ps(_mm256_sub_ps(_mm256_add_ps(v, magic), magic), zp);
    v = _mm256_min_ps(out_hi, _mm256_max_ps(out_lo, v));
    const __m256i bytes = _mm256_shuffle_epi8(_mm256_cvttps_epi32(v), low_bytes);
    const int32_t first = _mm256_extract_epi32(bytes, 0), second = _mm256_extract_epi32(bytes, 4);
    std::memcpy(q + i, &first, 4);
    std::memcpy(q + i + 4, &second, 4);
  }
  for (; i < n; ++i) q[i] = quantize_one<Q>(x[i], inv_scale, zero_point, lo, hi);
}

// Which build of a quantizer runs: the row quantizer's AVX-512 one where the CPU has AVX-512, the
// AVX2 one where it has AVX2 and FMA but not AVX-512 (or where a test asks for either), else the
// cloned generic one.
enum class Build { native, avx512, avx2, generic };
bool avx2_build_available() { return cpu::has_avx2_fma(); }
bool use_avx2(Build build) {
  static const bool preferred = avx2_build_available() && !cpu::has_avx512f();
  return build == Build::avx2 || (build == Build::native && preferred);
}
// Only the row quantizer has an AVX-512 build; elsewhere the generic one is AVX-512 code already.
bool avx512_build_available() { return cpu::has_avx512f(); }
bool use_avx512(Build build) { return build == Build::avx512 || (build == Build::native && avx512_build_available()); }
// A test op's `kernel` argument: "generic", "avx2", or (`avx512_too`) "avx512".
Build parse_build(const char* op, c10::string_view name, bool avx512_too = false) {
  const bool known = name == "avx2" || name == "generic" || (avx512_too && name == "avx512");
  TORCH_CHECK(known, "jitfuse ", op, ": kernel must be ", avx512_too ? "'avx512', " : "", "'avx2' or 'generic'");
  TORCH_CHECK(name != "avx2" || avx2_build_available(), "jitfuse ", op, ": this CPU has no AVX2 and FMA");
  TORCH_CHECK(name != "avx512" || avx512_build_available(), "jitfuse ", op, ": this CPU has no AVX-512");
  return name == "avx2" ? Build::avx2 : name == "avx512" ? Build::avx512 : Build::generic;
}

}  // namespace

bool is_int8_type(at::ScalarType t) { return t == at::kByte || t == at::kChar; }

std::pair<int64_t, int64_t> int8_range(at::ScalarType t) {
  return t == at::kByte ? std::pair<int64_t, int64_t>{0, 255} : std::pair<int64_t, int64_t>{-128, 127};
}

void check_parameters(const char* op, const char* what, double scale, int64_t zero_point, at::ScalarType dtype) {
  TORCH_CHECK(is_int8_type(dtype), "jitfuse ", op, ": ", what, "dtype must be torch.uint8 or torch.int8, got ", dtype);
  TORCH_CHECK(std::isfinite(scale) && scale > 0, "jitfuse ", op, ": ", what, "scale must be positive and finite, got ",
              scale);
  const auto [lo, hi] = int8_range(dtype);
  TORCH_CHECK(zero_point >= lo && zero_point <= hi, "jitfuse ", op, ": ", what, "zero point ", zero_point,
              " is out of range for ", dtype);
}

namespace {

at::Tensor per_tensor_with(const at::Tensor& x_in, double scale, int64_t zero_point, at::ScalarType dtype,
                           Build build) {
  check_parameters("quantize_per_tensor", "", scale, zero_point, dtype);
  TORCH_CHECK(x_in.device().is_cpu() && x_in.layout() == at::kStrided && x_in.is_floating_point(),
              "jitfuse quantize_per_tensor: expected a floating point CPU tensor, got ", x_in.scalar_type());
  const auto format = x_in.suggest_memory_format();
  const at::Tensor x = x_in.to(at::kFloat).contiguous(format);
  at::Tensor q = memory::empty(x.sizes(), x.options().dtype(dtype), format);
  const float inv = 1.f / static_cast<float>(scale), zp = static_cast<float>(zero_point);
  const float* src = x.data_ptr<float>();
  at::parallel_for(0, x.numel(), 1 << 14, [&](int64_t begin, int64_t end) {
    if (use_avx2(build) && dtype == at::kByte)
      quantize_span_avx2(src + begin, end - begin, inv, zp, 0.f, 255.f, q.data_ptr<uint8_t>() + begin);
    else if (use_avx2(build))
      quantize_span_avx2(src + begin, end - begin, inv, zp, -128.f, 127.f, q.data_ptr<int8_t>() + begin);
    else if (dtype == at::kByte)
      quantize_u8(src + begin, end - begin, inv, zp, q.data_ptr<uint8_t>() + begin);
    else
      quantize_s8(src + begin, end - begin, inv, zp, q.data_ptr<int8_t>() + begin);
  });
  return q;
}

}  // namespace

at::Tensor per_tensor(const at::Tensor& x, double scale, int64_t zero_point, at::ScalarType dtype) {
  return per_tensor_with(x, scale, zero_point, dtype, Build::native);
}

at::Tensor dequantize(const at::Tensor& q_in, double scale, int64_t zero_point) {
  TORCH_CHECK(q_in.device().is_cpu() && q_in.layout() == at::kStrided && is_int8_type(q_in.scalar_type()),
              "jitfuse dequantize: expected a uint8 or int8 CPU tensor, got ", q_in.scalar_type());
  check_parameters("dequantize", "", scale, zero_point, q_in.scalar_type());
  const auto format = q_in.suggest_memory_format();
  const at::Tensor q = q_in.contiguous(format);
  at::Tensor x = memory::empty(q.sizes(), q.options().dtype(at::kFloat), format);
  const float s = static_cast<float>(scale), zp = static_cast<float>(zero_point);
  float* dst = x.data_ptr<float>();
  at::parallel_for(0, q.numel(), 1 << 14, [&](int64_t begin, int64_t end) {
    if (q.scalar_type() == at::kByte)
      dequantize_u8(q.data_ptr<uint8_t>() + begin, end - begin, s, zp, dst + begin);
    else
      dequantize_s8(q.data_ptr<int8_t>() + begin, end - begin, s, zp, dst + begin);
  });
  return x;
}

namespace {

// Rows [begin, end) of a contiguous (rows, k) x of float32 or bf16 (`bf16` set instead of x32).
void quantize_range(const float* x32, const vec::bf16* bf16, int64_t k, const float* s, int64_t begin, int64_t end,
                    Build build, Rows& out) {
  std::vector<float> scratch(use_avx512(build) ? 0 : k);  // the AVX-512 build needs none
  auto* q = out.values.data_ptr<uint8_t>();
  auto* scales = out.scales.data_ptr<float>();
  auto* zps = out.zero_points.data_ptr<float>();
  if (use_avx512(build) && x32)
    quantize_rows_avx512(x32, s, begin, end, k, q, scales, zps);
  else if (use_avx512(build))
    quantize_rows_avx512(bf16, s, begin, end, k, q, scales, zps);
  else if (use_avx2(build) && x32)
    quantize_rows_avx2(x32, s, begin, end, k, scratch.data(), q, scales, zps);
  else if (use_avx2(build))
    quantize_rows_avx2(bf16, s, begin, end, k, scratch.data(), q, scales, zps);
  else if (x32)
    quantize_rows(x32, s, begin, end, k, scratch.data(), q, scales, zps);
  else
    quantize_rows(bf16, s, begin, end, k, scratch.data(), q, scales, zps);
}

Rows per_row_with(const at::Tensor& x_in, const at::Tensor& inv_smooth, Build build) {
  TORCH_CHECK(x_in.scalar_type() == at::kFloat || x_in.scalar_type() == at::kBFloat16,
              "jitfuse: expected a float32 or bfloat16 activation, got ", x_in.scalar_type());
  const int64_t k = x_in.size(-1);
  const at::Tensor x = x_in.contiguous();
  const at::Tensor inv = inv_smooth.defined() ? inv_smooth.to(at::kFloat).contiguous() : at::Tensor();
  TORCH_CHECK(!inv.defined() || inv.numel() == k, "jitfuse: expected ", k, " smoothing factors, got ", inv.numel());
  const int64_t rows = k ? x.numel() / k : 0;
  Rows out = empty_rows(x.sizes(), x.options());
  const float* s = inv.defined() ? inv.data_ptr<float>() : nullptr;
  const auto* bf16 = reinterpret_cast<const vec::bf16*>(x.data_ptr());
  const auto* x32 = x.scalar_type() == at::kFloat ? x.data_ptr<float>() : nullptr;
  at::parallel_for(0, rows, std::max<int64_t>(1, 8192 / std::max<int64_t>(k, 1)), [&](int64_t begin, int64_t end) {
    quantize_range(x32, x32 ? nullptr : bf16, k, s, begin, end, build, out);
  });
  return out;
}

}  // namespace

Rows per_row(const at::Tensor& x, const at::Tensor& inv_smooth) { return per_row_with(x, inv_smooth, Build::native); }

Rows empty_rows(at::IntArrayRef sizes, const at::TensorOptions& options) {
  const int64_t k = sizes.empty() ? 1 : sizes.back();
  const int64_t rows = k ? c10::multiply_integers(sizes) / k : 0;
  const auto f32 = options.dtype(at::kFloat);
  return {memory::empty(sizes, options.dtype(at::kByte)), memory::empty({rows}, f32), memory::empty({rows}, f32)};
}

void per_row_range(const float* x, int64_t k, const float* inv_smooth, int64_t begin, int64_t end, Rows& out) {
  quantize_range(x, nullptr, k, inv_smooth, begin, end, Build::native, out);
}

namespace {

at::Tensor quantize_per_tensor_op(const at::Tensor& x, double scale, int64_t zero_point, at::ScalarType dtype) {
  return per_tensor(x, scale, zero_point, dtype);
}

at::Tensor dequantize_per_tensor_op(const at::Tensor& q, double scale, int64_t zero_point) {
  return dequantize(q, scale, zero_point);
}

// For tests: the quantizers with a chosen build ("avx2", "generic"; rows also "avx512"), to compare
// them on one machine.
std::tuple<at::Tensor, at::Tensor, at::Tensor> quantize_rows_op(const at::Tensor& x, const std::optional<at::Tensor>& inv_smooth,
                                                                c10::string_view kernel) {
  auto rows = per_row_with(x, inv_smooth ? *inv_smooth : at::Tensor(), parse_build("_quantize_rows", kernel, /*avx512_too=*/true));
  return {rows.values, rows.scales, rows.zero_points};
}
at::Tensor quantize_per_tensor_build_op(const at::Tensor& x, double scale, int64_t zero_point, at::ScalarType dtype,
                                        c10::string_view kernel) {
  return per_tensor_with(x, scale, zero_point, dtype, parse_build("_quantize_per_tensor", kernel));
}

}  // namespace
}  // namespace jitfuse::quantize

TORCH_LIBRARY_FRAGMENT(jitfuse, m) {
  using namespace jitfuse::quantize;
  m.def("quantize_per_tensor(Tensor x, float scale, int zero_point, ScalarType dtype) -> Tensor",
        torch::dispatch(c10::DispatchKey::CPU, TORCH_FN(quantize_per_tensor_op)));
  m.def("dequantize_per_tensor(Tensor q, float scale, int zero_point) -> Tensor",
        torch::dispatch(c10::DispatchKey::CPU, TORCH_FN(dequantize_per_tensor_op)));
  m.def("_quantize_rows(Tensor x, Tensor? inv_smooth, str kernel) -> (Tensor, Tensor, Tensor)",
        torch::dispatch(c10::DispatchKey::CPU, TORCH_FN(quantize_rows_op)));
  m.def("_quantize_per_tensor(Tensor x, float scale, int zero_point, ScalarType dtype, str kernel) -> Tensor",
        torch::dispatch(c10::DispatchKey::CPU, TORCH_FN(quantize_per_tensor_build_op)));
}
