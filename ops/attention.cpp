// Attention as one op: softmax(q @ k^T * scale + mask) @ v, batched over the leading dims (float32,
// bfloat16), the context optionally written straight into [batch, seq, heads, dim] order
// (`heads_last`: what the graph's permute / transpose after attention would copy it into).
// Three implementations, chosen per call:
// - the direct kernel (below): one (batch, head) at a time on one thread, q, k and v read where
//   they lie (views of a fused QKV projection included), scores kept in the caches, float32
//   arithmetic. Used on AVX-512 CPUs where the primitives would compute in float32, for heads
//   up to 64 wide and up to 512 keys (direct::serves).
// - the packed kernel (namespace packed): the same walk with bf16 products, k and v packed once
//   per head into AMX's pair-interleaved layout, multiplied on the AMX tiles or, without AMX, by
//   AVX-512 bf16 dot products. Used for bf16 products on CPUs with either, heads up to 64 wide,
//   enough queries (64 on the tiles, 16 on vectors), up to 2048 keys (packed::serves).
// - three oneDNN primitives on head-major copies of q, k, v: a batched matmul writing float32
//   scores with the scale and the mask as post-ops, a softmax, and a batched matmul writing the
//   context. Used for bfloat16 where the kernels above do not serve (on CPUs with bf16 kernels
//   they multiply at twice the f32 rate).
// Schema at the bottom.
#include "ops/allocator.h"
#include "ops/cpu.h"
#include "ops/float_args.h"
#include "ops/onednn.h"
#include "ops/vec.h"

#include <ATen/Parallel.h>
#include <immintrin.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <utility>
#include <vector>

