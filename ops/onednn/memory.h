// oneDNN memory for torch tensors: the engine and this thread's stream, descriptors of tensors as
// they lie, reorders between layouts, and the torch memory format a descriptor amounts to.
#pragma once

#include <ATen/ATen.h>
#include <oneapi/dnnl/dnnl.hpp>

#include <cstdint>
#include <optional>

// torch's include tree ships newer oneDNN headers; the build must pick ours (onednn-devel 2023.2.0).
static_assert(DNNL_VERSION_MAJOR == 3 && DNNL_VERSION_MINOR == 2,
              "jitfuse is built against oneDNN 3.2: torch's bundled oneDNN headers came first");

namespace jitfuse::onednn {

const dnnl::engine& engine();
dnnl::stream& stream();  // one per calling thread

dnnl::memory::data_type data_type(at::ScalarType t);
// The descriptor of a strided tensor exactly as it lies in memory.
dnnl::memory::desc plain_desc(const at::Tensor& t);
// A descriptor with the tensor's dims and type, layout left to oneDNN.
dnnl::memory::desc any_desc(at::IntArrayRef dims, at::ScalarType t);
// A descriptor of a channels_last (4-D) / channels_last_3d (5-D) tensor of `dims`.
dnnl::memory::desc channels_last_desc(at::IntArrayRef dims, at::ScalarType t);
// A dense 1-D descriptor of n values: a primitive's runtime scales or zero points.
dnnl::memory::desc vector_desc(int64_t n, dnnl::memory::data_type type);
// Whether oneDNN fell back to its reference (unoptimized) implementation for `pd`.
bool is_reference(const dnnl::primitive_desc_base& pd);
dnnl::memory wrap(const at::Tensor& t, const dnnl::memory::desc& md);
dnnl::memory wrap(const at::Tensor& t);

// Copies `from` into `to` in `to`'s layout (and type), waiting for it.
void reorder(const dnnl::memory& from, const dnnl::memory& to);

// `t` in channels_last (channels_last_3d for 5-D; other ranks: `t`): itself when it already is.
// The copy is a oneDNN reorder: ATen's channels_last copy of a 3-channel image is several times
// slower.
at::Tensor to_channels_last(const at::Tensor& t);

// `t`'s data in `md`'s layout: `t` itself when it already lies that way, otherwise a reorder of
// it into a byte buffer.
at::Tensor as_layout(const at::Tensor& t, const dnnl::memory::desc& md);

// The memory format in which a torch tensor of `sizes` lies exactly as `md`, if any
// (channels_last first, then contiguous).
std::optional<at::MemoryFormat> torch_format_of(const dnnl::memory::desc& md, at::IntArrayRef sizes,
                                                at::ScalarType dtype);

// A byte buffer of `md`'s size (scratchpads, blocked intermediates).
at::Tensor buffer(const dnnl::memory::desc& md);

}  // namespace jitfuse::onednn
