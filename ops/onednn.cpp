#include "ops/onednn.h"

#include "ops/cpu.h"

#include "ops/allocator.h"
#include "ops/quantize.h"

#include <ATen/Parallel.h>
#include <torch/library.h>
#include <c10/core/impl/alloc_cpu.h>
#include <c10/util/intrusive_ptr.h>

#include <algorithm>
#include <cstring>
#include <list>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>
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

dnnl::primitive_attr make_attr(const PostOps& post_ops) {
  dnnl::post_ops ops;
  for (const auto& p : post_ops) {
    if (p.kind == PostOp::sum)
      ops.append_sum(p.alpha, p.zero_point, p.type);
    else if (p.kind == PostOp::binary)
      ops.append_binary(p.alg, p.other);
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
          << double(op.beta) << static_cast<int64_t>(op.other.get_size())
          << static_cast<int64_t>(op.zero_point) << static_cast<int64_t>(op.type);
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

// A tensor's version counter. Inference tensors (made under torch.inference_mode: a model frozen
// or loaded there, or what an op derives from a weight there) have none, and asking throws; they
// cannot be modified outside inference mode, so their identity and data pointer stand alone.
int64_t version_of(const at::Tensor& t) { return t.is_inference() ? -2 : static_cast<int64_t>(t._version()); }

// What jitfuse derives once from a constant weight: its layouts packed for primitives, transformed
// copies, and for an int8 weight whether oneDNN computes it exactly here.
struct WeightEntry {
  using Weak = c10::weak_intrusive_ptr<c10::TensorImpl, c10::UndefinedTensorImpl>;
  std::optional<Weak> owner;  // keeps the TensorImpl's address from being reused while cached
  const void* data = nullptr;
  int64_t version = -1;
  std::vector<std::pair<dnnl::memory::desc, at::Tensor>> layouts;
  std::optional<bool> int8_exact;
  std::vector<std::pair<std::string, at::Tensor>> derived;

  bool still_describes(const at::Tensor& w) const {
    return owner && !owner->expired() && data == w.data_ptr() && version == version_of(w);
  }
};

std::mutex& weight_mu() {
  static std::mutex mu;
  return mu;
}

// The entry of `weight` (hold weight_mu()): a fresh one if the tensor, its data or its version
// changed. Keyed by the tensor's identity, so a freed weight's successor is never served stale.
WeightEntry& weight_entry(const at::Tensor& weight) {
  static std::unordered_map<const c10::TensorImpl*, WeightEntry> entries;
  auto& entry = entries[weight.unsafeGetTensorImpl()];
  if (!entry.still_describes(weight)) {
    entry = WeightEntry{};
    entry.owner.emplace(weight.getIntrusivePtr());
    entry.data = weight.data_ptr();
    entry.version = version_of(weight);
    // Drop what belongs to weights that are gone.
    for (auto it = entries.begin(); it != entries.end();)
      it = !it->second.owner || it->second.owner->expired() ? entries.erase(it) : std::next(it);
  }
  return entry;
}

}  // namespace

std::shared_ptr<CachedPrimitive> cached_primitive(
    Key key, const std::function<std::shared_ptr<CachedPrimitive>()>& create) {
  static PrimitiveCache cache(4096);
  key << static_cast<int64_t>(at::get_num_threads());
  return cache.get_or_create(key, create);
}

at::Tensor prepacked_weight(const at::Tensor& weight, const dnnl::memory::desc& wanted_md,
                            const std::function<dnnl::memory::desc()>& user_md) {
  std::lock_guard<std::mutex> lock(weight_mu());
  auto& entry = weight_entry(weight);
  for (const auto& [md, buffer] : entry.layouts)
    if (md == wanted_md) return buffer;

  at::Tensor buffer = at::empty({static_cast<int64_t>(wanted_md.get_size())},
                                weight.options().dtype(at::kByte));
  reorder(wrap(weight, user_md()), wrap(buffer, wanted_md));
  entry.layouts.emplace_back(wanted_md, buffer);
  return buffer;
}

at::Tensor derived_weight(const at::Tensor& weight, const std::string& tag,
                          const std::function<at::Tensor()>& make) {
  std::lock_guard<std::mutex> lock(weight_mu());
  auto& entry = weight_entry(weight);
  for (const auto& [name, tensor] : entry.derived)
    if (name == tag) return tensor;
  entry.derived.emplace_back(tag, make());
  return entry.derived.back().second;
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
  return t == at::kBFloat16 && !cpu::native_bf16() ? at::kFloat : t;
}

namespace {

// This thread's scratchpad, at least `bytes` long. Primitives run one at a time on a thread and
// are waited for, so one buffer serves them all.
void* thread_scratchpad(size_t bytes) {
  struct Buffer {
    void* data = nullptr;
    size_t size = 0;
    ~Buffer() { c10::free_cpu(data); }
  };
  thread_local Buffer buffer;
  if (bytes > buffer.size) {
    c10::free_cpu(buffer.data);
    buffer = {};  // empty, should the allocation below throw
    buffer.data = c10::alloc_cpu(bytes);
    buffer.size = bytes;
  }
  return buffer.data;
}

}  // namespace

Runner::Runner(const dnnl::primitive_desc_base& pd, dnnl::primitive prim, const std::vector<int>& args,
               std::vector<std::pair<int, dnnl::memory::desc>> more)
    : prim_(std::move(prim)), args_(std::move(more)) {
  for (int id : args) args_.emplace_back(id, pd.query_md(dnnl::query::exec_arg_md, id));
  auto scratchpad = pd.scratchpad_desc();
  scratchpad_bytes_ = scratchpad.get_size();
  if (scratchpad_bytes_ > 0) args_.emplace_back(DNNL_ARG_SCRATCHPAD, std::move(scratchpad));
  TORCH_INTERNAL_ASSERT(args_.size() <= kMaxArgs, "jitfuse: a primitive with ", args_.size(), " arguments");
}

const dnnl::memory::desc& Runner::md(int id) const {
  for (const auto& [arg, md] : args_)
    if (arg == id) return md;
  TORCH_INTERNAL_ASSERT(false, "jitfuse: primitive argument ", id, " was not declared");
}

void Runner::operator()(const CallArgs& data) const {
  std::unique_ptr<MemorySet> set;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!idle_.empty()) {
      set = std::move(idle_.back());
      idle_.pop_back();
    }
  }
  if (!set) {
    set = std::make_unique<MemorySet>();
    for (const auto& arg : args_) {
      set->memory.emplace_back(arg.second, engine(), static_cast<void*>(DNNL_MEMORY_NONE));
      set->data.push_back(nullptr);
    }
  }
  const int given = data.size() + (scratchpad_bytes_ > 0 ? 1 : 0);
  TORCH_INTERNAL_ASSERT(given == static_cast<int>(args_.size()), "jitfuse: a primitive call passed ",
                        data.size(), " arguments, its primitive takes ", args_.size());
  std::array<dnnl_exec_arg_t, kMaxArgs> exec{};
  for (size_t i = 0; i < args_.size(); ++i) {
    const int id = args_[i].first;
    const void* ptr = nullptr;
    if (id == DNNL_ARG_SCRATCHPAD) {
      ptr = thread_scratchpad(scratchpad_bytes_);
    } else {
      const auto* found = std::find_if(data.begin(), data.end(), [&](const auto& a) { return a.first == id; });
      TORCH_INTERNAL_ASSERT(found != data.end(), "jitfuse: primitive argument ", id, " not passed");
      ptr = found->second;
    }
    if (set->data[i] != ptr) {  // (setting a handle zero-pads blocked layouts: only when it moves)
      set->memory[i].set_data_handle(const_cast<void*>(ptr));
      set->data[i] = ptr;
    }
    exec[i] = {id, set->memory[i].get()};
  }
  dnnl::error::wrap_c_api(
      dnnl_primitive_execute(prim_.get(), stream().get(), static_cast<int>(args_.size()), exec.data()),
      "jitfuse: could not run a oneDNN primitive");
  stream().wait();
  std::lock_guard<std::mutex> lock(mu_);
  idle_.push_back(std::move(set));
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

