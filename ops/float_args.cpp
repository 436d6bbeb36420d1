#include "ops/float_args.h"

#include "ops/cpu.h"

namespace jitfuse::onednn {

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

}  // namespace jitfuse::onednn
