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

// k's last two dims swapped: constant (-1, -2), (-2, -1), or the same counted from the front.
bool transposes_last_two(const Match& m, const ValueMap& v) {
  auto a = constant(bound(m, v, "t0")), b = constant(bound(m, v, "t1"));
  if (!a || !b || !a->isInt() || !b->isInt()) return false;
  int64_t x = a->toInt(), y = b->toInt();
  auto type = bound(m, v, "k")->type()->cast<c10::TensorType>();
  if (x >= 0 || y >= 0) {
    if (!type || !type->dim()) return false;
    const int64_t rank = static_cast<int64_t>(*type->dim());
    if (x >= 0) x -= rank;
    if (y >= 0) y -= rank;
  }
  return std::min(x, y) == -2 && std::max(x, y) == -1;
}

// The context's heads moved behind the sequence: permute([0, 2, 1, 3]) or transpose(1, 2).
// The context is 4-D [batch, heads, seq, dim].
bool swaps_heads_and_sequence(const Match& m, const ValueMap& v) {
  auto type = bound(m, v, "ctx")->type()->cast<c10::TensorType>();
  if (!type || !type->dim() || *type->dim() != 4) return false;
  if (v.count("perm")) {
    auto perm = constant(bound(m, v, "perm"));
    return perm && perm->isIntList() && perm->toIntVector() == std::vector<int64_t>{0, 2, 1, 3};
  }
  auto a = constant(bound(m, v, "d0")), b = constant(bound(m, v, "d1"));
  if (!a || !b || !a->isInt() || !b->isInt()) return false;
  const int64_t x = (a->toInt() + 4) % 4, y = (b->toInt() + 4) % 4;
  return std::min(x, y) == 1 && std::max(x, y) == 2;
}

// Plain inference SDPA: no dropout, not causal, no grouped-query heads, scale None or a number.
bool sdpa_is_plain(const Match& m, const ValueMap& v) {
  if (!is_constant_number(bound(m, v, "dropout"), 0.0) || !is_constant_bool(bound(m, v, "causal"), false) ||
      !is_constant_bool(bound(m, v, "gqa"), false))
    return false;
  auto scale = constant(bound(m, v, "scale"));
  if (!scale || !(scale->isNone() || scale->isDouble() || scale->isInt())) return false;
  auto mask = bound(m, v, "mask")->type()->cast<c10::TensorType>();  // a bool mask keeps SDPA's own meaning
  return !mask || !mask->scalarType() || *mask->scalarType() != at::kBool;
}

bool mask_is_tensor(const Match& m, const ValueMap& v) {
  return bound(m, v, "mask")->type()->cast<c10::TensorType>() != nullptr;
}

// The ways attention's context leaves the op: as computed, or with heads moved behind the
// sequence (the op then writes it in that order, and the graph's copy after it is free).
struct AttentionTail {
  const char* inputs;
  const char* ir;  // from %ctx to %out
};
const AttentionTail kAttentionTails[] = {
    {"", ""},
    {", %perm", "%out = aten::permute(%ctx, %perm)"},
    {", %d0, %d1", "%out = aten::transpose(%ctx, %d0, %d1)"},
};

// Attention rows: q @ k^T, scaled (/ or * a constant), plus a mask, softmax on the last dim,
// @ v, from the matmuls so that nothing else can pass for the scores; and SDPA.
void add_attention_rows(std::vector<Rewrite>& rows) {
  for (const char* mm : {"aten::matmul", "aten::bmm"})
    for (const auto& [scale_op, divide] : {std::pair{"aten::div", "1"}, std::pair{"aten::mul", "0"}})
      for (const char* add : {"aten::add(%scaled, %mask, %alpha)", "aten::add(%mask, %scaled, %alpha)"})
        for (const auto& tail : kAttentionTails)
          for (bool tensor_scale : {false, true}) {  // tracing records a Python float as a 0-dim tensor
            const bool heads_last = *tail.ir;
            const std::string inputs = std::string("%q, %k, %v, %t0, %t1, %scale, %mask, %alpha, %dim, %dtype") + tail.inputs;
            const std::string body = std::string("%kt = aten::transpose(%k, %t0, %t1)\n") +
                                     "%scores = " + mm + "(%q, %kt)\n"
                                     "%scaled = " + scale_op + "(%scores, %scale)\n"
                                     "%s = " + add + "\n"
                                     "%probs = aten::softmax(%s, %dim, %dtype)\n"
                                     "%ctx = " + mm + "(%probs, %v)\n" + tail.ir;
            const std::string replacement = graph_ir(
                inputs,
                std::string(tensor_scale ? "%number : Scalar = aten::item(%scale)\n" : "") +
                    "%divide : bool = prim::Constant[value=" + divide + "]()\n"
                    "%heads_last : bool = prim::Constant[value=" + (heads_last ? "1" : "0") + "]()\n"
                    "%out = jitfuse::attention(%q, %k, %v, %mask, " + (tensor_scale ? "%number" : "%scale") +
                    ", %divide, %heads_last)",
                "%out");
            std::vector<Filter> filters{transposes_last_two, alpha_is_one, softmax_on_last_dim, mask_is_tensor,
                                        tensor_scale ? Filter(scale_is_constant_0d_tensor) : Filter(scale_is_constant)};
            if (heads_last) filters.push_back(swaps_heads_and_sequence);
            rows.push_back({"attention", graph_ir(inputs, body, heads_last ? "%out" : "%ctx"), replacement, filters});
          }
  const std::string sdpa_inputs = "%q, %k, %v, %mask, %dropout, %causal, %scale, %gqa";
  const std::string sdpa = "%ctx = aten::scaled_dot_product_attention(%q, %k, %v, %mask, %dropout, %causal, %scale, %gqa)\n";
  for (const auto& tail : kAttentionTails) {
    const bool heads_last = *tail.ir;
    const std::string inputs = sdpa_inputs + tail.inputs;
    std::vector<Filter> filters{sdpa_is_plain};
    if (heads_last) filters.push_back(swaps_heads_and_sequence);
    rows.push_back({"attention", graph_ir(inputs, sdpa + tail.ir, heads_last ? "%out" : "%ctx"),
                    graph_ir(inputs,
                             std::string("%divide : bool = prim::Constant[value=0]()\n"
                                         "%heads_last : bool = prim::Constant[value=") +
                                 (heads_last ? "1" : "0") + "]()\n"
                                 "%out = jitfuse::attention(%q, %k, %v, %mask, %scale, %divide, %heads_last)",
                             "%out"),
                    filters});
  }
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
  add_attention_rows(rows);  // before the softmax rows: an attention block takes its softmax along
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
                      {alpha_is_one, softmax_on_last_dim, scale_is_constant, mask_is_tensor}});
      rows.push_back({form.name, pattern,
                      graph_ir(inputs,
                               "%number : Scalar = aten::item(%scale)\n"
                               "%out = jitfuse::" + std::string(form.name) + "(%scores, %number, %mask)",
                               "%out"),
                      {alpha_is_one, softmax_on_last_dim, scale_is_constant_0d_tensor, mask_is_tensor}});
    }
  }
  // Attention's bf16 matmuls (q @ k^T, probs @ v) left over: the op widens to f32 where the CPU
  // has no bf16 kernels.
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
