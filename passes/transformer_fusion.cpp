// Transformer-block fusions (fp32, bf16): residual Add + LayerNorm, attention's scaled and masked
// softmax (division and multiplication forms), and the head merge view/transpose/contiguous/view.
#include "passes/rewrite.h"

#include <unordered_set>

namespace jitfuse {
namespace {

bool layernorm_args_constant(const Match& m, const ValueMap& v) {
  return is_constant_int_list(bound(m, v, "shape")) && is_constant_scalar(bound(m, v, "eps")) &&
         is_constant_scalar(bound(m, v, "alpha"));
}

// softmax over the last dim, in the input's dtype.
bool softmax_on_last_dim(const Match& m, const ValueMap& v) {
  auto dim = constant(bound(m, v, "dim"));
  auto dtype = constant(bound(m, v, "dtype"));
  if (!dim || !dim->isInt() || !dtype || !dtype->isNone()) return false;
  if (dim->toInt() == -1) return true;
  auto type = bound(m, v, "scores")->type()->cast<c10::TensorType>();
  return type && type->dim() && dim->toInt() == static_cast<int64_t>(*type->dim()) - 1;
}

bool scale_is_constant(const Match& m, const ValueMap& v) {
  return is_constant_scalar(bound(m, v, "scale"));
}

// Tracing records a Python float operand as a 0-dim tensor constant.
bool scale_is_constant_0d_tensor(const Match& m, const ValueMap& v) {
  auto c = constant(bound(m, v, "scale"));
  return c && c->isTensor() && c->toTensor().dim() == 0 && c->toTensor().is_floating_point();
}

bool format_is_contiguous(const Match& m, const ValueMap& v) {
  auto c = constant(bound(m, v, "format"));
  return c && c->isInt() && c->toInt() == static_cast<int64_t>(at::MemoryFormat::Contiguous);
}

// a += b writes into a: fusing is safe only when nothing else reads a, and a aliases nothing (made
// by an op that returns a new tensor: BERT's embeddings sum).
bool add_target_read_once(const Match& m, const ValueMap& v) {
  static const std::unordered_set<std::string> fresh = {"aten::add", "aten::sub", "aten::mul",
                                                        "aten::div", "aten::embedding"};
  auto* a = bound(m, v, "a");
  return a->uses().size() == 1 && fresh.count(a->node()->kind().toQualString()) &&
         layernorm_args_constant(m, v);
}

// Both operands are bfloat16 (the executor's profiled types, seen by this post-pass).
bool operands_are_bf16(const Match& m, const ValueMap& v) {
  for (const char* name : {"a", "b"}) {
    auto type = bound(m, v, name)->type()->cast<c10::TensorType>();
    if (!type || type->scalarType() != at::kBFloat16) return false;
  }
  return true;
}

struct SoftmaxForm {
  const char* name;
  const char* scale_op;
};

std::vector<Rewrite> build_transformer_rewrites() {
  std::vector<Rewrite> rows;
  const std::string ln_inputs = "%a, %b, %alpha, %shape, %weight, %bias, %eps, %cudnn";
  const std::string ln_fused = graph_ir(
      ln_inputs, "%out = jitfuse::add_layernorm(%a, %b, %alpha, %shape, %weight, %bias, %eps)", "%out");
  for (const char* add : {"aten::add", "aten::add_"})
    rows.push_back({"add_layernorm",
                    graph_ir(ln_inputs,
                             std::string("%s = ") + add + "(%a, %b, %alpha)\n"
                             "%out = aten::layer_norm(%s, %shape, %weight, %bias, %eps, %cudnn)",
                             "%out"),
                    ln_fused,
                    {std::string(add) == "aten::add" ? Filter(layernorm_args_constant)
                                                     : Filter(add_target_read_once)}});
  // scores / scale + mask and scores * scale + mask (either add order), softmax on the last dim.
  for (const SoftmaxForm& form : {SoftmaxForm{"div_add_softmax", "aten::div"},
                                  SoftmaxForm{"mul_add_softmax", "aten::mul"}}) {
    for (const char* add : {"aten::add(%scaled, %mask, %alpha)", "aten::add(%mask, %scaled, %alpha)"}) {
      const std::string inputs = "%scores, %scale, %mask, %alpha, %dim, %dtype";
      const std::string pattern = graph_ir(
          inputs,
          std::string("%scaled = ") + form.scale_op + "(%scores, %scale)\n%s = " + add +
              "\n%out = aten::softmax(%s, %dim, %dtype)",
          "%out");
      rows.push_back({form.name, pattern,
                      graph_ir(inputs, std::string("%out = jitfuse::") + form.name + "(%scores, %scale, %mask)", "%out"),
                      {alpha_is_one, softmax_on_last_dim, scale_is_constant}});
      rows.push_back({form.name, pattern,
                      graph_ir(inputs,
                               "%number : Scalar = aten::item(%scale)\n"
                               "%out = jitfuse::" + std::string(form.name) + "(%scores, %number, %mask)",
                               "%out"),
                      {alpha_is_one, softmax_on_last_dim, scale_is_constant_0d_tensor}});
    }
  }
  // Attention's bf16 matmuls (q @ k^T, probs @ v): the op widens to f32 where the CPU has no
  // bf16 kernels.
  rows.push_back({"matmul_bf16", graph_ir("%a, %b", "%out = aten::matmul(%a, %b)", "%out"),
                  graph_ir("%a, %b", "%out = jitfuse::matmul(%a, %b)", "%out"), {operands_are_bf16}});
  // The head merge after attention. One op: the copy stays (the next linear reads it).
  const std::string vt_inputs = "%x, %size, %dim0, %dim1, %format, %out_size";
  rows.push_back({"view_transpose_contiguous_view",
                  graph_ir(vt_inputs,
                           "%v = aten::view(%x, %size)\n%t = aten::transpose(%v, %dim0, %dim1)\n"
                           "%c = aten::contiguous(%t, %format)\n%out = aten::view(%c, %out_size)",
                           "%out"),
                  graph_ir(vt_inputs,
                           "%out = jitfuse::view_transpose_contiguous_view(%x, %size, %dim0, %dim1, %out_size)",
                           "%out"),
                  {format_is_contiguous}});
  return rows;
}

}  // namespace

const std::vector<Rewrite>& transformer_rewrites() {
  static const std::vector<Rewrite> rows = build_transformer_rewrites();
  return rows;
}

void fuse_transformer(GraphPtr& graph) { apply_rewrites(graph, transformer_rewrites()); }

}  // namespace jitfuse
