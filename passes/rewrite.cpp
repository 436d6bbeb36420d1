#include "passes/rewrite.h"

#include <algorithm>
#include <iostream>
#include <sstream>
#include <unordered_set>

namespace jitfuse {

namespace {

std::vector<torch::jit::Node*> matched_nodes(const Match& match) {
  std::vector<torch::jit::Node*> nodes;
  for (const auto& [pattern_node, node] : match.nodes_map)
    if (node->kind() != torch::jit::prim::Param && node->kind() != torch::jit::prim::Return)
      nodes.push_back(node);
  return nodes;
}

}  // namespace

void apply_rewrites(GraphPtr& graph, const std::vector<Rewrite>& rewrites) {
  for (const auto& row : rewrites) {
    if (!is_pattern_enabled(row.name)) continue;
    torch::jit::SubgraphRewriter rewriter;
    rewriter.RegisterRewritePattern(row.pattern, row.replacement);
    // Matches may overlap; the rewriter keeps the first. Claiming nodes here makes every accepted
    // match one that is rewritten, so the verbose line is true.
    std::unordered_set<const torch::jit::Node*> claimed;
    rewriter.runOnGraph(graph, [&](const Match& match, const ValueMap& vmap) {
      for (const auto& filter : row.filters)
        if (!filter(match, vmap)) return false;
      for (const auto& [p, n] : match.nodes_map)
        if (claimed.count(n)) return false;
      for (const auto& [p, n] : match.nodes_map) claimed.insert(n);
      report_rewrite(row.name, matched_nodes(match));
      return true;
    });
  }
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

bool alpha_is_one(const Match& m, const ValueMap& v) {
  return is_constant_number(bound(m, v, "alpha"), 1.0);
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

}  // namespace jitfuse
