// Linear fusions (fp32, bf16): the table of tails after a linear (aten::linear, matmul + add,
// addmm), and linear_linear_linear, which merges the Linears that read one input (attention's Q,
// K, V; float or int8 dynamic) into one GEMM on concatenated constant weights followed by a
// split, so what follows sees the same tensors.
#include "passes/rewrite.h"

#include <ATen/ops/cat.h>
#include <ATen/ops/zeros.h>
#include <torch/csrc/jit/ir/ir.h>
#include <torch/csrc/jit/passes/constant_propagation.h>

namespace jitfuse {
namespace {

using torch::jit::Node;

// A linear jitfuse computes: a frozen 2-D float32/bfloat16 CPU weight (%<name>: %weight, or
// %weight_t in the transposed spellings), a constant bias or none, an input of the weight's dtype
// where its type is known.
Filter weight_is_2d_float(const std::string& name) {
  return {[name](const Match& m, const ValueMap& v) { return frozen_weight(bound(m, v, name), 2).has_value(); },
          "the weight is {" + name + ":type}: jitfuse's linears take 2-D float32 or bfloat16 CPU weights"};
}

// The input agrees with the (constant) weight %<weight> where its type is known.
Filter input_matches(const std::string& weight) {
  return {[weight](const Match& m, const ValueMap& v) {
            auto type = bound(m, v, "input")->type()->cast<c10::TensorType>();
            auto w = constant(bound(m, v, weight));
            return type && w && w->isTensor() &&
                   (!type->scalarType() || *type->scalarType() == w->toTensor().scalar_type()) &&
                   (!type->device() || type->device()->is_cpu());
          },
          "the input {input} is {input:type}, not a CPU tensor of the weight's dtype ({" + weight + ":type})"};
}

// x @ W^T + b, spelled with matmul/add or addmm: W^T is a constant after freezing.
// The added bias is a vector of out_features, nothing that broadcasts more.
const Filter kBiasIsOutFeaturesVector{
    [](const Match& m, const ValueMap& v) {
      auto wt = frozen_weight(bound(m, v, "weight_t"), 2);
      auto bias = constant(bound(m, v, "bias"));
      return wt && bias && bias->isTensor() && bias->toTensor().dim() == 1 &&
             bias->toTensor().size(0) == wt->size(1) && is_constant_bias_for(bound(m, v, "bias"), *wt);
    },
    "the added {bias} ({bias:origin}, {bias:type}) is not a constant vector of out_features: "
    "the linear would broadcast it differently"};

const Filter kAddmmScalesAreOne{
    [](const Match& m, const ValueMap& v) {
      for (const char* scale : {"alpha", "beta"})
        if (v.count(scale) && !is_constant_number(bound(m, v, scale), 1.0)) return false;
      return true;
    },
    "the sum scales a term: alpha or beta is not the constant 1"};

struct LinearTail {
  const char* name;     // the fused op, jitfuse::<name>
  const char* tail;     // IR from %linear to %out; {_} expands to the in-place spelling too
  const char* inputs;   // pattern inputs the tail reads
  std::vector<Filter> filters;
};

const std::vector<LinearTail>& linear_tails() {
  static const std::vector<LinearTail> tails = {
      // name          tail (%linear -> %out)                                 tail inputs       filters
      {"linear_relu", "%out = aten::relu{_}(%linear)",                        "",               {}},
      {"linear_gelu", "%out = aten::gelu{_}(%linear, %approximate)",          ", %approximate", {kGeluApproximationKnown}},
      // A lone linear still gains a prepacked weight.
      {"linear",      "",                                                     "",               {}},
  };
  return tails;
}

// The spellings of a linear that the tails follow.
struct LinearSpelling {
  const char* inputs;  // pattern inputs besides the tail's
  const char* call;    // IR defining %linear
  const char* weight;  // IR defining the fused op's %weight ([out, in]) when it is not an input
  const char* lead;    // the node the report files a match under
  std::vector<Filter> filters;
};

const std::vector<LinearSpelling>& linear_spellings() {
  static const std::vector<Filter> transposed = {weight_is_constant("weight_t"), weight_is_2d_float("weight_t"),
                                                 kBiasIsOutFeaturesVector, kAddmmScalesAreOne,
                                                 input_matches("weight_t")};
  static const std::vector<LinearSpelling> spellings = {
      {"%input, %weight, %bias", "%linear = aten::linear(%input, %weight, %bias)", "", "linear",
       {weight_is_constant("weight"), weight_is_2d_float("weight"), bias_is_constant_for("weight"), input_matches("weight")}},
      // aten::t of the constant folds into a constant weight (fuse_linear propagates constants).
      {"%input, %weight_t, %bias, %alpha",
       "%mm = aten::matmul(%input, %weight_t)\n%linear = aten::add(%mm, %bias, %alpha)",
       "%weight = aten::t(%weight_t)", "mm", transposed},
      // addmm, as the executor decomposes it: bias + mm
      {"%input, %weight_t, %bias, %alpha",
       "%mm = aten::mm(%input, %weight_t)\n%linear = aten::add(%bias, %mm, %alpha)",
       "%weight = aten::t(%weight_t)", "mm", transposed},
      {"%input, %weight_t, %bias, %beta, %alpha",
       "%linear = aten::addmm(%bias, %input, %weight_t, %beta, %alpha)",
       "%weight = aten::t(%weight_t)", "linear", transposed},
  };
  return spellings;
}

std::vector<Rewrite> build_linear_rewrites() {
  std::vector<Rewrite> rows;
  for (const auto& t : linear_tails()) {
    const std::string out = *t.tail ? "%out" : "%linear";
    for (const auto& spelling : linear_spellings()) {
      const std::string inputs = std::string(spelling.inputs) + t.inputs;
      const std::string call = out + " = jitfuse::" + t.name + "(%input, %weight, %bias" + t.inputs + ")";
      for (const auto& tail : inplace_variants(t.tail)) {
        Rewrite r;
        r.name = t.name;
        r.pattern = graph_ir(inputs, std::string(spelling.call) + "\n" + tail, out);
        r.replacement = graph_ir(inputs, std::string(spelling.weight) + "\n" + call, out);
        r.filters = spelling.filters;
        r.filters.insert(r.filters.end(), t.filters.begin(), t.filters.end());
        r.lead = spelling.lead;
        rows.push_back(std::move(r));
      }
    }
  }
  return rows;
}

// The linears linear_linear_linear merges: float (aten::linear: input, weight, bias) and int8
// dynamic ones (jitfuse::qlinear_dynamic: input, smoothing factors, int8 weight, its scales,
// bias), whose merged form quantizes the shared input once.
struct MergeForm {
  c10::Symbol kind;
  size_t input, weight, bias;            // input positions
  std::optional<size_t> scales, smooth;  // int8 only
};

// Positions from the ops' schemas, by argument name.
MergeForm float_form() {
  const auto kind = c10::Symbol::fromQualString("aten::linear");
  return {kind, argument_index(kind, "input"), argument_index(kind, "weight"), argument_index(kind, "bias"),
          std::nullopt, std::nullopt};
}

MergeForm int8_form() {
  const auto kind = c10::Symbol::fromQualString("jitfuse::qlinear_dynamic");
  return {kind, argument_index(kind, "x"), argument_index(kind, "qweight"), argument_index(kind, "bias"),
          argument_index(kind, "weight_scales"), argument_index(kind, "smooth")};
}

const std::vector<MergeForm>& merge_forms() {
  static const std::vector<MergeForm> forms = {float_form(), int8_form()};
  return forms;
}

// What a group's members must share besides their input: the weight's dtype, and for int8 the
// smoothing factors (one set, or none).
bool same_kind(const MergeForm& f, Node* a, Node* b) {
  const auto wa = constant(a->input(f.weight))->toTensor(), wb = constant(b->input(f.weight))->toTensor();
  if (wa.scalar_type() != wb.scalar_type()) return false;
  if (!f.smooth) return true;
  auto sa = constant(a->input(*f.smooth)), sb = constant(b->input(*f.smooth));
  if (!sa || !sb) return false;
  if (sa->isNone() || sb->isNone()) return sa->isNone() && sb->isNone();
  return sa->isTensor() && sb->isTensor() && sa->toTensor().equal(sb->toTensor());
}

bool mergeable(const MergeForm& f, Node* n) {
  if (f.scales) {
    auto w = constant(n->input(f.weight)), s = constant(n->input(*f.scales)), b = constant(n->input(f.bias));
    return w && w->isTensor() && w->toTensor().dim() == 2 && s && s->isTensor() && b &&
           (b->isNone() || b->isTensor()) && constant(n->input(*f.smooth)).has_value();
  }
  auto w = frozen_weight(n->input(f.weight), 2);
  return w && is_constant_bias_for(n->input(f.bias), *w);
}

// Groups of 3 or more linears of one form in the graph's top block that read one input.
std::vector<std::pair<const MergeForm*, std::vector<Node*>>> linear_groups(torch::jit::Block* block) {
  std::vector<std::pair<const MergeForm*, std::vector<Node*>>> groups;
  for (const auto& form : merge_forms()) {
    std::unordered_map<torch::jit::Value*, std::vector<Node*>> readers;
    std::vector<torch::jit::Value*> order;
    for (Node* n : block->nodes()) {
      if (n->kind() != form.kind || !mergeable(form, n)) continue;
      auto& group = readers[n->input(form.input)];
      if (!group.empty() && !same_kind(form, group[0], n)) continue;
      if (group.empty()) order.push_back(n->input(form.input));
      group.push_back(n);
    }
    for (auto* v : order)
      if (readers[v].size() >= 3) groups.emplace_back(&form, readers[v]);
  }
  return groups;
}

void merge_linears(torch::jit::Graph& graph, const MergeForm& form, const std::vector<Node*>& group) {
  std::vector<at::Tensor> weights, scales, biases;
  std::vector<int64_t> out_features;
  bool any_bias = false;
  for (Node* n : group) {
    const auto w = constant(n->input(form.weight))->toTensor();
    const auto b = constant(n->input(form.bias));
    weights.push_back(w);
    out_features.push_back(w.size(0));
    any_bias |= b->isTensor();
    const auto bias_options = form.scales ? at::TensorOptions().dtype(at::kFloat) : w.options();
    biases.push_back(b->isTensor() ? b->toTensor().to(bias_options.dtype())
                                   : at::zeros({w.size(0)}, bias_options));
    if (form.scales)  // per tensor or per channel: one per output feature after the merge
      scales.push_back(constant(n->input(*form.scales))->toTensor().to(at::kFloat).expand({w.size(0)}));
  }
  torch::jit::WithInsertPoint guard(group.front());  // the earliest reader: the input exists there
  std::vector<torch::jit::NamedValue> inputs(group.front()->inputs().begin(), group.front()->inputs().end());
  inputs[form.weight] = graph.insertConstant(at::cat(weights, 0));
  inputs[form.bias] = any_bias ? graph.insertConstant(at::cat(biases, 0)) : graph.insertConstant(c10::IValue());
  if (form.scales) inputs[*form.scales] = graph.insertConstant(at::cat(scales, 0).contiguous());
  auto* merged = graph.insert(form.kind, inputs);
  auto* parts = graph.insert(c10::Symbol::fromQualString("aten::split_with_sizes"),
                             {merged, c10::IValue(out_features), c10::IValue(int64_t{-1})});
  Node* unpack = graph.insertNode(graph.createListUnpack(parts, group.size()));
  record_fusion(kLinearX3, form.kind.toQualString(), group.front(), group);
  for (size_t i = 0; i < group.size(); ++i) {
    unpack->output(i)->setType(group[i]->output()->type());
    group[i]->output()->replaceAllUsesWith(unpack->output(i));
    group[i]->destroy();
  }
}

}  // namespace

const std::vector<Rewrite>& linear_rewrites() {
  static const std::vector<Rewrite> rows = build_linear_rewrites();
  return rows;
}

void fuse_linear_x3(GraphPtr& graph) {
  if (!is_pattern_enabled(kLinearX3)) return;
  for (const auto& [form, group] : linear_groups(graph->block())) merge_linears(*graph, *form, group);
}

void fuse_linear(GraphPtr& graph) {
  apply_rewrites(graph, linear_rewrites());
  torch::jit::ConstantPropagation(graph);  // aten::t(constant) -> the constant [out, in] weight
}

}  // namespace jitfuse
