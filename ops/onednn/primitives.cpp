#include "ops/onednn/primitives.h"

#include <ATen/Parallel.h>
#include <c10/core/impl/alloc_cpu.h>

#include <algorithm>
#include <cstring>
#include <list>
#include <unordered_map>

namespace jitfuse::onednn {

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

}  // namespace

std::shared_ptr<CachedPrimitive> cached_primitive(
    Key key, const std::function<std::shared_ptr<CachedPrimitive>()>& create) {
  static PrimitiveCache cache(4096);
  key << static_cast<int64_t>(at::get_num_threads());
  return cache.get_or_create(key, create);
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

}  // namespace jitfuse::onednn
