// int8 fusions: the dequantize -> op [-> post-ops] [-> quantize] chains of a reference quantized
// graph (what jitfuse.quantization.convert builds, and what stock PyTorch runs as is) become one
// jitfuse::q* op that reads the int8 tensors and writes float32 or int8.
//
// The table is the seed's 23 chains (plus the spellings each needs). A row is a core (what the
// dequantized inputs feed) and a tail (post-ops); each is expanded over the two endings, a
// quantize_per_tensor (int8 out) or none (float32 out), and over in-place spellings ({_}).
#include "passes/rewrite.h"

#include <torch/csrc/jit/ir/ir.h>

#include <tuple>

namespace jitfuse {
namespace {

// ---- filters --------------------------------------------------------------------------------

// A constant int8 weight of `rank` dims and its constant float32 scales (1 or one per output
// channel), dequantized as aten::dequantize(weight) * scales: what jitfuse.quantization writes.
Filter int8_weight(int64_t rank) {
  return [rank](const Match& m, const ValueMap& v) {
    auto w = constant(bound(m, v, "qweight")), s = constant(bound(m, v, "weight_scales"));
    if (!w || !w->isTensor() || !s || !s->isTensor()) return false;
    const auto& qw = w->toTensor();
    const auto& scales = s->toTensor();
    if (qw.scalar_type() != at::kChar || qw.dim() != rank || !qw.device().is_cpu() || !qw.is_contiguous() ||
        scales.scalar_type() != at::kFloat || scales.dim() > rank)
      return false;
    // one scale, or one per output channel laid along dim 0 ([N] or [N, 1, ...], as convert writes)
    return scales.numel() == 1 || (scales.numel() == qw.size(0) && scales.size(0) == qw.size(0));
  };
}

// A constant float32 bias or None.
bool float_bias(const Match& m, const ValueMap& v) {
  auto c = constant(bound(m, v, "bias"));
  return c && (c->isNone() || (c->isTensor() && c->toTensor().scalar_type() == at::kFloat &&
                               c->toTensor().dim() == 1 && c->toTensor().layout() == at::kStrided));
}

// Where the executor profiled them, the int8 inputs are uint8/int8 CPU tensors.
bool int8_inputs(const Match& m, const ValueMap& v) {
  for (const char* name : {"qx", "qa", "qb", "qother"}) {
    if (!v.count(name)) continue;
    auto type = bound(m, v, name)->type()->cast<c10::TensorType>();
    if (!type) return false;
    if (type->scalarType() && *type->scalarType() != at::kByte && *type->scalarType() != at::kChar)
      return false;
    if (type->device() && !type->device()->is_cpu()) return false;
  }
  return true;
}

bool conv2d_geometry(const Match& m, const ValueMap& v) {
  for (const char* name : {"stride", "padding", "dilation"})
    if (!is_constant_int_list(bound(m, v, name))) return false;
  if (v.count("transposed") && !is_constant_bool(bound(m, v, "transposed"), false)) return false;
  auto type = bound(m, v, "qx")->type()->cast<c10::TensorType>();
  return is_constant_int(bound(m, v, "groups")) && (!type->dim() || *type->dim() == 4);
}

bool pool_geometry(const Match& m, const ValueMap& v) {
  for (const char* name : {"kernel_size", "stride", "padding", "dilation"})
    if (!is_constant_int_list(bound(m, v, name))) return false;
  return is_constant_bool(bound(m, v, "ceil_mode"), false) ||
         is_constant_bool(bound(m, v, "ceil_mode"), true);
}

// The added operand is a float32 tensor (the kernel adds it with a binary post-op).
bool float_other(const Match& m, const ValueMap& v) {
  if (!v.count("other")) return true;
  auto type = bound(m, v, "other")->type()->cast<c10::TensorType>();
  return type && (!type->scalarType() || *type->scalarType() == at::kFloat) &&
         (!type->device() || type->device()->is_cpu());
}

bool gelu_approximation_known(const Match& m, const ValueMap& v) {
  auto c = constant(bound(m, v, "approximate"));
  return c && c->isString() && (c->toStringRef() == "none" || c->toStringRef() == "tanh");
}

bool divisor_is_number(const Match& m, const ValueMap& v) {
  return is_constant_scalar(bound(m, v, "divisor"));
}
// Tracing records `x / 8.0` with a 0-dim tensor constant.
bool divisor_is_0d_tensor(const Match& m, const ValueMap& v) {
  auto c = constant(bound(m, v, "divisor"));
  return c && c->isTensor() && c->toTensor().dim() == 0 && !c->toTensor().is_complex();
}

// quantize_per_tensor with constant parameters the kernels take: uint8/int8, a positive scale.
bool quantize_constant(const Match& m, const ValueMap& v) {
  auto scale = constant(bound(m, v, "out_scale"));
  auto zp = constant(bound(m, v, "out_zero_point"));
  auto dtype = constant(bound(m, v, "out_dtype"));
  if (!scale || !(scale->isDouble() || scale->isInt()) || scale->toScalar().toDouble() <= 0)
    return false;
  if (!zp || !zp->isInt() || !dtype || !dtype->isInt()) return false;
  const auto t = static_cast<at::ScalarType>(dtype->toInt());
  return t == at::kByte || t == at::kChar;
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

const std::vector<Core>& cores() {
  static const std::vector<Core> list = {
      {"conv", "qconv2d",
       {{kQuantX + ", " + kQuantW + ", %bias, %stride, %padding, %dilation, %transposed, %output_padding, "
         "%groups, %benchmark, %deterministic, %cudnn_enabled, %allow_tf32",
         kDequantX + kDequantW +
             "%core = aten::_convolution(%x, %weight, %bias, %stride, %padding, %dilation, "
             "%transposed, %output_padding, %groups, %benchmark, %deterministic, %cudnn_enabled, "
             "%allow_tf32)"},
        {kQuantX + ", " + kQuantW + ", %bias, %stride, %padding, %dilation, %groups",
         kDequantX + kDequantW +
             "%core = aten::conv2d(%x, %weight, %bias, %stride, %padding, %dilation, %groups)"}},
       "%qx, %x_scale, %x_zero_point, %qweight, %weight_scales, %bias, %stride, %padding, %dilation, %groups",
       {int8_weight(4), float_bias, int8_inputs, conv2d_geometry}},
      {"linear", "qlinear",
       {{kQuantX + ", " + kQuantW + ", %bias", kDequantX + kDequantW + "%core = aten::linear(%x, %weight, %bias)"}},
       "%qx, %x_scale, %x_zero_point, %qweight, %weight_scales, %bias",
       {int8_weight(2), float_bias, int8_inputs}},
      {"bmm", "qbmm",
       {{"%qa, %a_scale, %a_zero_point, %qb, %b_scale, %b_zero_point",
         "%a = jitfuse::dequantize_per_tensor(%qa, %a_scale, %a_zero_point)\n"
         "%b = jitfuse::dequantize_per_tensor(%qb, %b_scale, %b_zero_point)\n%core = aten::bmm(%a, %b)"},
        {"%qa, %a_scale, %a_zero_point, %qb, %b_scale, %b_zero_point",
         "%a = jitfuse::dequantize_per_tensor(%qa, %a_scale, %a_zero_point)\n"
         "%b = jitfuse::dequantize_per_tensor(%qb, %b_scale, %b_zero_point)\n%core = aten::matmul(%a, %b)"}},
       "%qa, %a_scale, %a_zero_point, %qb, %b_scale, %b_zero_point",
       {int8_inputs}},
      {"max_pool2d", "qmax_pool2d",
       {{kQuantX + ", %kernel_size, %stride, %padding, %dilation, %ceil_mode",
         kDequantX + "%core = aten::max_pool2d(%x, %kernel_size, %stride, %padding, %dilation, %ceil_mode)"}},
       "%qx, %x_scale, %x_zero_point, %kernel_size, %stride, %padding, %dilation, %ceil_mode",
       {int8_inputs, pool_geometry}},
  };
  return list;
}

// What follows the core; it defines %y from %core.
struct Tail {
  const char* core;     // the core it follows
  const char* name;     // "" or "_relu", "_sum", ...: the row name's and the op's suffix
  const char* ir;       // {_} expands to the in-place spelling too
  const char* inputs;   // pattern inputs the tail reads
  const char* op_args;  // the fused op's arguments that come from the tail
  const char* consts;   // IR the replacement needs first
  std::vector<Filter> filters;
  bool float_out = true;  // also a row without quantize (the seed's max_pool2d is int8 out only)
};

// A float operand added: the op's other_scale / other_zero_point are None.
const char* const kFloatOther = "%no_scale : NoneType = prim::Constant()\n%no_zero_point : NoneType = prim::Constant()";
#define INT8_OTHER "%other = jitfuse::dequantize_per_tensor(%qother, %other_scale, %other_zero_point)\n"

// Longer tails first: conv+sum+relu must be claimed before conv+sum and conv. The added operand
// of a sum comes two ways: a float tensor, or a dequantized int8 one that the op reads directly.
const std::vector<Tail>& tails() {
  static const std::vector<Tail> list = {
      // core      name           ir (%core -> %y)                                                   inputs                                         op args                                          consts       filters
      {"conv",   "_sum_relu",     INT8_OTHER "%s = aten::add{_}(%core, %other, %alpha)\n%y = aten::relu{_}(%s)", ", %qother, %other_scale, %other_zero_point, %alpha", ", %qother, %other_scale, %other_zero_point", "", {alpha_is_one}},
      {"conv",   "_sum_relu",     "%s = aten::add{_}(%core, %other, %alpha)\n%y = aten::relu{_}(%s)", ", %other, %alpha", ", %other, %no_scale, %no_zero_point", kFloatOther, {alpha_is_one, float_other}},
      {"conv",   "_sum_relu",     "%s = aten::add(%other, %core, %alpha)\n%y = aten::relu{_}(%s)",   ", %other, %alpha", ", %other, %no_scale, %no_zero_point", kFloatOther, {alpha_is_one, float_other}},
      {"conv",   "_sum",          INT8_OTHER "%y = aten::add{_}(%core, %other, %alpha)",             ", %qother, %other_scale, %other_zero_point, %alpha", ", %qother, %other_scale, %other_zero_point", "", {alpha_is_one}},
      {"conv",   "_sum",          "%y = aten::add{_}(%core, %other, %alpha)",                        ", %other, %alpha", ", %other, %no_scale, %no_zero_point", kFloatOther, {alpha_is_one, float_other}},
      {"conv",   "_sum",          "%y = aten::add(%other, %core, %alpha)",                           ", %other, %alpha", ", %other, %no_scale, %no_zero_point", kFloatOther, {alpha_is_one, float_other}},
      {"conv",   "_relu",         "%y = aten::relu{_}(%core)",                                       "",               "",               "",     {}},
      {"conv",   "",              "",                                                                "",               "",               "",     {}},
      {"linear", "_sum",          INT8_OTHER "%y = aten::add{_}(%core, %other, %alpha)",             ", %qother, %other_scale, %other_zero_point, %alpha", ", %qother, %other_scale, %other_zero_point", "", {alpha_is_one}},
      {"linear", "_sum",          "%y = aten::add{_}(%core, %other, %alpha)",                        ", %other, %alpha", ", %other, %no_scale, %no_zero_point", kFloatOther, {alpha_is_one, float_other}},
      {"linear", "_sum",          "%y = aten::add(%other, %core, %alpha)",                           ", %other, %alpha", ", %other, %no_scale, %no_zero_point", kFloatOther, {alpha_is_one, float_other}},
      {"linear", "_relu",         "%y = aten::relu{_}(%core)",                                       "",               "",               "",     {}},
      {"linear", "_gelu",         "%y = aten::gelu{_}(%core, %approximate)",                         ", %approximate", ", %approximate", "",     {gelu_approximation_known}},
      {"linear", "_sigmoid",      "%y = aten::sigmoid{_}(%core)",                                    "",               "",               "",     {}},
      {"linear", "",              "",                                                                "",               "",               "",     {}},
      {"bmm",    "_div",          "%y = aten::div(%core, %divisor)",                                 ", %divisor",     ", %divisor",     "",     {divisor_is_number}},
      {"bmm",    "_div",          "%y = aten::div(%core, %divisor)",                                 ", %divisor",     ", %number",
                                  "%number : Scalar = aten::item(%divisor)",                                                                              {divisor_is_0d_tensor}},
      {"bmm",    "",              "",                                                                "",               "",               "",     {}},
      {"max_pool2d", "",          "",                                                                "",               "",               "",     {}, false},
  };
  return list;
}
#undef INT8_OTHER

// The seed's names: dequant_<core><tail>[_quant]. A sum whose added operand is a dequantized
// int8 tensor, quantized again after, is the seed's "dequant -> conv -> sum -> dequant".
std::string row_name(const Core& core, const Tail& tail, bool quant_out) {
  std::string name = std::string("dequant_") + core.name + tail.name;
  if (!quant_out) return name;
  if (std::string(core.name) == "conv" && std::string(tail.name) == "_sum" &&
      std::string(tail.inputs).find("%qother") != std::string::npos)
    return name + "_dequant";
  return name + "_quant";
}

std::vector<Rewrite> build_int8_rewrites() {
  std::vector<Rewrite> rows;
  const std::string quantize = "%out = jitfuse::quantize_per_tensor(%y, %out_scale, %out_zero_point, %out_dtype)";
  const std::string quant_inputs = ", %out_scale, %out_zero_point, %out_dtype";
  const std::string float_consts =
      "%out_scale : float = prim::Constant[value=1.]()\n"
      "%out_zero_point : int = prim::Constant[value=0]()\n"
      "%out_dtype : NoneType = prim::Constant()";
  for (const auto& core : cores()) {
    for (const auto& tail : tails()) {
      if (std::string(tail.core) != core.name) continue;
      for (bool quant_out : {true, false}) {  // int8 out first: it claims the longer chain
        if (!quant_out && !tail.float_out) continue;
        const std::string op = std::string(core.op) + tail.name;
        const std::string call = "%out = jitfuse::" + op + "(" + core.op_args + tail.op_args +
                                 ", %out_scale, %out_zero_point, %out_dtype)";
        for (const auto& [inputs, core_ir] : core.spellings) {
          const std::string all_inputs = inputs + tail.inputs + (quant_out ? quant_inputs : "");
          // Without a tail the core's result is %y.
          std::string body = *tail.ir ? core_ir + "\n" + tail.ir : core_ir + "\n";
          if (!*tail.ir) {
            const auto at = body.rfind("%core =");
            body.replace(at, 5, "%y");
          }
          for (const auto& chain : inplace_variants(body)) {
            Rewrite r;
            r.name = row_name(core, tail, quant_out);
            r.pattern = graph_ir(all_inputs, chain + (quant_out ? "\n" + quantize : ""),
                                 quant_out ? "%out" : "%y");
            r.replacement = graph_ir(all_inputs,
                                     std::string(tail.consts) + "\n" + (quant_out ? "" : float_consts) +
                                         "\n" + call,
                                     "%out");
            r.filters = core.filters;
            r.filters.insert(r.filters.end(), tail.filters.begin(), tail.filters.end());
            if (quant_out) r.filters.push_back(quantize_constant);
            rows.push_back(std::move(r));
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
                      *inputs ? std::vector<Filter>{gelu_approximation_known} : std::vector<Filter>{}});
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

}  // namespace

const std::vector<Rewrite>& int8_rewrites() {
  static const std::vector<Rewrite> rows = build_int8_rewrites();
  return rows;
}

void fuse_int8(GraphPtr& graph) {
  split_dequantize(graph->block());
  apply_rewrites(graph, int8_rewrites());
}

}  // namespace jitfuse
