// The fusion report's recorder: what the passes tell it while a report is being made
// (jitfuse::report) or JITFUSE_VERBOSE=2 prints refusals. When neither is on, Recorder::active()
// is null and the passes do nothing more than read one thread-local pointer per table.
#pragma once

#include <torch/csrc/jit/ir/ir.h>

#include <map>
#include <string>
#include <vector>

#include "passes/passes.h"

namespace jitfuse {

// One place where a row's pattern fits the graph, whoever else reads its inner values and
// whatever its filters say (explain.h finds them); `refusal` is why the row would not take it
// ("" if it would).
struct ShapeMatch {
  torch::jit::Node* lead;  // the node the report files it under (Rewrite::lead)
  std::vector<torch::jit::Node*> nodes;
  std::string refusal;
};

class Recorder {
 public:
  // The recorder of this thread: a report's, else JITFUSE_VERBOSE=2's printer, else null.
  static Recorder* active();
  // Whether a report is being made on this thread (the executor then runs the passes even on a
  // module that is not frozen, or with jitfuse turned off, so the report can say what stops them).
  static bool reporting();

  explicit Recorder(bool keep) : keep_(keep) {}

  void begin(torch::jit::Graph& graph);  // optimize_graph starts
  void fused(const std::string& pattern, const std::string& op, torch::jit::Node* lead,
             const std::vector<torch::jit::Node*>& nodes);
  void refused(const std::string& pattern, const ShapeMatch& match, const std::string& reason);
  void finish(torch::jit::Graph& graph);  // optimize_graph ends: the ops left
  void note(const std::string& text);

  int runs() const { return runs_; }
  std::vector<ReportEntry> entries() const;

 private:
  struct Candidate {
    std::string kind, node, location;
    struct Refusal {
      std::string pattern, reason;
      size_t nodes;  // how many nodes the refused match spans
      bool operator==(const Refusal&) const = default;
    };
    std::vector<Refusal> refusals;
    std::string taken_by;  // the row that took it, if one did
    size_t taken_nodes = 0;
  };
  Candidate& candidate(torch::jit::Node* n);

  bool keep_;  // a report keeps what it hears; the verbose printer only prints
  int runs_ = 0;
  std::vector<Candidate> candidates_;
  std::map<torch::jit::Node*, size_t> live_;  // candidates whose node is still in the graph
  std::vector<ReportEntry> fused_, left_, notes_;

  friend class ReportScope;
};

// Makes `recorder` this thread's for its lifetime.
class ReportScope {
 public:
  explicit ReportScope(Recorder* recorder);
  ~ReportScope();
  ReportScope(const ReportScope&) = delete;
  ReportScope& operator=(const ReportScope&) = delete;

 private:
  Recorder* previous_;
};

}  // namespace jitfuse
