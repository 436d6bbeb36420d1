#include "passes/explain.h"

#include <torch/csrc/jit/ir/irparser.h>
#include <torch/csrc/jit/ir/subgraph_matcher.h>

#include <algorithm>
#include <string>
#include <unordered_set>

#include "passes/describe.h"

namespace jitfuse {

using torch::jit::Node;

namespace {

// Fills a filter's reason: {name}, {name:origin}, {name:type}, {name:value} (rewrite.h).
std::string fill(const std::string& reason, const Match& m, const ValueMap& vmap) {
  std::string out;
  size_t at = 0;
  while (at < reason.size()) {
    const auto open = reason.find('{', at), close = reason.find('}', open);
    if (open == std::string::npos || close == std::string::npos) break;
    out += reason.substr(at, open - at);
    const std::string field = reason.substr(open + 1, close - open - 1);
    const auto colon = field.find(':');
    const std::string name = field.substr(0, colon), form = colon == std::string::npos ? "" : field.substr(colon + 1);
    if (!vmap.count(name) || !m.values_map.count(vmap.at(name))) {
      out += reason.substr(open, close - open + 1);
    } else {
      const Value* v = bound(m, vmap, name);
      out += form == "origin" ? value_origin(v)
             : form == "type" ? value_type(v)
             : form == "value" ? value_constant(v)
                               : "%" + v->debugName();
    }
    at = close + 1;
  }
  return out + reason.substr(std::min(at, reason.size()));
}

}  // namespace

std::vector<ShapeMatch> shape_matches(torch::jit::Graph& graph, const Rewrite& row) {
  torch::jit::Graph pattern;
  ValueMap vmap;
  torch::jit::parseIR(row.pattern, &pattern, vmap);
  // Every inner value becomes an output, so the matcher no longer asks that nothing else reads it.
  std::vector<Value*> inner;
  const auto outputs = pattern.outputs().vec();
  for (auto* n : pattern.nodes())
    for (auto* v : n->outputs())
      if (std::find(outputs.begin(), outputs.end(), v) == outputs.end()) inner.push_back(v);
  for (auto* v : inner) pattern.registerOutput(v);
  Value* lead = row.lead.empty() ? outputs.at(0) : vmap.at(row.lead);

  std::vector<ShapeMatch> found;
  for (const auto& m : torch::jit::findPatternMatches(pattern, graph)) {
    if (!std::all_of(row.filters.begin(), row.filters.end(),
                     [&](const Filter& f) { return !f.shape || f.accepts(m, vmap); }))
      continue;  // not this row's shape after all
    ShapeMatch shape{m.nodes_map.at(lead->node()), matched_nodes(m), ""};
    const std::unordered_set<const Node*> in_match(shape.nodes.begin(), shape.nodes.end());
    for (auto* p : inner) {
      Value* v = m.values_map.at(p);
      for (const auto& use : v->uses()) {
        if (in_match.count(use.user)) continue;
        const std::string where = location(use.user);
        const std::string reader = use.user->kind() == torch::jit::prim::Return
                                       ? "the graph's output"
                                       : std::string(use.user->kind().toQualString()) +
                                             (where.empty() ? "" : " at " + where);
        shape.refusal = std::string("the result of ") + v->node()->kind().toQualString() + " (%" +
                        v->debugName() + ") is also read by " + reader + ": the fused op would not keep it";
        break;
      }
      if (!shape.refusal.empty()) break;
    }
    if (shape.refusal.empty())
      for (const auto& filter : row.filters)
        if (!filter.shape && !filter.accepts(m, vmap)) {
          shape.refusal = fill(filter.reason, m, vmap);
          break;
        }
    found.push_back(std::move(shape));
  }
  return found;
}

}  // namespace jitfuse
