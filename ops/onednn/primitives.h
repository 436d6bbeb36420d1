// oneDNN primitives made once and run many times: post-op lists, the cache key, the process-wide
// primitive cache, and Runner, which keeps a primitive's memory objects between calls.
#pragma once

#include "ops/onednn/memory.h"

#include <array>
#include <functional>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

namespace jitfuse::onednn {

// A post-op list, in order (oneDNN applies them to the accumulator).
struct PostOp {
  enum Kind { sum, eltwise, binary } kind;
  dnnl::algorithm alg = dnnl::algorithm::undef;  // eltwise / binary algorithm
  float alpha = 0.f, beta = 0.f;                 // eltwise parameters; alpha is the scale of a sum
  dnnl::memory::desc other = {};                 // binary: the other operand (a call argument)
  // sum of an int8 tensor already in dst: alpha * (value - zero_point), the value of type `type`
  int32_t zero_point = 0;
  dnnl::memory::data_type type = dnnl::memory::data_type::undef;
};
using PostOps = std::vector<PostOp>;
dnnl::primitive_attr make_attr(const PostOps& post_ops);

// A cache key: shapes, types and parameters as a flat list of integers (cheap to build and hash
// on every call).
class Key {
 public:
  Key() { v_.reserve(64); }  // one allocation for a typical key, not one per doubling
  Key& operator<<(int64_t v) { v_.push_back(v); return *this; }
  Key& operator<<(double v);
  Key& operator<<(at::IntArrayRef v);
  Key& operator<<(const at::Tensor& t);  // dims, strides, dtype; undefined tensors too
  Key& operator<<(const PostOps& p);
  bool operator==(const Key& o) const { return v_ == o.v_; }
  size_t hash() const;

 private:
  std::vector<int64_t> v_;
};

// The data of one primitive call: (DNNL_ARG_*, pointer) per argument.
class CallArgs {
 public:
  CallArgs() = default;
  CallArgs(std::initializer_list<std::pair<int, const void*>> args) {
    for (const auto& [id, data] : args) add(id, data);
  }
  CallArgs& add(int id, const void* data) {
    TORCH_INTERNAL_ASSERT(size_ < kMax, "jitfuse: too many primitive arguments");
    args_[size_++] = {id, data};
    return *this;
  }
  const std::pair<int, const void*>* begin() const { return args_.data(); }
  const std::pair<int, const void*>* end() const { return args_.data() + size_; }
  int size() const { return size_; }
  static constexpr int kMax = 16;

 private:
  std::array<std::pair<int, const void*>, kMax> args_{};
  int size_ = 0;
};

// A primitive ready to run: the layouts of its arguments recorded once, and memory objects for
// them kept between calls, so a call only points them at its data. (Building descriptors and
// memory objects per call was most of a small op's host time: ~150 allocations per int8
// convolution.) Concurrent calls each take their own set of memory objects.
class Runner {
 public:
  // `args`: the arguments every call passes (DNNL_ARG_*), laid out as `pd` says; `more`: those
  // `pd` does not describe (scales, zero points), with their layouts.
  Runner(const dnnl::primitive_desc_base& pd, dnnl::primitive prim, const std::vector<int>& args,
         std::vector<std::pair<int, dnnl::memory::desc>> more = {});
  Runner(const Runner&) = delete;
  Runner& operator=(const Runner&) = delete;

  // Runs the primitive on `data` (each argument given at construction, in any order), with a
  // scratchpad of this thread's, and waits for it.
  void operator()(const CallArgs& data) const;
  // The layout the primitive expects for argument `id` (given at construction).
  const dnnl::memory::desc& md(int id) const;

 private:
  static constexpr size_t kMaxArgs = CallArgs::kMax + 1;  // and the scratchpad
  struct MemorySet {
    std::vector<dnnl::memory> memory;  // one per argument, in args_'s order
    std::vector<const void*> data;     // what each points at now
  };
  dnnl::primitive prim_;
  size_t scratchpad_bytes_ = 0;
  std::vector<std::pair<int, dnnl::memory::desc>> args_;
  mutable std::mutex mu_;
  mutable std::vector<std::unique_ptr<MemorySet>> idle_;
};

// Primitive cache: process-wide LRU. oneDNN fixes a primitive's thread count when it is created,
// so the key always includes the current thread count.
struct CachedPrimitive {
  virtual ~CachedPrimitive() = default;
};
// A oneDNN primitive with its descriptor and its runner (P: dnnl::matmul,
// dnnl::convolution_forward, ...); `args` and `more` as Runner's.
template <class P>
struct Primitive : CachedPrimitive {
  typename P::primitive_desc pd;
  Runner run;
  Primitive(typename P::primitive_desc p, const std::vector<int>& args,
            std::vector<std::pair<int, dnnl::memory::desc>> more = {})
      : pd(std::move(p)), run(pd, P(pd), args, std::move(more)) {}
};
std::shared_ptr<CachedPrimitive> cached_primitive(
    Key key, const std::function<std::shared_ptr<CachedPrimitive>()>& create);

}  // namespace jitfuse::onednn
