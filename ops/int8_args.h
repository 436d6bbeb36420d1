// The arguments of the int8 ops (plain uint8/int8 tensors, their scale and zero point beside
// them): the checks, the output's type and parameters, and oneDNN's scale and zero-point attributes.
#pragma once

#include "ops/onednn/primitives.h"

#include <ATen/ATen.h>

#include <cstdint>
#include <optional>
#include <utility>
#include <vector>

namespace jitfuse::onednn {

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
// The float32 weight qw * weight_scales (scales along dim 0) that the float32 fallback of an
// inexact weight multiplies by: derived once per weight and scales, not on every call.
at::Tensor float_weight(const at::Tensor& qw, const at::Tensor& weight_scales);

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
