"""Error inputs for every fused op, called directly through torch.ops.jitfuse: each case either
computes what ATen computes for the unfused ops, or raises a clear RuntimeError (jitfuse's checks
name the op and the problem; a few come from ATen ops inside, with ATen's message). Never a
crash, never a wrong answer.

TABLE below lists op x case -> expected outcome ("right" or "error"); every jitfuse op appears.
"""
import pytest
import torch
import torch.nn.functional as F

import jitfuse  # noqa: F401  (registers torch.ops.jitfuse)
from harness import max_rel_err

ops = torch.ops.jitfuse
CASES = ["wrong dtype", "wrong rank", "mismatched channels", "empty batch", "zero-size spatial",
         "non-contiguous", "channels_last", "aliased output", "overlapping output", "requires grad"]


def noncontiguous(t):
    """Same values, strides of a transposed copy."""
    return t.transpose(-1, -2).contiguous().transpose(-1, -2)


def transform(x, case):
    """The primary input as the case wants it (None: the case does not change it)."""
    if case == "wrong dtype":
        return x.to(torch.int32) if not x.is_quantized else x.dequantize()
    if case == "wrong rank":
        return x[0]
    if case == "mismatched channels":
        return x[:, :-1] if x.dim() > 2 else x[..., :-1]
    if case == "empty batch":
        return x[:0]
    if case == "zero-size spatial":
        return x[..., :0]
    if case == "non-contiguous":
        return noncontiguous(x) if not x.is_quantized else x.transpose(-1, -2).contiguous().transpose(-1, -2)
    if case == "channels_last":
        fmt = {4: torch.channels_last, 5: torch.channels_last_3d}.get(x.dim())
        return x.contiguous(memory_format=fmt) if fmt else None
    if case == "requires grad":
        return x.clone().requires_grad_() if x.is_floating_point() else None
    return x


# ---- op families: (fused call, reference) for a case ------------------------------------------

CONV_TAILS = {
    "": lambda y: y, "_relu": F.relu, "_sigmoid": torch.sigmoid, "_swish": lambda y: y * torch.sigmoid(y),
    "_silu": F.silu, "_hardtanh": lambda y: F.hardtanh(y, -8.0, 8.0), "_elu": lambda y: F.elu(y, 0.5),
}
# hardtanh bounds near the conv outputs' spread: errors scale with the unclipped values, the
# tolerance with the largest output
TAIL_ARGS = {"_hardtanh": (-8.0, 8.0), "_elu": (0.5,)}


def conv_case(name, case):
    dim = 2 if name.startswith("conv2d") else 3
    tail = name[len("conv2d"):]
    conv = F.conv2d if dim == 2 else F.conv3d
    x = torch.randn([2, 8] + [5] * dim)
    w, b = torch.randn([8, 8] + [3] * dim), torch.randn(8)
    geom = ([1] * dim, [1] * dim, [1] * dim, 1)
    t = transform(x, case)
    if t is None:
        return None
    x = t
    if tail in CONV_TAILS:
        if case in ("aliased output", "overlapping output"):
            return None  # one operand: nothing to alias
        return (lambda: getattr(ops, name)(x, w, b, *geom, *TAIL_ARGS.get(tail, ())),
                lambda: CONV_TAILS[tail](conv(x, w, b, 1, 1)))
    # sums: other is a fresh tensor, the input itself (aliased) or an expanded one (overlapping)
    inplace, relu = tail.endswith("_"), "relu" in tail
    out_shape = [x.shape[0], 8] + list(x.shape[2:])
    if case == "aliased output":
        other = x
    elif case == "wrong rank":
        other = torch.randn([2, 8] + [5] * dim)
    elif case == "overlapping output":
        other = torch.randn([1, 8] + [1] * dim).expand(out_shape)
    else:
        other = torch.randn(out_shape)
    ref_other = other.detach().clone()

    def reference():
        y = conv(x.detach() if case != "aliased output" else ref_other, w, b, 1, 1) + ref_other
        return F.relu(y) if relu else y

    def fused():
        target = other if not inplace or case in ("aliased output", "overlapping output") else other.clone()
        out = getattr(ops, name)(x, w, b, *geom, target, 1)
        if inplace:
            assert out.data_ptr() == target.data_ptr(), "an in-place op returns its other operand"
        return out
    return fused, reference


