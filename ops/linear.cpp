// Fused linears: one oneDNN inner-product kernel with a post-op list serves linear, linear_relu and
// linear_gelu. Inputs of any rank (... x in_features); weights prepacked once.
#include "ops/allocator.h"
#include "ops/float_args.h"
#include "ops/onednn.h"

#include <torch/library.h>

namespace jitfuse {
namespace {

using onednn::PostOp;
using onednn::PostOps;
using dnnl::algorithm;

// oneDNN's inner product, not its matmul: on AVX2 matmul takes the plain sgemm path, while inner
// product runs brgemm on a prepacked weight.
using LinearPrimitive = onednn::Primitive<dnnl::inner_product_forward>;

void check_linear(const at::Tensor& input, const at::Tensor& weight,
                  const std::optional<at::Tensor>& bias) {
  onednn::check_input_and_weight("linear", input, weight);
  TORCH_CHECK(input.dim() >= 1, "jitfuse linear: expected an input of at least 1 dimension");
  TORCH_CHECK(weight.dim() == 2, "jitfuse linear: expected a 2-D weight, got ", weight.dim(), "-D");
  TORCH_CHECK(input.size(-1) == weight.size(1), "jitfuse linear: input ", input.sizes(),
              " cannot be multiplied by weight ", weight.sizes(), " (in_features ", weight.size(1), ")");
  if (bias && bias->defined())
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == weight.size(0),
                "jitfuse linear: expected bias of shape [", weight.size(0), "], got ", bias->sizes());
}

at::Tensor linear_forward(const at::Tensor& input, const at::Tensor& weight,
                          const std::optional<at::Tensor>& bias_opt, const PostOps& post) {
  check_linear(input, weight, bias_opt);
  const int64_t k = weight.size(1), n = weight.size(0);
  auto out_sizes = input.sizes().vec();
  out_sizes.back() = n;
  const auto type = onednn::compute_type(input.scalar_type());
  at::Tensor src = input.to(type).reshape({-1, k}).contiguous();
  const int64_t m = src.size(0);
  if (m == 0) return at::empty(out_sizes, input.options());

  at::Tensor bias;
  if (bias_opt && bias_opt->defined()) bias = bias_opt->to(type).contiguous();
  onednn::Key key;
  key << m << k << n << static_cast<int64_t>(type) << bias << weight << post;
  auto made = onednn::cached_primitive(key, [&]() -> std::shared_ptr<onednn::CachedPrimitive> {
    const auto dt = onednn::data_type(type);
    using tag = dnnl::memory::format_tag;
    dnnl::memory::desc src_md({m, k}, dt, tag::ab), wei_md({n, k}, dt, tag::any),
        dst_md({m, n}, dt, tag::ab);
    auto attr = onednn::make_attr(post);
    const auto prop = dnnl::prop_kind::forward_inference;
    using pd_t = dnnl::inner_product_forward::primitive_desc;
    auto pd = bias.defined()
                  ? pd_t(onednn::engine(), prop, src_md, wei_md, onednn::plain_desc(bias), dst_md, attr)
                  : pd_t(onednn::engine(), prop, src_md, wei_md, dst_md, attr);
    std::vector<int> args{DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_DST};
    if (bias.defined()) args.push_back(DNNL_ARG_BIAS);
    return std::make_shared<LinearPrimitive>(std::move(pd), args);
  });
  const auto& ip = static_cast<const LinearPrimitive&>(*made);
  const at::Tensor wei = onednn::prepacked_weight(weight, ip.run.md(DNNL_ARG_WEIGHTS),
                                                  [&] { return onednn::plain_desc(weight); });
  at::Tensor out = memory::empty({m, n}, src.options());
  onednn::CallArgs args{{DNNL_ARG_SRC, src.data_ptr()}, {DNNL_ARG_WEIGHTS, wei.data_ptr()},
                        {DNNL_ARG_DST, out.data_ptr()}};
  if (bias.defined()) args.add(DNNL_ARG_BIAS, bias.data_ptr());
  ip.run(args);
  return out.to(input.scalar_type()).view(out_sizes);
}

at::Tensor linear(const at::Tensor& input, const at::Tensor& weight,
                  const std::optional<at::Tensor>& bias) {
  return linear_forward(input, weight, bias, {});
}

at::Tensor linear_relu(const at::Tensor& input, const at::Tensor& weight,
                       const std::optional<at::Tensor>& bias) {
  return linear_forward(input, weight, bias, {PostOp{PostOp::eltwise, algorithm::eltwise_relu}});
}

// approximate: "none" (erf) or "tanh", as aten::gelu.
at::Tensor linear_gelu(const at::Tensor& input, const at::Tensor& weight,
                       const std::optional<at::Tensor>& bias, c10::string_view approximate) {
  TORCH_CHECK(approximate == "none" || approximate == "tanh",
              "jitfuse linear_gelu: approximate must be 'none' or 'tanh', got '", approximate, "'");
  const auto alg = approximate == "none" ? algorithm::eltwise_gelu_erf : algorithm::eltwise_gelu_tanh;
  return linear_forward(input, weight, bias, {PostOp{PostOp::eltwise, alg}});
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(jitfuse, m) {
  const auto cpu = c10::DispatchKey::CPU;
  m.def("linear(Tensor input, Tensor weight, Tensor? bias) -> Tensor",
        torch::dispatch(cpu, TORCH_FN(linear)));
  m.def("linear_relu(Tensor input, Tensor weight, Tensor? bias) -> Tensor",
        torch::dispatch(cpu, TORCH_FN(linear_relu)));
  m.def("linear_gelu(Tensor input, Tensor weight, Tensor? bias, str approximate='none') -> Tensor",
        torch::dispatch(cpu, TORCH_FN(linear_gelu)));
}

}  // namespace jitfuse
