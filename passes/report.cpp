// The fusion report (passes.h): the passes run on a copy with a Recorder listening, and the
// result as entries and as a table. Exposed to Python as jitfuse::_report (TorchScript modules) and
// jitfuse::_report_ir (graphs from jitfuse.fx).
#include <ATen/core/grad_mode.h>
#include <torch/csrc/jit/api/function_impl.h>
#include <torch/csrc/jit/passes/inliner.h>
#include <torch/library.h>

#include <algorithm>
#include <iomanip>
#include <map>
#include <sstream>

#include "passes/passes.h"
#include "passes/recorder.h"

namespace jitfuse {

std::vector<ReportEntry> report(const torch::jit::Module& module, const std::vector<c10::IValue>& inputs) {
  torch::jit::Module copy = module.clone();  // fresh executors; the user's module stays as it is
  Recorder recorder(true);
  if (!is_enabled())
    recorder.note("jitfuse is turned off (set_enabled(false)): the executor runs none of what follows");
  {
    ReportScope scope(&recorder);
    at::AutoGradMode no_grad(false);
    // The executor profiles the first call and optimizes (runs the passes) at the second.
    for (int call = 0; call < 3 && recorder.runs() == 0; ++call) copy.forward(inputs);
  }
  if (recorder.runs() == 0) {  // optimized execution is off: the graph as it is, unprofiled
    recorder.note("TorchScript's executor did not optimize the module (optimized execution is off?): "
                  "the passes ran on its graph without profiled types");
    auto graph = torch::jit::toGraphFunction(copy.get_method("forward").function()).graph()->copy();
    torch::jit::Inline(*graph);
    ReportScope scope(&recorder);
    optimize_graph(graph);
  }
  return recorder.entries();
}

std::vector<ReportEntry> report(const GraphPtr& graph) {
  auto copy = graph->copy();
  Recorder recorder(true);
  {
    ReportScope scope(&recorder);
    optimize_graph(copy);
  }
  return recorder.entries();
}

namespace {

// Rows of cells as aligned columns, two spaces apart, each line indented.
std::string columns(const std::vector<std::vector<std::string>>& rows, const std::string& indent) {
  std::vector<size_t> width;
  for (const auto& row : rows)
    for (size_t i = 0; i < row.size(); ++i) {
      if (width.size() <= i) width.push_back(0);
      width[i] = std::max(width[i], row[i].size());
    }
  std::ostringstream out;
  for (const auto& row : rows) {
    std::string line = indent;
    for (size_t i = 0; i < row.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size()) line += std::string(width[i] - row[i].size() + 2, ' ');
    }
    out << line.substr(0, line.find_last_not_of(' ') + 1) << "\n";
  }
  return out.str();
}

}  // namespace

std::string format_report(const std::vector<ReportEntry>& entries) {
  std::ostringstream out;
  out << "jitfuse fusion report\n";
  std::map<std::pair<std::string, std::string>, int> fused;  // (pattern, op) -> count
  std::vector<const ReportEntry*> rejected;
  std::map<std::string, std::vector<const ReportEntry*>> left;  // kind -> nodes
  for (const auto& e : entries) {
    if (e.status == "note") out << "  note: " << e.reason << "\n";
    if (e.status == "fused") ++fused[{e.pattern, e.op}];
    if (e.status == "rejected") rejected.push_back(&e);
    if (e.status == "left") left[e.op].push_back(&e);
  }
  int total = 0;
  std::vector<std::vector<std::string>> rows{{"pattern", "count", "op"}};
  for (const auto& [key, count] : fused) {
    rows.push_back({key.first, std::to_string(count), key.second});
    total += count;
  }
  out << "\nfused: " << total << " rewrites\n" << (total ? columns(rows, "  ") : "");

  out << "\nrejected: " << rejected.size() << " (a pattern's shape fit, one of its rules refused)\n";
  // One line per node, then one per reason, naming every pattern that gave it.
  for (size_t i = 0; i < rejected.size();) {
    const auto* first = rejected[i];
    out << "  " << first->node << (first->location.empty() ? "" : "  at " + first->location)
        << (first->fused_as.empty() ? "" : "  (fused as " + first->fused_as + ")") << "\n";
    std::vector<std::pair<std::string, std::string>> reasons;  // (reason, patterns)
    for (; i < rejected.size() && rejected[i]->node == first->node; ++i) {
      auto it = std::find_if(reasons.begin(), reasons.end(), [&](auto& r) { return r.first == rejected[i]->reason; });
      if (it == reasons.end())
        reasons.emplace_back(rejected[i]->reason, rejected[i]->pattern);
      else
        it->second += ", " + rejected[i]->pattern;
    }
    for (const auto& [reason, patterns] : reasons) out << "    " << patterns << ": " << reason << "\n";
  }

  size_t left_count = 0;
  rows = {{"op", "count", "where"}};
  for (const auto& [kind, nodes] : left) {
    std::vector<std::string> places;
    for (const auto* e : nodes)
      if (!e->location.empty() && std::find(places.begin(), places.end(), e->location) == places.end())
        places.push_back(e->location);
    std::string where;
    for (size_t i = 0; i < places.size() && i < 3; ++i) where += (i ? ", " : "") + places[i];
    if (places.size() > 3) where += ", ...";
    rows.push_back({kind, std::to_string(nodes.size()), where});
    left_count += nodes.size();
  }
  out << "\nleft: " << left_count << " ops outside every fused op, by kind\n" << (left_count ? columns(rows, "  ") : "");
  return out.str();
}

namespace {

c10::List<c10::Dict<std::string, std::string>> as_dicts(const std::vector<ReportEntry>& entries) {
  c10::List<c10::Dict<std::string, std::string>> out;
  for (const auto& e : entries) {
    c10::Dict<std::string, std::string> d;
    std::string replaced;
    for (const auto& r : e.replaced) replaced += (replaced.empty() ? "" : ", ") + r;
    for (const auto& [key, value] : {std::pair{"status", e.status}, {"pattern", e.pattern}, {"op", e.op},
                                     {"node", e.node}, {"location", e.location}, {"reason", e.reason},
                                     {"fused_as", e.fused_as}, {"replaced", replaced}})
      d.insert(key, value);
    out.push_back(std::move(d));
  }
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(jitfuse, m) {
  m.def("_report(Any module, Any[] inputs) -> (str, Dict(str, str)[])",
        [](c10::IValue module, c10::List<c10::IValue> inputs) {
          TORCH_CHECK(module.isObject() && module.toObjectRef().type()->is_module(),
                      "jitfuse.report: expected a torch.jit.ScriptModule");
          const auto entries = report(torch::jit::Module(module.toObject()), inputs.vec());
          return std::make_tuple(format_report(entries), as_dicts(entries));
        });
  // The same for a graph from jitfuse.fx (torch.export and torch.compile models).
  m.def("_report_ir(str ir, Tensor[] constants) -> (str, Dict(str, str)[])",
        [](const std::string& ir, const std::vector<at::Tensor>& constants) {
          const auto entries = report(graph_from_ir(ir, constants));
          return std::make_tuple(format_report(entries), as_dicts(entries));
        });
}

}  // namespace jitfuse