namespace jitfuse {
namespace {

// ---- the direct kernel -----------------------------------------------------------------------
namespace direct {

using vec::bf16;
using vec::bits_of;
using vec::float_of;
using vec::Ints;
using vec::kLanes;
using vec::load;
using vec::order_key;
using vec::store;
using vec::Vec;
using vec::widen;

// Where one (batch, head)'s operands lie, as element strides (the last dims of q and k any
// stride, of v and the output 1; mask rows are float32, contiguous along the keys).
struct Shape {
  int64_t lq, lk, d, dv;  // query rows, keys, q/k width, v width
  int64_t q_row, q_col, k_row, k_col, v_row, out_row, mask_row;
  int64_t ldk;  // lk rounded up to whole vectors: the row length of the packed k^T and the scores
  float scale;
};

constexpr int kRows = 4;  // query rows computed together (each k^T / v vector loaded once for them)
constexpr int kWide = 4;  // vectors per register block along the keys / the context's columns

// scores[r][c0 ...] = q[r] . k^T[:, c0 ...] for R query rows and W vectors of keys (softmax_row scales).
template <int R, int W, class T>
[[gnu::always_inline]] inline void score_block(const T* q, const Shape& s, const float* kt, int64_t c0,
                                               float* scores) {
  Vec acc[R][W] = {};
  for (int64_t e = 0; e < s.d; ++e) {
    Vec k[W];
    for (int w = 0; w < W; ++w) k[w] = load(kt + e * s.ldk + c0 + w * kLanes);
    for (int r = 0; r < R; ++r) {
      const float qe = widen(q[r * s.q_row + e * s.q_col]);
      for (int w = 0; w < W; ++w) acc[r][w] += qe * k[w];
    }
  }
  for (int r = 0; r < R; ++r)
    for (int w = 0; w < W; ++w) store(scores + r * s.ldk + c0 + w * kLanes, acc[r][w]);
}

// out[r][c0 ...] = inv_sum[r] * sum_j p[r][j] v[j][c0 ...] for R rows and W vectors of columns.
template <int R, int W, class T>
[[gnu::always_inline]] inline void context_block(const float* p, const T* v, const Shape& s, int64_t c0,
                                                 const float* inv_sum, T* out) {
  Vec acc[R][W] = {};
  for (int64_t j = 0; j < s.lk; ++j) {
    Vec x[W];
    for (int w = 0; w < W; ++w) x[w] = load(v + j * s.v_row + c0 + w * kLanes);
    for (int r = 0; r < R; ++r) {
      const float pj = p[r * s.ldk + j];
      for (int w = 0; w < W; ++w) acc[r][w] += pj * x[w];
    }
  }
  for (int r = 0; r < R; ++r)
    for (int w = 0; w < W; ++w) store(out + r * s.out_row + c0 + w * kLanes, acc[r][w] * inv_sum[r]);
}

// One row of scores: * scale + mask in place, then softmax's exp(x - max) into `probs` (float32:
// x itself; bf16: the AMX kernel's operand), padding lanes 0. Returns 1 / sum, or NaN when the row
// holds a NaN after the max is taken (then, as in ATen's softmax, every probability of the row
// is NaN: the context row, scaled by it, comes out all NaN).
template <class P>
[[gnu::always_inline]] inline float softmax_row(float* x, const float* mask, const Shape& s, P* probs) {
  const int64_t body = s.lk - s.lk % kLanes;
  const Ints tail_lanes = vec::first_lanes(s.lk - body);
  const float minus_inf = -std::numeric_limits<float>::infinity();
  Ints top = Ints{} + order_key(minus_inf);
  for (int64_t c = 0; c < s.ldk; c += kLanes) {
    Vec v = load(x + c) * s.scale;
    if (c < body) {
      if (mask) v += load(mask + c);
    } else {
      if (mask) {  // the mask row ends at lk: no whole-vector load past it
        float m[kLanes] = {};
        for (int64_t j = c; j < s.lk; ++j) m[j - c] = mask[j];
        v += load(m);
      }
      v = float_of((bits_of(v) & tail_lanes) | (bits_of(minus_inf) & ~tail_lanes));
    }
    store(x + c, v);
    top = vec::max(top, order_key(bits_of(v)));
  }
  const float row_max = vec::from_order_key(vec::max(top));
  Ints nan{};
  Vec total{};
  for (int64_t c = 0; c < s.ldk; c += kLanes) {
    const Vec v = load(x + c) - row_max;
    const Ints valid = c < body ? ~Ints{} : tail_lanes;
    nan |= ((bits_of(v) & 0x7FFFFFFF) > 0x7F800000) & valid;
    const Vec e = float_of(bits_of(vec::exp_nonpositive(v)) & valid);
    store(probs + c, e);
    total += e;
  }
  if (vec::max(nan & 1) != 0) return std::numeric_limits<float>::quiet_NaN();
  return 1.f / vec::sum(total);
}

template <int R, class T>
[[gnu::always_inline]] inline void attend_block(const T* q, const T* v, const float* mask, const Shape& s,
                                                const float* kt, float* scores, T* out) {
  // Blocks of up to kWide vectors: R x W independent sums hide the multiply-add latency.
  for (int64_t c0 = 0; c0 < s.ldk; c0 += kWide * kLanes) {
    switch (std::min<int64_t>(kWide, (s.ldk - c0) / kLanes)) {
      case 4: score_block<R, 4>(q, s, kt, c0, scores); break;
      case 3: score_block<R, 3>(q, s, kt, c0, scores); break;
      case 2: score_block<R, 2>(q, s, kt, c0, scores); break;
      default: score_block<R, 1>(q, s, kt, c0, scores); break;
    }
  }
  float inv_sum[R];
  for (int r = 0; r < R; ++r)
    inv_sum[r] = softmax_row(scores + r * s.ldk, mask ? mask + r * s.mask_row : nullptr, s, scores + r * s.ldk);
  const int64_t body = s.dv - s.dv % kLanes;
  for (int64_t c0 = 0; c0 < body; c0 += kWide * kLanes) {
    switch (std::min<int64_t>(kWide, (body - c0) / kLanes)) {
      case 4: context_block<R, 4>(scores, v, s, c0, inv_sum, out); break;
      case 3: context_block<R, 3>(scores, v, s, c0, inv_sum, out); break;
      case 2: context_block<R, 2>(scores, v, s, c0, inv_sum, out); break;
      default: context_block<R, 1>(scores, v, s, c0, inv_sum, out); break;
    }
  }
  for (int r = 0; r < R; ++r)
    for (int64_t c = body; c < s.dv; ++c) {  // columns past the last whole vector
      float acc = 0.f;
      for (int64_t j = 0; j < s.lk; ++j) acc += scores[r * s.ldk + j] * widen(v[j * s.v_row + c]);
      vec::narrow(out + r * s.out_row + c, acc * inv_sum[r]);
    }
}

// Query rows [begin, end) of one (batch, head). `kt` (d x ldk floats) holds k^T packed by
// pack_keys; `scores` has room for kRows rows of ldk.
template <class T>
[[gnu::always_inline]] inline void attend_rows_impl(const T* q, const T* v, const float* mask, T* out,
                                                    const Shape& s, int64_t begin, int64_t end,
                                                    const float* kt, float* scores) {
  for (int64_t i = begin; i < end; i += kRows) {
    const T* qi = q + i * s.q_row;
    const float* mi = mask ? mask + i * s.mask_row : nullptr;
    T* oi = out + i * s.out_row;
    switch (std::min<int64_t>(kRows, end - i)) {
      case 4: attend_block<4>(qi, v, mi, s, kt, scores, oi); break;
      case 3: attend_block<3>(qi, v, mi, s, kt, scores, oi); break;
      case 2: attend_block<2>(qi, v, mi, s, kt, scores, oi); break;
      default: attend_block<1>(qi, v, mi, s, kt, scores, oi); break;
    }
  }
}

template <class T>
[[gnu::always_inline]] inline void pack_keys_impl(const T* k, const Shape& s, float* kt) {
  for (int64_t j = 0; j < s.lk; ++j)  // along k's rows: they are what lies together
    for (int64_t e = 0; e < s.d; ++e) kt[e * s.ldk + j] = widen(k[j * s.k_row + e * s.k_col]);
  for (int64_t e = 0; e < s.d; ++e)
    for (int64_t j = s.lk; j < s.ldk; ++j) kt[e * s.ldk + j] = 0.f;
}

JITFUSE_CLONES
void attend_rows(const float* q, const float* v, const float* mask, float* out, const Shape& s,
                 int64_t begin, int64_t end, const float* kt, float* scores) {
  attend_rows_impl(q, v, mask, out, s, begin, end, kt, scores);
}
JITFUSE_CLONES
void attend_rows(const bf16* q, const bf16* v, const float* mask, bf16* out, const Shape& s,
                 int64_t begin, int64_t end, const float* kt, float* scores) {
  attend_rows_impl(q, v, mask, out, s, begin, end, kt, scores);
}
JITFUSE_CLONES
void pack_keys(const float* k, const Shape& s, float* kt) { pack_keys_impl(k, s, kt); }
JITFUSE_CLONES
void pack_keys(const bf16* k, const Shape& s, float* kt) { pack_keys_impl(k, s, kt); }

// Where the direct kernel beats the primitives (measured on AVX-512, Zen 5, 2 threads, float32):
// heads of up to 64 wide and up to 512 keys, 1.0-1.4x (the most with many small heads: 8 x 12
// heads of 48 x 32, 1.4x). With 128-wide heads its k^T and v leave the L1 cache: 0.8x. Only with
// AVX-512: its register blocks (up to 16 sums of 16 floats) need 32 vector registers; the AVX2
// clone (16 registers of 8 floats) spills most of them, and is unmeasured.
bool serves(int64_t d, int64_t dv, int64_t lk) {
  return cpu::has_avx512f() && d <= 64 && dv <= 64 && lk <= 512;
}

// The element offset of batch entry n (row-major over `sizes`) in a tensor of `strides`.
int64_t batch_offset(int64_t n, at::IntArrayRef sizes, at::IntArrayRef strides) {
  int64_t offset = 0;
  for (int64_t i = static_cast<int64_t>(sizes.size()) - 1; i >= 0; --i) {
    offset += n % sizes[i] * strides[i];
    n /= sizes[i];
  }
  return offset;
}

// A call's q, k, v, mask (float32, or undefined) and context view, and where head n (batch entry
// n over the leading dims) lies in each.
template <class T>
struct Operands {
  Operands(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask,
           const at::Tensor& out)
      : batch(q.sizes().slice(0, q.dim() - 2)), heads(c10::multiply_integers(batch)), q_(q), k_(k), v_(v),
        mask_(mask), out_(out) {}
  const T* q(int64_t n) const { return static_cast<const T*>(q_.data_ptr()) + offset(n, q_); }
  const T* k(int64_t n) const { return static_cast<const T*>(k_.data_ptr()) + offset(n, k_); }
  const T* v(int64_t n) const { return static_cast<const T*>(v_.data_ptr()) + offset(n, v_); }
  const float* mask(int64_t n) const { return mask_.defined() ? mask_.data_ptr<float>() + offset(n, mask_) : nullptr; }
  T* out(int64_t n) const { return static_cast<T*>(out_.data_ptr()) + offset(n, out_); }

  const at::IntArrayRef batch;  // the leading dims
  const int64_t heads;          // their product