def linear_case(name, case):
    x, w, b = torch.randn(3, 4, 16), torch.randn(12, 16), torch.randn(12)
    x = x[..., :-1] if case == "mismatched channels" else transform(x, case)
    if x is None or case in ("channels_last", "aliased output", "overlapping output"):
        return None
    tail = {"linear": lambda y: y, "linear_relu": F.relu, "linear_gelu": F.gelu}[name]
    return lambda: getattr(ops, name)(x, w, b), lambda: tail(F.linear(x, w, b))


def add_layernorm_case(name, case):
    a, b = torch.randn(2, 5, 16), torch.randn(2, 5, 16)
    w, bias = torch.randn(16), torch.randn(16)
    if case in ("empty batch", "zero-size spatial"):
        b = transform(b, case)
    a = transform(a, case)
    if a is None or case == "channels_last":
        return None
    if case == "aliased output":
        b = a
    if case == "overlapping output":
        b = torch.randn(1, 1, 16).expand(2, 5, 16)
    return (lambda: ops.add_layernorm(a, b, 1, [16], w, bias, 1e-5),
            lambda: F.layer_norm(a + b, [16], w, bias, 1e-5))


def softmax_case(name, case):
    scores, mask = torch.randn(2, 3, 5, 5), torch.zeros(2, 1, 1, 5)
    mask[..., 3:] = -10000.0
    if case == "empty batch":
        mask = mask[:0]
    scores = transform(scores, case)
    if scores is None:
        return None
    if case == "aliased output":
        mask = scores
    if case == "overlapping output":
        mask = torch.zeros(1, 1, 1, 1).expand(2, 1, 5, 5)
    scale = (lambda s: s / 4.0) if name == "div_add_softmax" else (lambda s: s * 0.25)
    factor = 4.0 if name == "div_add_softmax" else 0.25
    return (lambda: getattr(ops, name)(scores, factor, mask),
            lambda: torch.softmax(scale(scores) + mask, -1))


def matmul_case(name, case):
    a, b = torch.randn(2, 3, 4, 6).bfloat16(), torch.randn(2, 3, 6, 5).bfloat16()
    a = transform(a, case)
    if a is None or case in ("aliased output", "overlapping output"):
        return None
    return lambda: ops.matmul(a, b), lambda: torch.matmul(a.float(), b.float()).bfloat16()


def vtcv_case(name, case):
    x = torch.randn(2, 5, 12)
    x = transform(x, case)
    if x is None or case in ("channels_last", "aliased output", "overlapping output"):
        return None
    b, n = x.shape[0], x.shape[1] if x.dim() > 1 else 0
    size, out = [b, n, 3, 4], [b, 3 * n, 4] if x.dim() == 3 else [0]
    return (lambda: ops.view_transpose_contiguous_view(x, size, 1, 2, out),
            lambda: x.view(size).transpose(1, 2).contiguous().view(out))


def like_memory_format_case(name, case):
    x, like = torch.randn(2, 8, 5, 5).contiguous(memory_format=torch.channels_last), torch.randn(2, 8, 5, 5)
    x = transform(x, case)
    if x is None or case in ("aliased output", "overlapping output"):
        return None
    return lambda: ops.like_memory_format(x, like), lambda: x.contiguous()


