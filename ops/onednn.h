// The oneDNN plumbing every jitfuse op uses: engine and stream, tensor <-> memory descriptors,
// post-op lists, the primitive cache and the prepacked-weight cache. Ops know oneDNN; they never
// see graphs.
#pragma once

#include <ATen/ATen.h>
#include <oneapi/dnnl/dnnl.hpp>

#include <array>
#include <functional>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

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

// A constant weight reordered once into the layout a primitive wants. `user_md` describes
// `weight`'s own storage (possibly regrouped). Keyed by the weight tensor's identity and version:
// a freed or modified weight is never served stale.
// `user_md` is only asked for on a miss. The returned tensor holds the packed bytes (and keeps
// them alive for the call even if another thread replaces the cache entry meanwhile).
at::Tensor prepacked_weight(const at::Tensor& weight, const dnnl::memory::desc& wanted_md,
                            const std::function<dnnl::memory::desc()>& user_md);

// A tensor derived once from a constant weight (a transformed copy of it), cached with the
// weight's prepacked layouts under the same identity and version rules. `tag` names the
// derivation; `make` runs on a miss.
at::Tensor derived_weight(const at::Tensor& weight, const std::string& tag,
                          const std::function<at::Tensor()>& make);

// The memory format in which a torch tensor of `sizes` lies exactly as `md`, if any
// (channels_last first, then contiguous).
std::optional<at::MemoryFormat> torch_format_of(const dnnl::memory::desc& md, at::IntArrayRef sizes,
                                                at::ScalarType dtype);

// The checks every op makes of its activation and weight: CPU, strided, float32 or bfloat16,
// one dtype. `op` names the op in the messages.
void check_input_and_weight(const char* op, const at::Tensor& input, const at::Tensor& weight);

// The type a primitive computes in for tensors of type `t`: bf16 only where oneDNN has optimized
// bf16 kernels, else f32 (converted with ATen, rounded back once).
at::ScalarType compute_type(at::ScalarType t);

// A byte buffer of `md`'s size (scratchpads, blocked intermediates).
at::Tensor buffer(const dnnl::memory::desc& md);

// ---- int8: plain uint8/int8 tensors (values, with scale and zero point beside them) ----------

// What an int8 op returns: uint8/int8 values of one scale and zero point, or float32.
struct Int8Output {
  std::optional<at::ScalarType> dtype;  // kByte / kChar; nullopt: float32
  double scale = 1.0;
  int64_t zero_point = 0;
};
Int8Output int8_output(std::optional<at::ScalarType> dtype, double scale, int64_t zero_point,
                       const char* op);
// An empty result of `sizes` in `format`, of `out`'s dtype or float32.
at::Tensor new_output(at::IntArrayRef sizes, const Int8Output& out, at::MemoryFormat format);
// A float32 result `y` as the op returns it: quantized as `out` says, or `y` itself.
at::Tensor as_output(const at::Tensor& y, const Int8Output& out);
// The float32 tensor a sum adds: `other` itself, checked (`op` names the op in messages).
at::Tensor float_operand(const char* op, const at::Tensor& other);

// The checks of an int8 op's activation (a uint8/int8 strided CPU tensor, its scale positive and
// finite, its zero point in range) and weight (a contiguous int8 CPU tensor with 1 or size(0)
// float scales, symmetric; scales of any shape that lists them along dim 0: [N], [N, 1, 1, 1]).
void check_int8_activation(const char* op, const at::Tensor& x, double scale, int64_t zero_point);
void check_int8_weight(const char* op, const at::Tensor& w, const at::Tensor& scales);

// Whether an int8 weight has one scale per output channel (else one per tensor).
bool per_channel(const at::Tensor& weight_scales);

// Whether oneDNN's int8 kernels compute `qw` exactly on this CPU. Without VNNI they multiply
// u8 x s8 pairs into saturating int16, which is exact only for weights in [-64, 64]
// (jitfuse.quantization writes 7-bit weights there). Memoized with the weight's prepacked
// layouts (same identity and version rules).
bool int8_weight_exact(const at::Tensor& qw);

// Scales and zero points as oneDNN attributes: source per tensor (a zero point only when it is
// not 0), weight per output channel (`weight_mask`) or per tensor, output per tensor.
void set_int8_attr(dnnl::primitive_attr& attr, int weight_mask, bool src_zero_point,
                   const Int8Output& out);
// The arguments those attributes add (for Runner's `more`): `weight_scales` of them.
std::vector<std::pair<int, dnnl::memory::desc>> int8_arg_descs(int64_t weight_scales, bool src_zero_point,
                                                               const Int8Output& out);
// Their data for one call. `Int8Args` holds the scalars they point to: keep it alive until the
// primitive ran.
struct Int8Args {
  float src_scale = 1.f, dst_scale = 1.f;
  int32_t src_zero_point = 0, dst_zero_point = 0;
  at::Tensor weight_scales;
};
void add_int8_args(CallArgs& args, Int8Args& values, double src_scale, int64_t src_zero_point,
                   const at::Tensor& weight_scales, const Int8Output& out);

}  // namespace jitfuse::onednn