 private:
  int64_t offset(int64_t n, const at::Tensor& t) const { return batch_offset(n, batch, t.strides()); }
  const at::Tensor &q_, &k_, &v_, &mask_, &out_;
};

// One head's Shape from the call's tensors (ldk: lk rounded up to whole vectors).
Shape shape_of(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask, float scale,
               const at::Tensor& out_view) {
  return {q.size(-2), k.size(-2), q.size(-1), v.size(-1), q.stride(-2), q.stride(-1), k.stride(-2),
          k.stride(-1), v.stride(-2), out_view.stride(-2), mask.defined() ? mask.stride(-2) : 0,
          (k.size(-2) + kLanes - 1) / kLanes * kLanes, scale};
}

// A call's tasks: each head's lq query rows in `per_head` runs of `rows` (a multiple of `block`),
// at least a few tasks per thread so that threads share small batches.
struct Tasks {
  int64_t per_head, rows;
};

Tasks split_rows(int64_t heads, int64_t lq, int64_t block) {
  const int64_t threads = at::get_num_threads(), blocks = (lq + block - 1) / block;
  const int64_t per_head = std::clamp<int64_t>((4 * threads + heads - 1) / heads, 1, blocks);
  const int64_t rows = (blocks + per_head - 1) / per_head * block;
  return {(lq + rows - 1) / rows, rows};
}

// q, k, v of one dtype T (float or bf16); mask float32 of the scores' shape (expanded, its last
// dim dense) or undefined; out_view of the context's shape (its last dim dense).
template <class T>
void attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask,
               float scale, const at::Tensor& out_view) {
  const Operands<T> at_head(q, k, v, mask, out_view);
  Shape s = shape_of(q, k, v, mask, scale, out_view);
  // Rows a multiple of 1 KB apart fall into few cache sets: a column of k^T would evict
  // itself. One vector more breaks the pattern.
  if (s.ldk % 256 == 0) s.ldk += kLanes;
  const Tasks tasks = split_rows(at_head.heads, s.lq, kRows);
  const int64_t per_head = tasks.per_head, rows = tasks.rows;
  static std::atomic<int64_t> calls{0};
  const int64_t call = calls++;  // which call packed a thread's k^T
  at::parallel_for(0, at_head.heads * per_head, 1, [&](int64_t first, int64_t last) {
    thread_local std::vector<float> kt, scores;
    thread_local std::pair<int64_t, int64_t> packed{-1, -1};  // (call, head) whose k^T kt holds
    kt.resize(s.d * s.ldk);
    scores.resize(kRows * s.ldk);
    for (int64_t task = first; task < last; ++task) {
      const int64_t n = task / per_head, begin = task % per_head * rows, end = std::min(s.lq, begin + rows);
      if (packed != std::pair{call, n}) {
        pack_keys(at_head.k(n), s, kt.data());
        packed = {call, n};
      }
      attend_rows(at_head.q(n), at_head.v(n), at_head.mask(n), at_head.out(n), s, begin, end, kt.data(),
                  scores.data());
    }
  });
}

}  // namespace direct

// ---- the packed kernel: bf16 products on AMX tiles or AVX-512 bf16 dot products ----------------
// bf16 products, the direct kernel's float32 softmax between them. Per (batch, head), k and v are
// packed once per thread into the AMX tiles' pair-interleaved operand layout; then per block of 16
// query rows: scores = q k^T (16 x lk float32, in the caches), scale, mask and softmax, the
// probabilities rounded to bf16, context = p v, scaled by 1 / sum. The products run on the tiles
// (Engine::tiles), or where the CPU has no AMX as AVX-512 bf16 dot products on the same packed
// operands (Engine::vectors: a packed tile's row is, for 16 columns, the pair vdpbf16ps multiplies).
// oneDNN's three primitives compute the same in the same precision, with a call, a head-major copy
// of q, k, v and a scores round trip through memory per step: 1.7x slower on BERT-base's heads
// (AMX, 2 threads).
namespace packed {

enum class Engine { tiles, vectors };

using vec::bf16;

constexpr int64_t kRows = 16;       // query rows per block: an accumulator tile's rows
constexpr int64_t kCols = 16;       // float32 columns of an accumulator tile
constexpr int64_t kDepth = 32;      // bf16 values one tile row multiplies (16 pairs)
constexpr int64_t kTileSize = 512;  // bf16 values of one 16 x 64-byte operand tile
constexpr int64_t kGroup = 4;       // accumulator tiles of context columns computed together

int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// Whether this process may run the engine: the tiles granted by Linux, or AVX-512 bf16.
bool available(Engine e) { return e == Engine::tiles ? cpu::amx_tiles_granted() : cpu::has_avx512_bf16(); }

// Where it pays, against the primitives on the same bf16 products (q, k, v views of a QKV
// projection, 2 threads): 64-wide heads of enough queries and up to 2048 keys. With fewer queries,
// packing k and v per head costs more than it saves; wider heads lose a little.
// - tiles (Xeon with AMX): >= 64 queries, 1.1-1.8x (BERT-base: 1.8x at batch 1, 1.25x at batch 8);
//   1 query: 0.6x; 128-wide heads of 256: 0.9x.
// - vectors (AMD EPYC Zen 5, AVX-512 bf16, no AMX): >= 16 queries, 1.1-2.3x (BERT-base: 1.4x at
//   batch 1, 1.75x at batch 8; 12 heads of 16 x 128: 1.25x); 1 query of 512 keys: 0.5x; 80- and
//   128-wide heads of 128: 0.8-0.9x.
bool serves(Engine e, int64_t lq, int64_t d, int64_t dv, int64_t lk) {
  const int64_t min_queries = e == Engine::tiles ? 64 : 16;
  return available(e) && lq >= min_queries && d <= 64 && dv <= 64 && lk <= 2048;
}

// One head's shape: the direct kernel's Shape (ldk: lk rounded to 16, the scores' row) and the
// padded sizes of the packed operands.
struct Plan {
  direct::Shape s;
  int64_t dp, lkp, dvp;  // d and lk rounded to 32 (products' depth), dv to 16 (tile columns)
};

Plan plan_for(const direct::Shape& s) {
  Plan p{s, round_up(s.d, kDepth), round_up(s.lk, kDepth), round_up(s.dv, kCols)};
  p.s.ldk = round_up(s.lk, kCols);
  return p;
}

// Both engines' code: the compiler never emits tile or bf16 instructions of its own accord, so the
// vector engine compiled with them runs on CPUs without AMX.
#define JITFUSE_PACKED [[gnu::target("avx512f,avx512bw,avx512bf16,amx-tile,amx-bf16")]]

// n values of a row (elements `stride` apart) as bf16 into dst, zeros up to `padded`.
template <class T>
[[gnu::always_inline]] inline void bf16_row(const T* src, int64_t stride, int64_t n, int64_t padded, bf16* dst) {
  int64_t i = 0;
  if (stride == 1) {
    for (; i + vec::kLanes <= n; i += vec::kLanes) {
      if constexpr (std::is_same_v<T, bf16>)
        std::memcpy(dst + i, src + i, vec::kLanes * sizeof(bf16));  // a fixed size: one vector move
      else
        vec::store(dst + i, vec::load(src + i));
    }
  }
  for (; i < n; ++i) {
    if constexpr (std::is_same_v<T, bf16>)
      dst[i] = src[i * stride];
    else
      vec::narrow(dst + i, src[i * stride]);
  }
  std::fill(dst + n, dst + padded, bf16{0});
}

// k as the B operand of q k^T: per block of 16 keys and 32 of the head's columns, a tile whose
// row r holds, for each key j, the pair k[j][2r], k[j][2r + 1] (zero past lk and d): a transpose
// of 32-bit pairs. `rows` is scratch for k's rows in bf16.
template <class T>
JITFUSE_PACKED void pack_keys(const T* k, const Plan& p, bf16* out, bf16* rows) {
  const auto& s = p.s;
  const int64_t chunks = p.dp / kDepth, pairs = p.dp / 2;
  for (int64_t j = 0; j < s.ldk; ++j) bf16_row(k + j * s.k_row, s.k_col, j < s.lk ? s.d : 0, p.dp, rows + j * p.dp);
  auto* tiles = reinterpret_cast<__m512i*>(out);
  const auto* pairs_of = reinterpret_cast<const int*>(rows);
  const __m512i keys = _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                                          _mm512_set1_epi32(static_cast<int>(pairs)));
  for (int64_t kb = 0; kb < s.ldk / kCols; ++kb)
    for (int64_t c = 0; c < chunks; ++c) {
      __m512i* tile = tiles + (kb * chunks + c) * kRows;
      const int* block = pairs_of + kb * kCols * pairs + c * (kDepth / 2);
      for (int64_t r = 0; r < kDepth / 2; ++r) _mm512_storeu_si512(tile + r, _mm512_i32gather_epi32(keys, block + r, 4));
    }
}

// v as the B operand of p v: per block of 32 keys and 16 columns, a tile whose row r holds, for
// each column c, the pair v[2r][c], v[2r + 1][c] (zero past lk and dv): rows interleaved two by two.
template <class T>
JITFUSE_PACKED void pack_values(const T* v, const Plan& p, bf16* out, bf16* rows) {
  const auto& s = p.s;
  const int64_t blocks = p.dvp / kCols;
  for (int64_t j = 0; j < p.lkp; ++j) bf16_row(v + j * s.v_row, 1, j < s.lk ? s.dv : 0, p.dvp, rows + j * p.dvp);
  for (int64_t kc = 0; kc < p.lkp / kDepth; ++kc)
    for (int64_t cb = 0; cb < blocks; ++cb) {
      auto* tile = reinterpret_cast<vec::Bits*>(out + (kc * blocks + cb) * kTileSize);
      for (int64_t r = 0; r < kDepth / 2; ++r) {
        vec::Halves even, odd;
        std::memcpy(&even, rows + (kc * kDepth + 2 * r) * p.dvp + cb * kCols, sizeof even);
        std::memcpy(&odd, rows + (kc * kDepth + 2 * r + 1) * p.dvp + cb * kCols, sizeof odd);
        const vec::Bits pair = __builtin_convertvector(even, vec::Bits) | __builtin_convertvector(odd, vec::Bits) << 16;
        std::memcpy(tile + r, &pair, sizeof pair);
      }
    }
}

// The valid lanes of the 16 keys from c (lk keys in all).
JITFUSE_PACKED inline __mmask16 key_lanes(int64_t c, int64_t lk) {
  return lk - c >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << std::max<int64_t>(lk - c, 0)) - 1);
}

