// Transformer-block fusions (fp32, bf16): residual Add + LayerNorm, attention's scaled and masked
// softmax (division and multiplication forms), and the head merge view/transpose/contiguous/view.
#include "passes/rewrite.h"
#include "passes/spellings.h"

#include <unordered_set>

namespace jitfuse {
namespace {

const Filter kLayerNormArgsConstant{
    [](const Match& m, const ValueMap& v) {
      return is_constant_int_list(bound(m, v, "shape")) && is_constant_scalar(bound(m, v, "eps")) &&
             is_constant_scalar(bound(m, v, "alpha"));
    },
    "layer_norm's normalized_shape or eps, or the add's alpha, is not a constant"};

// softmax over the last dim, in the input's dtype.
const Filter kSoftmaxOnLastDim{
    [](const Match& m, const ValueMap& v) {
      auto dim = constant(bound(m, v, "dim"));
      auto dtype = constant(bound(m, v, "dtype"));
      if (!dim || !dim->isInt() || !dtype || !dtype->isNone()) return false;
      if (dim->toInt() == -1) return true;
      auto type = bound(m, v, "s")->type()->cast<c10::TensorType>();
      return type && type->dim() && dim->toInt() == static_cast<int64_t>(*type->dim()) - 1;
    },
    "softmax runs over dim {dim:value} of {s:type} in dtype {dtype:value}: jitfuse's runs over the last "
    "dim, in the input's dtype (None)"};

const Filter kFormatIsContiguous{
    [](const Match& m, const ValueMap& v) {
      auto c = constant(bound(m, v, "format"));
      return c && c->isInt() && c->toInt() == static_cast<int64_t>(at::MemoryFormat::Contiguous);
    },
    "contiguous() asks for memory format {format:value}, not torch.contiguous_format"};

// a += b writes into a: fusing is safe only when nothing else reads a, and a aliases nothing (made
// by an op that returns a new tensor: BERT's embeddings sum).
const Filter kAddTargetReadOnce{
    [](const Match& m, const ValueMap& v) {
      static const std::unordered_set<std::string> fresh = {"aten::add", "aten::sub", "aten::mul",
                                                            "aten::div", "aten::embedding"};
      auto* a = bound(m, v, "a");
      return a->uses().size() == 1 && fresh.count(a->node()->kind().toQualString());
    },
    "the in-place add writes into {a} ({a:origin}), which something else reads or which may "
    "alias another tensor"};

// Both operands are bfloat16 (the executor's profiled types, seen by this post-pass).
const Filter kOperandsAreBf16{
    [](const Match& m, const ValueMap& v) {
      for (const char* name : {"a", "b"}) {
        auto type = bound(m, v, name)->type()->cast<c10::TensorType>();
        if (!type || type->scalarType() != at::kBFloat16) return false;
      }
      return true;
    },
    "", true};

// k's last two dims swapped: constant (-1, -2), (-2, -1), or the same counted from the front.
const Filter kTransposesLastTwo{
    [](const Match& m, const ValueMap& v) {
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
    },
    "the key is transposed over dims {t0:value} and {t1:value}, not its last two"};

// The context's heads moved behind the sequence: permute([0, 2, 1, 3]) or transpose(1, 2).
// The context is 4-D [batch, heads, seq, dim].
const Filter kSwapsHeadsAndSequence{
    [](const Match& m, const ValueMap& v) {
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
    },
    "the context {ctx} ({ctx:type}) is not a 4-D [batch, heads, seq, dim] tensor whose heads move "
    "behind the sequence (permute [0, 2, 1, 3] or transpose(1, 2))"};

// Plain inference SDPA: no dropout, not causal, no grouped-query heads, scale None or a number,
// a float mask (a bool one keeps SDPA's own meaning).
const Filter kSdpaIsPlain{
    [](const Match& m, const ValueMap& v) {
      return is_constant_number(bound(m, v, "dropout"), 0.0) && is_constant_bool(bound(m, v, "causal"), false) &&
             is_constant_bool(bound(m, v, "gqa"), false);
    },
    "scaled_dot_product_attention has dropout_p = {dropout:value}, is_causal = {causal:value}, "
    "enable_gqa = {gqa:value}: jitfuse's attention is the plain one (0, False, False)"};
const Filter kSdpaScaleKnown{
    [](const Match& m, const ValueMap& v) {
      auto scale = constant(bound(m, v, "scale"));
      return scale && (scale->isNone() || scale->isDouble() || scale->isInt());
    },
    "scaled_dot_product_attention's scale {scale} is {scale:origin}, not None or a constant number"};
const Filter kMaskIsNotBool{
    [](const Match& m, const ValueMap& v) {
      auto mask = bound(m, v, "mask")->type()->cast<c10::TensorType>();
      return !mask || !mask->scalarType() || *mask->scalarType() != at::kBool;
    },
    "the mask is {mask:type}: jitfuse's attention adds float masks, a boolean one selects"};

const Filter kMaskIsTensor{
    [](const Match& m, const ValueMap& v) {
      return bound(m, v, "mask")->type()->cast<c10::TensorType>() != nullptr;
    },
    "the mask {mask} is {mask:type}, not a tensor"};

// The ways attention's context leaves the op: as computed, or with heads moved behind the
// sequence (the op then writes it in that order, and the graph's copy after it is free).
struct AttentionTail {
  const char* inputs;
  const char* ir;  // from %ctx to %out
};
const AttentionTail kAttentionTails[] = {  // longer first: a permuted context claims its permute
    {", %perm", "%out = aten::permute(%ctx, %perm)"},
    {", %d0, %d1", "%out = aten::transpose(%ctx, %d0, %d1)"},
    {"", ""},
};

// Attention rows: q @ k^T, scaled (/ or * a constant), plus a mask, softmax on the last dim,
// @ v, from the matmuls so that nothing else can pass for the scores; and SDPA.
void add_attention_rows(std::vector<Rewrite>& rows) {
  for (const char* mm : {"aten::matmul", "aten::bmm"})
    for (const auto& [scale_op, divide] : {std::pair{"aten::div", "1"}, std::pair{"aten::mul", "0"}})
      for (const char* add : {"aten::add(%scaled, %mask, %alpha)", "aten::add(%mask, %scaled, %alpha)"})
        for (const auto& tail : kAttentionTails)
          for (const auto& scale : number_spellings("scale", /*floating=*/true)) {
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
                scale.prelude +
                    "%divide : bool = prim::Constant[value=" + divide + "]()\n"
                    "%heads_last : bool = prim::Constant[value=" + (heads_last ? "1" : "0") + "]()\n"
                    "%low_precision : bool = prim::Constant[value=0]()\n"
                    "%out = jitfuse::attention(%q, %k, %v, %mask, " + scale.arg +
                    ", %divide, %heads_last, %low_precision)",
                "%out");
            std::vector<Filter> filters{kTransposesLastTwo, kAlphaIsOne, kSoftmaxOnLastDim, kMaskIsTensor, scale.filter};
            if (heads_last) filters.push_back(kSwapsHeadsAndSequence);
            rows.push_back({"attention", graph_ir(inputs, body, heads_last ? "%out" : "%ctx"), replacement, filters,
                            "scores"});
          }
  const std::string sdpa_inputs = "%q, %k, %v, %mask, %dropout, %causal, %scale, %gqa";
  const std::string sdpa = "%ctx = aten::scaled_dot_product_attention(%q, %k, %v, %mask, %dropout, %causal, %scale, %gqa)\n";
  for (const auto& tail : kAttentionTails) {
    const bool heads_last = *tail.ir;
    const std::string inputs = sdpa_inputs + tail.inputs;
    std::vector<Filter> filters{kSdpaIsPlain, kSdpaScaleKnown, kMaskIsNotBool};
    if (heads_last) filters.push_back(kSwapsHeadsAndSequence);
    rows.push_back({"attention", graph_ir(inputs, sdpa + tail.ir, heads_last ? "%out" : "%ctx"),
                    graph_ir(inputs,
                             std::string("%divide : bool = prim::Constant[value=0]()\n"
                                         "%heads_last : bool = prim::Constant[value=") +
                                 (heads_last ? "1" : "0") + "]()\n"
                                 "%low_precision : bool = prim::Constant[value=0]()\n"
                                 "%out = jitfuse::attention(%q, %k, %v, %mask, %scale, %divide, %heads_last, %low_precision)",
                             "%out"),
                    filters, "ctx"});
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
                    std::string(add) == "aten::add" ? std::vector<Filter>{kLayerNormArgsConstant}
                                                    : std::vector<Filter>{kAddTargetReadOnce, kLayerNormArgsConstant},
                    "s"});
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
      for (const auto& scale : number_spellings("scale", /*floating=*/true))
        rows.push_back({form.name, pattern,
                        graph_ir(inputs, scale.prelude + "%out = jitfuse::" + form.name + "(%scores, " + scale.arg + ", %mask)",
                                 "%out"),
                        {kAlphaIsOne, kSoftmaxOnLastDim, scale.filter, kMaskIsTensor}});
    }
  }
  // Attention's bf16 matmuls (q @ k^T, probs @ v) left over: the op widens to f32 where the CPU
  // has no bf16 kernels.
  rows.push_back({"matmul_bf16", graph_ir("%a, %b", "%out = aten::matmul(%a, %b)", "%out"),
                  graph_ir("%a, %b", "%out = jitfuse::matmul(%a, %b)", "%out"), {kOperandsAreBf16}});
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
                  {kFormatIsContiguous}});
  return rows;
}

}  // namespace

const std::vector<Rewrite>& transformer_rewrites() {
  static const std::vector<Rewrite> rows = build_transformer_rewrites();
  return rows;
}

void fuse_transformer(GraphPtr& graph) { apply_rewrites(graph, transformer_rewrites()); }

}  // namespace jitfuse
