"""The seed's 23 int8 chains, one reference int8 model each (jitfuse's quantize_per_tensor /
dequantize_per_tensor on plain uint8 tensors and aten::dequantize(int8 weight) * scales written
out, as quantization.convert emits them): the chain becomes its jitfuse::q* op, the nodes it
replaced are gone, and the numbers match the same graph run unfused.

Tolerances: float32 out within 1e-5 relative (same int8 operands, float accumulation order);
int8 out within one quantization step of the output."""
import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import jitfuse
from harness import max_rel_err, node_kinds

OUT_SCALE, OUT_ZP = 0.1, 100
jq = torch.ops.jitfuse


def q(x, scale=0.05, zero_point=128):
    """x through uint8 and back, as the reference graph spells it."""
    return jq.dequantize_per_tensor(jq.quantize_per_tensor(x, scale, zero_point, torch.uint8), scale, zero_point)


def qweight(*shape, bits=7):
    """An int8 weight (one scale per output channel) as convert stores it: values and scales."""
    torch.manual_seed(1)
    w = torch.randn(shape) * 0.1
    qmax = 2 ** (bits - 1) - 1
    scales = w.abs().amax(dim=tuple(range(1, w.dim()))) / qmax
    values = torch.round(w / scales.view([-1] + [1] * (w.dim() - 1))).to(torch.int8)
    return values, scales.view([-1] + [1] * (w.dim() - 1))


def dequant_weight(values, scales):
    return torch.dequantize(values) * scales


class Chain(nn.Module):
    """x -> quantize -> dequantize -> body -> [quantize -> dequantize]."""

    def __init__(self, body, quant_out):
        super().__init__()
        self.body, self.quant_out = body, quant_out
        self.w4, self.s4 = qweight(8, 8, 3, 3)
        self.w2, self.s2 = qweight(16, 16)
        self.b4, self.b2 = torch.randn(8), torch.randn(16)

    def conv(self, x):
        return F.conv2d(x, dequant_weight(self.w4, self.s4), self.b4, padding=1)

    def linear(self, x):
        return F.linear(x, dequant_weight(self.w2, self.s2), self.b2)

    def forward(self, x, other):
        y = self.body(self, q(x), other)
        return q(y, OUT_SCALE, OUT_ZP) if self.quant_out else y


def deq(t):
    return q(t, 0.04, 120)


CONV_IN = lambda: (torch.randn(2, 8, 6, 6), torch.randn(2, 8, 6, 6))  # noqa: E731
LINEAR_IN = lambda: (torch.randn(2, 5, 16), torch.randn(2, 5, 16))  # noqa: E731
BMM_IN = lambda: (torch.randn(2, 5, 16), torch.randn(2, 16, 7))  # noqa: E731