// x[c ...] * scale + mask[c ...], -inf in the lanes not `valid`.
JITFUSE_PACKED inline __m512 scaled_scores(const float* x, const float* mask, int64_t c, __mmask16 valid,
                                           __m512 scale) {
  const __m512 m = mask ? _mm512_maskz_loadu_ps(valid, mask + c) : _mm512_setzero_ps();
  return _mm512_mask_blend_ps(valid, _mm512_set1_ps(-std::numeric_limits<float>::infinity()),
                              _mm512_fmadd_ps(_mm512_loadu_ps(x + c), scale, m));
}

// direct::softmax_row for the packed kernel's bf16 probabilities, in AVX-512: half its time on
// BERT-base's heads went to the softmax (Xeon with AMX, batch 8: 0.6 of 1.2 ms). The scaled,
// masked row is not stored but computed again for the exponentials; exp(x - max) is 2^t by a
// rounding to n and a degree-6 polynomial in the remainder, scaled by 2^n (vscalefps), within
// about 2e-7 relative: far below the bf16 rounding that follows.
// Lanes past lk count as -inf. A NaN anywhere (or a row of -inf) makes the sum NaN, and so the
// whole context row, as ATen's softmax does.
JITFUSE_PACKED inline float softmax_probs(const float* x, const float* mask, const direct::Shape& s, bf16* probs) {
  const __m512 scale = _mm512_set1_ps(s.scale);
  __m512 top = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  // (a NaN lane may be dropped from the max: it makes its exponential NaN below)
  for (int64_t c = 0; c < s.ldk; c += kCols)
    top = _mm512_max_ps(scaled_scores(x, mask, c, key_lanes(c, s.lk), scale), top);
  const float row_max = _mm512_reduce_max_ps(top);
  const __m512 log2e = _mm512_set1_ps(1.44269504088896341f), shift = _mm512_set1_ps(-row_max * 1.44269504088896341f);
  // From 2^-125 on the results stay normal floats: denormals cost a microcode assist each (a
  // masked BERT row took 1.3x as long with them). Against the row maximum's 1, nothing; -inf
  // comes out as 2^-125 too, not NaN.
  const __m512 lowest = _mm512_set1_ps(-125.f);
  __m512 total = _mm512_setzero_ps();
  for (int64_t c = 0; c < s.ldk; c += kCols) {
    const __mmask16 valid = key_lanes(c, s.lk);
    const __m512 x2 = _mm512_fmadd_ps(scaled_scores(x, mask, c, valid, scale), log2e, shift);  // (x - max) log2 e
    const __m512 t = _mm512_max_ps(lowest, x2);  // NaN stays
    const __m512 n = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m512 f = _mm512_sub_ps(t, n);  // [-0.5, 0.5]
    __m512 p = _mm512_set1_ps(1.5403530393381606e-4f);  // ln2^6 / 6!, ..., ln2, 1: 2^f's Taylor series
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.3333558146428443e-3f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(9.6181291076284772e-3f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(5.5504108664821580e-2f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(2.4022650695910071e-1f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(6.9314718055994531e-1f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.f));
    const __m512 e = _mm512_maskz_scalef_ps(valid, p, n);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(probs + c), (__m256i)_mm512_cvtneps_pbh(e));
    total = _mm512_add_ps(total, e);
  }
  return 1.f / _mm512_reduce_add_ps(total);
}

struct alignas(64) TileConfig {
  uint8_t palette = 1, start_row = 0, reserved[14] = {};
  uint16_t bytes_per_row[16] = {};
  uint8_t rows[16] = {};
};

// Per thread: the packed k and v of the head last packed, and one block's q, scores,
// probabilities and context.
struct Buffers {
  std::vector<bf16> k, v, q, probs, rows;
  std::vector<float> scores, context;
  std::pair<int64_t, int64_t> packed{-1, -1};  // (call, head) whose k and v are packed
};

// c (float32, ldc apart) = a . b for n <= 4 accumulator tiles side by side: a is 16 rows (lda
// apart) of `steps` x 32 bf16, b the packed operand tiles (b_step apart along the depth,
// b_tile apart along c's columns). The n sums are independent: their multiplies overlap.
JITFUSE_PACKED inline void multiply_tiles(const bf16* a, int64_t lda, int64_t steps, const bf16* b, int64_t b_step,
                                       int64_t b_tile, int64_t n, float* c, int64_t ldc) {
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  for (int64_t step = 0; step < steps; ++step) {
    _tile_loadd(4, a + step * kDepth, lda * sizeof(bf16));
    const bf16* bt = b + step * b_step;
    _tile_loadd(5, bt, 64);
    _tile_dpbf16ps(0, 4, 5);
    if (n > 1) {
      _tile_loadd(6, bt + b_tile, 64);
      _tile_dpbf16ps(1, 4, 6);
    }
    if (n > 2) {
      _tile_loadd(7, bt + 2 * b_tile, 64);
      _tile_dpbf16ps(2, 4, 7);
    }
    if (n > 3) {
      _tile_loadd(5, bt + 3 * b_tile, 64);
      _tile_dpbf16ps(3, 4, 5);
    }
  }
  _tile_stored(0, c, ldc * sizeof(float));
  if (n > 1) _tile_stored(1, c + kCols, ldc * sizeof(float));
  if (n > 2) _tile_stored(2, c + 2 * kCols, ldc * sizeof(float));
  if (n > 3) _tile_stored(3, c + 3 * kCols, ldc * sizeof(float));
}

// What multiply_tiles computes, as AVX-512 bf16 dot products: per 4 rows of a and pair of its
// depth, the pair broadcast against row `pair` of each of the N packed tiles (16 columns x 2).
template <int N>
JITFUSE_PACKED inline void multiply_vectors(const bf16* a, int64_t lda, int64_t steps, const bf16* b, int64_t b_step,
                                            int64_t b_tile, float* c, int64_t ldc) {
  constexpr int kBlock = 4;  // rows of a per pass: 4 x N sums hide the dot products' latency
  for (int64_t r0 = 0; r0 < kRows; r0 += kBlock) {
    __m512 acc[kBlock][N];
    for (auto& row : acc)
      for (auto& x : row) x = _mm512_setzero_ps();
    for (int64_t step = 0; step < steps; ++step) {
      const bf16* bt = b + step * b_step;
      const bf16* rows_a = a + r0 * lda + step * kDepth;
      for (int64_t pair = 0; pair < kDepth / 2; ++pair) {
        __m512bh bv[N];
        for (int t = 0; t < N; ++t) bv[t] = (__m512bh)_mm512_loadu_si512(bt + t * b_tile + pair * kDepth);
        for (int r = 0; r < kBlock; ++r) {
          int32_t two;
          std::memcpy(&two, rows_a + r * lda + 2 * pair, sizeof two);
          const auto av = (__m512bh)_mm512_set1_epi32(two);
          for (int t = 0; t < N; ++t) acc[r][t] = _mm512_dpbf16_ps(acc[r][t], av, bv[t]);
        }
      }
    }
    for (int r = 0; r < kBlock; ++r)
      for (int t = 0; t < N; ++t) _mm512_storeu_ps(c + (r0 + r) * ldc + t * kCols, acc[r][t]);
  }
}

// c = a . b for n <= 4 blocks of 16 columns, on the engine E.
template <Engine E>
JITFUSE_PACKED inline void multiply(const bf16* a, int64_t lda, int64_t steps, const bf16* b, int64_t b_step,
                                    int64_t b_tile, int64_t n, float* c, int64_t ldc) {
  if constexpr (E == Engine::tiles) {
    multiply_tiles(a, lda, steps, b, b_step, b_tile, n, c, ldc);
  } else {
    switch (n) {
      case 4: multiply_vectors<4>(a, lda, steps, b, b_step, b_tile, c, ldc); break;
      case 3: multiply_vectors<3>(a, lda, steps, b, b_step, b_tile, c, ldc); break;
      case 2: multiply_vectors<2>(a, lda, steps, b, b_step, b_tile, c, ldc); break;
      default: multiply_vectors<1>(a, lda, steps, b, b_step, b_tile, c, ldc); break;
    }
  }
}

// One block's context: out rows [i, i + rows) = probs . v * inv_sum.
template <Engine E, class T>
JITFUSE_PACKED void context_rows(T* out, const Plan& p, int64_t i, int64_t rows, const float* inv_sum, Buffers& b) {
  const auto& s = p.s;
  const int64_t blocks = p.dvp / kCols;
  constexpr int64_t ld = kGroup * kCols;
  for (int64_t g = 0; g < blocks; g += kGroup) {
    const int64_t n = std::min(kGroup, blocks - g);
    multiply<E>(b.probs.data(), p.lkp, p.lkp / kDepth, b.v.data() + g * kTileSize, blocks * kTileSize,
                kTileSize, n, b.context.data(), ld);
    const int64_t c0 = g * kCols, cols = std::min(n * kCols, s.dv - c0);
    for (int64_t r = 0; r < rows; ++r) {
      T* o = out + (i + r) * s.out_row + c0;
      const float* x = b.context.data() + r * ld;
      int64_t c = 0;
      for (; c + vec::kLanes <= cols; c += vec::kLanes) vec::store(o + c, vec::load(x + c) * inv_sum[r]);
      for (; c < cols; ++c) vec::narrow(o + c, x[c] * inv_sum[r]);
    }
  }
}

// Query rows [begin, end) of one head, k and v packed. A block's context is computed after the
// next block's scores: the tiles cannot load the probabilities straight from the vector stores
// that wrote them, and the scores give those stores time to reach the cache.
template <Engine E, class T>
JITFUSE_PACKED void attend_rows(const T* q, const float* mask, T* out, const Plan& p, int64_t begin, int64_t end,
                             Buffers& b) {
  const auto& s = p.s;
  const int64_t chunks = p.dp / kDepth, key_blocks = s.ldk / kCols;
  float inv_sum[kRows];
  int64_t pending = -1, pending_rows = 0;  // the block whose probabilities await their context
  for (int64_t i = begin; i < end; i += kRows) {
    const int64_t rows = std::min(kRows, end - i);
    // bf16 rows of 32-multiple width are the tiles' operand as they lie; others are copied, rows
    // past the last zero (their results are dropped).
    const bf16* qt = b.q.data();
    int64_t ldq = p.dp;
    if (std::is_same_v<T, bf16> && rows == kRows && s.q_col == 1 && s.d == p.dp) {
      qt = reinterpret_cast<const bf16*>(q + i * s.q_row);
      ldq = s.q_row;
    } else {
      for (int64_t r = 0; r < kRows; ++r)
        bf16_row(q + (i + r) * s.q_row, s.q_col, r < rows ? s.d : 0, p.dp, b.q.data() + r * p.dp);
    }
    for (int64_t kb = 0; kb < key_blocks; kb += kGroup)
      multiply<E>(qt, ldq, chunks, b.k.data() + kb * chunks * kTileSize, kTileSize, chunks * kTileSize,
                  std::min(kGroup, key_blocks - kb), b.scores.data() + kb * kCols, s.ldk);
    if (pending >= 0) context_rows<E>(out, p, pending, pending_rows, inv_sum, b);
    for (int64_t r = 0; r < rows; ++r) {
      bf16* probs = b.probs.data() + r * p.lkp;
      inv_sum[r] = softmax_probs(b.scores.data() + r * s.ldk, mask ? mask + (i + r) * s.mask_row : nullptr, s, probs);
      std::fill(probs + s.ldk, probs + p.lkp, bf16{0});
    }
    pending = i;
    pending_rows = rows;
  }
  if (pending >= 0) context_rows<E>(out, p, pending, pending_rows, inv_sum, b);
}

// Tasks [first, last) of one call on this thread; on the tiles between loading their shape and
// releasing them (oneDNN's kernels load their own).
template <Engine E, class T>
JITFUSE_PACKED void run_tasks(int64_t first, int64_t last, int64_t call, const Plan& p, int64_t per_head, int64_t rows,
                             const direct::Operands<T>& at_head) {
  thread_local Buffers b;
  b.k.resize(p.s.ldk / kCols * (p.dp / kDepth) * kTileSize);
  b.v.resize(p.lkp / kDepth * (p.dvp / kCols) * kTileSize);
  b.q.resize(kRows * p.dp);
  b.probs.resize(kRows * p.lkp);
  b.scores.resize(kRows * p.s.ldk);
  b.context.resize(kRows * kGroup * kCols);
  b.rows.resize(p.lkp * std::max(p.dp, p.dvp));
  if constexpr (E == Engine::tiles) {
    TileConfig config;
    for (int t = 0; t < 8; ++t) {
      config.rows[t] = kRows;
      config.bytes_per_row[t] = 64;
    }
    _tile_loadconfig(&config);
  }
  for (int64_t task = first; task < last; ++task) {
    const int64_t n = task / per_head, begin = task % per_head * rows, end = std::min(p.s.lq, begin + rows);
    if (b.packed != std::pair{call, n}) {
      pack_keys(at_head.k(n), p, b.k.data(), b.rows.data());
      pack_values(at_head.v(n), p, b.v.data(), b.rows.data());
      b.packed = {call, n};
    }
    attend_rows<E>(at_head.q(n), at_head.mask(n), at_head.out(n), p, begin, end, b);
  }
  if constexpr (E == Engine::tiles) _tile_release();
}

// As direct::attention: q, k, v of one dtype T, mask float32 of the scores' shape (last dim
// dense) or undefined, out_view of the context's shape (last dim dense); v's last dim dense.
template <Engine E, class T>
void attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask,
               float scale, const at::Tensor& out_view) {
  const direct::Operands<T> at_head(q, k, v, mask, out_view);
  const Plan p = plan_for(direct::shape_of(q, k, v, mask, scale, out_view));
  const direct::Tasks tasks = direct::split_rows(at_head.heads, p.s.lq, kRows);  // blocks of 16 query rows
  const int64_t per_head = tasks.per_head, rows = tasks.rows;
  static std::atomic<int64_t> calls{0};
  const int64_t call = calls++;
  at::parallel_for(0, at_head.heads * per_head, 1, [&](int64_t first, int64_t last) {
    run_tasks<E>(first, last, call, p, per_head, rows, at_head);
  });
}

