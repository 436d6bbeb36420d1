// Memory for what jitfuse's ops return and use inside a call. Tensors from 64 KB up come from a
// cache of blocks that outlives them: glibc serves blocks above its mmap threshold (128 KB to
// 32 MB, moved by the process's history) with fresh pages from the kernel, so every call would pay
// a page fault per 4 KB of each activation again (a fifth of ResNet-50's time at batch 16, half
// of MiniLM int8's). Small ones come from torch's allocator as usual.
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