# row name, body, inputs, fused op, node kinds the chain must lose
ROWS = [
    ("dequant_conv",               lambda m, x, o: m.conv(x),                          CONV_IN,   "qconv2d",          {"aten::_convolution"}),
    ("dequant_linear",             lambda m, x, o: m.linear(x),                        LINEAR_IN, "qlinear",          {"aten::linear"}),
    ("dequant_conv_relu",          lambda m, x, o: F.relu(m.conv(x)),                  CONV_IN,   "qconv2d_relu",     {"aten::_convolution", "aten::relu"}),
    ("dequant_conv_sum",           lambda m, x, o: m.conv(x) + o,                      CONV_IN,   "qconv2d_sum",      {"aten::_convolution", "aten::add"}),
    ("dequant_conv_sum_relu",      lambda m, x, o: F.relu(m.conv(x) + o),              CONV_IN,   "qconv2d_sum_relu", {"aten::_convolution", "aten::add", "aten::relu"}),
    ("dequant_linear_relu",        lambda m, x, o: F.relu(m.linear(x)),                LINEAR_IN, "qlinear_relu",     {"aten::linear", "aten::relu"}),
    ("dequant_linear_gelu",        lambda m, x, o: F.gelu(m.linear(x)),                LINEAR_IN, "qlinear_gelu",     {"aten::linear", "aten::gelu"}),
    ("dequant_linear_sigmoid",     lambda m, x, o: torch.sigmoid(m.linear(x)),         LINEAR_IN, "qlinear_sigmoid",  {"aten::linear", "aten::sigmoid"}),
    ("dequant_linear_sum",         lambda m, x, o: m.linear(x) + o,                    LINEAR_IN, "qlinear_sum",      {"aten::linear", "aten::add"}),
    ("dequant_bmm",                lambda m, x, o: torch.bmm(x, deq(o)),               BMM_IN,    "qbmm",             {"aten::bmm"}),
    ("dequant_bmm_div",            lambda m, x, o: torch.bmm(x, deq(o)) / 8.0,         BMM_IN,    "qbmm_div",         {"aten::bmm", "aten::div"}),
    ("dequant_conv_quant",         lambda m, x, o: m.conv(x),                          CONV_IN,   "qconv2d",          {"aten::_convolution"}),
    ("dequant_linear_quant",       lambda m, x, o: m.linear(x),                        LINEAR_IN, "qlinear",          {"aten::linear"}),
    ("dequant_conv_relu_quant",    lambda m, x, o: F.relu(m.conv(x)),                  CONV_IN,   "qconv2d_relu",     {"aten::_convolution", "aten::relu"}),
    ("dequant_conv_sum_dequant",   lambda m, x, o: m.conv(x) + deq(o),                 CONV_IN,   "qconv2d_sum",      {"aten::_convolution", "aten::add"}),
    ("dequant_conv_sum_relu_quant", lambda m, x, o: F.relu(m.conv(x) + o),             CONV_IN,   "qconv2d_sum_relu", {"aten::_convolution", "aten::add", "aten::relu"}),
    ("dequant_linear_relu_quant",  lambda m, x, o: F.relu(m.linear(x)),                LINEAR_IN, "qlinear_relu",     {"aten::linear", "aten::relu"}),
    ("dequant_linear_gelu_quant",  lambda m, x, o: F.gelu(m.linear(x)),                LINEAR_IN, "qlinear_gelu",     {"aten::linear", "aten::gelu"}),
    ("dequant_linear_sigmoid_quant", lambda m, x, o: torch.sigmoid(m.linear(x)),       LINEAR_IN, "qlinear_sigmoid",  {"aten::linear", "aten::sigmoid"}),
    ("dequant_linear_sum_quant",   lambda m, x, o: m.linear(x) + o,                    LINEAR_IN, "qlinear_sum",      {"aten::linear", "aten::add"}),
    ("dequant_bmm_quant",          lambda m, x, o: torch.bmm(x, deq(o)),               BMM_IN,    "qbmm",             {"aten::bmm"}),
    ("dequant_bmm_div_quant",      lambda m, x, o: torch.bmm(x, deq(o)) / 8.0,         BMM_IN,    "qbmm_div",         {"aten::bmm", "aten::div"}),
    ("dequant_max_pool2d_quant",   lambda m, x, o: F.max_pool2d(x, 2),                 CONV_IN,   "qmax_pool2d",      {"aten::max_pool2d"}),
    # beyond the seed's list: a float operand added, int8 out
    ("dequant_conv_sum_quant",     lambda m, x, o: m.conv(x) + o,                      CONV_IN,   "qconv2d_sum",      {"aten::_convolution", "aten::add"}),
    # the int8 operand first (PT2E's downsample blocks), also added into in place
    ("dequant_conv_sum_dequant",   lambda m, x, o: deq(o) + m.conv(x),                 CONV_IN,   "qconv2d_sum",      {"aten::_convolution", "aten::add"}),
    ("dequant_conv_sum_relu_quant", lambda m, x, o: F.relu(deq(o).add_(m.conv(x))),    CONV_IN,   "qconv2d_sum_relu", {"aten::_convolution", "aten::add_", "aten::relu"}),
    ("dequant_conv_sum_relu",      lambda m, x, o: F.relu(deq(o).add_(m.conv(x))),     CONV_IN,   "qconv2d_sum_relu", {"aten::_convolution", "aten::add_", "aten::relu"}),
    ("dequant_linear_sum",         lambda m, x, o: deq(o) + m.linear(x),               LINEAR_IN, "qlinear_sum",      {"aten::linear", "aten::add"}),
]

SEED_ROWS = [r[0] for r in ROWS[:23]]


def test_the_seed_rows_are_named_patterns():
    assert len(set(SEED_ROWS)) == 23
    assert set(SEED_ROWS) <= set(jitfuse.patterns())


def frozen(model, inputs, enabled):
    jitfuse.set_enabled(enabled)
    with torch.no_grad():
        m = torch.jit.freeze(torch.jit.trace(model.eval(), inputs, check_trace=False))
        for _ in range(3):
            out = m(*inputs)
        return m, out, node_kinds(m.graph_for(*inputs))