#undef JITFUSE_PACKED

}  // namespace packed

// The three primitives of one attention shape; `supported` false when oneDNN has no optimized
// kernel for some step (a mask broadcast its binary post-op does not take, say).
struct AttentionPrimitives : onednn::CachedPrimitive {
  bool supported = false;
  std::optional<onednn::Runner> scores;   // q @ k^T * scale (+ mask)
  std::optional<onednn::Runner> softmax;
  std::optional<onednn::Runner> context;  // probs @ v
};

dnnl::memory::desc dense_desc(const std::vector<int64_t>& sizes, at::ScalarType type) {
  std::vector<int64_t> strides(sizes.size(), 1);
  for (int64_t i = static_cast<int64_t>(sizes.size()) - 2; i >= 0; --i) strides[i] = strides[i + 1] * sizes[i + 1];
  return dnnl::memory::desc(sizes, onednn::data_type(type), strides);
}

// What the unfused graph computes (also for anything the primitives do not take).
at::Tensor attention_reference(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                               const std::optional<at::Tensor>& mask, double scale, bool heads_last) {
  at::Tensor scores = at::matmul(q, k.transpose(-1, -2)).mul(scale);
  if (mask && mask->defined()) scores = scores.add(*mask);
  at::Tensor out = at::matmul(at::softmax(scores, -1), v);
  return heads_last ? out.transpose(1, 2).contiguous() : out;
}

