// Attention as one op: softmax(q @ k^T * scale + mask) @ v, batched over the leading dims (float32,
// bfloat16). Three oneDNN primitives on head-major copies of q, k, v: a batched matmul writing
// float32 scores with the scale and the mask as post-ops, a softmax, and a batched matmul writing
// the context, optionally straight into [batch, seq, heads, dim] order (`heads_last`: what the
// graph's permute / transpose after attention would copy it into). Schema at the bottom.
#include "ops/allocator.h"
#include "ops/onednn.h"

#include <torch/library.h>

#include <cmath>

namespace jitfuse {
namespace {

// The three primitives of one attention shape; `supported` false when oneDNN has no optimized
// kernel for some step (a mask broadcast its binary post-op does not take, say).
struct AttentionPrimitives : onednn::CachedPrimitive {
  bool supported = false;
  dnnl::matmul::primitive_desc scores_pd;
  dnnl::matmul scores;
  dnnl::softmax_forward::primitive_desc softmax_pd;
  dnnl::softmax_forward softmax;
  dnnl::matmul::primitive_desc context_pd;
  dnnl::matmul context;
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
at::Tensor dense(const at::Tensor& t, at::ScalarType type) {
  if (t.scalar_type() == type && t.is_contiguous()) return t;
  return memory::empty(t.sizes(), t.options().dtype(type)).copy_(t);
}

// The mask as oneDNN's binary post-op takes it: the scores' rank (leading 1s), contiguous, in the
// score's compute type.
at::Tensor mask_for_post_op(const at::Tensor& mask, int64_t rank, at::ScalarType type) {
  auto sizes = mask.sizes().vec();
  sizes.insert(sizes.begin(), rank - mask.dim(), 1);
  return mask.to(type).reshape(sizes).contiguous();
}

at::Tensor attention(const at::Tensor& q_in, const at::Tensor& k_in, const at::Tensor& v_in,
                     const std::optional<at::Tensor>& mask_in, const std::optional<at::Scalar>& scale_in,
                     bool divide, bool heads_last) {
  for (const auto* t : {&q_in, &k_in, &v_in})
    TORCH_CHECK(t->device().is_cpu() && t->layout() == at::kStrided, "jitfuse attention: expected "
                "strided CPU tensors");
  TORCH_CHECK(q_in.dim() >= 3 && k_in.dim() == q_in.dim() && v_in.dim() == q_in.dim(),
              "jitfuse attention: expected q, k, v of one rank >= 3, got ", q_in.sizes(), ", ",
              k_in.sizes(), ", ", v_in.sizes());
  TORCH_CHECK(q_in.size(-1) == k_in.size(-1) && k_in.size(-2) == v_in.size(-2),
              "jitfuse attention: q ", q_in.sizes(), ", k ", k_in.sizes(), " and v ", v_in.sizes(),
              " do not multiply");
  TORCH_CHECK(!heads_last || q_in.dim() == 4, "jitfuse attention: heads_last needs 4-D q, k, v");
  const int64_t rank = q_in.dim();
  double scale = scale_in ? scale_in->toDouble() : 1.0 / std::sqrt(static_cast<double>(q_in.size(-1)));
  if (divide) scale = 1.0 / scale;
  const auto type = q_in.scalar_type();
  auto scores_sizes = q_in.sizes().vec();
  scores_sizes.back() = k_in.size(-2);
  const bool has_mask = mask_in && mask_in->defined();
  const bool fits =
      (type == at::kFloat || type == at::kBFloat16) && k_in.scalar_type() == type &&
      v_in.scalar_type() == type && q_in.sizes().slice(0, rank - 2) == k_in.sizes().slice(0, rank - 2) &&
      q_in.sizes().slice(0, rank - 2) == v_in.sizes().slice(0, rank - 2) &&
      (!has_mask || (mask_in->dim() <= rank && !mask_in->is_quantized() &&
                     (mask_in->scalar_type() == type || mask_in->scalar_type() == at::kFloat) &&
                     at::infer_size(mask_in->sizes(), scores_sizes) == scores_sizes));
  // Broadcast batch dims, other dtypes, masks that grow the result: what the graph did.
  if (!fits || q_in.numel() == 0 || k_in.numel() == 0 || v_in.numel() == 0)
    return attention_reference(q_in, k_in, v_in, mask_in, scale, heads_last);

  const auto ctype = onednn::compute_type(type);
  // Head-major, row-major copies (views of a fused QKV projection are neither): oneDNN's brgemm
  // matmul needs dense batch strides.
  const at::Tensor q = dense(q_in, ctype), k = dense(k_in, ctype), v = dense(v_in, ctype);
  const at::Tensor kt = k.transpose(-1, -2);
  const at::Tensor mask = has_mask ? mask_for_post_op(*mask_in, rank, ctype) : at::Tensor();
  auto out_sizes = q.sizes().vec();
  out_sizes.back() = v.size(-1);
  at::Tensor out;
  at::Tensor out_view;  // `out` as [..., seq, dim] (heads_last: a permuted view)
  if (heads_last) {
    out = memory::empty({out_sizes[0], out_sizes[2], out_sizes[1], out_sizes[3]}, q.options());
    out_view = out.transpose(1, 2);
  } else {
    out = out_view = memory::empty(out_sizes, q.options());
  }

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
      const auto scores_md = dense_desc(scores_sizes, at::kFloat), probs_md = dense_desc(scores_sizes, ctype);
      p->scores_pd = dnnl::matmul::primitive_desc(eng, onednn::plain_desc(q), onednn::plain_desc(kt),
                                                  scores_md, scores_attr);
      p->softmax_pd = dnnl::softmax_forward::primitive_desc(
          eng, dnnl::prop_kind::forward_inference, dnnl::algorithm::softmax_accurate, scores_md,
          probs_md, static_cast<int>(rank - 1), attr);
      p->context_pd = dnnl::matmul::primitive_desc(eng, probs_md, onednn::plain_desc(v),
                                                   onednn::plain_desc(out_view), attr);
      p->supported = !onednn::is_reference(p->scores_pd) && !onednn::is_reference(p->softmax_pd) &&
                     !onednn::is_reference(p->context_pd);
      if (p->supported) {
        p->scores = dnnl::matmul(p->scores_pd);
        p->softmax = dnnl::softmax_forward(p->softmax_pd);
        p->context = dnnl::matmul(p->context_pd);
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
  const auto scores_mem = onednn::wrap(scores), probs_mem = onednn::wrap(probs);
  std::unordered_map<int, dnnl::memory> args{
      {DNNL_ARG_SRC, onednn::wrap(q)}, {DNNL_ARG_WEIGHTS, onednn::wrap(kt)}, {DNNL_ARG_DST, scores_mem}};
  if (mask.defined()) args.emplace(DNNL_ARG_ATTR_MULTIPLE_POST_OP(1) | DNNL_ARG_SRC_1, onednn::wrap(mask));
  onednn::execute(p.scores, p.scores_pd.scratchpad_desc(), std::move(args));
  onednn::execute(p.softmax, p.softmax_pd.scratchpad_desc(),
                  {{DNNL_ARG_SRC, scores_mem}, {DNNL_ARG_DST, probs_mem}});
  onednn::execute(p.context, p.context_pd.scratchpad_desc(),
                  {{DNNL_ARG_SRC, probs_mem}, {DNNL_ARG_WEIGHTS, onednn::wrap(v)},
                   {DNNL_ARG_DST, onednn::wrap(out_view)}});
  return ctype == type ? out : out.to(type);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(jitfuse, m) {
  m.def("attention(Tensor q, Tensor k, Tensor v, Tensor? mask, Scalar? scale, bool divide, "
        "bool heads_last) -> Tensor",
        torch::dispatch(c10::DispatchKey::CPU, TORCH_FN(attention)));
}

}  // namespace jitfuse