@pytest.mark.parametrize("name, body, make_inputs, op, replaced", ROWS, ids=[r[0] for r in ROWS])
def test_int8_chain(name, body, make_inputs, op, replaced):
    torch.manual_seed(0)
    quant_out = name.endswith("_quant") or name.endswith("_dequant")
    model, inputs = Chain(body, quant_out), make_inputs()
    _, ref, stock_kinds = frozen(model, inputs, enabled=False)
    _, got, kinds = frozen(model, inputs, enabled=True)
    assert kinds.get(f"jitfuse::{op}") == 1, kinds
    assert replaced <= set(stock_kinds) and not replaced & set(kinds), kinds
    # The chain's dequantize / quantize nodes went with it: what is left is the input's quantize,
    # an int8 operand's, and the final dequantize of an int8 output.
    assert kinds.get("jitfuse::dequantize_per_tensor", 0) == int(quant_out), kinds
    assert "aten::dequantize" not in kinds and "aten::mul" not in kinds, kinds  # the weight's went too
    if quant_out:
        assert (got - ref).abs().max().item() <= OUT_SCALE * 1.001
    else:
        assert max_rel_err(got, ref) <= 1e-5


def test_a_chain_whose_float_value_is_read_elsewhere_keeps_that_value():
    """conv -> relu -> quantize, with the relu's float output also returned: the conv part fuses,
    the relu output stays available and right."""
    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            (self.w, self.s), self.b = qweight(8, 8, 3, 3), torch.randn(8)

        def forward(self, x):
            y = F.relu(F.conv2d(q(x), dequant_weight(self.w, self.s), self.b, padding=1))
            return q(y, OUT_SCALE, OUT_ZP), y

    x = torch.randn(2, 8, 6, 6)
    _, (ref_q, ref_y), _ = frozen(Shared(), (x,), enabled=False)
    _, (got_q, got_y), kinds = frozen(Shared(), (x,), enabled=True)
    assert any(k.startswith("jitfuse::qconv2d") for k in kinds), kinds
    assert max_rel_err(got_y, ref_y) <= 1e-5
    assert (got_q - ref_q).abs().max().item() <= OUT_SCALE * 1.001


def test_scales_that_multiply_the_weights_columns_are_left_alone():
    """A square linear weight times [N] scales scales its columns (broadcasting), not its output
    channels as the int8 ops would: the linear stays float and right."""
    class Columns(nn.Module):
        def __init__(self):
            super().__init__()
            values, scales = qweight(16, 16)
            self.w, self.s = values, scales.view(16).clone()

        def forward(self, x):
            return F.linear(q(x), dequant_weight(self.w, self.s))

    x = torch.randn(4, 16)
    _, ref, _ = frozen(Columns(), (x,), enabled=False)
    _, got, kinds = frozen(Columns(), (x,), enabled=True)
    assert not any(k.startswith("jitfuse::qlinear") for k in kinds), kinds
    assert max_rel_err(got, ref) <= 1e-5


def u8(x, scale=0.05, zero_point=128):
    return jq.quantize_per_tensor(x, scale, zero_point, torch.uint8)


def test_full_range_int8_weights_stay_exact():
    """8-bit weights would saturate oneDNN's int16 pair sums on CPUs without VNNI; the op then
    computes in float32 and stays exact (on VNNI CPUs oneDNN is exact anyway)."""
    values, scales = qweight(8, 8, 3, 3, bits=8)
    x = torch.randn(2, 8, 6, 6).abs() * 5
    ref = F.conv2d(q(x, 0.05, 0), dequant_weight(values, scales), None, 1, 1)
    got = jq.qconv2d(u8(x, 0.05, 0), 0.05, 0, values, scales, None, [1, 1], [1, 1], [1, 1], 1, 1.0, 0, None)
    assert max_rel_err(got, ref) <= 1e-5


W4, W2 = qweight(8, 8, 3, 3), qweight(16, 16)


