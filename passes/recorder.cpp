// The fusion report's recorder (recorder.h).
#include "passes/recorder.h"

#include <algorithm>
#include <iostream>

#include "passes/describe.h"
#include "passes/switches.h"

namespace jitfuse {

using torch::jit::Node;

namespace {

thread_local Recorder* t_report = nullptr;

}  // namespace

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
