// The fusion report's recorder (recorder.h) and how it names nodes and values for a user.
#include "passes/recorder.h"

#include <torch/csrc/jit/ir/irparser.h>
#include <torch/csrc/jit/ir/scope.h>
#include <torch/csrc/jit/ir/subgraph_matcher.h>

#include <algorithm>
#include <iostream>
#include <sstream>
#include <unordered_set>

namespace jitfuse {

using torch::jit::Node;

namespace {

thread_local Recorder* t_report = nullptr;

// A file a user can act on: not one of torch's own, not generated code ("<eval_with_key>.3").
bool user_file(const std::string& file) {
  if (file.empty() || (file[0] == '<' && file != "<stdin>")) return false;
  // torch's files, and the code torch.jit.save writes (code/__torch__/...) when it is loaded
  for (const char* torch_dir : {"-packages/torch/", "/torch/nn/", "/torch/_ops.py", "/torch/functional.py", "__torch__",
                                "___torch_mangle_"})
    if (file.find(torch_dir) != std::string::npos) return false;
  return true;
}

// Traced graphs keep the Python stack as text, innermost frame first: "file.py(42): forward".
std::string first_user_frame(const std::string& stack) {
  std::istringstream lines(stack);
  for (std::string line; std::getline(lines, line);) {
    const auto close = line.find("): ");
    const auto open = close == std::string::npos ? close : line.rfind('(', close);
    if (open == std::string::npos || open + 1 == close ||
        line.find_first_not_of("0123456789", open + 1) != close)
      continue;
    const std::string file = line.substr(0, open);
    if (user_file(file)) return file.substr(file.rfind('/') + 1) + ":" + line.substr(open + 1, close - open - 1);
  }
  return "";
}

std::string file_line(const torch::jit::SourceRange& range) {
  if (!range.source()) return "";
  if (auto flc = range.file_line_col()) {
    const auto& [file, line, col] = *flc;
    if (user_file(file)) return file.substr(file.rfind('/') + 1) + ":" + std::to_string(line);
  }
  return first_user_frame(range.source()->text_str().str());
}

std::string module_path(Node* n) {
  // Traced: the scope names the module ("__module.block/__module.block.conv").
  if (auto scope = n->scope(); scope && !scope->isBlank()) {
    std::string names = scope->namesFromRoot();
    names = names.substr(names.rfind('/') + 1);
    const std::string prefix = "__module.";
    if (names.rfind(prefix, 0) == 0) return names.substr(prefix.size());
  }
  // Scripted: the inlined calls carry the module instances they ran in.
  std::string path;
  if (auto stack = n->callstack())
    for (const auto& entry : (*stack)->vec())
      if (const auto& info = std::get<2>(entry); info && !info->instance_name().empty())
        path += (path.empty() ? "" : ".") + info->instance_name();
  return path;
}

// The innermost source line in the user's files: the node's own, else its inlined call sites'.
std::string user_line(const Node* n) {
  if (auto line = file_line(n->sourceRange()); !line.empty()) return line;
  if (auto stack = n->callstack()) {
    auto entries = (*stack)->vec();
    for (auto it = entries.rbegin(); it != entries.rend(); ++it)
      if (auto line = file_line(std::get<1>(*it)); !line.empty()) return line;
  }
  return "";
}

std::string scalar_type_name(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return "float32";
    case at::kDouble: return "float64";
    case at::kHalf: return "float16";
    case at::kBFloat16: return "bfloat16";
    case at::kByte: return "uint8";
    case at::kChar: return "int8";
    case at::kInt: return "int32";
    case at::kLong: return "int64";
    case at::kBool: return "bool";
    default: return c10::toString(t);
  }
}

// "self.conv.weight" for a chain of prim::GetAttr.
std::string attribute_path(const Value* v) {
  std::string path;
  while (v->node()->kind() == torch::jit::prim::GetAttr) {
    path = "." + v->node()->s(torch::jit::attr::name) + path;
    v = v->node()->input(0);
  }
  return "self" + path;
}

std::string describe_node(Node* n) {
  std::string out = n->kind().toQualString();
  if (n->outputs().size() > 0) out += " %" + n->output(0)->debugName();
  return out;
}

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

// ---- naming things for a user (rewrite.h) ----

std::string location(const Node* n) {
  auto* node = const_cast<Node*>(n);  // Node::scope() is not const
  const std::string path = module_path(node), line = user_line(n);
  if (path.empty()) return line;
  return line.empty() ? path : path + " (" + line + ")";
}

std::string value_origin(const Value* v) {
  const Node* n = v->node();
  if (n->kind() == torch::jit::prim::Param) return "a graph input";
  if (n->kind() == torch::jit::prim::GetAttr)
    return "the module attribute " + attribute_path(v) + " (the module is not frozen)";
  if (n->kind() == torch::jit::prim::Constant) return "a constant";
  const std::string where = location(n);
  std::string out = std::string("made by ") + n->kind().toQualString() + (where.empty() ? "" : " at " + where);
  for (const auto* input : n->inputs())  // w.t() of a module's weight: say where the weight is
    if (input->node()->kind() == torch::jit::prim::GetAttr)
      return out + " from " + value_origin(input);
  return out;
}

std::string value_type(const Value* v) {
  auto tensor = v->type()->cast<c10::TensorType>();
  if (!tensor) return v->type()->kind() == c10::TypeKind::NoneType ? "None" : "a " + v->type()->str();
  std::string out = tensor->scalarType() ? scalar_type_name(*tensor->scalarType()) : "a tensor";
  if (auto sizes = tensor->sizes().concrete_sizes()) {
    out += " [";
    for (size_t i = 0; i < sizes->size(); ++i) out += (i ? ", " : "") + std::to_string((*sizes)[i]);
    out += "]";
  } else if (tensor->dim()) {
    out += " of " + std::to_string(*tensor->dim()) + " dims";
  }
  return out;
}

std::string value_constant(const Value* v) {
  auto c = torch::jit::toIValue(const_cast<Value*>(v));
  if (!c) return "not a constant (" + value_origin(v) + ")";
  if (c->isTensor()) return "a constant " + value_type(v) + " tensor";
  std::ostringstream out;
  out << *c;
  return out.str();
}

std::vector<Node*> matched_nodes(const Match& match) {
  std::vector<Node*> nodes;
  for (const auto& [pattern_node, node] : match.nodes_map)
    if (node->kind() != torch::jit::prim::Param && node->kind() != torch::jit::prim::Return)
      nodes.push_back(node);
  std::sort(nodes.begin(), nodes.end(), [](auto* a, auto* b) { return a->isBefore(b); });
  return nodes;
}

// ---- where a row's shape fits ----

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

std::string fused_op_name(const std::string& replacement_ir) {
  const auto at = replacement_ir.rfind("jitfuse::");
  if (at == std::string::npos) return "";
  const auto end = replacement_ir.find('(', at);
  return replacement_ir.substr(at, end - at);
}

// ---- the recorder ----

Recorder* Recorder::active() {
  if (t_report) return t_report;
  if (verbose_level() >= 2) {
    thread_local Recorder printer(false);
    return &printer;
  }
  return nullptr;
}

bool Recorder::reporting() { return t_report != nullptr; }

ReportScope::ReportScope(Recorder* recorder) : previous_(t_report) { t_report = recorder; }
ReportScope::~ReportScope() { t_report = previous_; }

Recorder::Candidate& Recorder::candidate(Node* n) {
  const std::string kind = n->kind().toQualString(), node = describe_node(n);
  auto it = live_.find(n);
  // A node a pass destroyed without telling us may have left its address to a new one.
  if (it != live_.end() && candidates_[it->second].node == node) return candidates_[it->second];
  candidates_.push_back({kind, node, location(n), {}, ""});
  live_[n] = candidates_.size() - 1;
  return candidates_.back();
}

void Recorder::begin(torch::jit::Graph& graph) { ++runs_; }

void Recorder::fused(const std::string& pattern, const std::string& op, Node* lead,
                     const std::vector<Node*>& nodes) {
  if (!keep_) return;
  Candidate& c = candidate(lead);
  c.taken_by = pattern;
  c.taken_nodes = nodes.size();
  ReportEntry e{"fused", pattern, op, c.node, c.location, "", "", {}};
  for (Node* n : nodes) {
    e.replaced.push_back(describe_node(n));
    if (auto it = live_.find(n); it != live_.end()) {  // the rewrite destroys it
      if (candidates_[it->second].taken_by.empty()) candidates_[it->second].taken_by = pattern;
      live_.erase(it);
    }
  }
  fused_.push_back(std::move(e));
}

void Recorder::refused(const std::string& pattern, const ShapeMatch& match, const std::string& reason) {
  if (verbose_level() >= 2) {
    const std::string where = location(match.lead);
    std::cerr << "jitfuse: " << pattern << " refused " << describe_node(match.lead)
              << (where.empty() ? "" : " at " + where) << ": " << reason << "\n";
  }
  if (!keep_) return;
  Candidate& c = candidate(match.lead);
  const Candidate::Refusal refusal{pattern, reason, match.nodes.size()};
  if (std::find(c.refusals.begin(), c.refusals.end(), refusal) == c.refusals.end()) c.refusals.push_back(refusal);
}

void Recorder::note(const std::string& text) {
  if (!keep_) return;
  ReportEntry e;
  e.status = "note";
  e.reason = text;
  if (std::find_if(notes_.begin(), notes_.end(), [&](const auto& n) { return n.reason == text; }) == notes_.end())
    notes_.push_back(std::move(e));
}

namespace {

// Nodes that only move values around (constants, lists, tuples, sizes), not worth a line.
bool is_plumbing(const Node* n) {
  const std::string kind = n->kind().toQualString();
  if (kind.rfind("jitfuse::", 0) == 0) return true;
  if (kind.rfind("prim::", 0) == 0)
    return n->kind() != torch::jit::prim::CallFunction && n->kind() != torch::jit::prim::CallMethod;
  for (const auto* v : n->outputs())
    if (v->type()->cast<c10::TensorType>()) return false;
  return true;  // no tensor out: size arithmetic and the like
}

}  // namespace

void Recorder::finish(torch::jit::Graph& graph) {
  if (!keep_) return;
  for (Node* n : graph.nodes()) {
    if (is_plumbing(n) || live_.count(n)) continue;
    left_.push_back({"left", "", n->kind().toQualString(), describe_node(n), location(n), "", "", {}});
  }
  live_.clear();  // the graph now belongs to the executor: its nodes are no business of ours
}

std::vector<ReportEntry> Recorder::entries() const {
  std::vector<ReportEntry> out(notes_);
  out.insert(out.end(), fused_.begin(), fused_.end());
  for (const auto& c : candidates_)
    for (const auto& r : c.refusals) {
      // Another spelling of the pattern that took it, no longer than what it took: not news.
      if (r.pattern == c.taken_by && r.nodes <= c.taken_nodes) continue;
      out.push_back({"rejected", r.pattern, c.kind, c.node, c.location, r.reason, c.taken_by, {}});
    }
  out.insert(out.end(), left_.begin(), left_.end());
  return out;
}

}  // namespace jitfuse