@pytest.mark.parametrize("case, call, message", [
    ("float input", lambda: jq.qconv2d(torch.randn(1, 8, 4, 4), 0.05, 128, *W4, None, [1, 1], [1, 1], [1, 1], 1, 1.0, 0, None), "uint8 or int8 activation"),
    ("float weight", lambda: jq.qlinear(u8(torch.randn(2, 16)), 0.05, 128, torch.randn(16, 16), W2[1].flatten(), None, 1.0, 0, None), "int8 CPU weight"),
    ("scales", lambda: jq.qlinear(u8(torch.randn(2, 16)), 0.05, 128, W2[0], torch.ones(3), None, 1.0, 0, None), "weight scales"),
    ("channels", lambda: jq.qconv2d(u8(torch.randn(1, 4, 4, 4)), 0.05, 128, *W4, None, [1, 1], [1, 1], [1, 1], 1, 1.0, 0, None), "channels"),
    ("in_features", lambda: jq.qlinear(u8(torch.randn(2, 8)), 0.05, 128, *W2, None, 1.0, 0, None), "in_features"),
    ("input scale", lambda: jq.qlinear(u8(torch.randn(2, 16)), 0.0, 128, *W2, None, 1.0, 0, None), "activation scale"),
    ("input zero point", lambda: jq.qlinear(u8(torch.randn(2, 16)), 0.05, 300, *W2, None, 1.0, 0, None), "activation zero point"),
    ("out dtype", lambda: jq.qlinear(u8(torch.randn(2, 16)), 0.05, 128, *W2, None, 1.0, 0, torch.float32), "output dtype"),
    ("out scale", lambda: jq.qlinear(u8(torch.randn(2, 16)), 0.05, 128, *W2, None, -1.0, 0, torch.uint8), "output scale"),
    ("zero point", lambda: jq.qlinear(u8(torch.randn(2, 16)), 0.05, 128, *W2, None, 0.1, 300, torch.uint8), "zero point"),
    ("pool rank", lambda: jq.qmax_pool2d(u8(torch.randn(4, 4)), 0.05, 128, [2, 2], [2, 2], [0, 0], [1, 1], False, 0.05, 128, torch.uint8), "4-D"),
    ("bmm rank", lambda: jq.qbmm(u8(torch.randn(4, 4)), 0.05, 128, u8(torch.randn(4, 4)), 0.05, 128, 1.0, 0, None), "rank >= 3"),
    ("dynamic input", lambda: jq.qlinear_dynamic(torch.randn(2, 16).double(), None, *W2, None), "float32 or bfloat16"),
    ("dynamic smooth", lambda: jq.qlinear_dynamic(torch.randn(2, 16), torch.ones(3), *W2, None), "smoothing factors"),
    ("quantize dtype", lambda: jq.quantize_per_tensor(torch.randn(3), 0.1, 0, torch.float32), "uint8 or torch.int8"),
    ("quantize scale", lambda: jq.quantize_per_tensor(torch.randn(3), -1.0, 0, torch.uint8), "scale must be positive"),
    ("dequantize dtype", lambda: jq.dequantize_per_tensor(torch.randn(3), 0.1, 0), "uint8 or int8"),
])
def test_int8_ops_reject_bad_input_clearly(case, call, message):
    with pytest.raises(RuntimeError, match=message):
        call()


def test_int8_ops_take_an_empty_batch():
    out = jq.qconv2d(u8(torch.randn(0, 8, 6, 6)), 0.05, 128, *W4, None, [1, 1], [1, 1], [1, 1], 1, 0.1, 0, torch.uint8)
    assert out.shape == (0, 8, 6, 6) and out.dtype == torch.uint8
    assert jq.qlinear(u8(torch.randn(0, 16)), 0.05, 128, *W2, None, 1.0, 0, None).shape == (0, 16)
    assert jq.qlinear_dynamic(torch.randn(0, 16), None, *W2, None).shape == (0, 16)


# ---- dynamic linears: float in, each row quantized at run time, float out ----------------------

class Dynamic(nn.Module):
    def __init__(self, tail, smooth):
        super().__init__()
        self.w, self.s = qweight(16, 16, bits=8)
        self.s = self.s.flatten()
        self.b, self.tail = torch.randn(16), tail
        self.smooth = torch.rand(16) + 0.5 if smooth else None

    def forward(self, x, other):
        return self.tail(jq.qlinear_dynamic(x, self.smooth, self.w, self.s, self.b))


def rows_reference(x, smooth, values, scales, bias):
    """What qlinear_dynamic computes, in float64 from its definition."""
    x = x.double() / (smooth.double() if smooth is not None else 1.0)
    lo = x.amin(-1, keepdim=True).clamp(max=0)
    hi = x.amax(-1, keepdim=True).clamp(min=0)
    scale = ((hi - lo) / 255).where(hi > lo, torch.ones_like(hi))
    zp = (-lo / scale).round().clamp(0, 255)
    xq = ((x / scale).round() + zp).clamp(0, 255)
    return F.linear((xq - zp) * scale, values.double() * scales.double().view(-1, 1), bias.double())


