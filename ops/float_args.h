// What the float32/bfloat16 ops check of their arguments, and the type they compute in.
#pragma once

#include <ATen/ATen.h>

namespace jitfuse::onednn {

// The checks every op makes of its activation and weight: CPU, strided, float32 or bfloat16,
// one dtype. `op` names the op in the messages.
void check_input_and_weight(const char* op, const at::Tensor& input, const at::Tensor& weight);

// The type a primitive computes in for tensors of type `t`: bf16 only where oneDNN has optimized
// bf16 kernels, else f32 (converted with ATen, rounded back once).
at::ScalarType compute_type(at::ScalarType t);

}  // namespace jitfuse::onednn