// `t` as a contiguous tensor of `type`: itself, or a copy in memory from jitfuse's block cache.
// A float32 / bf16 copy is a oneDNN reorder: ATen's strided converting copy_ of a QKV
// projection's views took 7 of the 20 ms of BERT-base's int8 attention at batch 8.
at::Tensor dense(const at::Tensor& t, at::ScalarType type) {
  if (t.scalar_type() == type && t.is_contiguous()) return t;
  at::Tensor out = memory::empty(t.sizes(), t.options().dtype(type));
  const auto onednn_type = [](at::ScalarType s) { return s == at::kFloat || s == at::kBFloat16; };
  const auto strides = t.strides();
  const bool broadcast = std::any_of(strides.begin(), strides.end(), [](int64_t s) { return s == 0; });
  if (!onednn_type(t.scalar_type()) || !onednn_type(type) || t.numel() == 0 || broadcast) return out.copy_(t);
  onednn::reorder(onednn::wrap(t), onednn::wrap(out));
  return out;
}

// The mask as oneDNN's binary post-op takes it: the scores' rank (leading 1s), contiguous, in the
// score's compute type.
at::Tensor mask_for_post_op(const at::Tensor& mask, int64_t rank, at::ScalarType type) {
  auto sizes = mask.sizes().vec();
  sizes.insert(sizes.begin(), rank - mask.dim(), 1);
  return mask.to(type).reshape(sizes).contiguous();
}