@pytest.mark.parametrize("smooth", [False, True], ids=["plain", "smoothed"])
@pytest.mark.parametrize("name,tail,op", [
    ("none", lambda y: y, "qlinear_dynamic"),
    ("relu", F.relu, "qlinear_dynamic_relu"),
    ("gelu", F.gelu, "qlinear_dynamic_gelu"),
    ("gelu_tanh", lambda y: F.gelu(y, approximate="tanh"), "qlinear_dynamic_gelu"),
])
def test_dynamic_linear_fuses_its_activation_and_matches(name, tail, op, smooth):
    torch.manual_seed(0)
    model, inputs = Dynamic(tail, smooth), LINEAR_IN()
    _, ref, _ = frozen(model, inputs, enabled=False)
    _, got, kinds = frozen(model, inputs, enabled=True)
    assert kinds.get(f"jitfuse::{op}") == 1 and not {"aten::relu", "aten::gelu"} & set(kinds), kinds
    assert max_rel_err(got, ref) <= 1e-5
    exact = tail(rows_reference(inputs[0], model.smooth, model.w, model.s, model.b))
    assert max_rel_err(got, exact) <= 1e-5


@pytest.mark.parametrize("n", [48, 37], ids=["whole vectors", "partial vector"])
def test_dynamic_linear_activations_match_float64_over_the_whole_range(n):
    """The finish computes relu and erf GELU itself (GELU by a fitted rational function): across
    -12..12, at NaN and at +-inf, each output is the activation of the plain dynamic linear's in
    float64, within 1e-6 absolute plus 2e-7 relative (ATen's float32 GELU: 1.5e-7 absolute in
    erf). GELU(inf) is inf, as ATen's scalar and float64 GELU give (its float32 vector path: NaN)."""
    torch.manual_seed(0)
    values, scales = qweight(n, 16, bits=8)
    scales = scales.flatten()
    x = torch.randn(64, 16)
    # The bias spreads the outputs over the range and plants the special values.
    bias = torch.linspace(-12, 12, n)
    bias[:3] = torch.tensor([float("nan"), float("inf"), float("-inf")])
    plain = jq.qlinear_dynamic(x, None, values, scales, bias)
    for op, aten in ((jq.qlinear_dynamic_gelu, F.gelu), (jq.qlinear_dynamic_relu, F.relu)):
        got = op(x, None, values, scales, bias)
        want = aten(plain.double())
        assert torch.equal(got.isnan(), want.isnan()), op
        finite = want.isfinite()
        assert torch.equal(got[~finite & ~want.isnan()].double(), want[~finite & ~want.isnan()]), op
        err = (got[finite].double() - want[finite]).abs()
        assert (err <= 1e-6 + 2e-7 * want[finite].abs()).all(), (op, err.max().item())
    assert plain[:, 3:].abs().max() > 10  # the range was covered


def test_dynamic_linear_sees_smoothing_factors_changed_in_place():
    """The factors' reciprocals are cached per tensor, like prepacked weights: an in-place change
    (a new version) is seen on the next call."""
    torch.manual_seed(0)
    (values, scales), x, smooth = qweight(8, 16, bits=8), torch.randn(3, 16), torch.rand(16) + 0.5
    scales = scales.flatten()
    before = jq.qlinear_dynamic(x, smooth, values, scales, None)
    smooth.mul_(torch.linspace(0.5, 2.0, 16))
    after = jq.qlinear_dynamic(x, smooth, values, scales, None)
    assert torch.equal(after, jq.qlinear_dynamic(x, smooth.clone(), values, scales, None))
    assert not torch.equal(after, before)


def has_rows_build(kernel):
    try:
        jq._quantize_rows(torch.zeros(1, 8), None, kernel)
        return True
    except RuntimeError:
        return False


