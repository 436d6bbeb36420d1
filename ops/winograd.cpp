#include "ops/winograd.h"

#include "ops/allocator.h"
#include "ops/cpu.h"
#include "ops/onednn.h"
#include "ops/vec.h"

#include <ATen/Parallel.h>
#include <torch/library.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <string>

namespace jitfuse::winograd {
namespace {

using vec::bf16;
using vec::kLanes;  // channels per vector step
using vec::load;
using vec::store;
using vec::Vec;
constexpr int64_t kPositions = 16;  // a 4x4 transformed tile: one GEMM per position
// Tiles per chunk: the transformed inputs and products of a chunk (16 x rows x channels each)
// stay in the caches between the three steps.
constexpr int64_t kChunkBytes = int64_t{16} << 20;

// Where the 2x2 output tiles lie: tile t is (n, th, tw) in row-major order.
struct Tiling {
  int64_t height, width, in_channels, out_channels, pad_h, pad_w, out_h, out_w, tiles_h, tiles_w;
};

// V[p][r][c] = (B^T d B)[p] of the 4x4 input tile d of tile first + r, for rows [begin, end) of
// a chunk of `rows` tiles. B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]: additions only.
template <class T>
[[gnu::always_inline]] inline void transform_input_rows(const T* x, const Tiling& t, int64_t first,
                                                        int64_t begin, int64_t end, int64_t rows,
                                                        T* v) {
  const int64_t C = t.in_channels, plane = rows * C, per_image = t.tiles_h * t.tiles_w;
  for (int64_t r = begin; r < end; ++r) {
    const int64_t tile = first + r, n = tile / per_image, in_image = tile % per_image;
    const int64_t h0 = in_image / t.tiles_w * 2 - t.pad_h, w0 = in_image % t.tiles_w * 2 - t.pad_w;
    const T* pixel[4][4];  // nullptr: padding
    for (int i = 0; i < 4; ++i)
      for (int j = 0; j < 4; ++j) {
        const int64_t h = h0 + i, w = w0 + j;
        pixel[i][j] = h >= 0 && h < t.height && w >= 0 && w < t.width
                          ? x + ((n * t.height + h) * t.width + w) * C
                          : nullptr;
      }
    T* out = v + r * C;
    for (int64_t c = 0; c < C; c += kLanes) {
      Vec d[4][4], u[4][4];
      for (int i = 0; i < 4; ++i)
        for (int j = 0; j < 4; ++j) d[i][j] = pixel[i][j] ? load(pixel[i][j] + c) : Vec{};
      for (int j = 0; j < 4; ++j) {
        u[0][j] = d[0][j] - d[2][j];
        u[1][j] = d[1][j] + d[2][j];
        u[2][j] = d[2][j] - d[1][j];
        u[3][j] = d[1][j] - d[3][j];
      }
      for (int i = 0; i < 4; ++i) {
        T* o = out + (i * 4) * plane + c;
        store(o, u[i][0] - u[i][2]);
        store(o + plane, u[i][1] + u[i][2]);
        store(o + 2 * plane, u[i][2] - u[i][1]);
        store(o + 3 * plane, u[i][1] - u[i][3]);
      }
    }
  }
}

JITFUSE_CLONES
void transform_input(const float* x, const Tiling& t, int64_t first, int64_t begin, int64_t end,
                     int64_t rows, float* v) {
  transform_input_rows(x, t, first, begin, end, rows, v);
}
JITFUSE_CLONES
void transform_input(const bf16* x, const Tiling& t, int64_t first, int64_t begin, int64_t end,
                     int64_t rows, bf16* v) {
  transform_input_rows(x, t, first, begin, end, rows, v);
}

// y = relu?(A^T M A + bias + sum_alpha * y) for the 2x2 output tile of each row, A^T =
// [1 1 1 0; 0 1 -1 -1]. Tiles hanging over the bottom or right edge write only what exists.
template <class T>
[[gnu::always_inline]] inline void transform_output_rows(const float* m, const float* bias,
                                                         const Tiling& t, int64_t first,
                                                         int64_t begin, int64_t end, int64_t rows,
                                                         float sum_alpha, bool relu, T* y) {
  const int64_t K = t.out_channels, plane = rows * K, per_image = t.tiles_h * t.tiles_w;
  for (int64_t r = begin; r < end; ++r) {
    const int64_t tile = first + r, n = tile / per_image, in_image = tile % per_image;
    const int64_t h0 = in_image / t.tiles_w * 2, w0 = in_image % t.tiles_w * 2;
    const bool second_row = h0 + 1 < t.out_h, second_col = w0 + 1 < t.out_w;
    T* corner = y + ((n * t.out_h + h0) * t.out_w + w0) * K;
    T* pixel[2][2] = {{corner, second_col ? corner + K : nullptr},
                          {second_row ? corner + t.out_w * K : nullptr,
                           second_row && second_col ? corner + (t.out_w + 1) * K : nullptr}};
    const float* in = m + r * K;
    for (int64_t k = 0; k < K; k += kLanes) {
      Vec s[2][4];
      for (int j = 0; j < 4; ++j) {
        const float* p = in + j * plane + k;
        const Vec m0 = load(p), m1 = load(p + 4 * plane), m2 = load(p + 8 * plane),
                  m3 = load(p + 12 * plane);
        s[0][j] = m0 + m1 + m2;
        s[1][j] = m1 - m2 - m3;
      }
      const Vec b = bias ? load(bias + k) : Vec{};
      for (int i = 0; i < 2; ++i) {
        const Vec o[2] = {s[i][0] + s[i][1] + s[i][2] + b, s[i][1] - s[i][2] - s[i][3] + b};
        for (int j = 0; j < 2; ++j) {
          if (!pixel[i][j]) continue;
          Vec value = o[j];
          if (sum_alpha != 0.f) value += sum_alpha * load(pixel[i][j] + k);
          if (relu) value = vec::relu(value);
          store(pixel[i][j] + k, value);
        }
      }
    }
  }
}

JITFUSE_CLONES
void transform_output(const float* m, const float* bias, const Tiling& t, int64_t first,
                      int64_t begin, int64_t end, int64_t rows, float sum_alpha, bool relu, float* y) {
  transform_output_rows(m, bias, t, first, begin, end, rows, sum_alpha, relu, y);
}
JITFUSE_CLONES
void transform_output(const float* m, const float* bias, const Tiling& t, int64_t first,
                      int64_t begin, int64_t end, int64_t rows, float sum_alpha, bool relu, bf16* y) {
  transform_output_rows(m, bias, t, first, begin, end, rows, sum_alpha, relu, y);
}

// U[p][c][k] = (G g G^T)[p] for the 3x3 filter g of (k, c), G = [1 0 0; .5 .5 .5; .5 -.5 .5;
// 0 0 1]; computed in double, once per weight.
at::Tensor transform_weight(const at::Tensor& weight) {
  const int64_t K = weight.size(0), C = weight.size(1);
  const auto w = weight.to(at::kDouble).contiguous();
  const double* g = w.data_ptr<double>();
  at::Tensor u = at::empty({kPositions, C, K}, at::kFloat);
  float* out = u.data_ptr<float>();
  for (int64_t k = 0; k < K; ++k)
    for (int64_t c = 0; c < C; ++c) {
      const double* f = g + (k * C + c) * 9;
      double gf[4][3];  // G g
      for (int j = 0; j < 3; ++j) {
        gf[0][j] = f[j];
        gf[1][j] = 0.5 * (f[j] + f[3 + j] + f[6 + j]);
        gf[2][j] = 0.5 * (f[j] - f[3 + j] + f[6 + j]);
        gf[3][j] = f[6 + j];
      }
      for (int i = 0; i < 4; ++i) {
        const double row[4] = {gf[i][0], 0.5 * (gf[i][0] + gf[i][1] + gf[i][2]),
                               0.5 * (gf[i][0] - gf[i][1] + gf[i][2]), gf[i][2]};
        for (int j = 0; j < 4; ++j) out[((i * 4 + j) * C + c) * K + k] = static_cast<float>(row[j]);
      }
    }
  return u;
}

using BatchedMatmul = onednn::Primitive<dnnl::matmul>;

// The 16 GEMMs of a chunk: [16, rows, C] x [16, C, K] -> [16, rows, K] float32, the operands in
// `type` (float32 or bfloat16).
std::shared_ptr<BatchedMatmul> gemm_primitive(int64_t rows, int64_t C, int64_t K, at::ScalarType type) {
  onednn::Key key;
  key << int64_t{0x3917} << rows << C << K << static_cast<int64_t>(type);  // 0x3917: Winograd's keys
  auto made = onednn::cached_primitive(key, [&]() -> std::shared_ptr<onednn::CachedPrimitive> {
    using tag = dnnl::memory::format_tag;
    const auto dt = onednn::data_type(type);
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    return std::make_shared<BatchedMatmul>(
        dnnl::matmul::primitive_desc(onednn::engine(), dnnl::memory::desc({kPositions, rows, C}, dt, tag::abc),
                                     dnnl::memory::desc({kPositions, C, K}, dt, tag::any),
                                     dnnl::memory::desc({kPositions, rows, K}, dnnl::memory::data_type::f32, tag::abc),
                                     attr),
        std::vector<int>{DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_DST});
  });
  return std::static_pointer_cast<BatchedMatmul>(made);
}

template <class T>
void run_chunks(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& bias,
                const Tiling& t, int64_t tiles, float sum_alpha, bool relu, at::Tensor& out) {
  const int64_t C = t.in_channels, K = t.out_channels;
  const auto type = input.scalar_type();
  const int64_t max_rows = std::max<int64_t>(1, kChunkBytes / (kPositions * (C * input.element_size() + K * 4)));
  const int64_t chunks = (tiles + max_rows - 1) / max_rows;
  const int64_t rows = (tiles + chunks - 1) / chunks;  // balanced: one primitive serves all

  const at::Tensor u = onednn::derived_weight(weight, type == at::kFloat ? "winograd_f2x3" : "winograd_f2x3_bf16",
                                              [&] { return transform_weight(weight).to(type); });
  const auto gemm = gemm_primitive(rows, C, K, type);
  const at::Tensor packed = onednn::prepacked_weight(u, gemm->run.md(DNNL_ARG_WEIGHTS),
                                                     [&] { return onednn::plain_desc(u); });
  at::Tensor v = memory::empty({kPositions, rows, C}, input.options());
  at::Tensor m = memory::empty({kPositions, rows, K}, input.options().dtype(at::kFloat));
  const at::Tensor b32 = bias.defined() ? bias.to(at::kFloat).contiguous() : at::Tensor();
  const T* x = reinterpret_cast<const T*>(input.data_ptr());
  T* vp = reinterpret_cast<T*>(v.data_ptr());
  T* y = reinterpret_cast<T*>(out.data_ptr());
  const float* b = b32.defined() ? b32.data_ptr<float>() : nullptr;
  for (int64_t first = 0; first < tiles; first += rows) {
    const int64_t count = std::min(rows, tiles - first);
    if (count < rows)  // the last chunk's unused rows: zeros, not stale (maybe denormal) floats
      for (int64_t p = 0; p < kPositions; ++p) v[p].narrow(0, count, rows - count).zero_();
    at::parallel_for(0, count, 8, [&](int64_t begin, int64_t end) {
      transform_input(x, t, first, begin, end, rows, vp);
    });
    gemm->run({{DNNL_ARG_SRC, v.data_ptr()}, {DNNL_ARG_WEIGHTS, packed.data_ptr()}, {DNNL_ARG_DST, m.data_ptr()}});
    at::parallel_for(0, count, 8, [&](int64_t begin, int64_t end) {
      transform_output(m.data_ptr<float>(), b, t, first, begin, end, rows, sum_alpha, relu, y);
    });
  }
}

std::atomic<bool>& enabled_flag() {
  static std::atomic<bool> on{[] {
    const char* v = std::getenv("JITFUSE_WINOGRAD");
    return !(v && std::string(v) == "0");
  }()};
  return on;
}

// JITFUSE_WINOGRAD=all: wherever Winograd computes the convolution, even where it is measured to
// be slower (for measuring it on a new CPU, and for tests on small shapes).
bool everywhere() {
  static const bool all = [] {
    const char* v = std::getenv("JITFUSE_WINOGRAD");
    return v && std::string(v) == "all";
  }();
  return all;
}

}  // namespace

void set_enabled(bool enabled) { enabled_flag() = enabled; }
bool is_enabled() { return enabled_flag(); }

bool serves(at::ScalarType compute_type, const at::Tensor& weight, at::IntArrayRef out_sizes,
            at::IntArrayRef stride, at::IntArrayRef dilation, int64_t groups) {
  if (!is_enabled() || (compute_type != at::kFloat && compute_type != at::kBFloat16) ||
      weight.dim() != 4 || out_sizes.size() != 4 || groups != 1 || weight.size(2) != 3 ||
      weight.size(3) != 3)
    return false;
  for (int64_t s : stride) if (s != 1) return false;
  for (int64_t d : dilation) if (d != 1) return false;
  const int64_t C = weight.size(1), K = weight.size(0);
  if (everywhere()) return C % kLanes == 0 && K % kLanes == 0;
  // Narrower layers gain nothing: their GEMMs are too thin to run at the cores' peak. Measured on
  // AVX-512 (Zen 5, 2 threads, transforms on both threads), ResNet-50's 3x3 layers, direct time /
  // Winograd time: float32 1.09-1.85x from 64 channels, bfloat16 1.01-1.67x from 128 (below), and 7x7 outputs at
  // batch 1 up. With AMX, oneDNN's direct bfloat16 kernels are faster still.
  if (compute_type == at::kBFloat16 && cpu::has_amx()) return false;
  // bfloat16 GEMMs run at twice the float32 rate, so the transforms weigh twice as much: at 64
  // channels (ResNet-50's 56x56 layers) Winograd measured 0.84-0.99x direct at batch 1, 4 and 16
  // (Zen 5, 2 threads), from 128 channels 1.25-1.3x.
  const bool wide = compute_type == at::kBFloat16 ? C >= 128 && K >= 128 : C >= 64 && K >= 64;
  // The transformed weights are 16/9 the size of the filter: a call with few output pixels (5x5
  // and smaller at batch 1: 0.74-1.12x) spends as much time reading them as it saves.
  const bool enough_pixels = out_sizes[0] * out_sizes[2] * out_sizes[3] >= 49;
  // The transforms are memory-bound and the chunk GEMMs small: on 16 threads of an AMX Xeon the
  // direct kernels scaled 5x past 2 threads, Winograd 1.7x (0.3-0.6x direct's speed there;
  // measured before the build had OpenMP, when the transforms ran on one thread).
  const bool few_threads = at::get_num_threads() <= 4;
  return C % kLanes == 0 && K % kLanes == 0 && wide && enough_pixels && few_threads;
}

void conv2d_3x3(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& bias,
                at::IntArrayRef padding, float sum_alpha, bool relu, at::Tensor& out) {
  TORCH_CHECK(input.is_contiguous(at::MemoryFormat::ChannelsLast) &&
                  out.is_contiguous(at::MemoryFormat::ChannelsLast) &&
                  out.scalar_type() == input.scalar_type(),
              "jitfuse winograd: expected channels_last input and output of one dtype");
  Tiling t{input.size(2), input.size(3), input.size(1), weight.size(0), padding[0],
           padding[padding.size() - 1], out.size(2), out.size(3), 0, 0};
  t.tiles_h = (t.out_h + 1) / 2;
  t.tiles_w = (t.out_w + 1) / 2;
  const int64_t tiles = input.size(0) * t.tiles_h * t.tiles_w;
  if (input.scalar_type() == at::kFloat)
    run_chunks<float>(input, weight, bias, t, tiles, sum_alpha, relu, out);
  else
    run_chunks<bf16>(input, weight, bias, t, tiles, sum_alpha, relu, out);
}

}  // namespace jitfuse::winograd

TORCH_LIBRARY_FRAGMENT(jitfuse, m) {
  m.def("_set_winograd_enabled(bool enabled) -> ()",
        [](bool on) { jitfuse::winograd::set_enabled(on); });
  m.def("_is_winograd_enabled() -> bool", []() { return jitfuse::winograd::is_enabled(); });
}