Int8Output int8_output(std::optional<at::ScalarType> dtype, double scale, int64_t zero_point,
                       const char* op) {
  if (!dtype) return {};
  quantize::check_parameters(op, "output ", scale, zero_point, *dtype);
  return {dtype, scale, zero_point};
}

at::Tensor new_output(at::IntArrayRef sizes, const Int8Output& out, at::MemoryFormat format) {
  return memory::empty(sizes, at::TensorOptions().dtype(out.dtype ? *out.dtype : at::kFloat), format);
}

at::Tensor as_output(const at::Tensor& y, const Int8Output& out) {
  return out.dtype ? quantize::per_tensor(y, out.scale, out.zero_point, *out.dtype) : y;
}

at::Tensor float_operand(const char* op, const at::Tensor& other) {
  TORCH_CHECK(other.device().is_cpu() && other.layout() == at::kStrided, "jitfuse ", op,
              ": expected a strided CPU tensor to add");
  TORCH_CHECK(other.scalar_type() == at::kFloat, "jitfuse ", op,
              ": expected a float32 tensor to add, got ", other.scalar_type());
  return other;
}

void check_int8_activation(const char* op, const at::Tensor& x, double scale, int64_t zero_point) {
  TORCH_CHECK(x.device().is_cpu() && x.layout() == at::kStrided, "jitfuse ", op,
              ": expected a strided CPU tensor");
  TORCH_CHECK(quantize::is_int8_type(x.scalar_type()), "jitfuse ", op,
              ": expected a uint8 or int8 activation, got ", x.scalar_type());
  quantize::check_parameters(op, "activation ", scale, zero_point, x.scalar_type());
}