def attention_case(name, case):
    q, k, v = torch.randn(2, 3, 5, 4), torch.randn(2, 3, 6, 4), torch.randn(2, 3, 6, 4)
    mask = torch.zeros(2, 1, 1, 6)
    mask[..., 4:] = -10000.0
    if case == "empty batch":
        k, v, mask = k[:0], v[:0], mask[:0]
    if case == "mismatched channels":
        q = q[..., :-1]  # q and k do not multiply
    elif case == "zero-size spatial":
        q, k, v = q[..., :0], k[..., :0], v[..., :0]
    elif case in ("channels_last", "non-contiguous", "wrong dtype", "wrong rank", "empty batch", "requires grad"):
        q = transform(q, case)
    if q is None or case == "overlapping output":
        return None
    if case == "aliased output":
        k = v  # one tensor read twice
    return (lambda: ops.attention(q, k, v, mask, 2.0, True, False),
            lambda: torch.softmax(q @ k.transpose(-1, -2) / 2.0 + mask, -1) @ v)


def to_channels_last_case(name, case):
    x = transform(torch.randn(2, 8, 5, 5), case)
    if x is None or case in ("aliased output", "overlapping output"):
        return None
    fmt = torch.channels_last if x.dim() == 4 else torch.contiguous_format
    return lambda: ops.to_channels_last(x), lambda: x.contiguous(memory_format=fmt)


def pool_case(name, case):
    x = transform(torch.randn(2, 8, 6, 6), case)
    if x is None or case in ("aliased output", "overlapping output"):
        return None
    if name == "max_pool2d":
        return (lambda: ops.max_pool2d(x, [3, 3], [2, 2], [1, 1], [1, 1], True),
                lambda: F.max_pool2d(x, 3, 2, 1, 1, True))
    return lambda: ops.adaptive_avg_pool2d(x, [1, 1]), lambda: F.adaptive_avg_pool2d(x, 1)


jq = torch.ops.jitfuse
S, Z = 0.05, 128  # an int8 activation's scale and zero point


def u8(t, scale=S, zp=Z):
    return jq.quantize_per_tensor(t, scale, zp, torch.uint8)


def dq(t, scale=S, zp=Z):
    """What the op would read: the float value of uint8 `t` (plain float tensors pass through)."""
    return jq.dequantize_per_tensor(t, scale, zp) if t.dtype == torch.uint8 else t


def requant(t):
    return u8(t, 0.1, 100)


def qw(*shape):
    w = torch.randn(shape) * 0.1
    s = w.abs().amax(dim=tuple(range(1, w.dim()))) / 63
    return torch.round(w / s.view([-1] + [1] * (w.dim() - 1))).to(torch.int8), s


def float_weight(values, scales):
    return values.float() * scales.view([-1] + [1] * (values.dim() - 1))


def int8_transform(x, case):
    """transform() for a uint8 activation: its wrong dtype is float32."""
    if case == "wrong dtype":
        return dq(x)
    if case == "requires grad":
        return None
    return transform(x, case)


def qconv_case(name, case):
    x, (w, s), b = u8(torch.randn(2, 8, 5, 5)), qw(8, 8, 3, 3), torch.randn(8)
    x = int8_transform(x, case)
    if x is None:
        return None
    out = (0.1, 100, torch.uint8)
    relu = F.relu if "relu" in name else (lambda y: y)
    geom = ([1, 1], [1, 1], [1, 1], 1)
    if "sum" not in name:
        if case in ("aliased output", "overlapping output"):
            return None  # one operand: nothing to alias
        return (lambda: getattr(ops, name)(x, S, Z, w, s, b, *geom, *out),
                lambda: requant(relu(F.conv2d(dq(x), float_weight(w, s), b, 1, 1))))
    out_shape = [x.shape[0], 8] + list(x.shape[2:]) if case != "wrong rank" else [2, 8, 5, 5]
    if not name.endswith("_"):  # a float32 other
        other = {"aliased output": dq(x), "overlapping output": torch.randn(1, 8, 1, 1).expand(out_shape)}.get(
            case, torch.randn(out_shape))
        return (lambda: getattr(ops, name)(x, S, Z, w, s, b, *geom, other, None, None, *out),
                lambda: requant(relu(F.conv2d(dq(x), float_weight(w, s), b, 1, 1) + other)))
    # in place: a uint8 other (its own scale and zero point) that receives the result
    # (channels_last, as the fused graph makes them: the kernel then writes into other directly)
    other_q, cl = (0.08, 120), torch.channels_last
    if case == "aliased output":  # the input itself: the kernel must not write what it reads
        x = x.contiguous(memory_format=cl)
        other, other_q = x, (S, Z)
    elif case == "overlapping output":
        other = u8(torch.randn(1, 8, 1, 1), *other_q).expand(out_shape)
    else:
        other = u8(torch.randn(out_shape), *other_q).contiguous(memory_format=cl)
    ref_x, ref_other = dq(x).clone(), dq(other, *other_q).clone()

    def fused():
        target = other if case in ("aliased output", "overlapping output") else other.clone()
        result = getattr(ops, name)(x, S, Z, w, s, b, *geom, target, *other_q, *out)
        assert result.data_ptr() == target.data_ptr(), "an in-place op returns its other operand"
        return result
    return fused, lambda: requant(relu(F.conv2d(ref_x, float_weight(w, s), b, 1, 1) + ref_other))


