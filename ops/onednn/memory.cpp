#include "ops/onednn/memory.h"

#include "ops/allocator.h"

#include <string>
#include <vector>

namespace jitfuse::onednn {

const dnnl::engine& engine() {
  static const dnnl::engine cpu(dnnl::engine::kind::cpu, 0);
  return cpu;
}

dnnl::stream& stream() {
  thread_local dnnl::stream s(engine());
  return s;
}

dnnl::memory::data_type data_type(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return dnnl::memory::data_type::f32;
    case at::kBFloat16: return dnnl::memory::data_type::bf16;
    case at::kByte: return dnnl::memory::data_type::u8;
    case at::kChar: return dnnl::memory::data_type::s8;
    case at::kInt: return dnnl::memory::data_type::s32;
    default: TORCH_CHECK(false, "jitfuse: unsupported dtype ", t);
  }
}

dnnl::memory::desc plain_desc(const at::Tensor& t) {
  return dnnl::memory::desc(t.sizes().vec(), data_type(t.scalar_type()), t.strides().vec());
}

dnnl::memory::desc any_desc(at::IntArrayRef dims, at::ScalarType t) {
  return dnnl::memory::desc(dims.vec(), data_type(t), dnnl::memory::format_tag::any);
}

dnnl::memory::desc channels_last_desc(at::IntArrayRef dims, at::ScalarType t) {
  TORCH_CHECK(dims.size() == 4 || dims.size() == 5, "jitfuse: channels_last needs 4 or 5 dims");
  return dnnl::memory::desc(dims.vec(), data_type(t),
                            dims.size() == 4 ? dnnl::memory::format_tag::nhwc
                                             : dnnl::memory::format_tag::ndhwc);
}

bool is_reference(const dnnl::primitive_desc_base& pd) {
  return std::string(pd.impl_info_str()).rfind("ref", 0) == 0;
}

dnnl::memory wrap(const at::Tensor& t, const dnnl::memory::desc& md) {
  return dnnl::memory(md, engine(), t.data_ptr());
}

dnnl::memory wrap(const at::Tensor& t) { return wrap(t, plain_desc(t)); }

void reorder(const dnnl::memory& from, const dnnl::memory& to) {
  dnnl::reorder(from, to).execute(stream(), const_cast<dnnl::memory&>(from),
                                  const_cast<dnnl::memory&>(to));
  stream().wait();
}

at::Tensor to_channels_last(const at::Tensor& t) {
  if (t.dim() != 4 && t.dim() != 5) return t;
  const auto format = t.dim() == 4 ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::ChannelsLast3d;
  if (t.is_contiguous(format)) return t;
  const auto type = t.scalar_type();
  const bool onednn_type = type == at::kFloat || type == at::kBFloat16 || type == at::kByte || type == at::kChar;
  if (!onednn_type || !t.device().is_cpu() || t.layout() != at::kStrided || t.is_quantized() ||
      t.numel() == 0)
    return t.contiguous(format);
  at::Tensor out = memory::empty(t.sizes(), t.options(), format);
  reorder(wrap(t), wrap(out));
  return out;
}

at::Tensor as_layout(const at::Tensor& t, const dnnl::memory::desc& md) {
  auto have = plain_desc(t);
  if (have == md) return t;
  at::Tensor out = buffer(md);
  reorder(wrap(t, have), wrap(out, md));
  return out;
}

std::optional<at::MemoryFormat> torch_format_of(const dnnl::memory::desc& md, at::IntArrayRef sizes,
                                                at::ScalarType dtype) {
  std::vector<at::MemoryFormat> formats;
  if (sizes.size() == 4) formats.push_back(at::MemoryFormat::ChannelsLast);
  if (sizes.size() == 5) formats.push_back(at::MemoryFormat::ChannelsLast3d);
  formats.push_back(at::MemoryFormat::Contiguous);
  for (auto f : formats) {
    auto probe = at::empty(sizes, at::TensorOptions().dtype(dtype).memory_format(f));
    if (plain_desc(probe) == md) return f;
  }
  return std::nullopt;
}

at::Tensor buffer(const dnnl::memory::desc& md) {
  return memory::empty({static_cast<int64_t>(md.get_size())}, at::TensorOptions().dtype(at::kByte));
}

dnnl::memory::desc vector_desc(int64_t n, dnnl::memory::data_type type) {
  return dnnl::memory::desc({n}, type, dnnl::memory::format_tag::a);
}

}  // namespace jitfuse::onednn
