// int8 matrix products. qlinear[_relu|_gelu|_sigmoid|_sum]: a quantized activation of any rank
// (... x in_features) times a per-channel qint8 weight on oneDNN's int8 matmul, with the
// activation or sum as post-ops. qbmm[_div]: attention's batched products of two quantized
// activations. Float32 or quantized out (out_dtype None: float32). Schemas at the bottom.
#include "ops/onednn.h"

#include <torch/library.h>

namespace jitfuse {
namespace {

using onednn::Int8Output;
using onednn::PostOp;
using onednn::PostOps;
using dnnl::algorithm;

using QLinearPrimitive = onednn::Primitive<dnnl::matmul>;

void check_qlinear(const at::Tensor& qx, const at::Tensor& qw, const at::Tensor& bias) {
  onednn::check_quantized_activation("qlinear", qx);
  onednn::check_quantized_weight("qlinear", qw);
  TORCH_CHECK(qx.dim() >= 1, "jitfuse qlinear: expected an input of at least 1 dimension");
  TORCH_CHECK(qw.dim() == 2, "jitfuse qlinear: expected a 2-D weight, got ", qw.dim(), "-D");
  TORCH_CHECK(qx.size(-1) == qw.size(1), "jitfuse qlinear: input ", qx.sizes(),
              " cannot be multiplied by weight ", qw.sizes(), " (in_features ", qw.size(1), ")");
  if (bias.defined())
    TORCH_CHECK(bias.scalar_type() == at::kFloat && bias.dim() == 1 && bias.size(0) == qw.size(0),
                "jitfuse qlinear: expected a float32 bias of shape [", qw.size(0), "], got ",
                bias.scalar_type(), " ", bias.sizes());
}

// `eltwise` (undef: none) follows the sum of `other` (undefined: none).
at::Tensor qlinear_forward(const at::Tensor& qx, const at::Tensor& qw,
                           const std::optional<at::Tensor>& bias_opt, const at::Tensor& other_in,
                           algorithm eltwise, const Int8Output& out) {
  const at::Tensor bias = bias_opt ? *bias_opt : at::Tensor();
  check_qlinear(qx, qw, bias);
  const int64_t k = qw.size(1), n = qw.size(0);
  auto out_sizes = qx.sizes().vec();
  out_sizes.back() = n;
  at::Tensor other = other_in.defined() ? onednn::float_operand("qlinear_sum", other_in) : at::Tensor();
  const bool exact = onednn::int8_weight_exact(qw);
  if (!exact || (other.defined() && other.sizes() != at::IntArrayRef(out_sizes))) {
    // The product alone, then the sum and activation as the unfused graph does them: for an
    // added tensor that broadcasts, and for weights oneDNN would saturate on this CPU (in float32).
    at::Tensor y = exact ? qlinear_forward(qx, qw, bias_opt, {}, algorithm::undef, {})
                         : at::linear(qx.dequantize(), qw.dequantize(), bias_opt);
    if (other.defined()) y = y + other;
    if (eltwise == algorithm::eltwise_relu) y.relu_();
    if (eltwise == algorithm::eltwise_logistic) y.sigmoid_();
    if (eltwise == algorithm::eltwise_gelu_erf) y = at::gelu(y);
    if (eltwise == algorithm::eltwise_gelu_tanh) y = at::gelu(y, "tanh");
    return onednn::as_output(y, out);
  }
  if (other.defined()) other = other.reshape({-1, n}).contiguous();
  const at::Tensor src = qx.reshape({-1, k}).contiguous();
  const int64_t m = src.size(0);
  at::Tensor dst = onednn::new_output({m, n}, out, at::MemoryFormat::Contiguous);
  if (m == 0) return dst.view(out_sizes);
  const at::Tensor bias_row = bias.defined() ? bias.contiguous().view({1, n}) : at::Tensor();

  const int weight_mask = onednn::per_channel(qw) ? 1 << 1 : 0;  // along N
  const bool src_zp = qx.q_zero_point() != 0;
  PostOps post;
  if (other.defined()) post.push_back({PostOp::binary_add, {}, 0.f, 0.f, onednn::plain_desc(other)});
  if (eltwise != algorithm::undef) post.push_back({PostOp::eltwise, eltwise});
  onednn::Key key;
  key << src << qw << bias_row << int64_t{weight_mask} << int64_t{src_zp} << dst
      << int64_t{out.zero_point != 0} << post;
  // [n, k] row-major is the [k, n] weight oneDNN's matmul wants, transposed.
  const dnnl::memory::desc user_weight({k, n}, dnnl::memory::data_type::s8, {1, k});
  auto made = onednn::cached_primitive(key, [&]() -> std::shared_ptr<onednn::CachedPrimitive> {
    dnnl::memory::desc wei({k, n}, dnnl::memory::data_type::s8, dnnl::memory::format_tag::any);
    auto attr = onednn::make_attr(post);
    onednn::set_int8_attr(attr, weight_mask, src_zp, out);
    using pd_t = dnnl::matmul::primitive_desc;
    const auto& eng = onednn::engine();
    auto src_md = onednn::plain_desc(src), dst_md = onednn::plain_desc(dst);
    auto pd = bias_row.defined()
                  ? pd_t(eng, src_md, wei, onednn::plain_desc(bias_row), dst_md, attr)
                  : pd_t(eng, src_md, wei, dst_md, attr);
    return std::make_shared<QLinearPrimitive>(std::move(pd));
  });
  const auto& mm = static_cast<const QLinearPrimitive&>(*made);
  auto wei = onednn::prepacked_weight(qw, mm.pd.weights_desc(), [&] { return user_weight; });
  std::unordered_map<int, dnnl::memory> args{{DNNL_ARG_SRC, onednn::wrap(src)},
                                             {DNNL_ARG_WEIGHTS, wei.memory},
                                             {DNNL_ARG_DST, onednn::wrap(dst)}};
  if (bias_row.defined()) args.emplace(DNNL_ARG_BIAS, onednn::wrap(bias_row));
  if (other.defined())
    args.emplace(DNNL_ARG_ATTR_MULTIPLE_POST_OP(0) | DNNL_ARG_SRC_1, onednn::wrap(other));
  onednn::Int8Args values;
  onednn::add_int8_args(args, values, src, qw, out);
  onednn::execute(mm.prim, mm.pd.scratchpad_desc(), std::move(args));
  return dst.view(out_sizes);
}

#define QLINEAR_ARGS const at::Tensor &qx, const at::Tensor &qweight, const std::optional<at::Tensor>&bias
#define OUT_ARGS double out_scale, int64_t out_zero_point, std::optional<at::ScalarType> out_dtype

at::Tensor qlinear(QLINEAR_ARGS, OUT_ARGS) {
  return qlinear_forward(qx, qweight, bias, {}, algorithm::undef,
                         onednn::int8_output(out_dtype, out_scale, out_zero_point, "qlinear"));
}
at::Tensor qlinear_relu(QLINEAR_ARGS, OUT_ARGS) {
  return qlinear_forward(qx, qweight, bias, {}, algorithm::eltwise_relu,
                         onednn::int8_output(out_dtype, out_scale, out_zero_point, "qlinear_relu"));
}
at::Tensor qlinear_sigmoid(QLINEAR_ARGS, OUT_ARGS) {
  return qlinear_forward(qx, qweight, bias, {}, algorithm::eltwise_logistic,
                         onednn::int8_output(out_dtype, out_scale, out_zero_point, "qlinear_sigmoid"));
}
// approximate: "none" (erf) or "tanh", as aten::gelu.
at::Tensor qlinear_gelu(QLINEAR_ARGS, c10::string_view approximate, OUT_ARGS) {
  TORCH_CHECK(approximate == "none" || approximate == "tanh",
              "jitfuse qlinear_gelu: approximate must be 'none' or 'tanh', got '", approximate, "'");
  return qlinear_forward(
      qx, qweight, bias, {},
      approximate == "none" ? algorithm::eltwise_gelu_erf : algorithm::eltwise_gelu_tanh,
      onednn::int8_output(out_dtype, out_scale, out_zero_point, "qlinear_gelu"));
}
at::Tensor qlinear_sum(QLINEAR_ARGS, const at::Tensor& other, OUT_ARGS) {
  return qlinear_forward(qx, qweight, bias, other, algorithm::undef,
                         onednn::int8_output(out_dtype, out_scale, out_zero_point, "qlinear_sum"));
}

// Attention's products: both operands are activations quantized per tensor. They are widened to
// float32 and multiplied there (a small share of a transformer's work); the op saves the graph's
// dequantize/quantize round trips.
at::Tensor qbmm_forward(const at::Tensor& qa, const at::Tensor& qb,
                        const std::optional<at::Scalar>& divisor, const Int8Output& out) {
  onednn::check_quantized_activation("qbmm", qa);
  onednn::check_quantized_activation("qbmm", qb);
  TORCH_CHECK(qa.dim() >= 3 && qa.dim() == qb.dim(), "jitfuse qbmm: expected two batched "
              "matrices of one rank >= 3, got ", qa.sizes(), " and ", qb.sizes());
  at::Tensor y = at::matmul(qa.dequantize(), qb.dequantize());
  if (divisor) y.div_(*divisor);
  return onednn::as_output(y, out);
}

at::Tensor qbmm(const at::Tensor& qa, const at::Tensor& qb, OUT_ARGS) {
  return qbmm_forward(qa, qb, std::nullopt,
                      onednn::int8_output(out_dtype, out_scale, out_zero_point, "qbmm"));
}
at::Tensor qbmm_div(const at::Tensor& qa, const at::Tensor& qb, const at::Scalar& divisor, OUT_ARGS) {
  return qbmm_forward(qa, qb, divisor,
                      onednn::int8_output(out_dtype, out_scale, out_zero_point, "qbmm_div"));
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(jitfuse, m) {
  // No dispatch key: inputs mix quantized and float tensors; the kernels check them themselves.
  const std::string args = "(Tensor qx, Tensor qweight, Tensor? bias, ";
  const std::string out = "float out_scale, int out_zero_point, ScalarType? out_dtype) -> Tensor";
  auto schema = [](const std::string& s) { return c10::FunctionSchema(torch::schema(s.c_str())); };
  m.def(schema("qlinear" + args + out), TORCH_FN(qlinear));
  m.def(schema("qlinear_relu" + args + out), TORCH_FN(qlinear_relu));
  m.def(schema("qlinear_sigmoid" + args + out), TORCH_FN(qlinear_sigmoid));
  m.def(schema("qlinear_gelu" + args + "str approximate, " + out), TORCH_FN(qlinear_gelu));
  m.def(schema("qlinear_sum" + args + "Tensor other, " + out), TORCH_FN(qlinear_sum));
  m.def(schema("qbmm(Tensor qa, Tensor qb, " + out), TORCH_FN(qbmm));
  m.def(schema("qbmm_div(Tensor qa, Tensor qb, Scalar divisor, " + out), TORCH_FN(qbmm_div));
}

}  // namespace jitfuse
