#include "ops/onednn.h"

#include <ATen/Parallel.h>
#include <c10/util/intrusive_ptr.h>

#include <cstring>
#include <list>
#include <mutex>
#include <sstream>
#include <unordered_map>

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

dnnl::memory wrap(const at::Tensor& t, const dnnl::memory::desc& md) {
  return dnnl::memory(md, engine(), t.data_ptr());
}

dnnl::memory wrap(const at::Tensor& t) { return wrap(t, plain_desc(t)); }

void reorder(const dnnl::memory& from, const dnnl::memory& to) {
  dnnl::reorder(from, to).execute(stream(), const_cast<dnnl::memory&>(from),
                                  const_cast<dnnl::memory&>(to));
  stream().wait();
}

dnnl::memory as_layout(const at::Tensor& t, const dnnl::memory::desc& md, at::Tensor& keep) {
  auto have = plain_desc(t);
  if (have == md) {
    keep = t;
    return wrap(t, md);
  }
  keep = at::empty({static_cast<int64_t>(md.get_size())}, t.options().dtype(at::kByte));
  auto out = dnnl::memory(md, engine(), keep.data_ptr());
  reorder(wrap(t, have), out);
  return out;
}

dnnl::primitive_attr make_attr(const PostOps& post_ops) {
  dnnl::post_ops ops;
  for (const auto& p : post_ops) {
    if (p.kind == PostOp::sum)
      ops.append_sum(p.alpha);
    else
      ops.append_eltwise(p.alg, p.alpha, p.beta);
  }
  dnnl::primitive_attr attr;
  attr.set_post_ops(ops);
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return attr;
}

Key& Key::operator<<(double v) {
  int64_t bits;
  static_assert(sizeof(bits) == sizeof(v));
  std::memcpy(&bits, &v, sizeof(v));
  return *this << bits;
}
Key& Key::operator<<(at::IntArrayRef v) {
  *this << static_cast<int64_t>(v.size());
  v_.insert(v_.end(), v.begin(), v.end());
  return *this;
}
Key& Key::operator<<(const at::Tensor& t) {
  if (!t.defined()) return *this << int64_t{-1};
  return *this << t.sizes() << t.strides() << static_cast<int64_t>(t.scalar_type());
}
Key& Key::operator<<(const PostOps& p) {
  *this << static_cast<int64_t>(p.size());
  for (const auto& op : p)
    *this << static_cast<int64_t>(op.kind) << static_cast<int64_t>(op.alg) << double(op.alpha)
          << double(op.beta);
  return *this;
}
size_t Key::hash() const {
  size_t h = v_.size();
  for (int64_t x : v_) h ^= std::hash<int64_t>()(x) + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2);
  return h;
}

namespace {

struct KeyHash {
  size_t operator()(const Key& k) const { return k.hash(); }
};

// Least-recently-used map from key to primitive.
class PrimitiveCache {
 public:
  explicit PrimitiveCache(size_t capacity) : capacity_(capacity) {}

  std::shared_ptr<CachedPrimitive> get_or_create(
      const Key& key, const std::function<std::shared_ptr<CachedPrimitive>()>& create) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = index_.find(key);
      if (it != index_.end()) {
        order_.splice(order_.begin(), order_, it->second);
        return it->second->second;
      }
    }
    auto made = create();  // outside the lock: creation can take milliseconds
    std::lock_guard<std::mutex> lock(mu_);
    auto it = index_.find(key);
    if (it != index_.end()) return it->second->second;
    order_.emplace_front(key, made);
    index_[key] = order_.begin();
    if (order_.size() > capacity_) {
      index_.erase(order_.back().first);
      order_.pop_back();
    }
    return made;
  }

 private:
  using Entry = std::pair<Key, std::shared_ptr<CachedPrimitive>>;
  size_t capacity_;
  std::mutex mu_;
  std::list<Entry> order_;
  std::unordered_map<Key, std::list<Entry>::iterator, KeyHash> index_;
};

struct PackedLayouts {
  using Weak = c10::weak_intrusive_ptr<c10::TensorImpl, c10::UndefinedTensorImpl>;
  std::optional<Weak> owner;  // keeps the TensorImpl's address from being reused while cached
  const void* data = nullptr;
  int64_t version = -1;
  std::vector<std::pair<dnnl::memory::desc, at::Tensor>> layouts;

