#include "ops/int8_args.h"

#include "ops/allocator.h"
#include "ops/cpu.h"
#include "ops/onednn/weights.h"
#include "ops/quantize.h"

#include <functional>
#include <string>
#include <string_view>

namespace jitfuse::onednn {

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
  const at::Tensor exact = derived_weight(qw, "int8_exact", [&] {
    return at::scalar_tensor(qw.numel() == 0 || (qw.min().item<int>() >= -64 && qw.max().item<int>() <= 64),
                             at::kBool);
  });
  return *exact.const_data_ptr<bool>();  // no dispatch: this runs on every call
}

at::Tensor float_weight(const at::Tensor& qw, const at::Tensor& weight_scales) {
  // The tag names the scales by value: the same int8 weight may come with other scales.
  const at::Tensor scales = weight_scales.to(at::kFloat).contiguous();
  const std::string_view bytes(static_cast<const char*>(scales.const_data_ptr()),
                               static_cast<size_t>(scales.numel()) * sizeof(float));
  const std::string tag = "float32*" + std::to_string(std::hash<std::string_view>{}(bytes));
  return derived_weight(qw, tag, [&] {
    std::vector<int64_t> along_dim0(qw.dim(), 1);
    along_dim0[0] = -1;
    return (qw.to(at::kFloat) * scales.reshape(along_dim0)).contiguous();
  });
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
