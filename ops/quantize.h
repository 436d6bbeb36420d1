// int8 data as plain tensors: uint8/int8 values with their scale and zero point beside them (the
// quantized dtypes are deprecated since torch 2.13). The conversions every int8 op and the
// reference graphs of jitfuse.quantization use; their schemas are in quantize.cpp.
#pragma once

#include <ATen/ATen.h>

namespace jitfuse::quantize {

// How an int8 activation is stored: uint8 (asymmetric) or int8.
bool is_int8_type(at::ScalarType t);
// The representable range of `t` (uint8: [0, 255], int8: [-128, 127]).
std::pair<int64_t, int64_t> int8_range(at::ScalarType t);
// The checks of int8 quantization parameters: `dtype` uint8 or int8, `scale` positive and finite,
// `zero_point` in dtype's range. `what` ("output ", "activation " or "") prefixes the parameter
// names in the messages.
void check_parameters(const char* op, const char* what, double scale, int64_t zero_point, at::ScalarType dtype);

// q = clamp(round_half_even(x / scale) + zero_point) in `dtype` (uint8 or int8), one pass.
at::Tensor per_tensor(const at::Tensor& x, double scale, int64_t zero_point, at::ScalarType dtype);
// (q - zero_point) * scale as float32, one pass.
at::Tensor dequantize(const at::Tensor& q, double scale, int64_t zero_point);

// Rows of a float32/bfloat16 `x` (..., K), each multiplied by `inv_smooth` (the reciprocals of K
// smoothing factors, float32, optional) and quantized to uint8 with its own scale and zero point
// (asymmetric: the row's minimum and maximum, zero included, over 255 steps).
struct Rows {
  at::Tensor values;       // uint8 (..., K) contiguous
  at::Tensor scales;       // float32 (rows)
  at::Tensor zero_points;  // float32 (rows), integral values in [0, 255]
};
Rows per_row(const at::Tensor& x, const at::Tensor& inv_smooth);
// For kernels that quantize rows while they are still in cache, right after making them: room
// for per_row's result of an x of `sizes`, and per_row on rows [begin, end) of a contiguous
// float32 (rows, k) x into it (the same values per_row gives, bit for bit).
Rows empty_rows(at::IntArrayRef sizes, const at::TensorOptions& options);
void per_row_range(const float* x, int64_t k, const float* inv_smooth, int64_t begin, int64_t end, Rows& out);

}  // namespace jitfuse::quantize