// A context tensor for q and v: [..., seq, dim], or with heads_last [batch, seq, heads, dim]
// (returned second: the first as [..., seq, dim], a permuted view).
std::pair<at::Tensor, at::Tensor> new_context(const at::Tensor& q, const at::Tensor& v, bool heads_last) {
  auto sizes = q.sizes().vec();
  sizes.back() = v.size(-1);
  if (!heads_last) {
    at::Tensor out = memory::empty(sizes, q.options());
    return {out, out};
  }
  at::Tensor out = memory::empty({sizes[0], sizes[2], sizes[1], sizes[3]}, q.options());
  return {out, out.transpose(1, 2)};
}

// Which implementation computes a call: the faster one for the CPU and shape (`best`), or one
// named (tests compare them on any machine through `_attention_with`).
enum class Kernel { best, direct, amx, avx512_bf16, primitives };

// The direct kernel or the packed kernel on one of its engines: q, k, v read where they lie.
at::Tensor attention_own(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v_in,
                         const at::Tensor& mask_in, double scale, bool heads_last,
                         at::IntArrayRef scores_sizes, Kernel kernel) {
  at::Tensor mask;
  if (mask_in.defined()) {
    mask = mask_in.to(at::kFloat).expand(scores_sizes);
    if (mask.stride(-1) != 1) mask = mask.contiguous();  // a mask broadcast along the keys
  }
  const at::Tensor v = v_in.stride(-1) == 1 ? v_in : dense(v_in, v_in.scalar_type());
  auto [out, out_view] = new_context(q, v, heads_last);
  const float s = static_cast<float>(scale);
  const auto run = [&](auto element) {
    using T = decltype(element);
    using packed::Engine;
    if (kernel == Kernel::amx)
      packed::attention<Engine::tiles, T>(q, k, v, mask, s, out_view);
    else if (kernel == Kernel::avx512_bf16)
      packed::attention<Engine::vectors, T>(q, k, v, mask, s, out_view);
    else
      direct::attention<T>(q, k, v, mask, s, out_view);
  };
  if (q.scalar_type() == at::kFloat)
    run(float{});
  else
    run(vec::bf16{});
  return out;
}

// `ctype`: what the products multiply in (q's dtype, or float32 where bf16 has no native kernels,
// or bf16 for a float32 attention that may compute lower).
at::Tensor attention_primitives(const at::Tensor& q_in, const at::Tensor& k_in, const at::Tensor& v_in,
                                const at::Tensor& mask_in, double scale, bool heads_last,
                                at::IntArrayRef scores_sizes, at::ScalarType ctype) {
  const auto type = q_in.scalar_type();
  const int64_t rank = q_in.dim();
  // Head-major, row-major copies (views of a fused QKV projection are neither): oneDNN's brgemm
  // matmul needs dense batch strides.
  const at::Tensor q = dense(q_in, ctype), k = dense(k_in, ctype), v = dense(v_in, ctype);
  const at::Tensor kt = k.transpose(-1, -2);
  const at::Tensor mask = mask_in.defined() ? mask_for_post_op(mask_in, rank, ctype) : at::Tensor();
  auto [out, out_view] = new_context(q, v, heads_last);

  onednn::Key key;
  key << q << kt << v << mask << out_view << scale;
  auto made = onednn::cached_primitive(key, [&]() -> std::shared_ptr<onednn::CachedPrimitive> {
    auto p = std::make_shared<AttentionPrimitives>();
    const auto& eng = onednn::engine();
    const auto user = dnnl::scratchpad_mode::user;
    try {
      dnnl::post_ops post;
      post.append_eltwise(dnnl::algorithm::eltwise_linear, static_cast<float>(scale), 0.f);
      if (mask.defined()) post.append_binary(dnnl::algorithm::binary_add, onednn::plain_desc(mask));
      dnnl::primitive_attr scores_attr, attr;
      scores_attr.set_post_ops(post);
      scores_attr.set_scratchpad_mode(user);
      attr.set_scratchpad_mode(user);
      const auto scores_md = dense_desc(scores_sizes.vec(), at::kFloat),
                 probs_md = dense_desc(scores_sizes.vec(), ctype);
      dnnl::matmul::primitive_desc scores_pd(eng, onednn::plain_desc(q), onednn::plain_desc(kt),
                                             scores_md, scores_attr);
      dnnl::softmax_forward::primitive_desc softmax_pd(eng, dnnl::prop_kind::forward_inference,
                                                       dnnl::algorithm::softmax_accurate, scores_md,
                                                       probs_md, static_cast<int>(rank - 1), attr);
      dnnl::matmul::primitive_desc context_pd(eng, probs_md, onednn::plain_desc(v),
                                              onednn::plain_desc(out_view), attr);
      p->supported = !onednn::is_reference(scores_pd) && !onednn::is_reference(softmax_pd) &&
                     !onednn::is_reference(context_pd);
      if (p->supported) {
        std::vector<int> scores_args{DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_DST};
        if (mask.defined()) scores_args.push_back(DNNL_ARG_ATTR_MULTIPLE_POST_OP(1) | DNNL_ARG_SRC_1);
        p->scores.emplace(scores_pd, dnnl::matmul(scores_pd), scores_args);
        p->softmax.emplace(softmax_pd, dnnl::softmax_forward(softmax_pd), std::vector<int>{DNNL_ARG_SRC, DNNL_ARG_DST});
        p->context.emplace(context_pd, dnnl::matmul(context_pd),
                           std::vector<int>{DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_DST});
      }
    } catch (const dnnl::error&) {
      p->supported = false;
    }
    return p;
  });
  const auto& p = static_cast<const AttentionPrimitives&>(*made);
  if (!p.supported) return attention_reference(q_in, k_in, v_in, mask_in, scale, heads_last);

  at::Tensor scores = memory::empty(scores_sizes, q.options().dtype(at::kFloat));
  at::Tensor probs = ctype == at::kFloat ? scores : memory::empty(scores_sizes, q.options());
  onednn::CallArgs args{{DNNL_ARG_SRC, q.data_ptr()}, {DNNL_ARG_WEIGHTS, kt.data_ptr()},
                        {DNNL_ARG_DST, scores.data_ptr()}};
  if (mask.defined()) args.add(DNNL_ARG_ATTR_MULTIPLE_POST_OP(1) | DNNL_ARG_SRC_1, mask.data_ptr());
  (*p.scores)(args);
  (*p.softmax)({{DNNL_ARG_SRC, scores.data_ptr()}, {DNNL_ARG_DST, probs.data_ptr()}});
  (*p.context)({{DNNL_ARG_SRC, probs.data_ptr()}, {DNNL_ARG_WEIGHTS, v.data_ptr()},
                {DNNL_ARG_DST, out_view.data_ptr()}});
  return ctype == type ? out : out.to(type);
}

