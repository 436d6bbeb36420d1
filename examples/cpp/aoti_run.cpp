// aoti_run: a C++ service without TorchScript. It loads the AOTInductor package that
// jitfuse.export.package made (torch.export's program with jitfuse's fused ops, compiled by
// AOTInductor) with torch's own loader, and runs it. The package calls jitfuse's ops through the
// dispatcher, so libjitfuse.so must be loaded: this target links it. The same source built
// without it (aoti_run_torch_only) shows what a service gets then: the load fails naming the op.
//
//   aoti_run MODEL.pt2 IO.pt [--expect-missing-op]
//
// IO.pt: torch.save({"input": x, "expected": y}) from Python. Exit code 0 when the output matches
// (or, with --expect-missing-op, when the load failed naming a jitfuse op).
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#include <c10/util/Exception.h>
#include <torch/serialize.h>

#include <algorithm>
#include <cstring>
#include <exception>
#include <fstream>
#include <iostream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

namespace {

c10::Dict<c10::IValue, c10::IValue> read_io(const char* path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) throw std::runtime_error(std::string("cannot open ") + path);
  std::vector<char> bytes((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  return torch::pickle_load(bytes).toGenericDict();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::cerr << "usage: " << argv[0] << " MODEL.pt2 IO.pt [--expect-missing-op]\n";
    return 2;
  }
  const bool expect_missing_op = argc > 3 && !std::strcmp(argv[3], "--expect-missing-op");
  c10::InferenceMode inference;
  const auto io = read_io(argv[2]);
  std::unique_ptr<torch::inductor::AOTIModelPackageLoader> loader;
  std::vector<at::Tensor> out;
  try {
    loader = std::make_unique<torch::inductor::AOTIModelPackageLoader>(argv[1]);
    out = loader->run({io.at("input").toTensor()});
  } catch (const std::exception& e) {
    const auto* error = dynamic_cast<const c10::Error*>(&e);
    const std::string message = error ? error->what_without_backtrace() : e.what();
    std::cerr << "cannot run " << argv[1] << ": " << message << "\n";
    if (message.find("jitfuse::") != std::string::npos)
      std::cerr << "(the package calls jitfuse's ops: link jitfuse::jitfuse or LD_PRELOAD libjitfuse.so)\n";
    if (expect_missing_op && message.find("jitfuse::") != std::string::npos) return 0;
    return 1;
  }
  if (expect_missing_op) {
    std::cerr << "FAIL: the package ran without jitfuse's ops\n";
    return 1;
  }
  const at::Tensor expected = io.at("expected").toTensor();
  const double err = (out.at(0) - expected).abs().max().item<double>() /
                     std::max(expected.abs().max().item<double>(), 1e-12);
  std::cout << "max relative error vs the Python model: " << err << "\n";
  if (!(err <= 1e-5)) {
    std::cerr << "FAIL: output differs from the expected one\n";
    return 1;
  }
  return 0;
}
