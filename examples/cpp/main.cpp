// jitfuse_run: load a TorchScript file, run it, print the optimized graph and timings.
//
//   jitfuse_run MODEL.pt INPUTS.pt [--optimize] [--expect-fused-first-call] [--iters N]
//
// INPUTS.pt is a scripted module with an `input` tensor and, optionally, an `expected` output
// to compare against. --optimize fuses the module offline (jitfuse::optimize) before the first
// call. The exit code is non-zero when the output is wrong or the graph is not fused.
#include <torch/csrc/jit/runtime/graph_executor.h>
#include <torch/script.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <iostream>

#include "passes/passes.h"

namespace {

int count_jitfuse_nodes(const std::shared_ptr<torch::jit::Graph>& g) {
  int n = 0;
  for (auto* node : g->nodes()) n += std::string(node->kind().toQualString()).rfind("jitfuse::", 0) == 0;
  return n;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::cerr << "usage: " << argv[0]
              << " MODEL.pt INPUTS.pt [--optimize] [--expect-fused-first-call] [--iters N]\n";
    return 2;
  }
  bool optimize = false, expect_fused_first = false;
  int iters = 20;
  for (int i = 3; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--optimize")) optimize = true;
    else if (!std::strcmp(argv[i], "--expect-fused-first-call")) expect_fused_first = true;
    else if (!std::strcmp(argv[i], "--iters") && i + 1 < argc) iters = std::atoi(argv[++i]);
  }
  torch::NoGradGuard no_grad;
  torch::jit::Module module = torch::jit::load(argv[1]);
  module.eval();
  if (optimize) module = jitfuse::optimize(module);
  torch::jit::Module io = torch::jit::load(argv[2]);
  at::Tensor input = io.attr("input").toTensor();

  std::vector<torch::jit::IValue> args{input};
  at::Tensor out = module.forward(args).toTensor();
  const int fused_first = count_jitfuse_nodes(torch::jit::lastExecutedOptimizedGraph());
  std::vector<double> ms;
  for (int i = 0; i < iters; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    out = module.forward(args).toTensor();
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  auto graph = torch::jit::lastExecutedOptimizedGraph();
  std::cout << *graph << "\n";
  std::sort(ms.begin(), ms.end());
  std::cout << "first call: " << fused_first << " jitfuse nodes; after warm-up: "
            << count_jitfuse_nodes(graph) << "\n";
  if (!ms.empty()) std::cout << "median " << ms[ms.size() / 2] << " ms over " << iters << " calls\n";

  int status = 0;
  if (count_jitfuse_nodes(graph) == 0) {
    std::cerr << "FAIL: the optimized graph has no jitfuse op\n";
    status = 1;
  }
  if (expect_fused_first && fused_first == 0) {
    std::cerr << "FAIL: the first call did not run fused\n";
    status = 1;
  }
  if (io.hasattr("expected")) {
    at::Tensor expected = io.attr("expected").toTensor();
    const double err = (out - expected).abs().max().item<double>() /
                       std::max(expected.abs().max().item<double>(), 1e-12);
    std::cout << "max relative error vs expected: " << err << "\n";
    if (!(err <= 1e-5)) {
      std::cerr << "FAIL: output differs from the expected one\n";
      status = 1;
    }
  }
  return status;
}
