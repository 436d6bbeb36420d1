#include "passes/rewrite.h"

#include <torch/csrc/jit/runtime/operator.h>

#include <algorithm>
#include <iostream>
#include <sstream>
#include <unordered_set>

#include "passes/explain.h"
#include "passes/recorder.h"
#include "passes/switches.h"

namespace jitfuse {

void apply_rewrites(GraphPtr& graph, const std::vector<Rewrite>& rewrites) {
  for (const auto& row : rewrites) {
    Recorder* recorder = Recorder::active();  // null unless a report is being made
    // Where the pattern fits, and why the row would refuse each place: before the rewrite,
    // which destroys the nodes it takes.
    std::vector<ShapeMatch> shapes;
    if (recorder) shapes = shape_matches(*graph, row);
    if (!is_pattern_enabled(row.name)) {
      if (recorder)
        for (const auto& m : shapes)
          recorder->refused(row.name, m, "the pattern is turned off (JITFUSE_DISABLE or set_pattern_enabled)");
      continue;
    }
    torch::jit::SubgraphRewriter rewriter;
    rewriter.RegisterRewritePattern(row.pattern, row.replacement);
    // Matches may overlap; the rewriter keeps the first. Claiming nodes here makes every accepted
    // match one that is rewritten, so the verbose line and the report are true.
    std::unordered_set<const torch::jit::Node*> claimed;
    rewriter.runOnGraph(graph, [&](const Match& match, const ValueMap& vmap) {
      for (const auto& filter : row.filters)
        if (!filter.accepts(match, vmap)) return false;
      for (const auto& [p, n] : match.nodes_map)
        if (claimed.count(n)) return false;
      for (const auto& [p, n] : match.nodes_map) claimed.insert(n);
      // now, while the nodes exist
      record_fusion(row.name, fused_op_name(row.replacement),
                    row.lead.empty() ? match.anchor : match.nodes_map.at(vmap.at(row.lead)->node()),
                    matched_nodes(match));
      return true;
    });
    if (recorder)
      for (const auto& m : shapes)
        if (!claimed.count(m.lead))  // (a claimed node is gone)
          recorder->refused(row.name, m,
                            m.refusal.empty() ? "an overlapping match of the same pattern took its nodes" : m.refusal);
  }
}

void record_fusion(const std::string& name, const std::string& op, torch::jit::Node* lead,
                   const std::vector<torch::jit::Node*>& nodes) {
  report_rewrite(name, nodes);
  if (auto* recorder = Recorder::active()) recorder->fused(name, op, lead, nodes);
}

void report_rewrite(const std::string& name, std::vector<torch::jit::Node*> nodes) {
  if (!verbose()) return;
  std::sort(nodes.begin(), nodes.end(), [](auto* a, auto* b) { return a->isBefore(b); });
  std::string out;
  for (auto* n : nodes) {
    if (!out.empty()) out += ", ";
    out += n->kind().toQualString();
    if (!n->outputs().empty()) out += " %" + n->output(0)->debugName();
  }
  std::cerr << "jitfuse: " << name << " <- " << out << "\n";
}

std::string graph_ir(const std::string& inputs, const std::string& statements,
                     const std::string& output) {
  std::string ir = "graph(" + inputs + "):\n";
  std::stringstream lines(statements);
  for (std::string line; std::getline(lines, line);)
    if (!line.empty()) ir += "  " + line + "\n";
  return ir + "  return (" + output + ")\n";
}

std::vector<std::string> inplace_variants(const std::string& ir) {
  const std::string mark = "{_}";
  auto at = ir.find(mark);
  if (at == std::string::npos) return {ir};
  std::vector<std::string> out;
  for (const char* spelling : {"", "_"})
    for (auto& rest : inplace_variants(ir.substr(at + mark.size())))
      out.push_back(ir.substr(0, at) + spelling + rest);
  return out;
}

Value* bound(const Match& match, const ValueMap& vmap, const std::string& name) {
  return match.values_map.at(vmap.at(name));
}

std::optional<torch::jit::IValue> constant(Value* v) { return torch::jit::toIValue(v); }

bool is_constant_int_list(Value* v) {
  auto c = constant(v);
  return c && c->isIntList();
}

bool is_constant_int(Value* v) {
  auto c = constant(v);
  return c && c->isInt();
}

bool is_constant_bool(Value* v, bool expected) {
  auto c = constant(v);
  return c && c->isBool() && c->toBool() == expected;
}

bool is_constant_number(Value* v, double expected) {
  auto c = constant(v);
  return c && (c->isInt() || c->isDouble()) && c->toScalar().toDouble() == expected;
}

const Filter kAlphaIsOne{
    [](const Match& m, const ValueMap& v) { return is_constant_number(bound(m, v, "alpha"), 1.0); },
    "the add scales its operand by alpha = {alpha:value}, not 1"};

const Filter kGeluApproximationKnown{
    [](const Match& m, const ValueMap& v) {
      auto c = constant(bound(m, v, "approximate"));
      return c && c->isString() && (c->toStringRef() == "none" || c->toStringRef() == "tanh");
    },
    "gelu's approximate is {approximate:value}, not the constant 'none' or 'tanh'"};

const Filter kConvGeometryConstant{
    [](const Match& m, const ValueMap& v) {
      for (const char* name : {"stride", "padding", "dilation"})
        if (!is_constant_int_list(bound(m, v, name))) return false;
      return is_constant_int(bound(m, v, "groups"));
    },
    "stride, padding, dilation or groups is not a constant"};

const Filter kConvNotTransposed{
    [](const Match& m, const ValueMap& v) {
      return !v.count("transposed") || is_constant_bool(bound(m, v, "transposed"), false);
    },
    "a transposed convolution: jitfuse fuses forward convolutions only"};

const Filter kPoolGeometryConstant{
    [](const Match& m, const ValueMap& v) {
      for (const char* name : {"kernel_size", "stride", "padding", "dilation"})
        if (!is_constant_int_list(bound(m, v, name))) return false;
      auto ceil = constant(bound(m, v, "ceil_mode"));
      return ceil && ceil->isBool();
    },
    "kernel_size, stride, padding, dilation or ceil_mode is not a constant"};

Filter weight_is_constant(const std::string& name) {
  return {[name](const Match& m, const ValueMap& v) {
            auto c = constant(bound(m, v, name));
            return c && c->isTensor();
          },
          "the weight {" + name + "} is {" + name + ":origin}, not a constant: freeze the module "
          "(torch.jit.freeze) so that its weights become constants"};
}

Filter bias_is_constant_for(const std::string& weight) {
  return {[weight](const Match& m, const ValueMap& v) {
            auto w = constant(bound(m, v, weight));
            return w && w->isTensor() && is_constant_bias_for(bound(m, v, "bias"), w->toTensor());
          },
          "the bias {bias} ({bias:origin}, {bias:type}) is not None or a constant vector of the "
          "weight's dtype or float32"};
}

Filter number_is_constant(const std::string& name) {
  return {[name](const Match& m, const ValueMap& v) { return is_constant_scalar(bound(m, v, name)); },
          "the " + name + " {" + name + "} is {" + name + ":origin}, not a constant number"};
}

Filter number_is_constant_0d_tensor(const std::string& name, bool floating) {
  return {[name, floating](const Match& m, const ValueMap& v) {
            auto c = constant(bound(m, v, name));
            if (!c || !c->isTensor() || c->toTensor().dim() != 0) return false;
            return floating ? c->toTensor().is_floating_point() : !c->toTensor().is_complex();
          },
          "the " + name + " {" + name + "} is {" + name + ":origin} ({" + name + ":type}), not a constant 0-dim " +
              (floating ? "floating-point tensor" : "tensor")};
}

size_t argument_index(c10::Symbol kind, const char* name) {
  const auto ops = torch::jit::getAllOperatorsFor(kind);
  TORCH_CHECK(!ops.empty(), "jitfuse passes: no op ", kind.toQualString(), " is registered");
  const auto index = ops.front()->schema().argumentIndexWithName(name);
  TORCH_CHECK(index.has_value(), "jitfuse passes: ", kind.toQualString(), " has no argument '", name,
              "' (schema: ", ops.front()->schema(), ")");
  return static_cast<size_t>(*index);
}

bool is_fused_conv(const torch::jit::Node* n) {
  const std::string kind = n->kind().toQualString();
  return kind.rfind("jitfuse::conv2d", 0) == 0 || kind.rfind("jitfuse::conv3d", 0) == 0;
}

bool is_constant_scalar(Value* v) {
  auto c = constant(v);
  return c && (c->isInt() || c->isDouble());
}

std::optional<at::Tensor> frozen_weight(Value* v, int64_t rank) {
  auto c = constant(v);
  if (!c || !c->isTensor()) return std::nullopt;
  const auto& w = c->toTensor();
  if (w.dim() != rank || !w.device().is_cpu() || w.layout() != at::kStrided) return std::nullopt;
  if (w.scalar_type() != at::kFloat && w.scalar_type() != at::kBFloat16) return std::nullopt;
  return w;
}

bool is_constant_bias_for(Value* v, const at::Tensor& weight) {
  auto c = constant(v);
  if (!c) return false;
  if (c->isNone()) return true;
  if (!c->isTensor()) return false;
  const auto& b = c->toTensor();
  return b.layout() == at::kStrided && b.device().is_cpu() && b.dim() == 1 &&
         (b.scalar_type() == weight.scalar_type() || b.scalar_type() == at::kFloat);
}

std::vector<torch::jit::Node*> matched_nodes(const Match& match) {
  std::vector<torch::jit::Node*> nodes;
  for (const auto& [pattern_node, node] : match.nodes_map)
    if (node->kind() != torch::jit::prim::Param && node->kind() != torch::jit::prim::Return)
      nodes.push_back(node);
  std::sort(nodes.begin(), nodes.end(), [](auto* a, auto* b) { return a->isBefore(b); });
  return nodes;
}

std::string fused_op_name(const std::string& replacement_ir) {
  const auto at = replacement_ir.find("jitfuse::");  // the first: a _rows op hands its rows on
  if (at == std::string::npos) return "";
  const auto end = replacement_ir.find('(', at);
  return replacement_ir.substr(at, end - at);
}

}  // namespace jitfuse
