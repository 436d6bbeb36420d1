// int8 convolutions: a uint8/int8 activation (with its scale and zero point) and an int8 weight
// (one scale per output channel) in, float32 or uint8/int8 out, with relu and sum (an added
// tensor) as post-ops. One oneDNN int8 convolution serves qconv2d[_relu|_sum|_sum_relu]; the
// schemas are at the bottom.
#include "ops/allocator.h"
#include "ops/int8_args.h"
#include "ops/onednn.h"
#include "ops/quantize.h"

#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cstring>
#include <string>

namespace jitfuse {
namespace {

using onednn::Int8Output;
using onednn::PostOp;
using onednn::PostOps;
using dnnl::algorithm;

using QConvPrimitive = onednn::Primitive<dnnl::convolution_forward>;

std::vector<int64_t> pair(at::IntArrayRef v, const char* what) {
  TORCH_CHECK(v.size() == 1 || v.size() == 2, "jitfuse qconv2d: ", what,
              " must have 1 or 2 elements, got ", v.size());
  return v.size() == 1 ? std::vector<int64_t>{v[0], v[0]} : v.vec();
}

struct QConvParams {
  std::vector<int64_t> stride, padding, dilation, out_sizes;
  int64_t groups;
};

// The activation: values, scale, zero point.
struct QInput {
  const at::Tensor& values;
  double scale;
  int64_t zero_point;
};

// What the sum adds: an int8 tensor with its scale and zero point, or a float32 one (no scale).
struct QOther {
  at::Tensor values;
  std::optional<double> scale;
  int64_t zero_point = 0;
  bool defined() const { return values.defined(); }
  at::Tensor as_float() const {
    return scale ? quantize::dequantize(values, *scale, zero_point) : onednn::float_operand("qconv2d_sum", values);
  }
};

QConvParams check_qconv(const QInput& x, const at::Tensor& qw, const at::Tensor& scales,
                        const at::Tensor& bias, at::IntArrayRef stride, at::IntArrayRef padding,
                        at::IntArrayRef dilation, int64_t groups) {
  const at::Tensor& qx = x.values;
  onednn::check_int8_activation("qconv2d", qx, x.scale, x.zero_point);
  onednn::check_int8_weight("qconv2d", qw, scales);
  TORCH_CHECK(qx.dim() == 4, "jitfuse qconv2d: expected a 4-D input, got ", qx.dim(), "-D");
  TORCH_CHECK(qw.dim() == 4, "jitfuse qconv2d: expected a 4-D weight, got ", qw.dim(), "-D");
  TORCH_CHECK(groups > 0 && qw.size(0) % groups == 0, "jitfuse qconv2d: out_channels (", qw.size(0),
              ") must be divisible by a positive groups (", groups, ")");
  TORCH_CHECK(qx.size(1) == qw.size(1) * groups, "jitfuse qconv2d: expected input ", qx.sizes(),
              " to have ", qw.size(1) * groups, " channels, but got ", qx.size(1));
  if (bias.defined())
    TORCH_CHECK(bias.scalar_type() == at::kFloat && bias.dim() == 1 && bias.size(0) == qw.size(0),
                "jitfuse qconv2d: expected a float32 bias of shape [", qw.size(0), "], got ",
                bias.scalar_type(), " ", bias.sizes());
  QConvParams p{pair(stride, "stride"), pair(padding, "padding"), pair(dilation, "dilation"),
                {qx.size(0), qw.size(0)}, groups};
  for (int i = 0; i < 2; ++i) {
    TORCH_CHECK(p.stride[i] > 0 && p.dilation[i] > 0 && p.padding[i] >= 0,
                "jitfuse qconv2d: stride and dilation must be positive, padding non-negative");
    const int64_t in = qx.size(i + 2) + 2 * p.padding[i];
    const int64_t k = p.dilation[i] * (qw.size(i + 2) - 1) + 1;
    TORCH_CHECK(in >= k, "jitfuse qconv2d: calculated padded input size per channel (", in,
                ") is smaller than the dilated kernel size (", k, ")");
    p.out_sizes.push_back((in - k) / p.stride[i] + 1);
  }
  return p;
}

// Whether oneDNN runs an int8 convolution whose post-ops read a uint8 operand between two linear
// ones with an optimized kernel on this CPU (asked once, as a small convolution): else the operand
// is widened to float32 first, as before.
bool int8_operand_post_ops_supported() {
  static const bool supported = [] {
    using md = dnnl::memory::desc;
    using dt = dnnl::memory::data_type;
    const auto nhwc = dnnl::memory::format_tag::nhwc;
    const md src({1, 16, 4, 4}, dt::u8, nhwc), dst({1, 16, 4, 4}, dt::f32, nhwc), operand({1, 16, 4, 4}, dt::u8, nhwc);
    PostOps post{{PostOp::eltwise, algorithm::eltwise_linear, 2.f, -1.f},
                 {PostOp::binary, algorithm::binary_add, 0.f, 0.f, operand},
                 {PostOp::eltwise, algorithm::eltwise_linear, 0.5f, 0.f}};
    try {
      dnnl::convolution_forward::primitive_desc pd(
          onednn::engine(), dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct, src,
          md({16, 16, 1, 1}, dt::s8, dnnl::memory::format_tag::any), dst, {1, 1}, {0, 0}, {0, 0},
          onednn::make_attr(post));
      return !onednn::is_reference(pd);
    } catch (const dnnl::error&) {
      return false;
    }
  }();
  return supported;
}

// bias + zero_point * scale of `out` (zeros where there is no bias), derived once per constant
// bias (or weight, without one) and output parameters.
at::Tensor bias_with_zero_point(const at::Tensor& bias, const at::Tensor& qw, const Int8Output& out) {
  const float shift = static_cast<float>(out.zero_point * out.scale);
  int32_t shift_bits;
  std::memcpy(&shift_bits, &shift, sizeof shift);
  const std::string tag = "bias+" + std::to_string(shift_bits);
  return onednn::derived_weight(bias.defined() ? bias : qw, tag, [&] {
    const at::Tensor base = bias.defined() ? bias.to(at::kFloat) : at::zeros({qw.size(0)}, qw.options().dtype(at::kFloat));
    return (base + shift).contiguous();
  });
}

// Everything in channels_last: oneDNN's int8 kernels work on NHWC. `in_place`: the result goes
// into other_in.values (the `_` ops), which must be able to hold it.
at::Tensor qconv2d_forward(const QInput& x, const at::Tensor& qw, const at::Tensor& weight_scales,
                           const std::optional<at::Tensor>& bias_opt, at::IntArrayRef stride,
                           at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                           const QOther& other_in, bool relu, const Int8Output& out,
                           bool in_place = false) {
  if (x.values.dim() == 3) {  // unbatched, as aten::conv2d takes it: a batch of one
    const at::Tensor batch = x.values.unsqueeze(0);
    QOther batch_other = other_in;
    if (other_in.defined() && other_in.values.dim() == 3) batch_other.values = other_in.values.unsqueeze(0);
    at::Tensor y = qconv2d_forward({batch, x.scale, x.zero_point}, qw, weight_scales, bias_opt, stride, padding,
                                   dilation, groups, batch_other, relu, out, in_place);
    return in_place ? other_in.values : y.squeeze(0);
  }
  const at::Tensor given_bias = bias_opt ? *bias_opt : at::Tensor();
  const auto p = check_qconv(x, qw, weight_scales, given_bias, stride, padding, dilation, groups);
  if (in_place) {
    const auto& o = other_in.values;
    TORCH_CHECK(o.sizes() == at::IntArrayRef(p.out_sizes) &&
                    o.scalar_type() == (out.dtype ? *out.dtype : at::kFloat),
                "jitfuse qconv2d_sum_: other ", o.sizes(), " ", o.scalar_type(),
                " cannot hold the result ", at::IntArrayRef(p.out_sizes), " ",
                out.dtype ? *out.dtype : at::kFloat);
  }
  const bool exact = onednn::int8_weight_exact(qw);
  // An int8 operand of an int8 result is added inside the kernel: oneDNN's sum post-op reads its
  // integers from the output buffer, with their scale and zero point. In place they are there
  // already; else they are copied in.
  const bool int8_sum = exact && out.dtype && other_in.defined() && other_in.scale &&
                        other_in.values.sizes() == at::IntArrayRef(p.out_sizes);
  const bool int8_sum_in_place = int8_sum && in_place && !other_in.values.is_alias_of(x.values) &&
                                 other_in.values.is_contiguous(at::MemoryFormat::ChannelsLast);
  if (in_place && !int8_sum_in_place) {  // out of place, then copied into `other`
    at::Tensor y = qconv2d_forward(x, qw, weight_scales, bias_opt, stride, padding, dilation,
                                   groups, other_in, relu, out);
    return other_in.values.copy_(y);
  }
  // An int8 operand of a float32 result: a binary post-op reads its integers and linear post-ops
  // around it bring the sum to their scale, (y / scale - zero_point + value) * scale, instead of
  // a pass that widens the operand to float32 first (4x its bytes, written then read).
  const bool int8_operand = exact && !out.dtype && other_in.defined() && other_in.scale &&
                            other_in.values.sizes() == at::IntArrayRef(p.out_sizes) &&
                            int8_operand_post_ops_supported();
  at::Tensor other = other_in.defined() && !int8_sum && !int8_operand ? other_in.as_float() : at::Tensor();
  if (!exact || (other.defined() && other.sizes() != at::IntArrayRef(p.out_sizes))) {
    // The convolution alone, then the sum and relu as the unfused graph does them: for an added
    // tensor that broadcasts, and for weights oneDNN would saturate on this CPU (in float32).
    at::Tensor y = exact ? qconv2d_forward(x, qw, weight_scales, bias_opt, stride, padding, dilation, groups, {}, false, {})
                         : at::conv2d(onednn::to_channels_last(quantize::dequantize(x.values, x.scale, x.zero_point)),
                                      onednn::float_weight(qw, weight_scales), given_bias, p.stride,
                                      p.padding, p.dilation, groups);
    if (other.defined()) y = y + other;
    if (relu) y.relu_();
    return onednn::as_output(y, out);
  }
  if (other.defined()) other = other.contiguous(at::MemoryFormat::ChannelsLast);
  at::Tensor dst = int8_sum_in_place ? other_in.values
                                     : onednn::new_output(p.out_sizes, out, at::MemoryFormat::ChannelsLast);
  if (dst.numel() == 0) return dst;
  const at::Tensor src = onednn::to_channels_last(x.values);

  auto weight_dims = qw.sizes().vec();
  if (groups > 1) {
    weight_dims[0] /= groups;
    weight_dims.insert(weight_dims.begin(), groups);
  }
  // An output zero point sends oneDNN 3.2 to its older jit kernels (0.45x brgconv's rate on
  // ResNet-50's downsampling convs, Xeon with AMX). With no relu after, it is the same as a bias
  // of zero_point * scale more: (y + zp s) / s = y / s + zp, within one output step.
  const bool fold_zero_point = out.dtype && out.zero_point != 0 && !relu;
  const at::Tensor bias = fold_zero_point ? bias_with_zero_point(given_bias, qw, out) : given_bias;
  const Int8Output kernel_out = fold_zero_point ? Int8Output{out.dtype, out.scale, 0} : out;
  const int weight_mask = onednn::per_channel(weight_scales) ? (groups > 1 ? 3 : 1) : 0;
  const bool src_zp = x.zero_point != 0;
  PostOps post;
  at::Tensor addend;  // what the binary post-op reads, if there is one
  if (other.defined()) {
    addend = other;
    post.push_back({PostOp::binary, algorithm::binary_add, 0.f, 0.f, onednn::plain_desc(other)});
  }
  if (int8_operand) {
    addend = onednn::to_channels_last(other_in.values);
    const auto scale = static_cast<float>(*other_in.scale);
    post.push_back({PostOp::eltwise, algorithm::eltwise_linear, 1.f / scale, -static_cast<float>(other_in.zero_point)});
    post.push_back({PostOp::binary, algorithm::binary_add, 0.f, 0.f, onednn::plain_desc(addend)});
    post.push_back({PostOp::eltwise, algorithm::eltwise_linear, scale, 0.f});
  }
  const int binary_arg = DNNL_ARG_ATTR_MULTIPLE_POST_OP(int8_operand ? 1 : 0) | DNNL_ARG_SRC_1;
  if (int8_sum) {
    if (!int8_sum_in_place) {
      const at::Tensor integers = onednn::to_channels_last(other_in.values);
      const auto* from = static_cast<const char*>(integers.data_ptr());
      auto* to = static_cast<char*>(dst.data_ptr());
      at::parallel_for(0, integers.nbytes(), 1 << 16, [&](int64_t begin, int64_t end) {
        std::memcpy(to + begin, from + begin, end - begin);
      });
    }
    post.push_back({PostOp::sum, {}, static_cast<float>(*other_in.scale), 0.f, {},
                    static_cast<int32_t>(other_in.zero_point),
                    onednn::data_type(other_in.values.scalar_type())});
  }
  if (relu) post.push_back({PostOp::eltwise, dnnl::algorithm::eltwise_relu});

  onednn::Key key;
  key << src << qw << bias << at::IntArrayRef(p.stride) << at::IntArrayRef(p.padding)
      << at::IntArrayRef(p.dilation) << groups << int64_t{weight_mask} << int64_t{src_zp} << dst
      << int64_t{kernel_out.zero_point != 0} << post;
  auto made = onednn::cached_primitive(key, [&]() -> std::shared_ptr<onednn::CachedPrimitive> {
    dnnl::memory::desc wei(weight_dims, dnnl::memory::data_type::s8, dnnl::memory::format_tag::any);
    dnnl::memory::dims dil{p.dilation[0] - 1, p.dilation[1] - 1};  // oneDNN counts the gaps
    auto attr = onednn::make_attr(post);
    onednn::set_int8_attr(attr, weight_mask, src_zp, kernel_out);
    using pd_t = dnnl::convolution_forward::primitive_desc;
    const auto prop = dnnl::prop_kind::forward_inference;
    const auto alg = dnnl::algorithm::convolution_direct;
    const auto& eng = onednn::engine();
    auto src_md = onednn::plain_desc(src), dst_md = onednn::plain_desc(dst);
    auto pd = bias.defined() ? pd_t(eng, prop, alg, src_md, wei, onednn::plain_desc(bias), dst_md,
                                    p.stride, dil, p.padding, p.padding, attr)
                             : pd_t(eng, prop, alg, src_md, wei, dst_md, p.stride, dil, p.padding,
                                    p.padding, attr);
    std::vector<int> args{DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_DST};
    if (bias.defined()) args.push_back(DNNL_ARG_BIAS);
    if (addend.defined()) args.push_back(binary_arg);
    return std::make_shared<QConvPrimitive>(std::move(pd), args,
                                            onednn::int8_arg_descs(weight_scales.numel(), src_zp, kernel_out));
  });
  const auto& conv = static_cast<const QConvPrimitive&>(*made);
  const at::Tensor wei = onednn::prepacked_weight(qw, conv.run.md(DNNL_ARG_WEIGHTS), [&] {
    return dnnl::memory::desc(weight_dims, dnnl::memory::data_type::s8,
                              groups > 1 ? dnnl::memory::format_tag::goihw
                                         : dnnl::memory::format_tag::oihw);
  });
  onednn::CallArgs args{{DNNL_ARG_SRC, src.data_ptr()}, {DNNL_ARG_WEIGHTS, wei.data_ptr()},
                        {DNNL_ARG_DST, dst.data_ptr()}};
  if (bias.defined()) args.add(DNNL_ARG_BIAS, bias.data_ptr());
  if (addend.defined()) args.add(binary_arg, addend.data_ptr());
  onednn::Int8Args values;
  onednn::add_int8_args(args, values, x.scale, x.zero_point, weight_scales, kernel_out);
  conv.run(args);
  return dst;
}

// The schemas' shared head and tail: the activation and weight, and how the result is
// quantized (out_dtype None: float32).
#define QCONV_ARGS                                                                                 \
  const at::Tensor &qx, double x_scale, int64_t x_zero_point, const at::Tensor &qweight,           \
      const at::Tensor &weight_scales, const std::optional<at::Tensor>&bias, at::IntArrayRef stride, \
      at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups
#define QCONV_OUT_ARGS double out_scale, int64_t out_zero_point, std::optional<at::ScalarType> out_dtype
#define QCONV_CALL(other, relu, name, ...)                                                         \
  qconv2d_forward({qx, x_scale, x_zero_point}, qweight, weight_scales, bias, stride, padding,       \
                  dilation, groups, other, relu,                                                   \
                  onednn::int8_output(out_dtype, out_scale, out_zero_point, name), ##__VA_ARGS__)

at::Tensor qconv2d(QCONV_ARGS, QCONV_OUT_ARGS) { return QCONV_CALL(QOther{}, false, "qconv2d"); }
at::Tensor qconv2d_relu(QCONV_ARGS, QCONV_OUT_ARGS) { return QCONV_CALL(QOther{}, true, "qconv2d_relu"); }
at::Tensor qconv2d_sum(QCONV_ARGS, const at::Tensor& other, std::optional<double> other_scale,
                       std::optional<int64_t> other_zero_point, QCONV_OUT_ARGS) {
  return QCONV_CALL((QOther{other, other_scale, other_zero_point.value_or(0)}), false, "qconv2d_sum");
}
at::Tensor qconv2d_sum_relu(QCONV_ARGS, const at::Tensor& other, std::optional<double> other_scale,
                            std::optional<int64_t> other_zero_point, QCONV_OUT_ARGS) {
  return QCONV_CALL((QOther{other, other_scale, other_zero_point.value_or(0)}), true, "qconv2d_sum_relu");
}
// In place: the result is written into `other` (passes/inplace.cpp uses them where nothing reads
// `other` afterwards).
at::Tensor& qconv2d_sum_(QCONV_ARGS, at::Tensor& other, std::optional<double> other_scale,
                         std::optional<int64_t> other_zero_point, QCONV_OUT_ARGS) {
  QCONV_CALL((QOther{other, other_scale, other_zero_point.value_or(0)}), false, "qconv2d_sum_", true);
  return other;
}
at::Tensor& qconv2d_sum_relu_(QCONV_ARGS, at::Tensor& other, std::optional<double> other_scale,
                              std::optional<int64_t> other_zero_point, QCONV_OUT_ARGS) {
  QCONV_CALL((QOther{other, other_scale, other_zero_point.value_or(0)}), true, "qconv2d_sum_relu_", true);
  return other;
}

// The same, returning nothing (ops/traits.h, kWritesIntoTwins): for functionalization.
void qconv2d_sum_into(QCONV_ARGS, at::Tensor& other, std::optional<double> other_scale,
                      std::optional<int64_t> other_zero_point, QCONV_OUT_ARGS) {
  QCONV_CALL((QOther{other, other_scale, other_zero_point.value_or(0)}), false, "_qconv2d_sum_into", true);
}
void qconv2d_sum_relu_into(QCONV_ARGS, at::Tensor& other, std::optional<double> other_scale,
                           std::optional<int64_t> other_zero_point, QCONV_OUT_ARGS) {
  QCONV_CALL((QOther{other, other_scale, other_zero_point.value_or(0)}), true, "_qconv2d_sum_relu_into", true);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(jitfuse, m) {
  const std::string args =
      "(Tensor qx, float x_scale, int x_zero_point, Tensor qweight, Tensor weight_scales, Tensor? bias, "
      "int[2] stride, int[2] padding, int[2] dilation, int groups, ";
  // other_scale None: other is float32; else its int8 values' scale and zero point.
  const std::string other = "Tensor other, float? other_scale, int? other_zero_point, ";
  const std::string other_ = "Tensor(a!) other, float? other_scale, int? other_zero_point, ";
  const std::string out = "float out_scale, int out_zero_point, ScalarType? out_dtype) -> Tensor";
  const auto cpu = c10::DispatchKey::CPU;
  m.def(("qconv2d" + args + out).c_str(), torch::dispatch(cpu, TORCH_FN(qconv2d)));
  m.def(("qconv2d_relu" + args + out).c_str(), torch::dispatch(cpu, TORCH_FN(qconv2d_relu)));
  m.def(("qconv2d_sum" + args + other + out).c_str(), torch::dispatch(cpu, TORCH_FN(qconv2d_sum)));
  m.def(("qconv2d_sum_relu" + args + other + out).c_str(), torch::dispatch(cpu, TORCH_FN(qconv2d_sum_relu)));
  m.def(("qconv2d_sum_" + args + other_ + out + "(a!)").c_str(), torch::dispatch(cpu, TORCH_FN(qconv2d_sum_)));
  m.def(("qconv2d_sum_relu_" + args + other_ + out + "(a!)").c_str(),
        torch::dispatch(cpu, TORCH_FN(qconv2d_sum_relu_)));
  const std::string nothing = "float out_scale, int out_zero_point, ScalarType? out_dtype) -> ()";
  m.def(("_qconv2d_sum_into" + args + other_ + nothing).c_str(), torch::dispatch(cpu, TORCH_FN(qconv2d_sum_into)));
  m.def(("_qconv2d_sum_relu_into" + args + other_ + nothing).c_str(),
        torch::dispatch(cpu, TORCH_FN(qconv2d_sum_relu_into)));
}

}  // namespace jitfuse