@pytest.mark.parametrize("kernel", [
    pytest.param("avx2", marks=pytest.mark.skipif(not has_rows_build("avx2"), reason="no AVX2 and FMA on this CPU")),
    pytest.param("avx512", marks=pytest.mark.skipif(not has_rows_build("avx512"), reason="no AVX-512 on this CPU")),
])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_row_quantizer_builds_match_the_generic_one(dtype, kernel):
    """The intrinsics builds of the dynamic linears' row quantizer give the generic build's values
    bit for bit: AVX2 (8 lanes: GCC 12 turns the generic code's 16-lane comparisons into scalars
    there) and AVX-512 (rows in groups of 8, no scratch): every width's tail, row counts that leave
    a partial group, zero rows, denormal ranges, NaN and +-inf, with and without smoothing factors."""
    torch.manual_seed(0)
    for k in (1, 7, 8, 15, 16, 17, 37, 384):
        for rows in (20, 3):
            x = torch.randn(rows, k) * torch.rand(rows, 1) * 10
            x[0, -1] = float("nan")
            x[-1, 0] = float("inf")
            if rows > 3:
                x[1] = 0
                x[2, 0] = float("-inf")
                x[3] = 1e-44  # a range so small that 1 / scale overflows
                x[4, ::2] = -1e-44
            x = x.to(dtype)
            for inv_smooth in (None, torch.rand(k) + 0.5):
                got = jq._quantize_rows(x, inv_smooth, kernel)
                want = jq._quantize_rows(x, inv_smooth, "generic")
                for g, w in zip(got, want):
                    assert torch.equal(g.nan_to_num(-1.0), w.nan_to_num(-1.0)), (k, rows, inv_smooth is None)
    values, scales, zero_points = jq._quantize_rows(torch.tensor([[-1.0, 0.0, 3.0]]), None, kernel)
    assert values.tolist() == [[0, 64, 255]] and zero_points.tolist() == [64.0]
    assert scales.tolist() == [pytest.approx(4 / 255)]


@pytest.mark.skipif(not has_rows_build("avx2"), reason="no AVX2 and FMA on this CPU")
@pytest.mark.parametrize("dtype,zero_point", [(torch.uint8, 128), (torch.uint8, 0), (torch.int8, 0), (torch.int8, -5)])
def test_per_tensor_quantizer_avx2_build_matches_the_generic_one(dtype, zero_point):
    """The same for per-tensor quantization (the reference graphs' and the int8 models' inputs):
    every tail, NaN, +-inf, values far outside the range, three scales."""
    torch.manual_seed(0)
    for n in (1, 7, 8, 9, 33, 1000):
        x = torch.randn(n) * 40
        x[0] = float("nan")
        if n > 3:
            x[1:4] = torch.tensor([float("inf"), float("-inf"), 1e30])
        for scale in (0.05, 1.0, 3e-3):
            got = jq._quantize_per_tensor(x, scale, zero_point, dtype, "avx2")
            assert torch.equal(got, jq._quantize_per_tensor(x, scale, zero_point, dtype, "generic")), (n, scale)
    lo, hi = (0, 255) if dtype == torch.uint8 else (-128, 127)
    got = jq._quantize_per_tensor(torch.tensor([-1e9, 1e9, 0.26, 0.25]), 0.5, zero_point, dtype, "avx2")
    assert got.tolist() == [lo, hi, zero_point + 1, zero_point]  # 0.52 rounds to 1, 0.5 to even 0


class DynamicPair(nn.Module):
    """A feed-forward pair: dynamic linear (16 -> 24), its activation, dynamic linear (24 -> 16).
    `also` returns the middle value too (read elsewhere) or reads it with two more linears."""

    def __init__(self, tail, smooth, also=None):
        super().__init__()
        (self.w1, s1), (self.w2, s2) = qweight(24, 16, bits=8), qweight(16, 24, bits=8)
        self.s1, self.s2 = s1.flatten(), s2.flatten()
        self.b1, self.b2, self.tail, self.also = torch.randn(24), torch.randn(16), tail, also
        self.smooth = torch.rand(24) + 0.5 if smooth else None

    def forward(self, x, other):
        h = self.tail(jq.qlinear_dynamic(x, None, self.w1, self.s1, self.b1))
        y = jq.qlinear_dynamic(h, self.smooth, self.w2, self.s2, self.b2)
        if self.also == "returned":
            return y, h
        if self.also == "merged":  # three linears on h: linear_linear_linear's, not this row's
            return y, jq.qlinear_dynamic(h, self.smooth, self.w2, self.s2, None), jq.qlinear_dynamic(h, self.smooth, self.w2, self.s2, self.b2 * 2)
        return y


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("smooth", [False, True], ids=["plain", "smoothed"])
@pytest.mark.parametrize("tail,op", [
    (lambda y: y, "qlinear_dynamic_rows"),
    (F.relu, "qlinear_dynamic_relu_rows"),
    (F.gelu, "qlinear_dynamic_gelu_rows"),
    (lambda y: F.gelu(y, approximate="tanh"), "qlinear_dynamic_gelu_rows"),
], ids=["none", "relu", "gelu", "gelu_tanh"])
def test_dynamic_linear_pair_quantizes_the_rows_for_the_second(tail, op, smooth, dtype):
    """The first linear hands the second its quantized rows (the second's smoothing factors
    applied): the same values, bit for bit, as the two fused linears without this row (bf16:
    rounded to bf16 first). Against the unfused graph, ATen's GELU differs from the fused one by
    up to 1.5e-7, which can move a value across a rounding boundary of the second quantization:
    within 1e-2 relative to the largest output (one uint8 step of a row)."""
    torch.manual_seed(0)
    model = DynamicPair(tail, smooth)
    inputs = tuple(t.to(dtype) for t in (torch.randn(2, 5, 16) * 3, torch.randn(2, 5, 16)))
    _, unfused, _ = frozen(model, inputs, enabled=False)
    jitfuse.set_pattern_enabled(op, False)
    try:
        _, pair, pair_kinds = frozen(model, inputs, enabled=True)
    finally:
        jitfuse.set_pattern_enabled(op, True)
    _, got, kinds = frozen(model, inputs, enabled=True)
    assert "jitfuse::qlinear_rows" not in pair_kinds, pair_kinds
    assert kinds.get(f"jitfuse::{op}") == 1 and kinds.get("jitfuse::qlinear_rows") == 1, kinds
    assert not any(k.startswith("jitfuse::qlinear_dynamic") and k != f"jitfuse::{op}" for k in kinds), kinds
    assert not {"aten::relu", "aten::gelu"} & set(kinds), kinds
    assert got.dtype == dtype and torch.equal(got, pair)
    assert max_rel_err(got, unfused) <= 1e-2