QLINEAR_TAILS = {"qlinear": lambda y: y, "qlinear_relu": F.relu, "qlinear_sigmoid": torch.sigmoid,
                 "qlinear_gelu": F.gelu, "qlinear_sum": None}


def qlinear_case(name, case):
    x, (w, s), b = u8(torch.randn(3, 4, 16)), qw(12, 16), torch.randn(12)
    x = x[..., :-1] if case == "mismatched channels" else int8_transform(x, case)
    if x is None or case in ("channels_last", "aliased output"):
        return None
    if name != "qlinear_sum" and case == "overlapping output":
        return None
    out = (0.1, 100, torch.uint8)
    extra = ("none",) if name == "qlinear_gelu" else ()
    if name != "qlinear_sum":
        return (lambda: getattr(ops, name)(x, S, Z, w, s, b, *extra, *out),
                lambda: requant(QLINEAR_TAILS[name](F.linear(dq(x), float_weight(w, s), b))))
    shape = list(x.shape[:-1]) + [12]
    other = torch.randn(1, 12).expand(shape) if case == "overlapping output" else torch.randn(shape)
    return (lambda: ops.qlinear_sum(x, S, Z, w, s, b, other, None, None, *out),
            lambda: requant(F.linear(dq(x), float_weight(w, s), b) + other))


DYNAMIC_TAILS = {"qlinear_dynamic": lambda y: y, "qlinear_dynamic_relu": F.relu, "qlinear_dynamic_gelu": F.gelu}


def qlinear_dynamic_case(name, case):
    """Float in, float out: compared with the same row quantization done by hand."""
    base = name[:-len("_rows")] if name.endswith("_rows") else name
    x, (w, s), b = torch.randn(3, 4, 16), qw(12, 16), torch.randn(12)
    x = x[..., :-1] if case == "mismatched channels" else transform(x, case)
    if x is None or case in ("channels_last", "aliased output", "overlapping output"):
        return None

    def reference():
        F.linear(x, float_weight(w, s), b)  # ATen's error for shapes that do not multiply
        if x.numel() == 0:
            return DYNAMIC_TAILS[base](F.linear(x, float_weight(w, s), b))
        lo, hi = x.amin(-1, keepdim=True).clamp(max=0), x.amax(-1, keepdim=True).clamp(min=0)
        scale = ((hi - lo) / 255).where(hi > lo, torch.ones_like(hi))
        zp = (-lo / scale).round().clamp(0, 255)
        xq = ((x / scale).round() + zp).clamp(0, 255)
        return DYNAMIC_TAILS[base](F.linear((xq - zp) * scale, float_weight(w, s), b))
    if not name.endswith("_rows"):
        return lambda: getattr(ops, name)(x, None, w, s, b), reference
    # The _rows forms with qlinear_rows after them: the pair of dynamic linears they stand for.
    extra = ("none",) if "gelu" in name else ()
    (w2, s2), dtype = qw(5, 12), x.dtype if x.is_floating_point() else torch.float32

    def pair():
        reference()  # ATen's errors
        return ops.qlinear_dynamic(getattr(ops, base)(x, None, w, s, b, *extra), None, w2, s2, None)
    return lambda: ops.qlinear_rows(*getattr(ops, name)(x, None, w, s, b, *extra, None), w2, s2, None, dtype), pair


