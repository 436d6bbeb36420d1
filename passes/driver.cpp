// The pass driver: the one place that lists jitfuse's passes in the order they run, registers
// them with TorchScript's executor and exposes the switches to Python (as jitfuse::_ ops).
#include <torch/csrc/jit/api/function_impl.h>
#include <torch/csrc/jit/passes/constant_propagation.h>
#include <torch/csrc/jit/passes/dead_code_elimination.h>
#include <torch/csrc/jit/passes/pass_manager.h>
#include <torch/library.h>

#include "passes/passes.h"
#include "passes/recorder.h"
#include "passes/rewrite.h"

namespace jitfuse {

const std::vector<Pass>& passes_in_order() {
  static const std::vector<Pass> passes = {
      // name                 run                   table                  own patterns
      // first: the float tables must not take ops of int8 chains
      {"fuse_int8",            fuse_int8,            int8_rewrites,         {}},
      // before fuse_linear: the merged GEMM is an aten::linear it fuses
      {"fuse_linear_x3",       fuse_linear_x3,       nullptr,               {kLinearX3}},
      // linear + activation -> jitfuse::linear*
      {"fuse_linear",          fuse_linear,          linear_rewrites,       {}},
      // add + layer_norm, scaled masked softmax, head merge, attention
      {"fuse_transformer",     fuse_transformer,     transformer_rewrites,  {}},
      // after fuse_transformer: it marks the attention ops it made
      {"lower_int8_attention", lower_int8_attention, nullptr,               {kAttentionLowPrecision}},
      // conv + post-ops -> jitfuse::conv{2,3}d*
      {"fuse_conv",            fuse_conv,            conv_rewrites,         {}},
      // pooling on oneDNN, in the layout the convs left
      {"fuse_pool",            fuse_pool,            pool_rewrites,         {}},
      // after fusion: it places conversions around the fused convs
      {"keep_channels_last",   keep_channels_last,   nullptr,               {}},
      // last: its liveness check sees every reader the others added
      {"sum_in_place",         sum_in_place,         nullptr,               {}},
  };
  return passes;
}

void optimize_graph(GraphPtr& graph) {
  Recorder* recorder = Recorder::active();  // a fusion report's, or null
  if (recorder) recorder->begin(*graph);
  // Filters need geometry as constants; a loaded graph builds int lists with prim::ListConstruct.
  torch::jit::ConstantPropagation(graph);
  for (const auto& pass : passes_in_order()) pass.run(graph);
  torch::jit::EliminateDeadCode(graph);
  if (recorder) recorder->finish(*graph);
}

namespace {

// A frozen graph reads no module attributes: its weights are constants.
bool is_frozen(const torch::jit::Block* block) {
  for (const auto* n : block->nodes()) {
    if (n->kind() == torch::jit::prim::GetAttr) return false;
    for (const auto* sub : n->blocks())
      if (!is_frozen(sub)) return false;
  }
  return true;
}

}  // namespace

torch::jit::Module optimize(const torch::jit::Module& frozen) {
  // A clone has fresh executors: ones the original already built would keep the unfused plan.
  torch::jit::Module out = frozen.clone();
  for (const auto& method : out.get_methods()) {
    auto graph = torch::jit::toGraphFunction(method.function()).graph();
    TORCH_CHECK(is_frozen(graph->block()), "jitfuse.optimize: method '", method.name(),
                "' reads module attributes: freeze the module first (torch.jit.freeze)");
    optimize_graph(graph);
  }
  return out;
}

namespace {

// Runs when the profiling executor optimizes a graph (2nd call, once per plan). Graphs of modules
// that were not frozen are left exactly as they are.
torch::jit::RegisterPass register_with_executor([](GraphPtr& graph) {
  if (Recorder::reporting()) {  // a fusion report runs the passes anyway, to say what stops them
    if (!is_frozen(graph->block()))
      Recorder::active()->note(
          "the module is not frozen: jitfuse leaves it exactly as it is. Freeze it (torch.jit.freeze) "
          "after eval(); the rows below show what the patterns see without freezing");
    optimize_graph(graph);
    return;
  }
  if (is_enabled() && is_frozen(graph->block())) optimize_graph(graph);
});

}  // namespace

TORCH_LIBRARY_FRAGMENT(jitfuse, m) {
  m.def("_set_enabled(bool enabled) -> ()", [](bool on) { set_enabled(on); });
  m.def("_is_enabled() -> bool", []() { return is_enabled(); });
  m.def("_set_pattern_enabled(str name, bool enabled) -> ()",
        [](std::string name, bool on) { set_pattern_enabled(name, on); });
  m.def("_is_pattern_enabled(str name) -> bool",
        [](std::string name) { return is_pattern_enabled(name); });
  m.def("_optimize(Any module) -> Any", [](c10::IValue module) -> c10::IValue {
    TORCH_CHECK(module.isObject() && module.toObjectRef().type()->is_module(),
                "jitfuse.optimize: expected a torch.jit.ScriptModule");
    return optimize(torch::jit::Module(module.toObject()))._ivalue();
  });
  m.def("_pattern_names() -> str[]", []() {
    auto names = pattern_names();
    return c10::List<std::string>(names);
  });
  // Tests: (row name, the op its replacement calls) for every table row, so that a test can hold
  // the names against the ops (the README lists the names that differ).
  m.def("_pattern_ops() -> str[][]", []() {
    c10::List<c10::List<std::string>> out;
    for (const auto& pass : passes_in_order())
      if (pass.table)
        for (const auto& row : pass.table()) out.push_back(c10::List<std::string>({row.name, fused_op_name(row.replacement)}));
    return out;
  });
}

}  // namespace jitfuse
