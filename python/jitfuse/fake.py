"""Fake (meta) implementations of the jitfuse ops, for the tracers of torch.compile and torch.export.

A fake computes what the kernel returns without computing it: shape, dtype, memory layout, and
for the in-place ops the very tensor they write. These are Python because only Python tracers run
them (a C++ service runs the real kernels); several reuse ATen's own meta functions for their
shapes. tests/python/test_fake_ops.py holds each against the real kernel on every call of
test_op_errors' table that the kernel accepts.

FAKES lists them by family: op names, then the function that fakes them all.
"""
import torch
from torch._prims_common import suggest_memory_format

_CONV_TAILS = ("", "_relu", "_sigmoid", "_swish", "_silu", "_hardtanh", "_elu")
_SUM_TAILS = ("_sum", "_sum_relu")


def _channels_last(t):
    return {4: torch.channels_last, 5: torch.channels_last_3d}.get(t.dim())


def _format_of(t):
    """Tensor.suggest_memory_format() (what the kernels follow), on fake tensors too."""
    return suggest_memory_format(t)


def _empty(sizes, dtype, fmt=torch.contiguous_format):
    if fmt is not torch.contiguous_format and len(sizes) not in (4, 5):
        fmt = torch.contiguous_format
    return torch.empty(sizes, dtype=dtype, memory_format=fmt)


def _conv_sizes(x, weight, stride, padding, dilation):
    """The convolution's output sizes, as check_conv computes them (batched or not)."""
    spatial = weight.dim() - 2
    batched = x.dim() == spatial + 2
    pick = lambda v, i: v[i] if len(v) > 1 else v[0]  # noqa: E731  (one value for all dims)
    sizes = [x.shape[0]] if batched else []
    sizes.append(weight.shape[0])
    first = 2 if batched else 1
    for i in range(spatial):
        padded = x.shape[first + i] + 2 * pick(padding, i)
        kernel = pick(dilation, i) * (weight.shape[2 + i] - 1) + 1
        sizes.append((padded - kernel) // pick(stride, i) + 1)
    return sizes


def conv(x, weight, bias, stride, padding, dilation, groups, *tail):
    """conv2d / conv3d and their activation tails: the input's dtype and memory format."""
    return _empty(_conv_sizes(x, weight, stride, padding, dilation), x.dtype, _format_of(x))


def conv_sum(x, weight, bias, stride, padding, dilation, groups, other, alpha=1):
    """conv + other: the shape both broadcast to (an unbatched input with a batched other)."""
    sizes = torch.broadcast_shapes(_conv_sizes(x, weight, stride, padding, dilation), other.shape)
    return _empty(list(sizes), x.dtype, _format_of(x))


def conv_sum_in_place(x, weight, bias, stride, padding, dilation, groups, other, alpha=1):
    return other  # written into `other`, which the op returns


def writes_into(*args, **kwargs):
    return None  # the _into twins write `other` and return nothing


def linear(x, weight, bias, *tail):
    return _empty([*x.shape[:-1], weight.shape[0]], x.dtype)


def _int8_out(out_dtype):
    return torch.float32 if out_dtype is None else out_dtype


def qlinear(qx, x_scale, x_zero_point, qweight, weight_scales, bias, *rest):
    """The static int8 linears: the last three arguments are the output's scale, zero point and
    dtype (None: float32)."""
    return _empty([*qx.shape[:-1], qweight.shape[0]], _int8_out(rest[-1]))


def qlinear_dynamic(x, smooth, qweight, weight_scales, bias, *tail):
    return _empty([*x.shape[:-1], qweight.shape[0]], x.dtype)


def qlinear_dynamic_rows(x, smooth, qweight, weight_scales, bias, *tail):
    """The next linear's input rows: uint8 values, one float32 scale and zero point per row."""
    sizes = [*x.shape[:-1], qweight.shape[0]]
    rows = 1
    for s in sizes[:-1]:
        rows *= s
    return _empty(sizes, torch.uint8), _empty([rows], torch.float32), _empty([rows], torch.float32)


def qlinear_rows(values, scales, zero_points, qweight, weight_scales, bias, dtype):
    return _empty([*values.shape[:-1], qweight.shape[0]], dtype)


def _channels_last_empty(sizes, dtype):
    """channels_last; an unbatched result as the kernels make it: a batch of one, indexed."""
    if len(sizes) == 3:
        return torch.empty([1, *sizes], dtype=dtype, memory_format=torch.channels_last)[0]
    return torch.empty(sizes, dtype=dtype, memory_format=torch.channels_last)


def qconv(qx, x_scale, x_zero_point, qweight, weight_scales, bias, stride, padding, dilation, groups, *rest):
    """The int8 convs write channels_last (oneDNN's int8 kernels work on NHWC)."""
    sizes = _conv_sizes(qx, qweight, stride, padding, dilation)
    return _channels_last_empty(sizes, _int8_out(rest[-1]))


def qconv_sum(qx, x_scale, x_zero_point, qweight, weight_scales, bias, stride, padding, dilation, groups, other,
              *rest):
    sizes = torch.broadcast_shapes(_conv_sizes(qx, qweight, stride, padding, dilation), other.shape)
    return _channels_last_empty(list(sizes), _int8_out(rest[-1]))


def qconv_sum_in_place(qx, x_scale, x_zero_point, qweight, weight_scales, bias, stride, padding, dilation,
                       groups, other, *rest):
    return other


def qbmm(qa, a_scale, a_zero_point, qb, *rest):
    sizes = torch.broadcast_shapes(qa.shape[:-2], qb.shape[:-2])
    return _empty([*sizes, qa.shape[-2], qb.shape[-1]], _int8_out(rest[-1]))


def qmax_pool2d(qx, x_scale, x_zero_point, kernel_size, stride, padding, dilation, ceil_mode, out_scale,
                out_zero_point, out_dtype):
    sizes = torch.ops.aten.max_pool2d(torch.empty(qx.shape, dtype=torch.float32, device="meta"),
                                      kernel_size, stride, padding, dilation, ceil_mode).shape
    return _empty(list(sizes), out_dtype, torch.channels_last)


def max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode):
    return torch.ops.aten.max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode)