def qlinear_rows_case(name, case):
    """Rows quantized by _quantize_rows, multiplied: compared with their dequantized product."""
    x, (w, s), b = torch.randn(3, 4, 16), qw(12, 16), torch.randn(12)
    if case in ("channels_last", "aliased output", "overlapping output", "requires grad"):
        return None
    if case == "mismatched channels":
        x = x[..., :-1]
    elif case in ("empty batch", "zero-size spatial"):
        x = transform(x, case)
    values, scales, zero_points = jq._quantize_rows(x, None, "generic")
    if case == "wrong dtype":
        values = values.to(torch.int32)
    elif case == "wrong rank":
        values = values[0]  # fewer rows than scales
    elif case == "non-contiguous":
        values = noncontiguous(values)

    def reference():
        if values.dtype != torch.uint8:
            raise RuntimeError("not uint8 rows")
        lead = list(values.shape[:-1]) + [1]
        return F.linear((values.float() - zero_points.view(lead)) * scales.view(lead), float_weight(w, s), b)
    return lambda: ops.qlinear_rows(values, scales, zero_points, w, s, b, torch.float32), reference


def qbmm_case(name, case):
    a, b = u8(torch.randn(2, 4, 6)), u8(torch.randn(2, 6, 5))
    a = int8_transform(a, case)
    if a is None or case in ("channels_last", "overlapping output"):
        return None
    if case == "aliased output":
        b = a.transpose(1, 2)
    div = name == "qbmm_div"
    args = (2.0,) if div else ()
    return (lambda: getattr(ops, name)(a, S, Z, b, S, Z, *args, 0.1, 100, torch.uint8),
            lambda: requant(torch.matmul(dq(a), dq(b)) / (2.0 if div else 1.0)))


def qpool_case(name, case):
    x = int8_transform(u8(torch.randn(2, 8, 6, 6)), case)
    if x is None or case in ("aliased output", "overlapping output"):
        return None
    return (lambda: ops.qmax_pool2d(x, S, Z, [2, 2], [2, 2], [0, 0], [1, 1], False, 0.05, 128, torch.uint8),
            lambda: u8(F.max_pool2d(dq(x), 2)))


def quantize_case(name, case):
    x = transform(torch.randn(2, 8, 5, 5), case)
    if x is None or case in ("aliased output", "overlapping output"):
        return None
    if name == "quantize_per_tensor":
        def reference():
            if not x.is_floating_point():
                raise RuntimeError("ATen's quantize_per_tensor takes float input only")
            return ((x.float() / S).round() + Z).clamp(0, 255).to(torch.uint8)
        return lambda: jq.quantize_per_tensor(x, S, Z, torch.uint8), reference
    q8 = u8(x) if x.is_floating_point() else x

    def reference():
        if q8.dtype != torch.uint8:
            raise RuntimeError("not an int8 tensor")
        return (q8.float() - Z) * S
    return lambda: jq.dequantize_per_tensor(q8, S, Z), reference


def family(name):
    if name.startswith(("conv2d", "conv3d")):
        return conv_case
    if name.startswith("qconv2d"):
        return qconv_case
    if name.startswith("qlinear_dynamic"):
        return qlinear_dynamic_case
    if name == "qlinear_rows":
        return qlinear_rows_case
    if name.startswith("qlinear"):
        return qlinear_case
    if name.startswith("qbmm"):
        return qbmm_case
    return {"linear": linear_case, "linear_relu": linear_case, "linear_gelu": linear_case,
            "add_layernorm": add_layernorm_case, "div_add_softmax": softmax_case, "mul_add_softmax": softmax_case,
            "matmul": matmul_case, "view_transpose_contiguous_view": vtcv_case,
            "like_memory_format": like_memory_format_case, "qmax_pool2d": qpool_case,
            "to_channels_last": to_channels_last_case, "max_pool2d": pool_case, "attention": attention_case,
            "adaptive_avg_pool2d": pool_case, "quantize_per_tensor": quantize_case,
            "dequantize_per_tensor": quantize_case}[name]


