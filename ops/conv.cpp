// Fused convolutions: one oneDNN convolution kernel with a post-op list serves every
// conv{2,3}d[_activation|_sum[_relu]] op. The schemas are at the bottom, next to their post-ops.
#include "ops/allocator.h"
#include "ops/float_args.h"
#include "ops/onednn.h"
#include "ops/winograd.h"

#include <torch/library.h>

namespace jitfuse {
namespace {

using onednn::PostOp;
using onednn::PostOps;
using dnnl::algorithm;

struct ConvPrimitive : onednn::CachedPrimitive {
  dnnl::convolution_forward::primitive_desc pd;
  onednn::Runner run;  // arguments: src, weights, dst (, bias)
  // Torch memory formats that lie exactly as oneDNN's chosen src / dst layouts (none: blocked).
  std::optional<at::MemoryFormat> src_format, dst_format;
  ConvPrimitive(dnnl::convolution_forward::primitive_desc p, bool bias, at::IntArrayRef src_sizes,
                at::IntArrayRef dst_sizes, at::ScalarType type)
      : pd(std::move(p)),
        run(pd, dnnl::convolution_forward(pd),
            bias ? std::vector<int>{DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_DST, DNNL_ARG_BIAS}
                 : std::vector<int>{DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_DST}),
        src_format(onednn::torch_format_of(pd.src_desc(), src_sizes, type)),
        dst_format(onednn::torch_format_of(pd.dst_desc(), dst_sizes, type)) {}
};

std::vector<int64_t> expand(at::IntArrayRef v, int64_t n, const char* what) {
  TORCH_CHECK(v.size() == 1 || static_cast<int64_t>(v.size()) == n, "jitfuse conv: ", what,
              " must have 1 or ", n, " elements, got ", v.size());
  return v.size() == 1 ? std::vector<int64_t>(n, v[0]) : v.vec();
}

// Everything about a call that is not data: shapes, types and attributes, checked like ATen does.
struct ConvParams {
  std::vector<int64_t> stride, padding, dilation, out_sizes;
  int64_t groups;
  at::ScalarType compute_type;
};

ConvParams check_conv(int64_t spatial, const at::Tensor& input, const at::Tensor& weight,
                      const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                      at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  const int64_t rank = spatial + 2;
  onednn::check_input_and_weight("conv", input, weight);
  TORCH_CHECK(input.dim() == rank, "jitfuse conv", spatial, "d: expected a ", rank,
              "-D input, got ", input.dim(), "-D of shape ", input.sizes());
  TORCH_CHECK(weight.dim() == rank, "jitfuse conv", spatial, "d: expected a ", rank,
              "-D weight, got ", weight.dim(), "-D");
  TORCH_CHECK(groups > 0, "jitfuse conv: groups must be positive, got ", groups);
  const int64_t out_channels = weight.size(0);
  TORCH_CHECK(out_channels % groups == 0, "jitfuse conv: out_channels (", out_channels,
              ") must be divisible by groups (", groups, ")");
  TORCH_CHECK(input.size(1) == weight.size(1) * groups, "jitfuse conv: expected input ",
              input.sizes(), " to have ", weight.size(1) * groups, " channels, but got ",
              input.size(1), " channels instead");
  if (bias && bias->defined()) {
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == out_channels,
                "jitfuse conv: expected bias of shape [", out_channels, "], got ", bias->sizes());
    TORCH_CHECK(bias->scalar_type() == at::kFloat || bias->scalar_type() == input.scalar_type(),
                "jitfuse conv: unsupported bias dtype ", bias->scalar_type());
  }
  ConvParams p;
  p.groups = groups;
  p.stride = expand(stride, spatial, "stride");
  p.padding = expand(padding, spatial, "padding");
  p.dilation = expand(dilation, spatial, "dilation");
  p.out_sizes = {input.size(0), out_channels};
  for (int64_t i = 0; i < spatial; ++i) {
    TORCH_CHECK(p.stride[i] > 0 && p.dilation[i] > 0 && p.padding[i] >= 0,
                "jitfuse conv: stride and dilation must be positive, padding non-negative");
    const int64_t in = input.size(i + 2) + 2 * p.padding[i];
    const int64_t k = p.dilation[i] * (weight.size(i + 2) - 1) + 1;
    TORCH_CHECK(in >= k, "jitfuse conv: calculated padded input size per channel (", in,
                ") is smaller than the dilated kernel size (", k, ")");
    p.out_sizes.push_back((in - k) / p.stride[i] + 1);
  }
  p.compute_type = onednn::compute_type(input.scalar_type());
  return p;
}

std::vector<int64_t> grouped_weight_dims(const at::Tensor& w, int64_t groups) {
  auto dims = w.sizes().vec();
  if (groups == 1) return dims;
  dims[0] /= groups;
  dims.insert(dims.begin(), groups);
  return dims;
}

std::shared_ptr<ConvPrimitive> conv_primitive(const ConvParams& p, const at::Tensor& input,
                                              const at::Tensor& weight,
                                              const at::Tensor& bias, const PostOps& post) {
  onednn::Key key;
  key << input << weight << bias << at::IntArrayRef(p.stride) << at::IntArrayRef(p.padding)
      << at::IntArrayRef(p.dilation) << p.groups << static_cast<int64_t>(p.compute_type) << post;
  auto made = onednn::cached_primitive(key, [&]() -> std::shared_ptr<onednn::CachedPrimitive> {
    const auto dt = onednn::data_type(p.compute_type);
    auto wei = dnnl::memory::desc(grouped_weight_dims(weight, p.groups), dt,
                                  dnnl::memory::format_tag::any);
    dnnl::memory::dims dil(p.dilation.begin(), p.dilation.end());
    for (auto& d : dil) d -= 1;  // oneDNN counts the gaps
    auto attr = onednn::make_attr(post);
    const auto& eng = onednn::engine();
    using pd_t = dnnl::convolution_forward::primitive_desc;
    auto create = [&](const dnnl::memory::desc& src, const dnnl::memory::desc& dst) {
      return bias.defined()
                 ? pd_t(eng, dnnl::prop_kind::forward_inference, algorithm::convolution_direct,
                        src, wei, onednn::plain_desc(bias), dst, p.stride, dil, p.padding,
                        p.padding, attr)
                 : pd_t(eng, dnnl::prop_kind::forward_inference, algorithm::convolution_direct,
                        src, wei, dst, p.stride, dil, p.padding, p.padding, attr);
    };
    // NHWC in and out: what fused graphs pass between convs, and oneDNN's fastest layout for
    // every ResNet shape here. Left to oneDNN (`any`) only where it has no NHWC kernel. (`any`
    // alone picks NCHW in and blocked out for a 3-channel image: a reorder on both sides.)
    auto pd = create(onednn::channels_last_desc(input.sizes(), p.compute_type),
                     onednn::channels_last_desc(p.out_sizes, p.compute_type));
    if (onednn::is_reference(pd))
      pd = create(onednn::any_desc(input.sizes(), p.compute_type),
                  onednn::any_desc(p.out_sizes, p.compute_type));
    return std::make_shared<ConvPrimitive>(std::move(pd), bias.defined(), input.sizes(), p.out_sizes,
                                           p.compute_type);
  });
  return std::static_pointer_cast<ConvPrimitive>(made);
}

// What Winograd's output transform applies of `post`: the sum's scale (0: no sum), then relu.
std::optional<std::pair<float, bool>> winograd_epilogue(const PostOps& post) {
  float sum_alpha = 0.f;
  bool relu = false;
  for (size_t i = 0; i < post.size(); ++i) {
    const auto& op = post[i];
    if (op.kind == PostOp::sum && i == 0 && op.alpha != 0.f)
      sum_alpha = op.alpha;
    else if (op.kind == PostOp::eltwise && op.alg == algorithm::eltwise_relu && op.alpha == 0.f && !relu)
      relu = true;
    else
      return std::nullopt;
  }
  return std::make_pair(sum_alpha, relu);
}

// `other`, when set, is what the sum post-op adds. With `into_other` the result is written into
// `other` itself (the pass proved nothing reads it afterwards): no copy when its layout is the
// one the kernel writes.
// `p` is what check_conv made of the call.
at::Tensor conv_forward(const ConvParams& p, const at::Tensor& input, const at::Tensor& weight,
                        const std::optional<at::Tensor>& bias_opt, const PostOps& post,
                        const at::Tensor* other = nullptr, bool into_other = false) {
  const auto user_format = input.suggest_memory_format();
  if (other) {
    TORCH_CHECK(other->scalar_type() == input.scalar_type(), "jitfuse conv_sum: other (",
                other->scalar_type(), ") must have the input's dtype (", input.scalar_type(), ")");
    TORCH_CHECK(at::infer_size(other->sizes(), p.out_sizes) == p.out_sizes,
                "jitfuse conv_sum: other of shape ", other->sizes(),
                " does not broadcast to the convolution output ", at::IntArrayRef(p.out_sizes));
  }
  if (input.numel() == 0 || c10::multiply_integers(p.out_sizes) == 0)
    return at::empty(p.out_sizes, input.options().memory_format(user_format));

  at::Tensor bias;
  if (bias_opt && bias_opt->defined())
    bias = p.compute_type == at::kFloat ? bias_opt->to(at::kFloat).contiguous()
                                        : bias_opt->contiguous();
  const auto epilogue = winograd_epilogue(post);
  const bool winograd = epilogue && input.dim() == 4 &&
                        winograd::serves(p.compute_type, weight, p.out_sizes, p.stride, p.dilation, p.groups);
  const auto conv = winograd ? nullptr : conv_primitive(p, input, weight, bias, post);

  // Write straight into a torch tensor when the kernel's layout is a torch one; else into a buffer.
  const auto dst_format = winograd ? std::optional(at::MemoryFormat::ChannelsLast) : conv->dst_format;
  at::Tensor out;
  if (dst_format) {
    const bool reuse_other = into_other && other->scalar_type() == p.compute_type &&
                             other->sizes() == at::IntArrayRef(p.out_sizes) &&
                             other->is_contiguous(*dst_format) && !other->is_alias_of(input);
    out = reuse_other ? *other
                      : memory::empty(p.out_sizes, input.options().dtype(p.compute_type), *dst_format);
  }
  // Without native bf16 kernels, convert with ATen (vectorized; oneDNN's f32<->bf16 reorder is
  // its slow reference one here) and compute in f32.
  at::Tensor src_tensor = input.to(p.compute_type);

  if (winograd) {
    if (other && !out.is_same(*other)) out.copy_(other->expand(p.out_sizes));  // what the sum adds
    winograd::conv2d_3x3(onednn::to_channels_last(src_tensor), weight, bias, p.padding,
                         epilogue->first, epilogue->second, out);
  } else {
    const auto& dst_md = conv->run.md(DNNL_ARG_DST);
    const at::Tensor src = conv->src_format && src_tensor.is_contiguous(*conv->src_format)
                               ? src_tensor
                               : onednn::as_layout(src_tensor, conv->run.md(DNNL_ARG_SRC));
    const at::Tensor wei = onednn::prepacked_weight(weight, conv->run.md(DNNL_ARG_WEIGHTS), [&] {
      return onednn::plain_desc(weight.view(grouped_weight_dims(weight, p.groups)));
    });
    const at::Tensor dst = out.defined() ? out : onednn::buffer(dst_md);
    if (other && !(out.defined() && out.is_same(*other))) {  // the sum post-op adds what dst holds
      if (out.defined()) {
        out.copy_(other->expand(p.out_sizes));
      } else {
        onednn::reorder(onednn::wrap(other->expand(p.out_sizes).to(p.compute_type).contiguous()),
                        onednn::wrap(dst, dst_md));
      }
    }
    onednn::CallArgs args{{DNNL_ARG_SRC, src.data_ptr()}, {DNNL_ARG_WEIGHTS, wei.data_ptr()},
                          {DNNL_ARG_DST, dst.data_ptr()}};
    if (bias.defined()) args.add(DNNL_ARG_BIAS, bias.data_ptr());
    conv->run(args);
    if (!out.defined()) {  // blocked layout: reorder back into a plain tensor
      out = memory::empty(p.out_sizes, input.options().dtype(p.compute_type), user_format);
      onednn::reorder(onednn::wrap(dst, dst_md), onednn::wrap(out));
    }
  }
  if (into_other) {
    if (!out.is_same(*other)) other->copy_(out);
    return *other;
  }
  if (out.scalar_type() != input.scalar_type()) out = out.to(input.scalar_type());
  return out.contiguous(user_format);
}

// ---- schemas and their post-ops --------------------------------------------------------------

PostOps eltwise(algorithm alg, double alpha = 0, double beta = 0) {
  return {PostOp{PostOp::eltwise, alg, static_cast<float>(alpha), static_cast<float>(beta)}};
}

enum class Act { none, relu, sigmoid, swish };

PostOps activation(Act a) {
  switch (a) {
    case Act::none: return {};
    case Act::relu: return eltwise(algorithm::eltwise_relu);
    case Act::sigmoid: return eltwise(algorithm::eltwise_logistic);
    case Act::swish: return eltwise(algorithm::eltwise_swish, 1.0);  // x * sigmoid(x) = silu
  }
  return {};
}

// aten::conv{2,3}d also takes an input without its batch dim (the executor's types need not say
// which it gets): the ops compute it as a batch of one.
bool is_unbatched(int64_t spatial, const at::Tensor& input) { return input.dim() == spatial + 1; }

template <int64_t D, Act A>
at::Tensor conv_act(const at::Tensor& input, const at::Tensor& weight,
                    const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                    at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  if (is_unbatched(D, input))
    return conv_act<D, A>(input.unsqueeze(0), weight, bias, stride, padding, dilation, groups).squeeze(0);
  const auto p = check_conv(D, input, weight, bias, stride, padding, dilation, groups);
  return conv_forward(p, input, weight, bias, activation(A));
}

template <int64_t D>
at::Tensor conv_hardtanh(const at::Tensor& input, const at::Tensor& weight,
                         const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                         at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                         const at::Scalar& min_val, const at::Scalar& max_val) {
  if (is_unbatched(D, input))
    return conv_hardtanh<D>(input.unsqueeze(0), weight, bias, stride, padding, dilation, groups, min_val, max_val)
        .squeeze(0);
  const auto p = check_conv(D, input, weight, bias, stride, padding, dilation, groups);
  return conv_forward(p, input, weight, bias,
                      eltwise(algorithm::eltwise_clip, min_val.toDouble(), max_val.toDouble()));
}

template <int64_t D>
at::Tensor conv_elu(const at::Tensor& input, const at::Tensor& weight,
                    const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                    at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                    const at::Scalar& alpha) {
  if (is_unbatched(D, input))
    return conv_elu<D>(input.unsqueeze(0), weight, bias, stride, padding, dilation, groups, alpha).squeeze(0);
  const auto p = check_conv(D, input, weight, bias, stride, padding, dilation, groups);
  return conv_forward(p, input, weight, bias, eltwise(algorithm::eltwise_elu, alpha.toDouble()));
}

// conv(input) + alpha * other, then the activation; the `_` ops write the result into other.
template <int64_t D, Act A, bool InPlace>
at::Tensor conv_sum(const at::Tensor& input, const at::Tensor& weight,
                    const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                    at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                    const at::Tensor& other, const at::Scalar& alpha) {
  static_assert(A == Act::none || A == Act::relu, "conv_sum activations: none or relu");
  if (is_unbatched(D, input)) {  // an unbatched other becomes a view of one batch (in place: written)
    const at::Tensor batch_other = other.dim() == D + 1 ? other.unsqueeze(0) : other;
    at::Tensor out = conv_sum<D, A, InPlace>(input.unsqueeze(0), weight, bias, stride, padding, dilation,
                                             groups, batch_other, alpha);
    return InPlace ? other : out.squeeze(0);
  }
  const auto p = check_conv(D, input, weight, bias, stride, padding, dilation, groups);
  const bool fits = other.scalar_type() == input.scalar_type() &&
                    at::infer_size(other.sizes(), p.out_sizes) == p.out_sizes;
  if (!fits) {  // type promotion or a broadcast that grows the result: ATen does the add
    TORCH_CHECK(!InPlace, "jitfuse conv_sum_: other ", other.sizes(), " ", other.scalar_type(),
                " cannot hold the result");
    auto out = at::add(conv_forward(p, input, weight, bias, {}), other, alpha);
    return A == Act::relu ? at::relu(out) : out;
  }
  if (InPlace)
    TORCH_CHECK(other.sizes() == at::IntArrayRef(p.out_sizes), "jitfuse conv_sum_: other ",
                other.sizes(), " cannot hold the result ", at::IntArrayRef(p.out_sizes));
  PostOps post{PostOp{PostOp::sum, algorithm::undef, static_cast<float>(alpha.toDouble())}};
  for (const auto& op : activation(A)) post.push_back(op);
  return conv_forward(p, input, weight, bias, post, &other, InPlace);
}

// The in-place sum returning nothing (ops/traits.h, kWritesIntoTwins): for functionalization.
template <int64_t D, Act A>
void conv_sum_into(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                   at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                   const at::Tensor& other, const at::Scalar& alpha) {
  conv_sum<D, A, true>(input, weight, bias, stride, padding, dilation, groups, other, alpha);
}

constexpr const char* kConvArgs =
    "(Tensor input, Tensor weight, Tensor? bias, int[] stride, int[] padding, int[] dilation, "
    "int groups";

template <int64_t D>
void define_conv_ops(torch::Library& m) {
  const std::string conv = "conv" + std::to_string(D) + "d";
  auto def = [&](const std::string& suffix, const std::string& extra, auto fn) {
    const std::string schema = conv + suffix + kConvArgs + extra + ") -> Tensor";
    m.def(schema.c_str(), torch::dispatch(c10::DispatchKey::CPU, fn));
  };
  auto def_inplace = [&](const std::string& suffix, auto fn) {
    const std::string schema =
        conv + suffix + kConvArgs + ", Tensor(a!) other, Scalar alpha=1) -> Tensor(a!)";
    m.def(schema.c_str(), torch::dispatch(c10::DispatchKey::CPU, fn));
  };
  // op name suffix     extra arguments                              kernel
  def("",               "",                                          TORCH_FN((conv_act<D, Act::none>)));
  def("_relu",          "",                                          TORCH_FN((conv_act<D, Act::relu>)));
  def("_sigmoid",       "",                                          TORCH_FN((conv_act<D, Act::sigmoid>)));
  def("_swish",         "",                                          TORCH_FN((conv_act<D, Act::swish>)));
  def("_silu",          "",                                          TORCH_FN((conv_act<D, Act::swish>)));
  def("_hardtanh",      ", Scalar min_val, Scalar max_val",          TORCH_FN(conv_hardtanh<D>));
  def("_elu",           ", Scalar alpha",                            TORCH_FN(conv_elu<D>));
  def("_sum",           ", Tensor other, Scalar alpha=1",            TORCH_FN((conv_sum<D, Act::none, false>)));
  def("_sum_relu",      ", Tensor other, Scalar alpha=1",            TORCH_FN((conv_sum<D, Act::relu, false>)));
  // In-place forms, for when nothing reads `other` afterwards (passes/layout.cpp decides).
  def_inplace("_sum_",      TORCH_FN((conv_sum<D, Act::none, true>)));
  def_inplace("_sum_relu_", TORCH_FN((conv_sum<D, Act::relu, true>)));
  auto def_into = [&](const std::string& suffix, auto fn) {
    const std::string schema = "_" + conv + suffix + kConvArgs + ", Tensor(a!) other, Scalar alpha=1) -> ()";
    m.def(schema.c_str(), torch::dispatch(c10::DispatchKey::CPU, fn));
  };
  def_into("_sum_into",      TORCH_FN((conv_sum_into<D, Act::none>)));
  def_into("_sum_relu_into", TORCH_FN((conv_sum_into<D, Act::relu>)));
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(jitfuse, m) {
  define_conv_ops<2>(m);
  define_conv_ops<3>(m);
}

}  // namespace jitfuse
