// libtorch_only_run: a libtorch app that knows nothing of jitfuse, as a serving engine's PyTorch
// backend (Triton's) is: it loads a TorchScript file and calls forward. Started with
// LD_PRELOAD=<site-packages>/jitfuse/lib/libjitfuse.so it gets jitfuse's ops and passes all the
// same: files fused offline load, frozen ones fuse on their second call.
//
//   libtorch_only_run MODEL.pt INPUTS.pt [--expect-jitfuse]
//
// INPUTS.pt is a scripted module with an `input` tensor and an `expected` output. Exit code 0 when
// the output matches (and, with --expect-jitfuse, the optimized graph runs jitfuse ops).
#include <torch/csrc/jit/runtime/graph_executor.h>
#include <torch/script.h>

#include <algorithm>
#include <cstring>
#include <exception>
#include <iostream>
#include <string>

int main(int argc, char** argv) {
  if (argc < 3) {
    std::cerr << "usage: " << argv[0] << " MODEL.pt INPUTS.pt [--expect-jitfuse]\n";
    return 2;
  }
  const bool expect_jitfuse = argc > 3 && !std::strcmp(argv[3], "--expect-jitfuse");
  torch::NoGradGuard no_grad;
  torch::jit::Module module;
  try {
    module = torch::jit::load(argv[1]);  // a fused file fails here without jitfuse
  } catch (const std::exception& e) {  // c10::Error, torch::jit::ErrorReport
    std::cerr << "cannot load " << argv[1] << ": " << e.what() << "\n";
    return 1;
  }
  module.eval();
  torch::jit::Module io = torch::jit::load(argv[2]);
  std::vector<torch::jit::IValue> args{io.attr("input").toTensor()};
  at::Tensor out;
  for (int i = 0; i < 3; ++i) out = module.forward(args).toTensor();  // the 2nd call optimizes

  int jitfuse_nodes = 0;
  for (auto* node : torch::jit::lastExecutedOptimizedGraph()->nodes())
    jitfuse_nodes += std::string(node->kind().toQualString()).rfind("jitfuse::", 0) == 0;
  const at::Tensor expected = io.attr("expected").toTensor();
  const double err = (out - expected).abs().max().item<double>() /
                     std::max(expected.abs().max().item<double>(), 1e-12);
  std::cout << jitfuse_nodes << " jitfuse ops in the optimized graph; max relative error vs expected: "
            << err << "\n";
  if (!(err <= 1e-5)) {
    std::cerr << "FAIL: output differs from the expected one\n";
    return 1;
  }
  if (expect_jitfuse && jitfuse_nodes == 0) {
    std::cerr << "FAIL: no jitfuse op ran (is LD_PRELOAD set to libjitfuse.so?)\n";
    return 1;
  }
  return 0;
}