void check_int8_weight(const char* op, const at::Tensor& w, const at::Tensor& scales) {
  TORCH_CHECK(w.device().is_cpu() && w.scalar_type() == at::kChar, "jitfuse ", op,
              ": expected an int8 CPU weight, got ", w.scalar_type());
  TORCH_CHECK(w.is_contiguous(), "jitfuse ", op, ": expected a contiguous weight");
  TORCH_CHECK(scales.device().is_cpu() && scales.scalar_type() == at::kFloat &&
                  (scales.numel() == 1 || (scales.numel() == w.size(0) && scales.size(0) == w.size(0))),
              "jitfuse ", op, ": expected 1 or ", w.size(0), " float32 weight scales (one per output "
              "channel), got ", scales.scalar_type(), " ", scales.sizes());
}



bool per_channel(const at::Tensor& weight_scales) { return weight_scales.numel() > 1; }

bool int8_weight_exact(const at::Tensor& qw) {
  if (cpu::has_vnni()) return true;
  std::lock_guard<std::mutex> lock(weight_mu());
  auto& entry = weight_entry(qw);
  if (!entry.int8_exact)
    entry.int8_exact = qw.numel() == 0 || (qw.min().item<int>() >= -64 && qw.max().item<int>() <= 64);
  return *entry.int8_exact;
}

void set_int8_attr(dnnl::primitive_attr& attr, int weight_mask, bool src_zero_point,
                   const Int8Output& out) {
  attr.set_scales_mask(DNNL_ARG_SRC, 0);
  attr.set_scales_mask(DNNL_ARG_WEIGHTS, weight_mask);
  if (src_zero_point) attr.set_zero_points_mask(DNNL_ARG_SRC, 0);
  if (out.dtype) {
    attr.set_scales_mask(DNNL_ARG_DST, 0);
    if (out.zero_point != 0) attr.set_zero_points_mask(DNNL_ARG_DST, 0);
  }
}

dnnl::memory::desc vector_desc(int64_t n, dnnl::memory::data_type type) {
  return dnnl::memory::desc({n}, type, dnnl::memory::format_tag::a);
}

std::vector<std::pair<int, dnnl::memory::desc>> int8_arg_descs(int64_t weight_scales, bool src_zero_point,
                                                               const Int8Output& out) {
  using dt = dnnl::memory::data_type;
  std::vector<std::pair<int, dnnl::memory::desc>> args{
      {DNNL_ARG_ATTR_SCALES | DNNL_ARG_SRC, vector_desc(1, dt::f32)},
      {DNNL_ARG_ATTR_SCALES | DNNL_ARG_WEIGHTS, vector_desc(weight_scales, dt::f32)}};
  if (src_zero_point) args.emplace_back(DNNL_ARG_ATTR_ZERO_POINTS | DNNL_ARG_SRC, vector_desc(1, dt::s32));
  if (out.dtype) {
    args.emplace_back(DNNL_ARG_ATTR_SCALES | DNNL_ARG_DST, vector_desc(1, dt::f32));
    if (out.zero_point != 0) args.emplace_back(DNNL_ARG_ATTR_ZERO_POINTS | DNNL_ARG_DST, vector_desc(1, dt::s32));
  }
  return args;
}

void add_int8_args(CallArgs& args, Int8Args& values, double src_scale, int64_t src_zero_point,
                   const at::Tensor& weight_scales, const Int8Output& out) {
  values.src_scale = static_cast<float>(src_scale);
  args.add(DNNL_ARG_ATTR_SCALES | DNNL_ARG_SRC, &values.src_scale);
  values.src_zero_point = static_cast<int32_t>(src_zero_point);
  if (values.src_zero_point != 0) args.add(DNNL_ARG_ATTR_ZERO_POINTS | DNNL_ARG_SRC, &values.src_zero_point);
  values.weight_scales = weight_scales.reshape({-1}).contiguous();
  args.add(DNNL_ARG_ATTR_SCALES | DNNL_ARG_WEIGHTS, values.weight_scales.data_ptr());
  if (out.dtype) {
    values.dst_scale = static_cast<float>(out.scale);
    args.add(DNNL_ARG_ATTR_SCALES | DNNL_ARG_DST, &values.dst_scale);
    values.dst_zero_point = static_cast<int32_t>(out.zero_point);
    if (values.dst_zero_point != 0) args.add(DNNL_ARG_ATTR_ZERO_POINTS | DNNL_ARG_DST, &values.dst_zero_point);
  }
}

}  // namespace jitfuse::onednn

namespace {


// How many threads at::parallel_for gives jitfuse's own kernels over `range` items: torch's thread
// count where the library was built with OpenMP, 1 where a build lost it (they then run serially).
int64_t parallel_for_threads(int64_t range) {
  std::mutex mutex;
  std::set<std::thread::id> seen;
  at::parallel_for(0, range, 1, [&](int64_t, int64_t) {
    std::lock_guard<std::mutex> lock(mutex);
    seen.insert(std::this_thread::get_id());
  });
  return static_cast<int64_t>(seen.size());
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(jitfuse, m) {
  m.def("_parallel_for_threads(int range) -> int", [](int64_t range) { return parallel_for_threads(range); });
}
