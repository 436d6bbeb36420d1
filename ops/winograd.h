// Winograd F(2x2, 3x3): 3x3 stride-1 float32 and bfloat16 convolutions with 2.25x fewer multiplications than
// the direct algorithm. oneDNN 3.2 has no Winograd kernel on these CPUs, and its direct fp32
// kernels already run at the cores' peak, so this is where a float32 CNN gains. Each 2x2 output
// tile is computed from a 4x4 input tile: transform the inputs (additions only), 16 GEMMs over
// the channels (oneDNN batched matmul against weights transformed once), transform back with
// bias, residual sum and relu applied on the way out. Errors stay at the level of the direct
// float32 convolution (about 2x its rounding: 1e-6 relative), unlike F(4x4, 3x3) (1e-5).
#pragma once

#include <ATen/ATen.h>

namespace jitfuse::winograd {

// Whether Winograd computes this convolution here, and faster than oneDNN's direct kernel:
// computed in float32 or (native) bfloat16, 2-D, 3x3 kernel, stride 1, dilation 1, one group,
// channel counts multiples of 16 and shapes where the measured gain is real.
bool serves(at::ScalarType compute_type, const at::Tensor& weight, at::IntArrayRef out_sizes,
            at::IntArrayRef stride, at::IntArrayRef dilation, int64_t groups);

// out = relu?(conv(input, weight) + bias + sum_alpha * out), NHWC. `input` is channels_last in
// the compute type (float32 or bfloat16; bfloat16 GEMMs accumulate in float32); `out` a
// channels_last tensor of the output's shape and the input's dtype, holding what the sum adds
// when sum_alpha != 0 (read before it is overwritten). `bias` may be undefined.
void conv2d_3x3(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& bias,
                at::IntArrayRef padding, float sum_alpha, bool relu, at::Tensor& out);

// Turns the algorithm on or off for calls from now on (JITFUSE_WINOGRAD=0 starts it off;
// JITFUSE_WINOGRAD=all uses it wherever it computes the convolution, faster or not).
void set_enabled(bool enabled);
bool is_enabled();

}  // namespace jitfuse::winograd
