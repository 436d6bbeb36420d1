// Pooling (fp32, bf16): max_pool2d and a classifier head's global adaptive_avg_pool2d run on
// oneDNN in the layout they get, so NHWC flows from the fused convs through the pooling without
// ATen's slower channels_last kernels. Not fusions, one op each; the table has the same shape.
#include "passes/rewrite.h"

namespace jitfuse {
namespace {

// Where the profiled type is known: a 4-D float32/bfloat16 CPU tensor.
const Filter kPooledIsFloat4d{
    [](const Match& m, const ValueMap& v) {
      auto type = bound(m, v, "x")->type()->cast<c10::TensorType>();
      if (!type) return false;
      if (type->dim() && *type->dim() != 4) return false;
      if (type->scalarType() && *type->scalarType() != at::kFloat && *type->scalarType() != at::kBFloat16)
        return false;
      return !type->device() || type->device()->is_cpu();
    },
    "the input {x} is {x:type}, not a 4-D float32 or bfloat16 CPU tensor"};

const Filter kOutputSizeIs1x1{
    [](const Match& m, const ValueMap& v) {
      auto size = constant(bound(m, v, "output_size"));
      if (!size || !size->isIntList()) return false;
      auto s = size->toIntVector();
      return s.size() == 2 && s[0] == 1 && s[1] == 1;
    },
    "the output size is {output_size:value}, not [1, 1]: jitfuse runs global average pooling only"};

std::vector<Rewrite> build_pool_rewrites() {
  const std::string max_inputs = "%x, %kernel_size, %stride, %padding, %dilation, %ceil_mode";
  const std::string max_args = "(%x, %kernel_size, %stride, %padding, %dilation, %ceil_mode)";
  return {
      // name                 pattern                                                replacement                                                  filters
      {"max_pool2d",          graph_ir(max_inputs, "%y = aten::max_pool2d" + max_args, "%y"),
                              graph_ir(max_inputs, "%y = jitfuse::max_pool2d" + max_args, "%y"),          {kPooledIsFloat4d, kPoolGeometryConstant}},
      {"adaptive_avg_pool2d", graph_ir("%x, %output_size", "%y = aten::adaptive_avg_pool2d(%x, %output_size)", "%y"),
                              graph_ir("%x, %output_size", "%y = jitfuse::adaptive_avg_pool2d(%x, %output_size)", "%y"),
                                                                                                           {kPooledIsFloat4d, kOutputSizeIs1x1}},
  };
}

}  // namespace

const std::vector<Rewrite>& pool_rewrites() {
  static const std::vector<Rewrite> rows = build_pool_rewrites();
  return rows;
}

void fuse_pool(GraphPtr& graph) { apply_rewrites(graph, pool_rewrites()); }

}  // namespace jitfuse
