// Transformer-block ops: residual add + LayerNorm in one pass over each row, scaled and masked
// softmax (attention scores) on oneDNN binary + softmax, and the head-merge copy as one op.
#include "ops/allocator.h"
#include "ops/float_args.h"
#include "ops/onednn.h"
#include "ops/vec.h"

#include <ATen/Parallel.h>
#include <torch/library.h>

namespace jitfuse {
namespace {

// ---- add_layernorm ---------------------------------------------------------------------------

// One row: sum = a + alpha * b kept in `scratch` (float32), its mean and variance, then the
// normalized, scaled and shifted row in T. Vectors of 16, a scalar tail.
template <class T>
[[gnu::always_inline]] inline void add_layernorm_row(const T* a, const T* b, float alpha,
                                                     const float* gamma, const float* beta,
                                                     float eps, T* out, int64_t d, float* scratch) {
  using namespace vec;
  const int64_t body = d - d % kLanes;
  Vec acc{};
  for (int64_t j = 0; j < body; j += kLanes) {
    const Vec x = load(a + j) + alpha * load(b + j);
    store(scratch + j, x);
    acc += x;
  }
  float total = sum(acc);
  for (int64_t j = body; j < d; ++j) total += scratch[j] = widen(a[j]) + alpha * widen(b[j]);
  const float mean = total / d;
  Vec sq{};
  for (int64_t j = 0; j < body; j += kLanes) {
    const Vec x = load(scratch + j) - mean;
    sq += x * x;
  }
  float var = sum(sq);
  for (int64_t j = body; j < d; ++j) var += (scratch[j] - mean) * (scratch[j] - mean);
  const float rstd = 1.f / std::sqrt(var / d + eps);
  for (int64_t j = 0; j < body; j += kLanes) {
    Vec y = (load(scratch + j) - mean) * rstd;
    if (gamma) y *= load(gamma + j);
    if (beta) y += load(beta + j);
    store(out + j, y);
  }
  for (int64_t j = body; j < d; ++j) {
    float y = (scratch[j] - mean) * rstd;
    if (gamma) y *= gamma[j];
    if (beta) y += beta[j];
    narrow(out + j, y);
  }
}

JITFUSE_CLONES
void add_layernorm_rows(const float* a, const float* b, float alpha, const float* gamma,
                        const float* beta, float eps, float* out, int64_t begin, int64_t end,
                        int64_t d, float* scratch) {
  for (int64_t r = begin; r < end; ++r)
    add_layernorm_row(a + r * d, b + r * d, alpha, gamma, beta, eps, out + r * d, d, scratch);
}
JITFUSE_CLONES
void add_layernorm_rows(const vec::bf16* a, const vec::bf16* b, float alpha, const float* gamma,
                        const float* beta, float eps, vec::bf16* out, int64_t begin, int64_t end,
                        int64_t d, float* scratch) {
  for (int64_t r = begin; r < end; ++r)
    add_layernorm_row(a + r * d, b + r * d, alpha, gamma, beta, eps, out + r * d, d, scratch);
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
  at::Tensor out = memory::empty(ac.sizes(), ac.options());
  if (out.numel() == 0) return out;
  const int64_t rows = ac.numel() / d;
  const float* g = gamma.defined() ? gamma.data_ptr<float>() : nullptr;
  const float* be = beta.defined() ? beta.data_ptr<float>() : nullptr;
  const auto alpha_f = static_cast<float>(alpha.toDouble()), eps_f = static_cast<float>(eps);
  at::parallel_for(0, rows, std::max<int64_t>(1, 16384 / d), [&](int64_t begin, int64_t end) {
    std::vector<float> scratch(d);
    if (ac.scalar_type() == at::kFloat)
      add_layernorm_rows(ac.data_ptr<float>(), bc.data_ptr<float>(), alpha_f, g, be, eps_f,
                         out.data_ptr<float>(), begin, end, d, scratch.data());
    else
      add_layernorm_rows(reinterpret_cast<const vec::bf16*>(ac.data_ptr()),
                         reinterpret_cast<const vec::bf16*>(bc.data_ptr()), alpha_f, g, be, eps_f,
                         reinterpret_cast<vec::bf16*>(out.data_ptr()), begin, end, d, scratch.data());
  });
  return out;
}

// ---- scaled, masked softmax over the last dim ------------------------------------------------

struct MaskedSoftmaxPrimitives : onednn::CachedPrimitive {
  onednn::Runner add;      // scores * scale + mask
  onednn::Runner softmax;  // in place
  MaskedSoftmaxPrimitives(const dnnl::binary::primitive_desc& a, const dnnl::softmax_forward::primitive_desc& s)
      : add(a, dnnl::binary(a), {DNNL_ARG_SRC_0, DNNL_ARG_SRC_1, DNNL_ARG_DST},
            {{DNNL_ARG_ATTR_SCALES | DNNL_ARG_SRC_0,
              onednn::vector_desc(1, dnnl::memory::data_type::f32)}}),
        softmax(s, dnnl::softmax_forward(s), {DNNL_ARG_SRC, DNNL_ARG_DST}) {}
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
  at::Tensor out = memory::empty(s.sizes(), s.options());

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
    return std::make_shared<MaskedSoftmaxPrimitives>(add_pd, softmax_pd);
  });
  const auto& p = static_cast<const MaskedSoftmaxPrimitives&>(*made);
  const float scale_f = static_cast<float>(scale);
  p.add({{DNNL_ARG_SRC_0, s.data_ptr()},
         {DNNL_ARG_SRC_1, mk.data_ptr()},
         {DNNL_ARG_DST, out.data_ptr()},
         {DNNL_ARG_ATTR_SCALES | DNNL_ARG_SRC_0, &scale_f}});
  p.softmax({{DNNL_ARG_SRC, out.data_ptr()}, {DNNL_ARG_DST, out.data_ptr()}});
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
  at::Tensor out = memory::empty(t.sizes(), t.options());
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