  bool still_describes(const at::Tensor& w) const {
    return owner && !owner->expired() && data == w.data_ptr() && version == w._version();
  }
};

}  // namespace

std::shared_ptr<CachedPrimitive> cached_primitive(
    Key key, const std::function<std::shared_ptr<CachedPrimitive>()>& create) {
  static PrimitiveCache cache(4096);
  key << static_cast<int64_t>(at::get_num_threads());
  return cache.get_or_create(key, create);
}

PackedWeight prepacked_weight(const at::Tensor& weight, const dnnl::memory::desc& wanted_md,
                              const std::function<dnnl::memory::desc()>& user_md) {
  static std::mutex mu;
  static std::unordered_map<const c10::TensorImpl*, PackedLayouts> packed;

  std::lock_guard<std::mutex> lock(mu);
  auto& entry = packed[weight.unsafeGetTensorImpl()];
  if (!entry.still_describes(weight)) {
    entry = PackedLayouts{};
    entry.owner.emplace(weight.getIntrusivePtr());
    entry.data = weight.data_ptr();
    entry.version = weight._version();
    // Drop what belongs to weights that are gone.
    for (auto it = packed.begin(); it != packed.end();)
      it = !it->second.owner || it->second.owner->expired() ? packed.erase(it) : std::next(it);
  }
  for (const auto& [md, buffer] : entry.layouts)
    if (md == wanted_md) return {dnnl::memory(md, engine(), buffer.data_ptr()), buffer};

  at::Tensor buffer = at::empty({static_cast<int64_t>(wanted_md.get_size())},
                                weight.options().dtype(at::kByte));
  dnnl::memory out(wanted_md, engine(), buffer.data_ptr());
  reorder(wrap(weight, user_md()), out);
  entry.layouts.emplace_back(wanted_md, buffer);
  return {out, buffer};
}

bool native_bf16() {
  // Ask oneDNN: a bf16 convolution it can create with an optimized (non-reference) kernel.
  static const bool native = [] {
    using md = dnnl::memory::desc;
    const auto bf16 = dnnl::memory::data_type::bf16;
    const auto any = dnnl::memory::format_tag::any;
    try {
      dnnl::convolution_forward::primitive_desc pd(
          engine(), dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct,
          md({1, 32, 8, 8}, bf16, any), md({32, 32, 3, 3}, bf16, any), md({1, 32, 8, 8}, bf16, any),
          {1, 1}, {1, 1}, {1, 1});
      return std::string(pd.impl_info_str()).rfind("ref", 0) != 0;
    } catch (const dnnl::error&) {
      return false;
    }
  }();
  return native;
}

void check_input_and_weight(const char* op, const at::Tensor& input, const at::Tensor& weight) {
  TORCH_CHECK(input.device().is_cpu() && weight.device().is_cpu(), "jitfuse ", op,
              ": expected CPU tensors");
  TORCH_CHECK(input.layout() == at::kStrided && weight.layout() == at::kStrided, "jitfuse ", op,
              ": expected strided tensors");
  TORCH_CHECK(input.scalar_type() == at::kFloat || input.scalar_type() == at::kBFloat16, "jitfuse ",
              op, ": expected float32 or bfloat16 input, got ", input.scalar_type());
  TORCH_CHECK(weight.scalar_type() == input.scalar_type(), "jitfuse ", op, ": input (",
              input.scalar_type(), ") and weight (", weight.scalar_type(),
              ") must have the same dtype");
}

at::ScalarType compute_type(at::ScalarType t) {
  return t == at::kBFloat16 && !native_bf16() ? at::kFloat : t;
}

void execute(const dnnl::primitive& prim, const dnnl::memory::desc& scratchpad_md,
             std::unordered_map<int, dnnl::memory> args) {
  auto scratch = buffer(scratchpad_md);
  args.emplace(DNNL_ARG_SCRATCHPAD, dnnl::memory(scratchpad_md, engine(), scratch.data_ptr()));
  prim.execute(stream(), args);
  stream().wait();
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
  return at::empty({static_cast<int64_t>(md.get_size())}, at::TensorOptions().dtype(at::kByte));
}

}  // namespace jitfuse::onednn