@pytest.mark.parametrize("also", ["returned", "merged"])
def test_dynamic_linear_pair_whose_middle_is_read_elsewhere_is_left_alone(also):
    torch.manual_seed(0)
    model, inputs = DynamicPair(F.gelu, True, also), LINEAR_IN()
    _, ref, _ = frozen(model, inputs, enabled=False)
    _, got, kinds = frozen(model, inputs, enabled=True)
    assert "jitfuse::qlinear_rows" not in kinds and "jitfuse::qlinear_dynamic_gelu" in kinds, kinds
    if also == "merged":
        assert kinds.get("jitfuse::qlinear_dynamic") == 1 and "aten::split_with_sizes" in kinds, kinds
    for g, r in zip(got, ref):
        assert max_rel_err(g, r) <= 1e-5


def test_three_dynamic_linears_on_one_input_merge():
    class QKV(nn.Module):
        def __init__(self):
            super().__init__()
            self.ws = [qweight(16, 16, bits=8) for _ in range(3)]
            self.smooth = torch.rand(16) + 0.5

        def forward(self, x, other):
            return tuple(jq.qlinear_dynamic(x, self.smooth, w, s.flatten(), None) for w, s in self.ws)

    torch.manual_seed(0)
    model, inputs = QKV(), LINEAR_IN()
    _, ref, _ = frozen(model, inputs, enabled=False)
    _, got, kinds = frozen(model, inputs, enabled=True)
    assert kinds.get("jitfuse::qlinear_dynamic") == 1 and "aten::split_with_sizes" in kinds, kinds
    for g, r in zip(got, ref):
        assert max_rel_err(g, r) <= 1e-5


def test_no_quantized_dtype_is_created():
    """The int8 ops and conversions run on plain tensors: torch 2.13's deprecation warning for
    quantized tensor creation never fires."""
    torch.manual_seed(0)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        for row in ROWS:
            model = Chain(row[1], True)
            frozen(model, row[2](), enabled=True)
        frozen(Dynamic(F.gelu, True), LINEAR_IN(), enabled=True)
    assert not [w for w in seen if "quantized tensor creation" in str(w.message)]


# ---- an int8 sum writes into its operand only when nothing reads it afterwards ----------------

class Residual(nn.Module):
    """ResNet's shape: relu(conv_b(relu(conv_a(x))) + identity), identity = conv_c(x), read by
    one more conv (so the sum's result is int8, as the identity is)."""

    def __init__(self, read_identity_later):
        super().__init__()
        self.conv_a, self.conv_b = nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 16, 3, padding=1)
        self.conv_c, self.conv_d = nn.Conv2d(8, 16, 1), nn.Conv2d(16, 4, 1)
        self.read_identity_later = read_identity_later

    def forward(self, x):
        identity = self.conv_c(x)
        out = self.conv_d(F.relu(self.conv_b(F.relu(self.conv_a(x))) + identity))
        return out * identity.sum() if self.read_identity_later else out