# ---- the table -------------------------------------------------------------------------------


def all_ops():
    return sorted(s.name.split("::")[1] for s in torch._C._jit_get_all_schemas()
                  if s.name.startswith("jitfuse::") and not s.name.startswith("jitfuse::_"))


def compare(got, ref):
    if ref.dtype in (torch.uint8, torch.int8):
        assert got.dtype == ref.dtype and got.shape == ref.shape, (got.dtype, ref.dtype, got.shape, ref.shape)
        if ref.numel():
            assert (got.int() - ref.int()).abs().max().item() <= 1
        return
    assert got.shape == ref.shape and got.dtype == ref.dtype, (got.shape, ref.shape, got.dtype, ref.dtype)
    got, ref = got.detach(), ref.detach()
    assert torch.equal(got.isnan(), ref.isnan()), "NaN where ATen has none, or none where it has"
    got, ref = got[~ref.isnan()], ref[~ref.isnan()]  # ATen's mean of nothing is NaN: so is ours
    if ref.numel():
        assert max_rel_err(got, ref) <= (2e-2 if ref.dtype == torch.bfloat16 else 1e-5)


def outcome(op, case):
    """What the op does with the case: "right" (returned what ATen returns), "error" (raised a
    clear RuntimeError) or "n/a". Returning where ATen refuses fails the test."""
    torch.manual_seed(0)
    made = family(op)(op, case)
    if made is None:
        return "n/a"
    fused, reference = made
    with torch.no_grad() if case != "requires grad" else torch.enable_grad():
        try:
            ref = reference()
        except RuntimeError:
            ref = None
        try:
            got = fused()
        except RuntimeError as e:
            message = str(e)
            assert message and "INTERNAL ASSERT" not in message, message[:200]
            return "error"
    assert ref is not None, "the fused op returned where ATen raises"
    compare(got, ref)
    return "right"


