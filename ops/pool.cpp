// Pooling on oneDNN, in the layout it is given (NHWC between fused convs): max_pool2d (float32,
// bfloat16), the global adaptive_avg_pool2d of a classifier head, and int8 max pooling
// (qmax_pool2d: max commutes with the affine map, so it runs on the uint8/int8 values; the result
// is requantized only when the graph asked for other quantization parameters). Schemas at the
// bottom.
#include "ops/allocator.h"
#include "ops/cpu.h"
#include "ops/int8_args.h"
#include "ops/onednn.h"
#include "ops/quantize.h"

#include <torch/library.h>

namespace jitfuse {
namespace {

using PoolPrimitive = onednn::Primitive<dnnl::pooling_forward>;

// Window geometry, output size and right padding of a 2-D max pooling, as ATen computes them.
struct PoolGeometry {
  std::vector<int64_t> kernel, stride, padding, dilation, pad_r, out_sizes;
};

std::vector<int64_t> pair(const char* op, at::IntArrayRef v, const char* what,
                          at::IntArrayRef fallback = {}) {
  if (v.empty() && !fallback.empty()) return fallback.vec();
  TORCH_CHECK(v.size() == 1 || v.size() == 2, "jitfuse ", op, ": ", what,
              " must have 1 or 2 elements, got ", v.size());
  return v.size() == 1 ? std::vector<int64_t>{v[0], v[0]} : v.vec();
}

PoolGeometry max_pool_geometry(const char* op, const at::Tensor& x, at::IntArrayRef kernel_size,
                               at::IntArrayRef stride, at::IntArrayRef padding,
                               at::IntArrayRef dilation, bool ceil_mode) {
  TORCH_CHECK(x.dim() == 4, "jitfuse ", op, ": expected a 4-D input, got ", x.dim(), "-D");
  TORCH_CHECK(x.size(1) > 0 && x.size(2) > 0 && x.size(3) > 0, "jitfuse ", op,
              ": expected non-empty channels and spatial dims (a batch may be empty), got ", x.sizes());
  PoolGeometry g;
  g.kernel = pair(op, kernel_size, "kernel_size");
  g.stride = pair(op, stride, "stride", g.kernel);
  g.padding = pair(op, padding, "padding");
  g.dilation = pair(op, dilation, "dilation");
  g.out_sizes = {x.size(0), x.size(1)};
  g.pad_r.resize(2);
  for (int i = 0; i < 2; ++i) {
    TORCH_CHECK(g.kernel[i] > 0 && g.stride[i] > 0 && g.dilation[i] > 0 && g.padding[i] >= 0 &&
                    g.padding[i] * 2 <= g.kernel[i],
                "jitfuse ", op, ": kernel, stride and dilation must be positive and padding at "
                "most half the kernel");
    const int64_t in = x.size(i + 2), k = g.dilation[i] * (g.kernel[i] - 1) + 1;
    const int64_t span = in + 2 * g.padding[i] - k + (ceil_mode ? g.stride[i] - 1 : 0);
    TORCH_CHECK(span >= 0, "jitfuse ", op, ": input ", x.sizes(), " is too small for the window");
    int64_t o = span / g.stride[i] + 1;
    if (ceil_mode && (o - 1) * g.stride[i] >= in + g.padding[i]) --o;  // as ATen: start inside input
    g.out_sizes.push_back(o);
    g.pad_r[i] = (o - 1) * g.stride[i] + k - in - g.padding[i];
  }
  return g;
}

// Runs oneDNN pooling `alg` from `src` into `dst` (both laid out as they are).
void pool(dnnl::algorithm alg, const at::Tensor& src, const at::Tensor& dst, const PoolGeometry& g) {
  onednn::Key key;
  key << src << dst << static_cast<int64_t>(alg) << at::IntArrayRef(g.kernel) << at::IntArrayRef(g.stride)
      << at::IntArrayRef(g.padding) << at::IntArrayRef(g.dilation) << at::IntArrayRef(g.pad_r);
  auto made = onednn::cached_primitive(key, [&]() -> std::shared_ptr<onednn::CachedPrimitive> {
    dnnl::memory::dims dil{g.dilation[0] - 1, g.dilation[1] - 1};  // oneDNN counts the gaps
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    return std::make_shared<PoolPrimitive>(
        dnnl::pooling_forward::primitive_desc(onednn::engine(), dnnl::prop_kind::forward_inference, alg,
                                              onednn::plain_desc(src), onednn::plain_desc(dst), g.stride,
                                              g.kernel, dil, g.padding, g.pad_r, attr),
        std::vector<int>{DNNL_ARG_SRC, DNNL_ARG_DST});
  });
  const auto& p = static_cast<const PoolPrimitive&>(*made);
  p.run({{DNNL_ARG_SRC, src.data_ptr()}, {DNNL_ARG_DST, dst.data_ptr()}});
}

// oneDNN has no bf16 pooling at all on CPUs without bf16 instructions (AVX2, plain AVX-512):
// there bf16 takes ATen's vectorized kernels, in the same layout.
bool onednn_float(const at::Tensor& x) {
  return x.device().is_cpu() && x.layout() == at::kStrided && !x.is_quantized() &&
         (x.scalar_type() == at::kFloat || (x.scalar_type() == at::kBFloat16 && cpu::native_bf16()));
}

at::Tensor max_pool2d(const at::Tensor& x, at::IntArrayRef kernel_size, at::IntArrayRef stride,
                      at::IntArrayRef padding, at::IntArrayRef dilation, bool ceil_mode) {
  // Unbatched, other dtypes, gradients: exactly what the graph did.
  if (x.dim() != 4 || !onednn_float(x) || x.requires_grad())
    return at::max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode);
  const auto g = max_pool_geometry("max_pool2d", x, kernel_size, stride, padding, dilation, ceil_mode);
  const auto format = x.suggest_memory_format();  // as ATen
  const at::Tensor src = x.contiguous(format);
  at::Tensor dst = memory::empty(g.out_sizes, x.options(), format);
  if (dst.numel() > 0) pool(dnnl::algorithm::pooling_max, src, dst, g);
  return dst;
}

// adaptive_avg_pool2d to 1x1 (a classifier head's global average); other sizes: ATen.
at::Tensor adaptive_avg_pool2d(const at::Tensor& x, at::IntArrayRef output_size) {
  const bool global = output_size.size() == 2 && output_size[0] == 1 && output_size[1] == 1;
  if (!global || x.dim() != 4 || !onednn_float(x) || x.requires_grad() || x.size(2) == 0 ||
      x.size(3) == 0)
    return at::adaptive_avg_pool2d(x, output_size);
  PoolGeometry g{{x.size(2), x.size(3)}, {1, 1}, {0, 0}, {1, 1}, {0, 0}, {x.size(0), x.size(1), 1, 1}};
  const auto format = x.suggest_memory_format();  // as ATen
  const at::Tensor src = x.contiguous(format);
  at::Tensor dst = memory::empty(g.out_sizes, x.options(), format);
  if (dst.numel() > 0) pool(dnnl::algorithm::pooling_avg_exclude_padding, src, dst, g);
  return dst;
}

at::Tensor qmax_pool2d(const at::Tensor& qx, double x_scale, int64_t x_zero_point,
                       at::IntArrayRef kernel_size, at::IntArrayRef stride, at::IntArrayRef padding,
                       at::IntArrayRef dilation, bool ceil_mode, double out_scale,
                       int64_t out_zero_point, at::ScalarType out_dtype) {
  onednn::check_int8_activation("qmax_pool2d", qx, x_scale, x_zero_point);
  const auto out = onednn::int8_output(out_dtype, out_scale, out_zero_point, "qmax_pool2d");
  const auto g = max_pool_geometry("qmax_pool2d", qx, kernel_size, stride, padding, dilation, ceil_mode);
  const at::Tensor src = onednn::to_channels_last(qx);
  at::Tensor dst = memory::empty(g.out_sizes, qx.options(), at::MemoryFormat::ChannelsLast);
  if (dst.numel() > 0) pool(dnnl::algorithm::pooling_max, src, dst, g);
  if (*out.dtype == qx.scalar_type() && out.scale == x_scale && out.zero_point == x_zero_point)
    return dst;
  return onednn::as_output(quantize::dequantize(dst, x_scale, x_zero_point), out);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(jitfuse, m) {
  const auto cpu = c10::DispatchKey::CPU;
  m.def("max_pool2d(Tensor self, int[2] kernel_size, int[2] stride, int[2] padding, int[2] dilation, "
        "bool ceil_mode) -> Tensor",
        torch::dispatch(cpu, TORCH_FN(max_pool2d)));
  m.def("adaptive_avg_pool2d(Tensor self, int[2] output_size) -> Tensor",
        torch::dispatch(cpu, TORCH_FN(adaptive_avg_pool2d)));
  m.def("qmax_pool2d(Tensor qx, float x_scale, int x_zero_point, int[2] kernel_size, int[2] stride, "
        "int[2] padding, int[2] dilation, bool ceil_mode, float out_scale, int out_zero_point, "
        "ScalarType out_dtype) -> Tensor",
        torch::dispatch(cpu, TORCH_FN(qmax_pool2d)));
}

}  // namespace jitfuse
