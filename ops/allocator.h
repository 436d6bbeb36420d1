// Memory for what jitfuse's ops return and use inside a call. Large tensors come from a cache of
// blocks that outlives them: glibc hands blocks over 32 MB straight back to the kernel, so every
// call of a large-batch model would pay a page fault per 4 KB of each activation again (a fifth
// of ResNet-50's time at batch 16). Small ones come from torch's allocator as usual.
#pragma once

#include <ATen/ATen.h>

namespace jitfuse::memory {

// at::empty(sizes, options.memory_format(format)) on CPU, storage from the block cache when it
// is large. The result is an ordinary resizable CPU tensor.
at::Tensor empty(at::IntArrayRef sizes, const at::TensorOptions& options,
                 at::MemoryFormat format = at::MemoryFormat::Contiguous);

// Bytes held by idle cached blocks (for tests).
size_t idle_bytes();

}  // namespace jitfuse::memory