R, E, N = "right", "error", "n/a"  # noqa: E741
# op: outcome per case, in the order of CASES:
#   wrong dtype, wrong rank, mismatched channels, empty batch, zero-size spatial,
#   non-contiguous, channels_last, aliased output, overlapping output, requires grad
TABLE = {
    "adaptive_avg_pool2d":            [E, R, R, R, R, R, R, N, N, R],
    "add_layernorm":                  [R, R, E, R, E, R, N, R, R, R],
    "attention":                      [E, E, E, R, R, R, R, R, N, R],
    "conv2d":                         [E, R, E, R, E, R, R, N, N, R],
    "conv2d_elu":                     [E, R, E, R, E, R, R, N, N, R],
    "conv2d_hardtanh":                [E, R, E, R, E, R, R, N, N, R],
    "conv2d_relu":                    [E, R, E, R, E, R, R, N, N, R],
    "conv2d_sigmoid":                 [E, R, E, R, E, R, R, N, N, R],
    "conv2d_silu":                    [E, R, E, R, E, R, R, N, N, R],
    "conv2d_sum":                     [E, R, E, R, E, R, R, R, R, R],
    "conv2d_sum_":                    [E, E, E, R, E, R, R, R, E, R],
    "conv2d_sum_relu":                [E, R, E, R, E, R, R, R, R, R],
    "conv2d_sum_relu_":               [E, E, E, R, E, R, R, R, E, R],
    "conv2d_swish":                   [E, R, E, R, E, R, R, N, N, R],
    "conv3d":                         [E, R, E, R, E, R, R, N, N, R],
    "conv3d_elu":                     [E, R, E, R, E, R, R, N, N, R],
    "conv3d_hardtanh":                [E, R, E, R, E, R, R, N, N, R],
    "conv3d_relu":                    [E, R, E, R, E, R, R, N, N, R],
    "conv3d_sigmoid":                 [E, R, E, R, E, R, R, N, N, R],
    "conv3d_silu":                    [E, R, E, R, E, R, R, N, N, R],
    "conv3d_sum":                     [E, R, E, R, E, R, R, R, R, R],
    "conv3d_sum_":                    [E, E, E, R, E, R, R, R, E, R],
    "conv3d_sum_relu":                [E, R, E, R, E, R, R, R, R, R],
    "conv3d_sum_relu_":               [E, E, E, R, E, R, R, R, E, R],
    "conv3d_swish":                   [E, R, E, R, E, R, R, N, N, R],
    "dequantize_per_tensor":          [E, R, R, R, R, R, R, N, N, R],
    "div_add_softmax":                [R, R, R, R, E, R, R, R, R, R],
    "like_memory_format":             [R, R, R, R, R, R, R, N, N, R],
    "linear":                         [E, R, E, R, E, R, N, N, N, R],
    "linear_gelu":                    [E, R, E, R, E, R, N, N, N, R],
    "linear_relu":                    [E, R, E, R, E, R, N, N, N, R],
    "matmul":                         [E, R, E, E, E, R, R, N, N, R],
    "max_pool2d":                     [R, R, R, R, E, R, R, N, N, R],
    "mul_add_softmax":                [R, R, R, R, E, R, R, R, R, R],
    "qbmm":                           [E, E, R, E, E, R, N, R, N, N],
    "qbmm_div":                       [E, E, R, E, E, R, N, R, N, N],
    "qconv2d":                        [E, R, E, R, E, R, R, N, N, N],
    "qconv2d_relu":                   [E, R, E, R, E, R, R, N, N, N],
    "qconv2d_sum":                    [E, R, E, R, E, R, R, R, R, N],
    "qconv2d_sum_":                   [E, E, E, R, E, R, R, R, E, N],
    "qconv2d_sum_relu":               [E, R, E, R, E, R, R, R, R, N],
    "qconv2d_sum_relu_":              [E, E, E, R, E, R, R, R, E, N],
    "qlinear":                        [E, R, E, R, E, R, N, N, N, N],
    "qlinear_dynamic":                [E, R, E, R, E, R, N, N, N, R],
    "qlinear_dynamic_gelu":           [E, R, E, R, E, R, N, N, N, R],
    "qlinear_dynamic_relu":           [E, R, E, R, E, R, N, N, N, R],
    "qlinear_dynamic_gelu_rows":      [E, R, E, R, E, R, N, N, N, R],
    "qlinear_dynamic_relu_rows":      [E, R, E, R, E, R, N, N, N, R],
    "qlinear_dynamic_rows":           [E, R, E, R, E, R, N, N, N, R],
    "qlinear_gelu":                   [E, R, E, R, E, R, N, N, N, N],
    "qlinear_relu":                   [E, R, E, R, E, R, N, N, N, N],
    "qlinear_rows":                   [E, E, E, R, E, R, N, N, N, N],
    "qlinear_sigmoid":                [E, R, E, R, E, R, N, N, N, N],
    "qlinear_sum":                    [E, R, E, R, E, R, N, N, R, N],
    "qmax_pool2d":                    [E, E, R, R, E, R, R, N, N, N],
    "quantize_per_tensor":            [E, R, R, R, R, R, R, N, N, R],
    "to_channels_last":               [R, R, R, R, R, R, R, N, N, R],
    "view_transpose_contiguous_view": [R, E, R, R, E, R, N, N, N, R],
}


def test_every_op_is_in_the_table():
    assert set(TABLE) == set(all_ops())
    assert len(TABLE) >= 40


@pytest.mark.parametrize("op, case", [(o, c) for o in sorted(TABLE) for c in CASES],
                         ids=[f"{o}-{c}" for o in sorted(TABLE) for c in CASES])
def test_error_inputs(op, case):
    assert outcome(op, case) == TABLE[op][CASES.index(case)]
