"""The seed's 23 int8 chains, one reference quantized model each (quantize_per_tensor /
dequantize written out, as quantization.convert emits them): the chain becomes its jitfuse::q*
op, the nodes it replaced are gone, and the numbers match stock PyTorch running the same graph.

Tolerances: float32 out within 1e-5 relative (same int8 operands, float accumulation order);
int8 out within one quantization step of the output."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import jitfuse
from harness import max_rel_err, node_kinds

OUT_SCALE, OUT_ZP = 0.1, 100


def q(x, scale=0.05, zero_point=128):
    return torch.quantize_per_tensor(x, scale, zero_point, torch.quint8)


def qweight(*shape):
    torch.manual_seed(1)
    w = torch.randn(shape) * 0.1
    scales = w.abs().amax(dim=tuple(range(1, w.dim()))) / 63
    return torch.quantize_per_channel(w, scales.double(), torch.zeros(shape[0], dtype=torch.long), 0, torch.qint8)


class Chain(nn.Module):
    """x -> quantize -> dequantize -> body -> [quantize -> dequantize]."""

    def __init__(self, body, quant_out):
        super().__init__()
        self.body, self.quant_out = body, quant_out
        self.w4, self.b4 = qweight(8, 8, 3, 3), torch.randn(8)
        self.w2, self.b2 = qweight(16, 16), torch.randn(16)

    def conv(self, x):
        return F.conv2d(x, self.w4.dequantize(), self.b4, padding=1)

    def linear(self, x):
        return F.linear(x, self.w2.dequantize(), self.b2)

    def forward(self, x, other):
        y = self.body(self, q(x).dequantize(), other)
        return q(y, OUT_SCALE, OUT_ZP).dequantize() if self.quant_out else y


def deq(t):
    return q(t, 0.04, 120).dequantize()


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
    assert kinds.get("aten::dequantize", 0) == int(quant_out), kinds
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
            self.w, self.b = qweight(8, 8, 3, 3), torch.randn(8)

        def forward(self, x):
            y = F.relu(F.conv2d(q(x).dequantize(), self.w.dequantize(), self.b, padding=1))
            return q(y, OUT_SCALE, OUT_ZP).dequantize(), y

    x = torch.randn(2, 8, 6, 6)
    _, (ref_q, ref_y), _ = frozen(Shared(), (x,), enabled=False)
    _, (got_q, got_y), kinds = frozen(Shared(), (x,), enabled=True)
    assert any(k.startswith("jitfuse::qconv2d") for k in kinds), kinds
    assert max_rel_err(got_y, ref_y) <= 1e-5
    assert (got_q - ref_q).abs().max().item() <= OUT_SCALE * 1.001


def test_full_range_int8_weights_stay_exact():
    """Weights using all 8 bits would saturate oneDNN's int16 pair sums on CPUs without VNNI; the
    op then computes in float32 and stays exact."""
    torch.manual_seed(0)
    w = torch.randn(8, 8, 3, 3)
    qw = torch.quantize_per_channel(w, (w.abs().amax((1, 2, 3)) / 127).double(), torch.zeros(8, dtype=torch.long), 0, torch.qint8)
    qx = q(torch.randn(2, 8, 6, 6).abs() * 5, 0.05, 0)
    ref = F.conv2d(qx.dequantize(), qw.dequantize(), None, 1, 1)
    got = torch.ops.jitfuse.qconv2d(qx, qw, None, [1, 1], [1, 1], [1, 1], 1, 1.0, 0, None)
    assert max_rel_err(got, ref) <= 1e-5


@pytest.mark.parametrize("case, call, message", [
    ("float input", lambda: torch.ops.jitfuse.qconv2d(torch.randn(1, 8, 4, 4), qweight(8, 8, 3, 3), None, [1, 1], [1, 1], [1, 1], 1, 1.0, 0, None), "quint8 or qint8 activation"),
    ("float weight", lambda: torch.ops.jitfuse.qlinear(q(torch.randn(2, 16)), torch.randn(16, 16), None, 1.0, 0, None), "qint8 weight"),
    ("channels", lambda: torch.ops.jitfuse.qconv2d(q(torch.randn(1, 4, 4, 4)), qweight(8, 8, 3, 3), None, [1, 1], [1, 1], [1, 1], 1, 1.0, 0, None), "channels"),
    ("in_features", lambda: torch.ops.jitfuse.qlinear(q(torch.randn(2, 8)), qweight(16, 16), None, 1.0, 0, None), "in_features"),
    ("out dtype", lambda: torch.ops.jitfuse.qlinear(q(torch.randn(2, 16)), qweight(16, 16), None, 1.0, 0, torch.float32), "output dtype"),
    ("out scale", lambda: torch.ops.jitfuse.qlinear(q(torch.randn(2, 16)), qweight(16, 16), None, -1.0, 0, torch.quint8), "output scale"),
    ("zero point", lambda: torch.ops.jitfuse.qlinear(q(torch.randn(2, 16)), qweight(16, 16), None, 0.1, 300, torch.quint8), "zero point"),
    ("pool rank", lambda: torch.ops.jitfuse.qmax_pool2d(q(torch.randn(4, 4)), [2, 2], [2, 2], [0, 0], [1, 1], False, 0.05, 128, torch.quint8), "4-D"),
    ("bmm rank", lambda: torch.ops.jitfuse.qbmm(q(torch.randn(4, 4)), q(torch.randn(4, 4)), 1.0, 0, None), "rank >= 3"),
])
def test_int8_ops_reject_bad_input_clearly(case, call, message):
    with pytest.raises(RuntimeError, match=message):
        call()


def test_int8_ops_take_an_empty_batch():
    out = torch.ops.jitfuse.qconv2d(q(torch.randn(0, 8, 6, 6)), qweight(8, 8, 3, 3), None, [1, 1], [1, 1], [1, 1], 1, 0.1, 0, torch.quint8)
    assert out.shape == (0, 8, 6, 6) and out.is_quantized
    assert torch.ops.jitfuse.qlinear(q(torch.randn(0, 16)), qweight(16, 16), None, 1.0, 0, None).shape == (0, 16)
