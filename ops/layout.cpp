// Layout changes the passes insert around fused regions: into channels_last once where a fused
// region starts, back to the user's format at graph outputs.
#include "ops/onednn.h"

#include <torch/library.h>

namespace jitfuse {
namespace {

at::Tensor to_channels_last(const at::Tensor& self) { return onednn::to_channels_last(self); }

// `self` in the memory format `like` suggests (the user's input), where the ranks agree.
at::Tensor like_memory_format(const at::Tensor& self, const at::Tensor& like) {
  if (self.dim() != like.dim() || self.dim() < 4) return self;
  return self.contiguous(like.suggest_memory_format());
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(jitfuse, m) {
  m.def("to_channels_last(Tensor(a) self) -> Tensor(a)",
        torch::dispatch(c10::DispatchKey::CPU, TORCH_FN(to_channels_last)));
  m.def("like_memory_format(Tensor(a) self, Tensor like) -> Tensor(a)",
        torch::dispatch(c10::DispatchKey::CPU, TORCH_FN(like_memory_format)));
}

}  // namespace jitfuse
