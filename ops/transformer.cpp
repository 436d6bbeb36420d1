// Transformer-block ops: residual add + LayerNorm in one pass over each row, scaled and masked
// softmax (attention scores) on oneDNN binary + softmax, and the head-merge copy as one op.
#include "ops/onednn.h"

#include <ATen/Parallel.h>
#include <torch/library.h>

namespace jitfuse {
namespace {

// ---- add_layernorm ---------------------------------------------------------------------------

// Sums in 8 independent lanes so the compiler vectorizes the reductions.
constexpr int64_t kLanes = 8;

float lane_sum(const float* lanes) {
  float s = 0.f;
  for (int64_t l = 0; l < kLanes; ++l) s += lanes[l];
  return s;
}

template <typename T>
void add_layernorm_rows(const T* a, const T* b, float alpha, const float* gamma, const float* beta,
                        float eps, T* out, int64_t rows, int64_t d) {
  at::parallel_for(0, rows, 16, [&](int64_t begin, int64_t end) {
    std::vector<float> sum(d);
    for (int64_t r = begin; r < end; ++r) {
      const T* ar = a + r * d;
      const T* br = b + r * d;
      float acc[kLanes] = {};
      const int64_t body = d - d % kLanes;
      for (int64_t j = 0; j < body; j += kLanes)
        for (int64_t l = 0; l < kLanes; ++l) {
          sum[j + l] = static_cast<float>(ar[j + l]) + alpha * static_cast<float>(br[j + l]);
          acc[l] += sum[j + l];
        }
      float total = lane_sum(acc);
      for (int64_t j = body; j < d; ++j) {
        sum[j] = static_cast<float>(ar[j]) + alpha * static_cast<float>(br[j]);
        total += sum[j];
      }
      const float mean = total / d;
      float sq[kLanes] = {};
      for (int64_t j = 0; j < body; j += kLanes)
        for (int64_t l = 0; l < kLanes; ++l) sq[l] += (sum[j + l] - mean) * (sum[j + l] - mean);
      float var = lane_sum(sq);
      for (int64_t j = body; j < d; ++j) var += (sum[j] - mean) * (sum[j] - mean);
      const float rstd = 1.f / std::sqrt(var / d + eps);
      T* o = out + r * d;
      for (int64_t j = 0; j < d; ++j) {
        float y = (sum[j] - mean) * rstd;
        if (gamma) y = y * gamma[j];
        if (beta) y = y + beta[j];
        o[j] = static_cast<T>(y);
      }
    }
  });
}

// layer_norm(a + alpha * b) over the trailing `normalized_shape` dims, the sum never stored.
at::Tensor add_layernorm(const at::Tensor& a, const at::Tensor& b, const at::Scalar& alpha,
                         at::IntArrayRef normalized_shape, const std::optional<at::Tensor>& weight,
                         const std::optional<at::Tensor>& bias, double eps) {
  const bool fused = a.device().is_cpu() && a.sizes() == b.sizes() &&
                     a.scalar_type() == b.scalar_type() &&
                     (a.scalar_type() == at::kFloat || a.scalar_type() == at::kBFloat16);
  if (!fused)  // broadcasting or type promotion: exactly what the graph did
    return at::layer_norm(at::add(a, b, alpha), normalized_shape, weight, bias, eps);
  const int64_t nd = normalized_shape.size();
  TORCH_CHECK(nd >= 1 && a.dim() >= nd && a.sizes().slice(a.dim() - nd) == normalized_shape,
              "jitfuse add_layernorm: normalized_shape ", normalized_shape,
              " does not match the input's trailing dims ", a.sizes());
  const int64_t d = c10::multiply_integers(normalized_shape);
  auto params = [&](const std::optional<at::Tensor>& p) -> at::Tensor {
    if (!p || !p->defined()) return {};
    TORCH_CHECK(p->numel() == d, "jitfuse add_layernorm: weight/bias must have ", d, " elements");
    return p->to(at::kFloat).contiguous();
  };
  at::Tensor gamma = params(weight), beta = params(bias);
  at::Tensor ac = a.contiguous(), bc = b.contiguous();
  at::Tensor out = at::empty_like(ac, at::MemoryFormat::Contiguous);
  if (out.numel() == 0) return out;
  const int64_t rows = ac.numel() / d;
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, ac.scalar_type(), "jitfuse_add_layernorm", [&] {
    add_layernorm_rows<scalar_t>(ac.data_ptr<scalar_t>(), bc.data_ptr<scalar_t>(),
                                 static_cast<float>(alpha.toDouble()),
                                 gamma.defined() ? gamma.data_ptr<float>() : nullptr,
                                 beta.defined() ? beta.data_ptr<float>() : nullptr,
                                 static_cast<float>(eps), out.data_ptr<scalar_t>(), rows, d);
  });
  return out;
}

// ---- scaled, masked softmax over the last dim ------------------------------------------------

struct MaskedSoftmaxPrimitives : onednn::CachedPrimitive {
  dnnl::binary::primitive_desc add_pd;
  dnnl::binary add;
  dnnl::softmax_forward::primitive_desc softmax_pd;
  dnnl::softmax_forward softmax;
  MaskedSoftmaxPrimitives(dnnl::binary::primitive_desc a, dnnl::softmax_forward::primitive_desc s)
      : add_pd(std::move(a)), add(add_pd), softmax_pd(std::move(s)), softmax(softmax_pd) {}
};

// softmax(scores * scale + mask, -1); `mask` broadcasts to `scores` (BERT: batch x 1 x 1 x seq).
at::Tensor scaled_masked_softmax(const at::Tensor& scores, double scale, const at::Tensor& mask) {
  const bool fused = scores.device().is_cpu() && mask.device().is_cpu() && scores.dim() >= 1 &&
                     mask.dim() <= scores.dim() && mask.scalar_type() == scores.scalar_type() &&
                     (scores.scalar_type() == at::kFloat || scores.scalar_type() == at::kBFloat16) &&
                     at::infer_size(mask.sizes(), scores.sizes()) == scores.sizes();
  if (!fused) return at::softmax(at::add(at::mul(scores, scale), mask), -1);
  if (scores.numel() == 0) return at::empty_like(scores);
  const auto type = onednn::compute_type(scores.scalar_type());
  at::Tensor s = scores.to(type).contiguous();
  auto mask_sizes = mask.sizes().vec();  // same rank as scores: leading 1s
  mask_sizes.insert(mask_sizes.begin(), scores.dim() - mask.dim(), 1);
  at::Tensor mk = mask.to(type).reshape(mask_sizes).contiguous();
  at::Tensor out = at::empty_like(s);

  onednn::Key key;
  key << s << mk;
  auto made = onednn::cached_primitive(key, [&]() -> std::shared_ptr<onednn::CachedPrimitive> {
    const auto& eng = onednn::engine();
    dnnl::primitive_attr add_attr;
    add_attr.set_scales_mask(DNNL_ARG_SRC_0, 0);
    add_attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    dnnl::binary::primitive_desc add_pd(eng, dnnl::algorithm::binary_add, onednn::plain_desc(s),
                                        onednn::plain_desc(mk), onednn::plain_desc(out), add_attr);
    dnnl::primitive_attr softmax_attr;
    softmax_attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    dnnl::softmax_forward::primitive_desc softmax_pd(
        eng, dnnl::prop_kind::forward_inference, dnnl::algorithm::softmax_accurate,
        onednn::plain_desc(out), onednn::plain_desc(out), static_cast<int>(s.dim() - 1),
        softmax_attr);
    return std::make_shared<MaskedSoftmaxPrimitives>(std::move(add_pd), std::move(softmax_pd));
  });
  const auto& p = static_cast<const MaskedSoftmaxPrimitives&>(*made);
  float scale_f = static_cast<float>(scale);
  dnnl::memory scale_mem({{1}, dnnl::memory::data_type::f32, dnnl::memory::format_tag::x},
                         onednn::engine(), &scale_f);
  auto dst = onednn::wrap(out);
  onednn::execute(p.add, p.add_pd.scratchpad_desc(),
                  {{DNNL_ARG_SRC_0, onednn::wrap(s)},
                   {DNNL_ARG_SRC_1, onednn::wrap(mk)},
                   {DNNL_ARG_DST, dst},
                   {DNNL_ARG_ATTR_SCALES | DNNL_ARG_SRC_0, scale_mem}});
  onednn::execute(p.softmax, p.softmax_pd.scratchpad_desc(), {{DNNL_ARG_SRC, dst}, {DNNL_ARG_DST, dst}});
  return out.to(scores.scalar_type());
}

at::Tensor div_add_softmax(const at::Tensor& scores, const at::Scalar& divisor, const at::Tensor& mask) {
  return scaled_masked_softmax(scores, 1.0 / divisor.toDouble(), mask);
}

at::Tensor mul_add_softmax(const at::Tensor& scores, const at::Scalar& factor, const at::Tensor& mask) {
  return scaled_masked_softmax(scores, factor.toDouble(), mask);
}

// ---- attention matmuls in bf16 ------------------------------------------------------------

// a @ b. For bfloat16 on CPUs without bf16 kernels ATen's bf16 matmul is dozens of times slower
// than its f32 one: multiply the exactly-widened operands in f32 and round the result once.
at::Tensor matmul(const at::Tensor& a, const at::Tensor& b) {
  const bool widen = a.scalar_type() == at::kBFloat16 && b.scalar_type() == at::kBFloat16 &&
                     onednn::compute_type(at::kBFloat16) == at::kFloat;
  if (!widen) return at::matmul(a, b);
  return at::matmul(a.to(at::kFloat), b.to(at::kFloat)).to(at::kBFloat16);
}

// ---- heads -> hidden: x.view(size).transpose(dim0, dim1).contiguous().view(out_size) ---------

at::Tensor view_transpose_contiguous_view(const at::Tensor& self, at::IntArrayRef size,
                                          int64_t dim0, int64_t dim1, at::IntArrayRef out_size) {
  auto t = self.view(size).transpose(dim0, dim1);
  at::Tensor out = at::empty(t.sizes(), t.options());
  out.copy_(t);  // the one copy
  return out.view(out_size);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(jitfuse, m) {
  const auto cpu = c10::DispatchKey::CPU;
  m.def("add_layernorm(Tensor a, Tensor b, Scalar alpha, int[] normalized_shape, Tensor? weight, "
        "Tensor? bias, float eps) -> Tensor",
        torch::dispatch(cpu, TORCH_FN(add_layernorm)));
  m.def("div_add_softmax(Tensor scores, Scalar divisor, Tensor mask) -> Tensor",
        torch::dispatch(cpu, TORCH_FN(div_add_softmax)));
  m.def("mul_add_softmax(Tensor scores, Scalar factor, Tensor mask) -> Tensor",
        torch::dispatch(cpu, TORCH_FN(mul_add_softmax)));
  m.def("matmul(Tensor self, Tensor other) -> Tensor", torch::dispatch(cpu, TORCH_FN(matmul)));
  m.def("view_transpose_contiguous_view(Tensor self, int[] size, int dim0, int dim1, "
        "int[] out_size) -> Tensor",
        torch::dispatch(cpu, TORCH_FN(view_transpose_contiguous_view)));
}

}  // namespace jitfuse
