// jitfuse_run: load a TorchScript file, run it, print the optimized graph and timings.
//
//   jitfuse_run MODEL.pt INPUTS.pt [--optimize] [--expect-fused-first-call] [--iters N]
//               [--concurrency THREADS CALLS] [--report]
//
// INPUTS.pt is a scripted module with an `input` tensor and, optionally, an `expected` output
// to compare against. --optimize fuses the module offline (jitfuse::optimize) before the first
// call. --concurrency shares the module between THREADS threads making CALLS calls each on
// perturbed inputs, every output checked against the same file run stock (jitfuse off).
// --report prints jitfuse's fusion report for the model on that input (jitfuse::report) and exits.
// The exit code is non-zero when an output is wrong or the graph is not fused.
#include <torch/csrc/jit/runtime/graph_executor.h>
#include <torch/script.h>

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <iostream>
#include <thread>

#include "passes/passes.h"

namespace {

int count_jitfuse_nodes(const std::shared_ptr<torch::jit::Graph>& g) {
  int n = 0;
  for (auto* node : g->nodes()) n += std::string(node->kind().toQualString()).rfind("jitfuse::", 0) == 0;
  return n;
}

double max_relative_error(const at::Tensor& got, const at::Tensor& ref) {
  return (got - ref).abs().max().item<double>() / std::max(ref.abs().max().item<double>(), 1e-12);
}

// THREADS threads share `module`, CALLS calls each; returns the number of wrong outputs.
int run_concurrently(torch::jit::Module& module, const char* path, const at::Tensor& input,
                     int threads, int calls) {
  // The reference: the same file, optimized by the executor while jitfuse is off.
  torch::jit::Module stock = torch::jit::load(path);
  stock.eval();
  jitfuse::set_enabled(false);
  for (int i = 0; i < 3; ++i) stock.forward({input});
  jitfuse::set_enabled(true);
  std::atomic<int> wrong{0};
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t)
    pool.emplace_back([&, t] {
      torch::NoGradGuard no_grad;
      auto gen = at::make_generator<at::CPUGeneratorImpl>(1000 + t);
      for (int i = 0; i < calls; ++i) {
        at::Tensor x = input + 0.1 * at::randn(input.sizes(), gen);
        const double err = max_relative_error(module.forward({x}).toTensor(), stock.forward({x}).toTensor());
        if (!(err <= 1e-5)) ++wrong;
      }
    });
  for (auto& th : pool) th.join();
  std::cout << threads << " threads x " << calls << " calls: " << wrong << " wrong outputs\n";
  return wrong;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::cerr << "usage: " << argv[0]
              << " MODEL.pt INPUTS.pt [--optimize] [--expect-fused-first-call] [--iters N]"
                 " [--concurrency THREADS CALLS] [--report]\n";
    return 2;
  }
  bool optimize = false, expect_fused_first = false, report = false;
  int iters = 20, threads = 0, calls = 0;
  for (int i = 3; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--optimize")) optimize = true;
    else if (!std::strcmp(argv[i], "--expect-fused-first-call")) expect_fused_first = true;
    else if (!std::strcmp(argv[i], "--report")) report = true;
    else if (!std::strcmp(argv[i], "--iters") && i + 1 < argc) iters = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--concurrency") && i + 2 < argc) {
      threads = std::atoi(argv[++i]);
      calls = std::atoi(argv[++i]);
    }
  }
  torch::NoGradGuard no_grad;
  torch::jit::Module module = torch::jit::load(argv[1]);
  module.eval();
  if (optimize) module = jitfuse::optimize(module);
  torch::jit::Module io = torch::jit::load(argv[2]);
  at::Tensor input = io.attr("input").toTensor();

  std::vector<torch::jit::IValue> args{input};
  if (report) {
    std::cout << jitfuse::format_report(jitfuse::report(module, args));
    return 0;
  }
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
  if (threads > 0 && run_concurrently(module, argv[1], input, threads, calls) > 0) {
    std::cerr << "FAIL: wrong outputs under concurrency\n";
    status = 1;
  }
  return status;
}