at::Tensor attention_with(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                          const std::optional<at::Tensor>& mask_in, const std::optional<at::Scalar>& scale_in,
                          bool divide, bool heads_last, bool low_precision, Kernel kernel) {
  for (const auto* t : {&q, &k, &v})
    TORCH_CHECK(t->device().is_cpu() && t->layout() == at::kStrided, "jitfuse attention: expected "
                "strided CPU tensors");
  TORCH_CHECK(q.dim() >= 3 && k.dim() == q.dim() && v.dim() == q.dim(),
              "jitfuse attention: expected q, k, v of one rank >= 3, got ", q.sizes(), ", ",
              k.sizes(), ", ", v.sizes());
  TORCH_CHECK(q.size(-1) == k.size(-1) && k.size(-2) == v.size(-2),
              "jitfuse attention: q ", q.sizes(), ", k ", k.sizes(), " and v ", v.sizes(),
              " do not multiply");
  TORCH_CHECK(!heads_last || q.dim() == 4, "jitfuse attention: heads_last needs 4-D q, k, v");
  const int64_t rank = q.dim();
  double scale = scale_in ? scale_in->toDouble() : 1.0 / std::sqrt(static_cast<double>(q.size(-1)));
  if (divide) scale = 1.0 / scale;
  const auto type = q.scalar_type();
  auto scores_sizes = q.sizes().vec();
  scores_sizes.back() = k.size(-2);
  const at::Tensor mask = mask_in ? *mask_in : at::Tensor();
  const bool fits =
      (type == at::kFloat || type == at::kBFloat16) && k.scalar_type() == type &&
      v.scalar_type() == type && q.sizes().slice(0, rank - 2) == k.sizes().slice(0, rank - 2) &&
      q.sizes().slice(0, rank - 2) == v.sizes().slice(0, rank - 2) &&
      (!mask.defined() || (mask.dim() <= rank && !mask.is_quantized() &&
                           (mask.scalar_type() == type || mask.scalar_type() == at::kFloat) &&
                           at::infer_size(mask.sizes(), scores_sizes) == scores_sizes));
  // Broadcast batch dims, other dtypes, masks that grow the result: what the graph did.
  if (!fits || q.numel() == 0 || k.numel() == 0 || v.numel() == 0)
    return attention_reference(q, k, v, mask, scale, heads_last);
  // low_precision (attention in int8 models, whose q, k, v come from int8 products): float32
  // operands multiplied in bf16 where the CPU has native bf16 kernels.
  const auto ctype = low_precision && type == at::kFloat && cpu::native_bf16() ? at::kBFloat16
                                                                                 : onednn::compute_type(type);
  // bf16 with native kernels: the primitives multiply at twice the f32 rate (1.5-1.8x the direct
  // kernel on AVX-512 bf16; 1.7x for BERT-base's float32 heads at batch 8 on AMX, their bf16
  // copies included).
  // The packed kernel's bf16 products beat both, on AMX tiles or AVX-512 bf16 (see packed::).
  using packed::Engine;
  if (kernel == Kernel::best) {
    const int64_t lq = q.size(-2), d = q.size(-1), dv = v.size(-1), lk = k.size(-2);
    kernel = ctype == at::kBFloat16 && packed::serves(Engine::tiles, lq, d, dv, lk)     ? Kernel::amx
             : ctype == at::kBFloat16 && packed::serves(Engine::vectors, lq, d, dv, lk) ? Kernel::avx512_bf16
             : ctype == at::kFloat && direct::serves(d, dv, lk)                          ? Kernel::direct
                                                                                         : Kernel::primitives;
  }
  TORCH_CHECK(kernel != Kernel::amx || packed::available(Engine::tiles), "jitfuse attention: this CPU has no AMX tiles");
  TORCH_CHECK(kernel != Kernel::avx512_bf16 || packed::available(Engine::vectors),
              "jitfuse attention: this CPU has no AVX-512 bf16 dot products");
  if (kernel == Kernel::primitives)
    return attention_primitives(q, k, v, mask, scale, heads_last, scores_sizes, ctype);
  return attention_own(q, k, v, mask, scale, heads_last, scores_sizes, kernel);
}

at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                     const std::optional<at::Tensor>& mask, const std::optional<at::Scalar>& scale,
                     bool divide, bool heads_last, bool low_precision) {
  return attention_with(q, k, v, mask, scale, divide, heads_last, low_precision, Kernel::best);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(jitfuse, m) {
  // low_precision: float32 q, k, v may be multiplied in bf16 where the CPU has native bf16
  // kernels (set by the int8 passes for attention between int8 linears; cosine >= 0.9999 to the
  // float32 result on BERT-sized heads).
  m.def("attention(Tensor q, Tensor k, Tensor v, Tensor? mask, Scalar? scale, bool divide, "
        "bool heads_last, bool low_precision=False) -> Tensor",
        torch::dispatch(c10::DispatchKey::CPU, TORCH_FN(attention)));
  // Tests: one implementation by name ("direct", "amx" where the CPU has AMX, "avx512_bf16" where it
  // has AVX-512 bf16, or "primitives").
  m.def("_attention_with(Tensor q, Tensor k, Tensor v, Tensor? mask, Scalar? scale, bool divide, "
        "bool heads_last, str kernel) -> Tensor",
        torch::dispatch(c10::DispatchKey::CPU,
                        [](const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                           const std::optional<at::Tensor>& mask, const std::optional<at::Scalar>& scale,
                           bool divide, bool heads_last, c10::string_view kernel) {
                          const Kernel chosen = kernel == "direct"        ? Kernel::direct
                                                : kernel == "amx"         ? Kernel::amx
                                                : kernel == "avx512_bf16" ? Kernel::avx512_bf16
                                                : kernel == "primitives"  ? Kernel::primitives
                                                                          : Kernel::best;
                          TORCH_CHECK(chosen != Kernel::best,
                                      "jitfuse _attention_with: kernel is \"direct\", \"amx\", \"avx512_bf16\" or "
                                      "\"primitives\", got ", kernel);
                          return attention_with(q, k, v, mask, scale, divide, heads_last, false, chosen);
                        }));
}

}  // namespace jitfuse
