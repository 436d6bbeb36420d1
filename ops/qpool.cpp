// int8 max pooling: a quantized activation in, quantized out. oneDNN's int8 pooling runs on the
// stored integers (max commutes with the affine map); the result is requantized only when the
// graph asked for other quantization parameters than the input's.
#include "ops/onednn.h"

#include <torch/library.h>

namespace jitfuse {
namespace {

using QPoolPrimitive = onednn::Primitive<dnnl::pooling_forward>;

std::vector<int64_t> pair(at::IntArrayRef v, const char* what, at::IntArrayRef fallback = {}) {
  if (v.empty() && !fallback.empty()) return fallback.vec();
  TORCH_CHECK(v.size() == 1 || v.size() == 2, "jitfuse qmax_pool2d: ", what,
              " must have 1 or 2 elements, got ", v.size());
  return v.size() == 1 ? std::vector<int64_t>{v[0], v[0]} : v.vec();
}

at::Tensor qmax_pool2d(const at::Tensor& qx, at::IntArrayRef kernel_size, at::IntArrayRef stride_in,
                       at::IntArrayRef padding_in, at::IntArrayRef dilation_in, bool ceil_mode,
                       double out_scale, int64_t out_zero_point, at::ScalarType out_dtype) {
  onednn::check_quantized_activation("qmax_pool2d", qx);
  const auto out = onednn::int8_output(out_dtype, out_scale, out_zero_point, "qmax_pool2d");
  TORCH_CHECK(qx.dim() == 4, "jitfuse qmax_pool2d: expected a 4-D input, got ", qx.dim(), "-D");
  const auto kernel = pair(kernel_size, "kernel_size");
  const auto stride = pair(stride_in, "stride", kernel);
  const auto padding = pair(padding_in, "padding"), dilation = pair(dilation_in, "dilation");
  std::vector<int64_t> out_sizes{qx.size(0), qx.size(1)}, pad_r(2);
  for (int i = 0; i < 2; ++i) {
    TORCH_CHECK(kernel[i] > 0 && stride[i] > 0 && dilation[i] > 0 && padding[i] >= 0 &&
                    padding[i] * 2 <= kernel[i],
                "jitfuse qmax_pool2d: kernel, stride and dilation must be positive and padding "
                "at most half the kernel");
    const int64_t in = qx.size(i + 2), k = dilation[i] * (kernel[i] - 1) + 1;
    const int64_t span = in + 2 * padding[i] - k + (ceil_mode ? stride[i] - 1 : 0);
    TORCH_CHECK(span >= 0, "jitfuse qmax_pool2d: input ", qx.sizes(), " is too small");
    int64_t o = span / stride[i] + 1;
    if (ceil_mode && (o - 1) * stride[i] >= in + padding[i]) --o;  // as ATen: start inside input
    out_sizes.push_back(o);
    pad_r[i] = (o - 1) * stride[i] + k - in - padding[i];
  }
  const at::Tensor src = qx.contiguous(at::MemoryFormat::ChannelsLast);
  at::Tensor dst = at::_empty_affine_quantized(out_sizes, qx.options(), qx.q_scale(),
                                               qx.q_zero_point(), at::MemoryFormat::ChannelsLast);
  if (dst.numel() > 0) {
    onednn::Key key;
    key << src << dst << at::IntArrayRef(kernel) << at::IntArrayRef(stride)
        << at::IntArrayRef(padding) << at::IntArrayRef(dilation) << at::IntArrayRef(pad_r);
    auto made = onednn::cached_primitive(key, [&]() -> std::shared_ptr<onednn::CachedPrimitive> {
      dnnl::memory::dims dil{dilation[0] - 1, dilation[1] - 1};
      dnnl::primitive_attr attr;
      attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
      return std::make_shared<QPoolPrimitive>(dnnl::pooling_forward::primitive_desc(
          onednn::engine(), dnnl::prop_kind::forward_inference, dnnl::algorithm::pooling_max,
          onednn::plain_desc(src), onednn::plain_desc(dst), stride, kernel, dil, padding, pad_r,
          attr));
    });
    const auto& pool = static_cast<const QPoolPrimitive&>(*made);
    onednn::execute(pool.prim, pool.pd.scratchpad_desc(),
                    {{DNNL_ARG_SRC, onednn::wrap(src)}, {DNNL_ARG_DST, onednn::wrap(dst)}});
  }
  if (*out.dtype == qx.scalar_type() && out.scale == qx.q_scale() && out.zero_point == qx.q_zero_point())
    return dst;
  return onednn::as_output(dst.dequantize(), out);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(jitfuse, m) {
  m.def("qmax_pool2d(Tensor qx, int[2] kernel_size, int[2] stride, int[2] padding, "
        "int[2] dilation, bool ceil_mode, float out_scale, int out_zero_point, "
        "ScalarType out_dtype) -> Tensor",
        TORCH_FN(qmax_pool2d));
}

}  // namespace jitfuse