def adaptive_avg_pool2d(x, output_size):
    return torch.ops.aten.adaptive_avg_pool2d(x, output_size)


def add_layernorm(a, b, alpha, normalized_shape, weight, bias, eps):
    return _empty(list(torch.broadcast_shapes(a.shape, b.shape)), torch.promote_types(a.dtype, b.dtype))


def _scores_softmax(scaled, mask):
    """softmax(scaled + mask) in the dtype ATen's promotion gives, written contiguous."""
    out = scaled + mask
    return _empty(list(out.shape), out.dtype)


def div_add_softmax(scores, divisor, mask):
    return _scores_softmax(scores / divisor, mask)


def mul_add_softmax(scores, factor, mask):
    return _scores_softmax(scores * factor, mask)


def matmul(a, b):
    return torch.ops.aten.matmul(a, b).contiguous()


def view_transpose_contiguous_view(x, size, dim0, dim1, out_size):
    return x.view(size).transpose(dim0, dim1).contiguous().view(out_size)


def attention(q, k, v, mask, scale, divide, heads_last, low_precision=False):
    sizes = [*q.shape[:-1], v.shape[-1]]
    if heads_last:  # [batch, seq, heads, dim]: what the permute after attention would copy into
        sizes[1], sizes[2] = sizes[2], sizes[1]
    return _empty(sizes, q.dtype)


def to_channels_last(x):
    fmt = _channels_last(x)
    return x if fmt is None or x.is_contiguous(memory_format=fmt) else x.contiguous(memory_format=fmt)


def like_memory_format(x, like):
    if x.dim() != like.dim() or x.dim() < 4:
        return x
    return x.contiguous(memory_format=_format_of(like))


def quantize_per_tensor(x, scale, zero_point, dtype):
    return _empty(list(x.shape), dtype, _format_of(x))


def dequantize_per_tensor(q, scale, zero_point):
    return _empty(list(q.shape), torch.float32, _format_of(q))


FAKES = [
    ([f"conv{d}d{t}" for d in (2, 3) for t in _CONV_TAILS], conv),
    ([f"conv{d}d{t}" for d in (2, 3) for t in _SUM_TAILS], conv_sum),
    ([f"conv{d}d{t}_" for d in (2, 3) for t in _SUM_TAILS], conv_sum_in_place),
    (["linear", "linear_relu", "linear_gelu"], linear),
    (["qlinear", "qlinear_relu", "qlinear_gelu", "qlinear_sigmoid", "qlinear_sum"], qlinear),
    (["qlinear_dynamic", "qlinear_dynamic_relu", "qlinear_dynamic_gelu"], qlinear_dynamic),
    (["qlinear_dynamic_rows", "qlinear_dynamic_relu_rows", "qlinear_dynamic_gelu_rows"], qlinear_dynamic_rows),
    (["qlinear_rows"], qlinear_rows),
    (["qconv2d", "qconv2d_relu"], qconv),
    (["qconv2d_sum", "qconv2d_sum_relu"], qconv_sum),
    (["qconv2d_sum_", "qconv2d_sum_relu_"], qconv_sum_in_place),
    (["qbmm", "qbmm_div"], qbmm),
    (["qmax_pool2d"], qmax_pool2d),
    (["max_pool2d"], max_pool2d),
    (["adaptive_avg_pool2d"], adaptive_avg_pool2d),
    (["add_layernorm"], add_layernorm),
    (["div_add_softmax"], div_add_softmax),
    (["mul_add_softmax"], mul_add_softmax),
    (["matmul"], matmul),
    (["view_transpose_contiguous_view"], view_transpose_contiguous_view),
    (["attention"], attention),
    (["to_channels_last"], to_channels_last),
    (["like_memory_format"], like_memory_format),
    (["quantize_per_tensor"], quantize_per_tensor),
    (["dequantize_per_tensor"], dequantize_per_tensor),
]

def _private_fakes():
    """The FX front-end's private ops (no user calls them; test_op_traits checks them), by the
    table that names them (ops/traits.h, kWritesIntoTwins)."""
    return [([into.split("::")[1] for _, into in torch.ops.jitfuse._writes_into_twins()], writes_into)]


def faked_ops():
    return sorted(name for names, _ in FAKES for name in names)


def register():
    for names, fake in FAKES + _private_fakes():
        for name in names:
            torch.library.register_fake(f"jitfuse::{name}", fake)
