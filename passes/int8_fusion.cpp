// int8 fusions: the dequantize -> op [-> post-ops] [-> quantize] chains of a reference quantized
// graph (what jitfuse.quantization.convert builds, and what stock PyTorch runs as is) become one
// jitfuse::q* op that reads the int8 tensors and writes float32 or int8.
//
// The table is the seed's 23 chains (plus the spellings each needs). A row is a core (what the
// dequantized inputs feed) and a tail (post-ops); each is expanded over the two endings, a
// quantize_per_tensor (int8 out) or none (float32 out), and over in-place spellings ({_}).
#include "passes/rewrite.h"
#include "passes/spellings.h"

#include <torch/csrc/jit/ir/ir.h>

#include <tuple>
#include <unordered_set>

namespace jitfuse {
namespace {

// ---- filters --------------------------------------------------------------------------------

// A constant int8 weight of `rank` dims and its constant float32 scales (1 or one per output
// channel), dequantized as aten::dequantize(weight) * scales: what jitfuse.quantization writes.
std::vector<Filter> int8_weight(int64_t rank) {
  const std::string dims = std::to_string(rank);
  return {
      weight_is_constant("qweight"),
      {[](const Match& m, const ValueMap& v) {
         auto s = constant(bound(m, v, "weight_scales"));
         return s && s->isTensor();
       },
       "the weight's scales {weight_scales} are {weight_scales:origin}, not a constant"},
      {[rank](const Match& m, const ValueMap& v) {
         const auto qw = constant(bound(m, v, "qweight"))->toTensor();
         const auto scales = constant(bound(m, v, "weight_scales"))->toTensor();
         if (qw.scalar_type() != at::kChar || qw.dim() != rank || !qw.device().is_cpu() || !qw.is_contiguous() ||
             scales.scalar_type() != at::kFloat || scales.dim() > rank)
           return false;
         // one scale, or one per output channel laid along dim 0 ([N, 1, ...], as convert writes):
         // [N] would multiply the weight's last dim, not its output channels
         return scales.numel() == 1 ||
                (scales.dim() == rank && scales.numel() == qw.size(0) && scales.size(0) == qw.size(0));
       },
       "the weight is {qweight:type} with scales {weight_scales:type}: jitfuse's int8 ops take a "
       "contiguous int8 CPU weight of " + dims + " dims and float32 scales, one or one per output channel"},
  };
}

// A constant float32 bias or None.
const Filter kFloatBias{
    [](const Match& m, const ValueMap& v) {
      auto c = constant(bound(m, v, "bias"));
      return c && (c->isNone() || (c->isTensor() && c->toTensor().scalar_type() == at::kFloat &&
                                   c->toTensor().dim() == 1 && c->toTensor().layout() == at::kStrided));
    },
    "the bias {bias} ({bias:origin}, {bias:type}) is not None or a constant float32 vector"};

// Where the executor profiled them, the int8 inputs are uint8/int8 CPU tensors.
const Filter kInt8Inputs{
    [](const Match& m, const ValueMap& v) {
      for (const char* name : {"qx", "qa", "qb", "qother"}) {
        if (!v.count(name)) continue;
        auto type = bound(m, v, name)->type()->cast<c10::TensorType>();
        if (!type) return false;
        if (type->scalarType() && *type->scalarType() != at::kByte && *type->scalarType() != at::kChar)
          return false;
        if (type->device() && !type->device()->is_cpu()) return false;
      }
      return true;
    },
    "an operand that is dequantized is not a uint8 or int8 CPU tensor"};

const Filter kConv2dInput4d{
    [](const Match& m, const ValueMap& v) {
      auto type = bound(m, v, "qx")->type()->cast<c10::TensorType>();
      return type && (!type->dim() || *type->dim() == 4 || *type->dim() == 3);
    },
    "the input {qx} is {qx:type}, not a 3-D or 4-D tensor"};

// The added operand is a float32 tensor (the kernel adds it with a binary post-op).
const Filter kOtherIsFloat{
    [](const Match& m, const ValueMap& v) {
      if (!v.count("other")) return true;
      auto type = bound(m, v, "other")->type()->cast<c10::TensorType>();
      return type && (!type->scalarType() || *type->scalarType() == at::kFloat) &&
             (!type->device() || type->device()->is_cpu());
    },
    "the added {other} is {other:type}, not a float32 CPU tensor"};


// quantize_per_tensor with constant parameters the kernels take: uint8/int8, a positive scale.
const Filter kQuantizeConstant{
    [](const Match& m, const ValueMap& v) {
      auto scale = constant(bound(m, v, "out_scale"));
      auto zp = constant(bound(m, v, "out_zero_point"));
      auto dtype = constant(bound(m, v, "out_dtype"));
      if (!scale || !(scale->isDouble() || scale->isInt()) || scale->toScalar().toDouble() <= 0)
        return false;
      if (!zp || !zp->isInt() || !dtype || !dtype->isInt()) return false;
      const auto t = static_cast<at::ScalarType>(dtype->toInt());
      return t == at::kByte || t == at::kChar;
    },
    "the result's quantize has scale {out_scale:value}, zero point {out_zero_point:value}, dtype "
    "{out_dtype:value}: jitfuse needs constants, a positive scale and uint8 or int8"};

std::vector<Filter> concat(std::vector<Filter> a, const std::vector<Filter>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// ---- the table ------------------------------------------------------------------------------

// What the dequantized inputs feed; it defines %core.
struct Core {
  const char* name;       // "conv", "linear", "bmm", "max_pool2d": the row names' middle
  const char* op;         // the fused op's stem: jitfuse::<op>[_tail]
  std::vector<std::pair<std::string, std::string>> spellings;  // (pattern inputs, IR)
  const char* op_args;    // the fused op's leading arguments
  std::vector<Filter> filters;
};

const std::string kDequantX = "%x = jitfuse::dequantize_per_tensor(%qx, %x_scale, %x_zero_point)\n";
// Weights: stock ops (aten::dequantize keeps a constant int8 weight from being folded to float).
const std::string kDequantW = "%wf = aten::dequantize(%qweight)\n%weight = aten::mul(%wf, %weight_scales)\n";
const std::string kQuantX = "%qx, %x_scale, %x_zero_point";
const std::string kQuantW = "%qweight, %weight_scales";

// The dequantized convolution in each spelling of spellings.h.
std::vector<std::pair<std::string, std::string>> conv_core_spellings() {
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& conv : conv_spellings(2, "%x", "%weight", "%core"))
    out.emplace_back(kQuantX + ", " + kQuantW + ", " + conv.params, kDequantX + kDequantW + conv.call);
  return out;
}

const std::vector<Core>& cores() {
  static const std::vector<Core> list = {
      {"conv", "qconv2d", conv_core_spellings(),
       "%qx, %x_scale, %x_zero_point, %qweight, %weight_scales, %bias, %stride, %padding, %dilation, %groups",
       concat(int8_weight(4), {kFloatBias, kInt8Inputs, kConvGeometryConstant, kConvNotTransposed, kConv2dInput4d})},
      {"linear", "qlinear",
       {{kQuantX + ", " + kQuantW + ", %bias", kDequantX + kDequantW + "%core = aten::linear(%x, %weight, %bias)"}},
       "%qx, %x_scale, %x_zero_point, %qweight, %weight_scales, %bias",
       concat(int8_weight(2), {kFloatBias, kInt8Inputs})},
      {"bmm", "qbmm",
       {{"%qa, %a_scale, %a_zero_point, %qb, %b_scale, %b_zero_point",
         "%a = jitfuse::dequantize_per_tensor(%qa, %a_scale, %a_zero_point)\n"
         "%b = jitfuse::dequantize_per_tensor(%qb, %b_scale, %b_zero_point)\n%core = aten::bmm(%a, %b)"},
        {"%qa, %a_scale, %a_zero_point, %qb, %b_scale, %b_zero_point",
         "%a = jitfuse::dequantize_per_tensor(%qa, %a_scale, %a_zero_point)\n"
         "%b = jitfuse::dequantize_per_tensor(%qb, %b_scale, %b_zero_point)\n%core = aten::matmul(%a, %b)"}},
       "%qa, %a_scale, %a_zero_point, %qb, %b_scale, %b_zero_point",
       {kInt8Inputs}},
      {"max_pool2d", "qmax_pool2d",
       {{kQuantX + ", %kernel_size, %stride, %padding, %dilation, %ceil_mode",
         kDequantX + "%core = aten::max_pool2d(%x, %kernel_size, %stride, %padding, %dilation, %ceil_mode)"}},
       "%qx, %x_scale, %x_zero_point, %kernel_size, %stride, %padding, %dilation, %ceil_mode",
       {kInt8Inputs, kPoolGeometryConstant}},
  };
  return list;
}

// What follows the core; it defines %y from %core (no IR: the core's result is the chain's).
struct Tail {
  std::string core;     // the core it follows
  std::string name;     // "" or "_relu", "_sum", ...: the row name's and the op's suffix
  std::string ir;       // {_} expands to the in-place spelling too
  std::string inputs;   // pattern inputs the tail reads
  std::string op_args;  // the fused op's arguments that come from the tail
  std::string consts;   // IR the replacement needs first
  std::vector<Filter> filters;
  bool float_out = true;  // also a row without quantize (the seed's max_pool2d is int8 out only)
  std::string number = "";  // a number operand the op takes last, in each of its spellings (spellings.h)
};

// The tails of a sum (then relu when `relu`): the added operand comes two ways, a dequantized
// int8 tensor that the op reads directly (either side of the add), or a float32 tensor (either
// side; no add_ with it first: that would write into it). The op's other_scale /
// other_zero_point are None for a float.
std::vector<Tail> sum_tails(const std::string& core, bool relu) {
  const std::string name = relu ? "_sum_relu" : "_sum", then = relu ? "\n%y = aten::relu{_}(%s)" : "";
  const std::string int8_other = "%other = jitfuse::dequantize_per_tensor(%qother, %other_scale, %other_zero_point)\n";
  const std::string int8_args = ", %qother, %other_scale, %other_zero_point";
  const std::string float_args = ", %other, %no_scale, %no_zero_point";
  const std::string no_parameters = "%no_scale : NoneType = prim::Constant()\n%no_zero_point : NoneType = prim::Constant()";
  std::vector<Tail> tails;
  for (const auto& add : add_spellings(relu ? "%s" : "%y", "%core"))  // an int8 operand: the result first
    if (add.result_first)
      tails.push_back({core, name, int8_other + add.ir + then, int8_args + ", %alpha", int8_args, "", {kAlphaIsOne}});
  // ... or the int8 operand first (PT2E adds a downsample conv's result to the other branch's
  // dequantized one): the same sum, alpha being 1; its add_ writes into the dequantized copy,
  // which only this add reads (the matcher takes no inner value used outside the match).
  const std::string int8_first = std::string(relu ? "%s" : "%y") + " = aten::add{_}(%other, %core, %alpha)";
  tails.push_back({core, name, int8_other + int8_first + then, int8_args + ", %alpha", int8_args, "", {kAlphaIsOne}});
  for (const auto& add : add_spellings(relu ? "%s" : "%y", "%core"))
    tails.push_back({core, name, add.ir + then, ", %other, %alpha", float_args, no_parameters,
                     {kAlphaIsOne, kOtherIsFloat}});
  return tails;
}

// Longer tails first: conv+sum+relu must be claimed before conv+sum and conv.
const std::vector<Tail>& tails() {
  static const std::vector<Tail> list = [] {
    std::vector<Tail> t;
    for (auto& sum : sum_tails("conv", true)) t.push_back(std::move(sum));
    for (auto& sum : sum_tails("conv", false)) t.push_back(std::move(sum));
    t.push_back({"conv", "_relu", "%y = aten::relu{_}(%core)", "", "", "", {}});
    t.push_back({"conv", "", "", "", "", "", {}});
    for (auto& sum : sum_tails("linear", false)) t.push_back(std::move(sum));
    t.push_back({"linear", "_relu", "%y = aten::relu{_}(%core)", "", "", "", {}});
    t.push_back({"linear", "_gelu", "%y = aten::gelu{_}(%core, %approximate)", ", %approximate", ", %approximate",
                 "", {kGeluApproximationKnown}});
    t.push_back({"linear", "_sigmoid", "%y = aten::sigmoid{_}(%core)", "", "", "", {}});
    t.push_back({"linear", "", "", "", "", "", {}});
    t.push_back({"bmm", "_div", "%y = aten::div(%core, %divisor)", ", %divisor", "", "", {}, true, "divisor"});
    t.push_back({"bmm", "", "", "", "", "", {}});
    t.push_back({"max_pool2d", "", "", "", "", "", {}, false});
    return t;
  }();
  return list;
}

// The seed's names: dequant_<core><tail>[_quant]. A sum whose added operand is a dequantized
// int8 tensor, quantized again after, is the seed's "dequant -> conv -> sum -> dequant".
std::string row_name(const Core& core, const Tail& tail, bool quant_out) {
  std::string name = std::string("dequant_") + core.name + tail.name;
  if (!quant_out) return name;
  if (std::string(core.name) == "conv" && tail.name == "_sum" && tail.inputs.find("%qother") != std::string::npos)
    return name + "_dequant";
  return name + "_quant";
}

// A tail's number operand in each spelling; a tail without one has one empty spelling.
std::vector<NumberSpelling> number_operand(const Tail& tail) {
  if (tail.number.empty()) return {NumberSpelling{"", "", Filter{}}};
  return number_spellings(tail.number, /*floating=*/false);
}

std::vector<Rewrite> build_int8_rewrites() {
  std::vector<Rewrite> rows;
  const std::string quant_inputs = ", %out_scale, %out_zero_point, %out_dtype";
  const std::string float_consts =
      "%out_scale : float = prim::Constant[value=1.]()\n"
      "%out_zero_point : int = prim::Constant[value=0]()\n"
      "%out_dtype : NoneType = prim::Constant()";
  for (const auto& core : cores()) {
    for (const auto& tail : tails()) {
      if (tail.core != core.name) continue;
      const std::string result = tail.ir.empty() ? "%core" : "%y";  // the chain's value before any quantize
      const std::string quantize =
          "%out = jitfuse::quantize_per_tensor(" + result + ", %out_scale, %out_zero_point, %out_dtype)";
      for (bool quant_out : {true, false}) {  // int8 out first: it claims the longer chain
        if (!quant_out && !tail.float_out) continue;
        for (const auto& number : number_operand(tail)) {
          const std::string call = "%out = jitfuse::" + std::string(core.op) + tail.name + "(" + core.op_args +
                                   tail.op_args + (number.arg.empty() ? "" : ", " + number.arg) +
                                   ", %out_scale, %out_zero_point, %out_dtype)";
          for (const auto& [inputs, core_ir] : core.spellings) {
            const std::string all_inputs = inputs + tail.inputs + (quant_out ? quant_inputs : "");
            for (const auto& chain : inplace_variants(core_ir + "\n" + tail.ir)) {
              Rewrite r;
              r.name = row_name(core, tail, quant_out);
              r.pattern = graph_ir(all_inputs, chain + (quant_out ? "\n" + quantize : ""), quant_out ? "%out" : result);
              r.replacement = graph_ir(
                  all_inputs, tail.consts + "\n" + number.prelude + (quant_out ? "" : float_consts) + "\n" + call,
                  "%out");
              r.filters = core.filters;
              r.filters.insert(r.filters.end(), tail.filters.begin(), tail.filters.end());
              if (number.filter.accepts) r.filters.push_back(number.filter);
              r.lead = "core";
              if (quant_out) r.filters.push_back(kQuantizeConstant);
              rows.push_back(std::move(r));
            }
          }
        }
      }
    }
  }
  // Dynamic linears (the reference graph calls jitfuse::qlinear_dynamic itself): their activation.
  const std::string dyn = "%x, %smooth, %qweight, %weight_scales, %bias";
  for (const auto& [name, tail, inputs] :
       {std::tuple<const char*, const char*, const char*>{"qlinear_dynamic_relu", "%out = aten::relu{_}(%y)", ""},
        {"qlinear_dynamic_gelu", "%out = aten::gelu{_}(%y, %approximate)", ", %approximate"}})
    for (const auto& ir : inplace_variants(tail)) {
      const std::string all = dyn + inputs;
      rows.push_back({name,
                      graph_ir(all, "%y = jitfuse::qlinear_dynamic(" + dyn + ")\n" + ir, "%out"),
                      graph_ir(all, std::string("%out = jitfuse::") + name + "(" + all + ")", "%out"),
                      *inputs ? std::vector<Filter>{kGeluApproximationKnown} : std::vector<Filter>{}, "y"});
    }
  // A dynamic linear whose result only feeds another (a transformer's feed-forward pair): it
  // quantizes its result's rows for that one while they are in cache, instead of the next one
  // reading them back (BERT-base's 3072-wide rows: 8% of an int8 call at batch 8). After the
  // activation rows above; %dtype is what the second linear returned: its input's dtype.
  const std::string next = "%next_smooth, %next_qweight, %next_weight_scales, %next_bias";
  for (const auto& [name, inputs] : {std::pair<const char*, const char*>{"qlinear_dynamic", ""},
                                     {"qlinear_dynamic_relu", ""},
                                     {"qlinear_dynamic_gelu", ", %approximate"}}) {
    const std::string first = dyn + inputs, all = first + ", " + next;
    rows.push_back({std::string(name) + "_rows",
                    graph_ir(all,
                             std::string("%h = jitfuse::") + name + "(" + first + ")\n"
                             "%out = jitfuse::qlinear_dynamic(%h, " + next + ")",
                             "%out"),
                    graph_ir(all,
                             std::string("%values, %scales, %zero_points = jitfuse::") + name + "_rows(" + first +
                                 ", %next_smooth)\n"
                                 "%dtype : int = prim::dtype(%x)\n"
                                 "%out = jitfuse::qlinear_rows(%values, %scales, %zero_points, %next_qweight, "
                                 "%next_weight_scales, %next_bias, %dtype)",
                             "%out"),
                    {},
                    "h"});
  }
  return rows;
}

// SubgraphRewriter needs a chain's inner values to have no other readers; a dequantized tensor
// often has several (a residual block reads its input twice). Each reader gets its own
// dequantize, so every chain can take its own; the ones left unused are dead code.
void split_dequantize(torch::jit::Block* block) {
  const auto dequantize = c10::Symbol::fromQualString("jitfuse::dequantize_per_tensor");
  for (auto* n : block->nodes()) {
    for (auto* b : n->blocks()) split_dequantize(b);
    if (n->kind() != dequantize || n->output()->uses().size() < 2) continue;
    const auto uses = n->output()->uses();
    for (size_t i = 1; i < uses.size(); ++i) {
      auto* copy = block->owningGraph()->createClone(n, [](Value* v) { return v; });
      copy->insertAfter(n);
      copy->output()->setType(n->output()->type());
      uses[i].user->replaceInput(uses[i].offset, copy->output());
    }
  }
}

// Whether `v` is (a view or rearranged copy of) what an int8 linear wrote: the ops that move
// values between a merged Q/K/V projection and attention's operands are followed back to it.
bool from_int8_linear(Value* v) {
  static const std::unordered_set<std::string> views = {
      "aten::view", "aten::reshape", "aten::transpose", "aten::permute", "aten::contiguous",
      "aten::split_with_sizes", "aten::split", "aten::chunk", "aten::select", "aten::slice",
      "prim::ListUnpack", "jitfuse::view_transpose_contiguous_view"};
  for (int hops = 0; hops < 16; ++hops) {
    const auto* n = v->node();
    const std::string kind = n->kind().toQualString();
    if (kind.rfind("jitfuse::qlinear", 0) == 0) return true;
    if (!views.count(kind) || n->inputs().empty()) return false;
    v = n->input(0);
  }
  return false;
}

}  // namespace

void lower_int8_attention(GraphPtr& graph) {
  if (!is_pattern_enabled(kAttentionLowPrecision)) return;
  const auto attention = c10::Symbol::fromQualString("jitfuse::attention");
  static const size_t q = argument_index(attention, "q"), k = argument_index(attention, "k"),
                      v = argument_index(attention, "v"), low = argument_index(attention, "low_precision");
  std::vector<torch::jit::Node*> found;
  for (auto* n : graph->block()->nodes())
    if (n->kind() == attention && n->inputs().size() > low && is_constant_bool(n->input(low), false) &&
        from_int8_linear(n->input(q)) && from_int8_linear(n->input(k)) && from_int8_linear(n->input(v)))
      found.push_back(n);
  for (auto* n : found) {
    torch::jit::WithInsertPoint guard(n);
    n->replaceInput(low, graph->insertConstant(true));
    report_rewrite(kAttentionLowPrecision, {n});
  }
}

const std::vector<Rewrite>& int8_rewrites() {
  static const std::vector<Rewrite> rows = build_int8_rewrites();
  return rows;
}

void fuse_int8(GraphPtr& graph) {
  split_dequantize(graph->block());
  apply_rewrites(graph, int8_rewrites());
}

}  // namespace jitfuse
