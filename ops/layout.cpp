// Layout helpers the passes insert around fused regions.
#include <ATen/ATen.h>
#include <torch/library.h>

namespace jitfuse {
namespace {

// `self` in the memory format `like` suggests (the user's input), where the ranks agree.
at::Tensor like_memory_format(const at::Tensor& self, const at::Tensor& like) {
  if (self.dim() != like.dim() || self.dim() < 4) return self;
  return self.contiguous(like.suggest_memory_format());
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(jitfuse, m) {
  m.def("like_memory_format(Tensor self, Tensor like) -> Tensor",
        torch::dispatch(c10::DispatchKey::CPU, TORCH_FN(like_memory_format)));
}

}  // namespace jitfuse
