// jitfuse's graph passes, for C++ users and tests. Loading libjitfuse.so registers them with the
// TorchScript profiling executor; these entry points run them on a graph directly.
#pragma once

#include <torch/csrc/jit/api/module.h>
#include <torch/csrc/jit/ir/ir.h>

#include <memory>
#include <string>
#include <vector>

namespace jitfuse {

using GraphPtr = std::shared_ptr<torch::jit::Graph>;

// Every jitfuse pass, in order (what the executor runs when jitfuse is enabled).
void optimize_graph(GraphPtr& graph);

// Offline: a copy of a frozen module with every method's graph already fused, so its first call
// runs fused and torch::jit::save writes the fused graph. (The executor runs the passes again on
// the 2nd call; on a fused graph they change nothing.)
torch::jit::Module optimize(const torch::jit::Module& frozen);

// A graph handed over as IR text by a front-end without TorchScript modules (jitfuse.fx): its
// last inputs stand for `constants`, which become prim::Constant as freezing leaves weights, and
// freezing's folds (batch norms into convs, ...) have run. passes/graph_text.cpp.
GraphPtr graph_from_ir(const std::string& ir, const std::vector<at::Tensor>& constants);

// The passes, in the order optimize_graph runs them.
void fuse_int8(GraphPtr& graph);          // dequantize -> op -> [quantize] -> jitfuse::q*
void fuse_linear_x3(GraphPtr& graph);     // Linears sharing an input -> one linear + split
void fuse_linear(GraphPtr& graph);        // linear + relu/gelu       -> jitfuse::linear*
void fuse_transformer(GraphPtr& graph);   // add+layer_norm, scaled masked softmax, head merge
void lower_int8_attention(GraphPtr& graph);  // attention between int8 linears may compute in bf16
void fuse_conv(GraphPtr& graph);          // conv + activation / sum  -> jitfuse::conv*
void fuse_pool(GraphPtr& graph);          // max / global average pooling -> jitfuse::*_pool2d
void keep_channels_last(GraphPtr& graph); // NHWC between fused convs, user's format at outputs
void sum_in_place(GraphPtr& graph);       // conv sums write into an operand nothing reads later

// Switches. Pattern names are those of the pattern tables (e.g. "conv2d_sum_relu").
void set_enabled(bool enabled);
bool is_enabled();
void set_pattern_enabled(const std::string& name, bool enabled);  // throws on an unknown name
bool is_pattern_enabled(const std::string& name);
std::vector<std::string> pattern_names();

// ---- the fusion report: why a model did or did not fuse ----
// One line of it. Every node a pattern could start from is listed with the pattern that took it
// and, for each pattern whose shape fit it but that refused it, the first objection.
struct ReportEntry {
  std::string status;    // "fused", "rejected", "left" (no pattern's shape fits it) or "note"
  std::string pattern;   // fused, rejected: the pattern's name
  std::string op;        // fused: the op it made (jitfuse::...); rejected, left: the node's kind
  std::string node;      // the node a pattern starts from: kind and output ("aten::linear %x.3")
  std::string location;  // its module path and source line, where TorchScript kept them
  std::string reason;    // rejected: the objection, in words; note: what to know
  std::string fused_as;  // rejected: the pattern that took the node after all, if one did
  std::vector<std::string> replaced;  // fused: the nodes the op replaced, in graph order
};

// Runs the passes on a copy of `module` (called twice with `inputs`, so that TorchScript's
// executor specializes the graph as it does at a user's first calls) and reports on them. The
// module itself is not changed. It may be frozen or not yet frozen (the report then says what
// freezing would change).
std::vector<ReportEntry> report(const torch::jit::Module& module, const std::vector<c10::IValue>& inputs);
// The same on a copy of `graph` as it is (no profiled types).
std::vector<ReportEntry> report(const GraphPtr& graph);
// The report as a table: patterns and counts, refusals with reasons, ops left by kind.
std::string format_report(const std::vector<ReportEntry>& entries);

}  // namespace jitfuse