@pytest.mark.parametrize("op", ["qconv2d_sum", "qconv2d_sum_relu"])
@pytest.mark.parametrize("other_dtype, other_zero_point", [(torch.uint8, 7), (torch.int8, -3)])
@pytest.mark.parametrize("batch, channels_last", [(1, True), (3, False)])
def test_an_int8_operand_of_a_float_result_matches_float64(op, other_dtype, other_zero_point, batch, channels_last):
    """conv + dequantize(other) with a float32 result (a network's last residual block): the kernel
    reads the operand's integers itself, (y / scale - zero_point + value) * scale in its post-ops,
    rather than a pass widening them to float32 first. Within 1e-6 of the output's range of the
    same sum computed in float64 (the widening path: 1e-7)."""
    torch.manual_seed(0)
    lo, hi = (0, 256) if other_dtype == torch.uint8 else (-128, 128)
    x = torch.randint(0, 256, (batch, 32, 6, 6), dtype=torch.uint8)
    other = torch.randint(lo, hi, (batch, 48, 6, 6), dtype=other_dtype)
    if channels_last:
        x, other = x.contiguous(memory_format=torch.channels_last), other.contiguous(memory_format=torch.channels_last)
    w, w_scales = qweight(48, 32 * 9, bits=8)
    w = w.view(48, 32, 3, 3)
    bias = torch.randn(48)
    got = getattr(jq, op)(x, 0.02, 3, w, w_scales.flatten(), bias, [1, 1], [1, 1], [1, 1], 1, other, 0.05,
                          other_zero_point, 1.0, 0, None)
    assert got.dtype == torch.float32
    conv = F.conv2d((x.double() - 3) * 0.02, w.double() * w_scales.double().view(-1, 1, 1, 1), bias.double(),
                    padding=1)
    want = conv + (other.double() - other_zero_point) * 0.05
    if op.endswith("relu"):
        want = want.relu()
    assert (got.double() - want).abs().max().item() <= 1e-6 * want.abs().max().item()


@pytest.mark.parametrize("read_identity_later", [False, True], ids=["dead operand", "read later"])
def test_int8_sum_in_place_only_into_a_dead_operand(read_identity_later):
    from deploy_models import int8_model
    torch.manual_seed(0)
    model, x = Residual(read_identity_later).eval(), torch.randn(2, 8, 9, 9)
    jitfuse.set_enabled(False)
    stock = int8_model(model, x)
    jitfuse.set_enabled(True)
    fused = int8_model(model, x)
    with torch.no_grad():
        for _ in range(3):
            fused(x)
        kinds = node_kinds(fused.graph_for(x))
        in_place = "jitfuse::qconv2d_sum_relu_" in kinds
        assert in_place != read_identity_later and ("jitfuse::qconv2d_sum_relu" in kinds) == read_identity_later, kinds
        jitfuse.set_enabled(False)
        ref = stock(x)
        jitfuse.set_enabled(True)
        assert max_rel_err(fused(x), ref) <= 1e-2  # one int8 step near rounding ties, as elsewhere


@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "no bias"])
@pytest.mark.parametrize("tail", ["", "_sum", "_relu"])
def test_int8_output_zero_point_matches_the_reference_within_one_step(tail, with_bias):
    """An int8 result with a zero point (a residual branch's downsampling conv, no relu after):
    the op folds the zero point into the bias (oneDNN's fast kernels take no output zero point),
    which must give the quantized reference's integers within one step; after a relu it may not."""
    torch.manual_seed(0)
    values, scales = qweight(16, 16, 1, 1)
    x = torch.randn(2, 16, 7, 7)
    bias = torch.randn(16) if with_bias else None
    other = torch.randn(2, 16, 7, 7)
    out_scale, out_zero_point = 0.04, 117
    y = F.conv2d(q(x), dequant_weight(values, scales), bias)
    args = (u8(x), 0.05, 128, values, scales, bias, [1, 1], [0, 0], [1, 1], 1)
    if tail == "_sum":
        qother = u8(other)
        y = y + q(other)
        got = jq.qconv2d_sum(*args, qother, 0.05, 128, out_scale, out_zero_point, torch.uint8)
    elif tail == "_relu":
        y = y.relu()
        got = jq.qconv2d_relu(*args, out_scale, out_zero_point, torch.uint8)
    else:
        got = jq.qconv2d(*args, out_scale, out_zero_point, torch.uint8)
    want = torch.clamp(torch.round(y / out_scale) + out_zero_point, 0, 255)
    assert got.dtype == torch.uint8
    assert (got.float() - want).abs().max().item() <= 1
