// Layout changes the passes insert around fused regions: into channels_last once where a fused
// region starts, back to the user's format at graph outputs.
#include "ops/allocator.h"
#include "ops/onednn.h"

#include <torch/library.h>

namespace jitfuse {
namespace {

// `self` in channels_last (channels_last_3d for 5-D): itself when it already is. The copy is a
// oneDNN reorder: ATen's channels_last copy of a 3-channel image is several times slower.
at::Tensor to_channels_last(const at::Tensor& self) {
  if (self.dim() != 4 && self.dim() != 5) return self;
  const auto format = self.dim() == 4 ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::ChannelsLast3d;
  if (self.is_contiguous(format)) return self;
  const auto t = self.scalar_type();
  const bool onednn_type = t == at::kFloat || t == at::kBFloat16 || t == at::kByte || t == at::kChar;
  if (!onednn_type || !self.device().is_cpu() || self.layout() != at::kStrided || self.is_quantized() ||
      self.numel() == 0)
    return self.contiguous(format);
  at::Tensor out = memory::empty(self.sizes(), self.options(), format);
  onednn::reorder(onednn::wrap(self), onednn::wrap(out));
  return out;
}

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
