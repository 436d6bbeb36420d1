// Conv2D/Conv3D fusions (fp32, bf16). The table below is the whole family: each row is a post-op
// tail that follows a convolution. Rows are expanded over conv rank (2d, 3d), the conv spelling
// (aten::_convolution from tracing, aten::conv{2,3}d from scripting) and in-place spellings
// ({_}); every expansion keeps the row's name, which is also the name of the fused op.
#include "passes/rewrite.h"
#include "passes/spellings.h"

namespace jitfuse {
namespace {

// ---- filters --------------------------------------------------------------------------------

// The conv is one jitfuse's kernel computes exactly: a frozen (constant) float32/bfloat16 CPU
// weight of the right rank, constant bias or none, constant int-list geometry, not transposed,
// an input that agrees with the weight where its type is known.
std::vector<Filter> conv_filters(int64_t rank) {
  const std::string dims = std::to_string(rank);
  return {
      // aten::_convolution serves every rank: the weight's (else the input's) rank, where known,
      // decides between the conv2d and conv3d rows.
      {[rank](const Match& m, const ValueMap& v) {
         for (const char* name : {"weight", "input"}) {
           auto type = bound(m, v, name)->type()->cast<c10::TensorType>();
           if (type && type->dim()) return static_cast<int64_t>(*type->dim()) == rank;
         }
         return true;
       },
       "", true},
      weight_is_constant("weight"),
      {[rank](const Match& m, const ValueMap& v) { return frozen_weight(bound(m, v, "weight"), rank).has_value(); },
       "the weight is {weight:type}: jitfuse's convolutions take float32 or bfloat16 CPU weights of " + dims + " dims"},
      bias_is_constant_for("weight"),
      kConvGeometryConstant,
      kConvNotTransposed,
      {[rank](const Match& m, const ValueMap& v) {
         auto type = bound(m, v, "input")->type()->cast<c10::TensorType>();
         if (!type) return false;
         auto w = frozen_weight(bound(m, v, "weight"), rank);
         return w && (!type->dim() || *type->dim() == rank || *type->dim() == rank - 1) &&
                (!type->scalarType() || *type->scalarType() == w->scalar_type()) &&
                (!type->device() || type->device()->is_cpu());
       },
       "the input {input} is {input:type}, not a CPU tensor of " + dims + " dims (or " + std::to_string(rank - 1) +
           " unbatched) and the weight's dtype ({weight:type})"},
  };
}

const Filter kAlphaIsConstant{
    [](const Match& m, const ValueMap& v) { return is_constant_scalar(bound(m, v, "alpha")); },
    "the add's alpha {alpha} is {alpha:origin}, not a constant"};

const Filter kHardtanhBoundsConstant{
    [](const Match& m, const ValueMap& v) {
      return is_constant_scalar(bound(m, v, "min_val")) && is_constant_scalar(bound(m, v, "max_val"));
    },
    "hardtanh's min_val or max_val is not a constant"};

// jitfuse::conv2d_elu takes alpha only (its schema): torch's scale and input_scale must be 1.
const Filter kEluIsPlain{
    [](const Match& m, const ValueMap& v) {
      return is_constant_number(bound(m, v, "scale"), 1.0) &&
             is_constant_number(bound(m, v, "input_scale"), 1.0) && is_constant_scalar(bound(m, v, "alpha"));
    },
    "elu's scale ({scale:value}) or input_scale ({input_scale:value}) is not 1, or its alpha is not a "
    "constant: the fused op's elu has an alpha only"};

// ---- the table ------------------------------------------------------------------------------

struct ConvTail {
  std::string name;     // fused op is jitfuse::conv{2,3}d_<name>
  std::string tail;     // IR from %conv to %out; {_} expands to the in-place spelling too
  std::string op_args;  // extra arguments of the fused op
  std::string consts;   // IR defining constants the replacement needs
  std::vector<Filter> filters;
};

// A sum (then relu), conv + other in each spelling of spellings.h: any constant alpha with the
// conv first, alpha 1 with it second.
std::vector<ConvTail> sum_tails(bool relu) {
  std::vector<ConvTail> tails;
  for (const auto& add : add_spellings(relu ? "%s" : "%out", "%conv"))
    tails.push_back({relu ? "sum_relu" : "sum", add.ir + (relu ? "\n%out = aten::relu{_}(%s)" : ""), ", %other, %alpha",
                     "", {add.result_first ? kAlphaIsConstant : kAlphaIsOne}});
  return tails;
}

// Longer tails first: conv+add+relu must be claimed before conv+add.
const std::vector<ConvTail>& conv_tails() {
  static const std::vector<ConvTail> tails = [] {
    std::vector<ConvTail> t = sum_tails(/*relu=*/true);
    for (auto& sum : sum_tails(/*relu=*/false)) t.push_back(std::move(sum));
    const std::vector<ConvTail> activations = {
        // name      tail (%conv -> %out)                                          extra op args           constants  filters
        {"swish",    "%s = aten::sigmoid(%conv)\n%out = aten::mul{_}(%conv, %s)",  "",                     "",        {}},
        {"swish",    "%s = aten::sigmoid(%conv)\n%out = aten::mul{_}(%s, %conv)",  "",                     "",        {}},
        {"sigmoid",  "%out = aten::sigmoid{_}(%conv)",                             "",                     "",        {}},
        {"hardtanh", "%out = aten::hardtanh{_}(%conv, %min_val, %max_val)",        ", %min_val, %max_val", "",        {kHardtanhBoundsConstant}},
        {"hardtanh", "%out = aten::relu6{_}(%conv)",                               ", %min_val, %max_val",
                     "%min_val : float = prim::Constant[value=0.]()\n"
                     "%max_val : float = prim::Constant[value=6.]()",                                                 {}},
        {"silu",     "%out = aten::silu{_}(%conv)",                                "",                     "",        {}},
        {"elu",      "%out = aten::elu{_}(%conv, %alpha, %scale, %input_scale)",   ", %alpha",             "",        {kEluIsPlain}},
        {"relu",     "%out = aten::relu{_}(%conv)",                                "",                     "",        {}},
        // A lone conv still gains prepacked weights and NHWC.
        {"",         "",                                                           "",                     "",        {}},
    };
    t.insert(t.end(), activations.begin(), activations.end());
    return t;
  }();
  return tails;
}

// Names the pattern inputs a tail reads (every %name in it that it does not define).
std::string tail_inputs(const std::string& tail) {
  std::string out;
  for (const char* name : {"%other", "%alpha", "%min_val", "%max_val", "%scale", "%input_scale"})
    if (tail.find(std::string(name) + ",") != std::string::npos ||
        tail.find(std::string(name) + ")") != std::string::npos)
      out += std::string(", ") + name;
  return out;
}

std::vector<Rewrite> build_conv_rewrites() {
  std::vector<Rewrite> rows;
  for (int dim : {2, 3}) {
    const std::string op = "conv" + std::to_string(dim) + "d";
    for (const auto& t : conv_tails()) {
      const std::string name = t.name.empty() ? op : op + "_" + t.name;
      const std::string out = t.tail.empty() ? "%conv" : "%out";
      // The replacement reads the pattern's inputs by position: same inputs as the pattern.
      const std::string call = out + " = jitfuse::" + name +
                               "(%input, %weight, %bias, %stride, %padding, %dilation, %groups" +
                               t.op_args + ")";
      for (const auto& conv : conv_spellings(dim, "%input", "%weight", "%conv")) {
        const std::string inputs = "%input, %weight, " + conv.params + tail_inputs(t.tail);
        for (const auto& tail : inplace_variants(t.tail)) {
          Rewrite r;
          r.name = name;
          r.pattern = graph_ir(inputs, conv.call + "\n" + tail, out);
          r.replacement = graph_ir(inputs, t.consts + "\n" + call, out);
          r.filters = conv_filters(dim + 2);
          r.filters.insert(r.filters.end(), t.filters.begin(), t.filters.end());
          r.lead = "conv";
          rows.push_back(std::move(r));
        }
      }
    }
  }
  return rows;
}

}  // namespace

const std::vector<Rewrite>& conv_rewrites() {
  static const std::vector<Rewrite> rows = build_conv_rewrites();
  return rows;
}

void fuse_conv(GraphPtr& graph) { apply_rewrites(graph, conv_rewrites()); }

}  // namespace jitfuse
