// The passes on a graph handed over as IR text, for front-ends that hold no TorchScript module
// (jitfuse.fx: torch.export and torch.compile graphs). The same pass list and tables run; only the
// way in differs. Tensors cannot travel inside IR text, so they travel beside it: the graph's last
// inputs stand for constant tensors on the way in, and every tensor constant the passes leave
// (frozen weights, weights they derived) is a trailing input again on the way out.
#include <ATen/core/ivalue.h>
#include <torch/csrc/jit/ir/ir.h>
#include <torch/csrc/jit/ir/irparser.h>
#include <torch/csrc/jit/passes/constant_propagation.h>
#include <torch/csrc/jit/passes/frozen_graph_optimizations.h>
#include <torch/library.h>

#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "passes/passes.h"

namespace jitfuse {
namespace {

// Trailing inputs -> prim::Constant, as freezing leaves weights.
void inline_constants(torch::jit::Graph& graph, const std::vector<at::Tensor>& constants) {
  const size_t n = constants.size();
  TORCH_CHECK(graph.inputs().size() >= n, "jitfuse (a graph as IR text): ", n, " constants for a graph of ",
              graph.inputs().size(), " inputs");
  torch::jit::WithInsertPoint guard(graph.block()->nodes().front());
  const size_t first = graph.inputs().size() - n;
  for (size_t i = 0; i < n; ++i) {
    torch::jit::Value* input = graph.inputs()[first + i];
    torch::jit::Value* constant = graph.insertConstant(constants[i]);
    constant->setType(c10::TensorType::create(constants[i]));
    input->replaceAllUsesWith(constant);
  }
  for (size_t i = 0; i < n; ++i) graph.eraseInput(graph.inputs().size() - 1);
}

// Tensor constants -> trailing inputs (their tensors returned in input order).
std::vector<at::Tensor> lift_constants(torch::jit::Graph& graph) {
  std::vector<at::Tensor> lifted;
  std::vector<torch::jit::Node*> done;
  for (torch::jit::Node* node : graph.nodes()) {
    if (node->kind() != torch::jit::prim::Constant || !node->output()->type()->cast<c10::TensorType>()) continue;
    auto value = torch::jit::toIValue(node->output());
    if (!value || !value->isTensor()) continue;
    torch::jit::Value* input = graph.addInput();
    input->setType(node->output()->type());
    node->output()->replaceAllUsesWith(input);
    lifted.push_back(value->toTensor());
    done.push_back(node);
  }
  for (auto* node : done) node->destroy();
  return lifted;
}

std::tuple<std::string, std::vector<at::Tensor>> optimize_ir(const std::string& ir,
                                                             const std::vector<at::Tensor>& constants) {
  auto graph = graph_from_ir(ir, constants);
  optimize_graph(graph);
  auto lifted = lift_constants(*graph);
  return {graph->toString(/*print_source_locations=*/false), lifted};
}

}  // namespace

GraphPtr graph_from_ir(const std::string& ir, const std::vector<at::Tensor>& constants) {
  auto graph = std::make_shared<torch::jit::Graph>();
  torch::jit::parseIR(ir, graph.get());
  inline_constants(*graph, constants);
  // What torch.jit.freeze does after inlining: batch norms and constant scales folded into the
  // convs and linears (on constant geometry lists, as it finds them). The tables are written for
  // the graphs it leaves.
  torch::jit::ConstantPropagation(graph);
  torch::jit::OptimizeFrozenGraph(graph, /*optimize_numerics=*/true);
  return graph;
}

TORCH_LIBRARY_FRAGMENT(jitfuse, m) {
  m.def("_optimize_ir(str ir, Tensor[] constants) -> (str, Tensor[])", optimize_ir);
}

}  // namespace jitfuse
