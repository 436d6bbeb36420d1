"""The fusion report (jitfuse.report, python -m jitfuse.report, JITFUSE_VERBOSE=2): one small
model per rule of the pattern tables, each asserting the exact reason the report gives; what the
report returns; that it leaves the module alone."""
import json
import os
import re
import subprocess
import sys
from typing import List

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import jitfuse
from harness import node_kinds

jq = torch.ops.jitfuse
LINE, VALUE = "<line>", "<value>"  # in an expected reason: a line of this file, a value's name


def frozen_trace(model, *inputs):
    with torch.no_grad():
        return torch.jit.freeze(torch.jit.trace(model.eval(), inputs, check_trace=False))


def frozen_script(model):
    return torch.jit.freeze(torch.jit.script(model.eval()))


def matches(expected, reason):
    pattern = re.escape(expected).replace(re.escape(LINE), r"\d+").replace(re.escape(VALUE), r"%[\w.]+")
    return re.fullmatch(pattern, reason) is not None


# ---- the small models -------------------------------------------------------------------------

def conv(cin=3, cout=4, dtype=torch.float32):
    torch.manual_seed(0)
    return nn.Conv2d(cin, cout, 3).to(dtype)


class ConvThen(nn.Module):
    """A conv and a traceable tail: tail(conv(x), y)."""

    def __init__(self, tail, dtype=torch.float32, transposed=False):
        super().__init__()
        self.conv = nn.ConvTranspose2d(3, 4, 3).to(dtype) if transposed else conv(dtype=dtype)
        self.tail = tail

    def forward(self, x, y):
        return self.tail(self.conv(x), y)


class Tail(nn.Module):
    """fn(x, y), traceable."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x, y):
        return self.fn(x, y)


class ConvBiasFromInput(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = conv()

    def forward(self, x):
        return F.conv2d(x, self.conv.weight, self.conv.bias * x.mean())


class ConvStrideFromInput(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = conv()

    def forward(self, x):
        s = x.size(0)
        return F.conv2d(x, self.conv.weight, self.conv.bias, [s, s])


class ConvAddAlphaFromInput(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = conv()

    def forward(self, x, y):
        return torch.add(self.conv(x), y, alpha=x.size(0))


class ConvHardtanhFromInput(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = conv()

    def forward(self, x):
        return F.hardtanh(self.conv(x), float(x.size(0)), 6.0)


def linear(din=16, dout=16, dtype=torch.float32):
    torch.manual_seed(0)
    return nn.Linear(din, dout).to(dtype)


class LinearThen(nn.Module):
    def __init__(self, body, dtype=torch.float32):
        super().__init__()
        self.lin = linear(dtype=dtype)
        self.b2 = torch.randn(1, 16, dtype=dtype)
        self.body = body

    def forward(self, x):
        return self.body(self, x)


class LinearBiasFromInput(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = linear()

    def forward(self, x):
        return F.linear(x, self.lin.weight, self.lin.bias * x.mean())


class LinearGeluMode(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = linear()

    def forward(self, x, mode: str):
        return F.gelu(self.lin(x), approximate=mode)


class LayerNormEpsFromInput(nn.Module):
    def forward(self, x, y):
        return F.layer_norm(x + y, [16], eps=float(x.size(0)) * 1e-5)


class InPlaceAddReadBefore(nn.Module):
    def forward(self, x, y):
        a = x * 2
        z = a * 3
        a += y
        return F.layer_norm(a, [16]) + z


class SoftmaxScaleFromInput(nn.Module):
    def forward(self, scores, mask, scale: float):
        return F.softmax(scores / scale + mask, dim=-1)


class PoolKernelFromInput(nn.Module):
    def forward(self, x):
        k = x.size(0) + 1
        return F.max_pool2d(x, [k, k])


class SdpaScaleFromInput(nn.Module):
    def forward(self, q, k, v, mask, scale: float):
        return F.scaled_dot_product_attention(q, k, v, mask, scale=scale)


def attention(q, k, v, mask, transpose=(-1, -2), tail=lambda c: c):
    return tail(F.softmax(q @ k.transpose(*transpose) / 8.0 + mask, dim=-1) @ v)


# int8: the reference spelling (quantization.convert's), weights as aten::dequantize(int8) * scales
def u8(x):
    q = torch.ops.jitfuse.quantize_per_tensor(x, 0.05, 128, torch.uint8)
    return torch.ops.jitfuse.dequantize_per_tensor(q, 0.05, 128)


class Int8Conv(nn.Module):
    def __init__(self, scales_shape=None):
        super().__init__()
        torch.manual_seed(0)
        self.register_buffer("qw", torch.randint(-60, 60, (4, 3, 3, 3), dtype=torch.int8))
        self.register_buffer("scales", torch.full((4, 1, 1, 1), 0.01))
        self.register_buffer("bias", torch.randn(4))

    def forward(self, x, other):
        return F.conv2d(u8(x), torch.dequantize(self.qw) * self.scales, self.bias) + other


class Int8ConvStrideFromInput(Int8Conv):
    def forward(self, x, other):
        s = x.size(0)
        return F.conv2d(u8(x), torch.dequantize(self.qw) * self.scales, self.bias, [s, s])


class Int8ConvBiasFromInput(Int8Conv):
    def forward(self, x, other):
        return F.conv2d(u8(x), torch.dequantize(self.qw) * self.scales, self.bias * x.mean())


class Int8ConvScalesFromInput(Int8Conv):
    def forward(self, x, other):
        return F.conv2d(u8(x), torch.dequantize(self.qw) * (self.scales * x.mean()), self.bias)


class Int8ConvTransposed(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.qw = torch.randint(-60, 60, (3, 4, 3, 3), dtype=torch.int8)  # [in, out, kh, kw]
        self.scales = torch.full((3, 1, 1, 1), 0.01)

    def forward(self, x, other):
        return F.conv_transpose2d(u8(x), torch.dequantize(self.qw) * self.scales)


class Int8Linear(nn.Module):
    """A square linear with its scales along the input features: not the per-output-channel
    layout the int8 kernels take."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.qw = torch.randint(-60, 60, (16, 16), dtype=torch.int8)
        self.scales = torch.full((1, 16), 0.01)

    def forward(self, x):
        return F.linear(u8(x), torch.dequantize(self.qw) * self.scales)


class Int8BmmDivFromInput(nn.Module):
    def forward(self, a, b, d: float):
        return torch.bmm(u8(a), u8(b)) / d


class Int8QuantizeScaleFromInput(Int8Conv):
    def forward(self, x, other):
        y = F.conv2d(u8(x), torch.dequantize(self.qw) * self.scales, self.bias)
        s = float(x.size(0)) * 0.1
        return torch.ops.jitfuse.dequantize_per_tensor(torch.ops.jitfuse.quantize_per_tensor(y, s, 0, torch.uint8), s, 0)


EIGHT = torch.tensor([8.0])  # a 1-D divisor (tracing records it as a constant)
X4 = lambda: torch.randn(1, 3, 8, 8)  # noqa: E731
Y4 = lambda: torch.randn(1, 4, 6, 6)  # noqa: E731
S4 = lambda: torch.randn(1, 2, 4, 4)  # noqa: E731  (batch, heads, seq, dim)
S44 = lambda: torch.randn(1, 4, 4, 4)  # noqa: E731  (heads == seq == dim)

WEIGHT_ATTR = ("the weight %weight is the module attribute self.conv.weight (the module is not frozen), not a "
               "constant: freeze the module (torch.jit.freeze) so that its weights become constants")

# id: (make the module and its inputs, pattern, the exact reason)
CASES = {
    # ---- conv rows ----
    "conv weight not constant": (
        lambda: (torch.jit.trace(ConvThen(lambda c, y: F.relu(c)).eval(), (X4(), Y4())), (X4(), Y4())),
        "conv2d_relu", WEIGHT_ATTR),
    "conv weight float64": (
        lambda: (frozen_trace(ConvThen(lambda c, y: F.relu(c), torch.float64), X4().double(), Y4().double()),
                 (X4().double(), Y4().double())),
        "conv2d_relu", "the weight is float64 [4, 3, 3, 3]: jitfuse's convolutions take float32 or bfloat16 CPU "
                       "weights of 4 dims"),
    "conv bias not constant": (
        lambda: (frozen_trace(ConvBiasFromInput(), X4()), (X4(),)),
        "conv2d", f"the bias {VALUE} (made by aten::mul at test_report.py:{LINE}, float32 [4]) is not None or a constant "
                  "vector of the weight's dtype or float32"),
    "conv geometry not constant": (
        lambda: (frozen_script(ConvStrideFromInput()), (X4(),)),
        "conv2d", "stride, padding, dilation or groups is not a constant"),
    "conv transposed": (
        lambda: (frozen_trace(ConvThen(lambda c, y: c, transposed=True), X4(), Y4()), (X4(), Y4())),
        "conv2d", "a transposed convolution: jitfuse fuses forward convolutions only"),
    "conv add alpha not constant": (
        lambda: (frozen_script(ConvAddAlphaFromInput()), (X4(), Y4())),
        "conv2d_sum", f"the add's alpha {VALUE} is made by aten::size at test_report.py:{LINE}, not a constant"),
    "conv add alpha not 1": (
        lambda: (frozen_trace(ConvThen(lambda c, y: F.relu(torch.add(y, c, alpha=2))), X4(), Y4()), (X4(), Y4())),
        "conv2d_sum_relu", "the add scales its operand by alpha = 2, not 1"),
    "conv hardtanh bounds not constant": (
        lambda: (frozen_script(ConvHardtanhFromInput()), (X4(),)),
        "conv2d_hardtanh", "hardtanh's min_val or max_val is not a constant"),
    "conv elu scaled": (
        lambda: (frozen_trace(ConvThen(lambda c, y: torch.ops.aten.elu(c, 1.0, 2.0, 1.0)), X4(), Y4()), (X4(), Y4())),
        "conv2d_elu", "elu's scale (2.) or input_scale (1.) is not 1, or its alpha is not a constant: the fused op's "
                      "elu has an alpha only"),
    # ---- linear rows ----
    "linear weight not constant": (
        lambda: (torch.jit.trace(LinearThen(lambda m, x: m.lin(x)).eval(), torch.randn(2, 16)), (torch.randn(2, 16),)),
        "linear", "the weight %weight is the module attribute self.lin.weight (the module is not frozen), not a "
                  "constant: freeze the module (torch.jit.freeze) so that its weights become constants"),
    "linear weight float64": (
        lambda: (frozen_trace(LinearThen(lambda m, x: m.lin(x), torch.float64), torch.randn(2, 16).double()),
                 (torch.randn(2, 16).double(),)),
        "linear", "the weight is float64 [16, 16]: jitfuse's linears take 2-D float32 or bfloat16 CPU weights"),
    "linear bias not constant": (
        lambda: (frozen_trace(LinearBiasFromInput(), torch.randn(2, 16)), (torch.randn(2, 16),)),
        "linear", f"the bias {VALUE} (made by aten::mul at test_report.py:{LINE}, float32 [16]) is not None or a "
                  "constant vector of the weight's dtype or float32"),
    "matmul linear weight not constant": (
        lambda: (torch.jit.trace(LinearThen(lambda m, x: x @ m.lin.weight.t() + m.lin.bias).eval(),
                                 torch.randn(2, 3, 16)), (torch.randn(2, 3, 16),)),
        "linear", f"the weight {VALUE} is made by aten::t at test_report.py:{LINE} from the module attribute "
                  "self.lin.weight (the module is not frozen), not a constant: freeze the module (torch.jit.freeze) "
                  "so that its weights become constants"),
    "matmul linear weight float64": (
        lambda: (frozen_trace(LinearThen(lambda m, x: x @ m.lin.weight.t() + m.lin.bias, torch.float64),
                              torch.randn(2, 3, 16).double()), (torch.randn(2, 3, 16).double(),)),
        "linear", "the weight is float64 [16, 16]: jitfuse's linears take 2-D float32 or bfloat16 CPU weights"),
    "matmul linear bias broadcasts": (
        lambda: (frozen_trace(LinearThen(lambda m, x: x @ m.lin.weight.t() + m.b2), torch.randn(2, 3, 16)),
                 (torch.randn(2, 3, 16),)),
        "linear", f"the added {VALUE} (a constant, float32 [1, 16]) is not a constant vector of out_features: the "
                  "linear would broadcast it differently"),
    "addmm beta not 1": (
        lambda: (frozen_trace(LinearThen(lambda m, x: torch.addmm(m.lin.bias, x, m.lin.weight.t(), beta=2)),
                              torch.randn(2, 16)), (torch.randn(2, 16),)),
        "linear", "the sum scales a term: alpha or beta is not the constant 1"),
    "gelu approximate not constant": (
        lambda: (frozen_script(LinearGeluMode()), (torch.randn(2, 16), "tanh")),
        "linear_gelu", "gelu's approximate is not a constant (a graph input), not the constant 'none' or 'tanh'"),
    # ---- transformer rows ----
    "layer_norm eps not constant": (
        lambda: (frozen_script(LayerNormEpsFromInput()), (torch.randn(2, 16), torch.randn(2, 16))),
        "add_layernorm", "layer_norm's normalized_shape or eps, or the add's alpha, is not a constant"),
    "in-place add target read elsewhere": (
        lambda: (frozen_trace(InPlaceAddReadBefore(), torch.randn(2, 16), torch.randn(2, 16)),
                 (torch.randn(2, 16), torch.randn(2, 16))),
        "add_layernorm", f"the in-place add writes into %a (made by aten::mul at test_report.py:{LINE}), which "
                         "something else reads or which may alias another tensor"),
    "softmax not on the last dim": (
        lambda: (frozen_trace(Tail(lambda s, m: F.softmax(s / 8.0 + m, dim=1)), S4(), S4()), (S4(), S4())),
        "div_add_softmax", "softmax runs over dim 1 of float32 [1, 2, 4, 4] in dtype None: jitfuse's runs over the "
                           "last dim, in the input's dtype (None)"),
    "softmax scale not constant": (
        lambda: (frozen_script(SoftmaxScaleFromInput()), (S4(), S4(), 8.0)),
        "div_add_softmax", f"the scale {VALUE} is a graph input, not a constant number"),
    "softmax scale a 1-D tensor": (
        lambda: (frozen_trace(Tail(lambda s, m: F.softmax(s / EIGHT + m, dim=-1)), S4(), S4()),
                 (S4(), S4())),
        "div_add_softmax", f"the scale {VALUE} is a constant (float32 [1]), not a constant 0-dim floating-point tensor"),
    "softmax mask a number": (
        lambda: (frozen_trace(Tail(lambda s, m: F.softmax(s / 8.0 + 1.0, dim=-1)), S4(), S4()), (S4(), S4())),
        "div_add_softmax", f"the mask {VALUE} is a float, not a tensor"),
    "head merge contiguous channels_last": (
        lambda: (frozen_trace(Tail(lambda x, y: x.view(1, 4, 2, 8).transpose(1, 2)
                                       .contiguous(memory_format=torch.channels_last).view(1, 2, 32)),
                              torch.randn(1, 4, 16), S4()), (torch.randn(1, 4, 16), S4())),
        "view_transpose_contiguous_view", "contiguous() asks for memory format 2, not torch.contiguous_format"),
    "attention key transposed over other dims": (
        lambda: (frozen_trace(Tail(lambda q, m: attention(q, q, q, m, transpose=(1, 2))), S44(), S44()),
                 (S44(), S44())),
        "attention", "the key is transposed over dims 1 and 2, not its last two"),
    "attention context permuted otherwise": (
        lambda: (frozen_trace(Tail(lambda q, m: attention(q, q, q, m, tail=lambda c: c.permute(0, 1, 3, 2))),
                              S4(), S4()), (S4(), S4())),
        "attention", f"the context {VALUE} (float32 [1, 2, 4, 4]) is not a 4-D [batch, heads, seq, dim] tensor whose "
                     "heads move behind the sequence (permute [0, 2, 1, 3] or transpose(1, 2))"),
    "sdpa causal": (
        lambda: (frozen_trace(Tail(lambda q, m: F.scaled_dot_product_attention(q, q, q, is_causal=True)), S4(), S4()),
                 (S4(), S4())),
        "attention", "scaled_dot_product_attention has dropout_p = 0., is_causal = True, enable_gqa = False: "
                     "jitfuse's attention is the plain one (0, False, False)"),
    "sdpa scale not constant": (
        lambda: (frozen_script(SdpaScaleFromInput()), (S4(), S4(), S4(), S4(), 0.5)),
        "attention", f"scaled_dot_product_attention's scale {VALUE} is a graph input, not None or a constant number"),
    "sdpa boolean mask": (
        lambda: (frozen_trace(Tail(lambda q, m: F.scaled_dot_product_attention(q, q, q, m > 0)), S4(), S4()),
                 (S4(), S4())),
        "attention", "the mask is bool [1, 2, 4, 4]: jitfuse's attention adds float masks, a boolean one selects"),
    # ---- pooling rows ----
    "max_pool2d unbatched": (
        lambda: (frozen_trace(Tail(lambda x, y: F.max_pool2d(x, 2)), X4()[0], Y4()), (X4()[0], Y4())),
        "max_pool2d", "the input %x is float32 [3, 8, 8], not a 4-D float32 or bfloat16 CPU tensor"),
    "max_pool2d kernel not constant": (
        lambda: (frozen_script(PoolKernelFromInput()), (X4(),)),
        "max_pool2d", "kernel_size, stride, padding, dilation or ceil_mode is not a constant"),
    "adaptive_avg_pool2d not global": (
        lambda: (frozen_trace(Tail(lambda x, y: F.adaptive_avg_pool2d(x, 2)), X4(), Y4()), (X4(), Y4())),
        "adaptive_avg_pool2d", "the output size is [2, 2], not [1, 1]: jitfuse runs global average pooling only"),
    # ---- int8 rows ----
    "int8 weight not constant": (
        lambda: (torch.jit.trace(Int8Conv().eval(), (X4(), Y4())), (X4(), Y4())),
        "dequant_conv_sum", "the weight %qw is the module attribute self.qw (the module is not frozen), not a "
                            "constant: freeze the module (torch.jit.freeze) so that its weights become constants"),
    "int8 weight scales not constant": (
        lambda: (frozen_trace(Int8ConvScalesFromInput(), X4(), Y4()), (X4(), Y4())),
        "dequant_conv", f"the weight's scales {VALUE} are made by aten::mul at test_report.py:{LINE}, not a constant"),
    "int8 weight scales per input channel": (
        lambda: (frozen_trace(Int8Linear(), torch.randn(2, 16)), (torch.randn(2, 16),)),
        "dequant_linear", "the weight is int8 [16, 16] with scales float32 [1, 16]: jitfuse's int8 ops take a "
                          "contiguous int8 CPU weight of 2 dims and float32 scales, one or one per output channel"),
    "int8 bias not constant": (
        lambda: (frozen_trace(Int8ConvBiasFromInput(), X4(), Y4()), (X4(), Y4())),
        "dequant_conv", f"the bias {VALUE} (made by aten::mul at test_report.py:{LINE}, float32 [4]) is not None or a "
                        "constant float32 vector"),
    "int8 conv stride not constant": (
        lambda: (frozen_script(Int8ConvStrideFromInput()), (X4(), Y4())),
        "dequant_conv", "stride, padding, dilation or groups is not a constant"),
    "int8 conv transposed": (
        lambda: (frozen_trace(Int8ConvTransposed(), X4(), Y4()), (X4(), Y4())),
        "dequant_conv", "a transposed convolution: jitfuse fuses forward convolutions only"),
    "int8 sum operand float64": (
        lambda: (frozen_trace(Int8Conv(), X4(), Y4().double()), (X4(), Y4().double())),
        "dequant_conv_sum", "the added %other is float64 [1, 4, 6, 6], not a float32 CPU tensor"),
    "int8 bmm divisor not constant": (
        lambda: (frozen_script(Int8BmmDivFromInput()), (torch.randn(2, 3, 4), torch.randn(2, 4, 5), 8.0)),
        "dequant_bmm_div", f"the divisor {VALUE} is a graph input, not a constant number"),
    "int8 bmm divisor a 1-D tensor": (
        lambda: (frozen_trace(Tail(lambda a, b: torch.bmm(u8(a), u8(b)) / EIGHT),
                              torch.randn(2, 3, 4), torch.randn(2, 4, 5)), (torch.randn(2, 3, 4), torch.randn(2, 4, 5))),
        "dequant_bmm_div", f"the divisor {VALUE} is a constant (float32 [1]), not a constant 0-dim tensor"),
    "int8 quantize scale not constant": (
        lambda: (frozen_script(Int8QuantizeScaleFromInput()), (X4(), Y4())),
        "dequant_conv_quant", "the result's quantize has scale not a constant (made by aten::mul at "
                              "test_report.py:<line>), zero point 0, dtype 0: jitfuse needs constants, a positive "
                              "scale and uint8 or int8"),
    # ---- every row: an inner value read elsewhere ----
    "conv output read elsewhere": (
        lambda: (frozen_trace(ConvThen(lambda c, y: F.relu(c) * c), X4(), Y4()), (X4(), Y4())),
        "conv2d_relu", f"the result of aten::_convolution ({VALUE}) is also read by aten::mul at test_report.py:{LINE}: "
                       "the fused op would not keep it"),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_each_rule_gives_its_reason(case):
    make, pattern, expected = CASES[case]
    module, inputs = make()
    r = jitfuse.report(module, *inputs)
    reasons = [e["reason"] for e in r.rejected() if e["pattern"] == pattern]
    assert any(matches(expected, reason) for reason in reasons), f"{pattern}: {reasons}\n{r}"


# ---- what the report returns, and what it leaves alone --------------------------------------

class Residual(nn.Module):
    """A conv whose output a later op also reads (so conv + relu cannot take it), a residual sum,
    and an op no pattern covers."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = conv(3, 4), conv(4, 4)
        self.conv2.padding = (1, 1)

    def forward(self, x):
        y = self.conv1(x)
        z = F.relu(self.conv2(F.relu(y)) + y)
        return z * y


def residual():
    return frozen_trace(Residual(), X4()), X4()


def test_entries_say_what_fused_what_was_refused_and_what_is_left():
    m, x = residual()
    r = jitfuse.report(m, x)
    assert isinstance(r, jitfuse.FusionReport) and all(set(e) == {"status", "pattern", "op", "node", "location",
                                                                  "reason", "fused_as", "replaced"} for e in r)
    fused = {e["pattern"]: e for e in r.fused()}
    assert set(fused) == {"conv2d", "conv2d_sum_relu"}, r
    assert fused["conv2d_sum_relu"]["op"] == "jitfuse::conv2d_sum_relu"
    assert [n.split()[0] for n in fused["conv2d_sum_relu"]["replaced"]] == ["aten::_convolution", "aten::add", "aten::relu"]
    assert fused["conv2d_sum_relu"]["location"].startswith("conv2 (test_report.py:")
    [rejected] = r.rejected()
    assert (rejected["pattern"], rejected["fused_as"], rejected["op"]) == ("conv2d_relu", "conv2d", "aten::_convolution")
    assert matches(f"the result of aten::_convolution ({VALUE}) is also read by aten::mul at test_report.py:{LINE}: "
                   "the fused op would not keep it", rejected["reason"])
    assert sorted(e["op"] for e in r.left()) == ["aten::mul", "aten::relu"]
    assert r.notes() == []
    table = str(r)
    for line in ["fused: 2 rewrites", "rejected: 1", "left: 2 ops", "conv2d_relu: the result of aten::_convolution",
                 "(fused as conv2d)"]:
        assert line in table, table


def test_the_report_leaves_the_module_as_it_was():
    m, x = residual()
    before = str(m.graph)
    jitfuse.report(m, x)
    assert str(m.graph) == before
    # its own executor has not run: the next two calls profile and then fuse as usual
    with torch.no_grad():
        m(x)
        m(x)
        assert "jitfuse::conv2d_sum_relu" in node_kinds(m.graph_for(x))


def test_notes_for_a_module_not_frozen_and_jitfuse_turned_off():
    model = Residual().eval()
    traced = torch.jit.trace(model, X4())
    assert any("the module is not frozen" in n for n in jitfuse.report(traced, X4()).notes())
    jitfuse.set_enabled(False)
    try:
        r = jitfuse.report(frozen_trace(model, X4()), X4())
    finally:
        jitfuse.set_enabled(True)
    assert any("jitfuse is turned off" in n for n in r.notes())
    assert {e["pattern"] for e in r.fused()} == {"conv2d", "conv2d_sum_relu"}  # what it would do


def test_a_pattern_turned_off_is_named_as_the_reason():
    m, x = residual()
    jitfuse.set_pattern_enabled("conv2d_sum_relu", False)
    try:
        r = jitfuse.report(m, x)
    finally:
        jitfuse.set_pattern_enabled("conv2d_sum_relu", True)
    assert any(e["pattern"] == "conv2d_sum_relu" and
               e["reason"] == "the pattern is turned off (JITFUSE_DISABLE or set_pattern_enabled)" for e in r.rejected())


def test_report_wants_a_module():
    with pytest.raises(TypeError, match="expected a TorchScript module, a torch.export program or an nn.Module"):
        jitfuse.report(lambda x: x, X4())


def test_report_on_an_eager_module_is_the_fx_front_ends():
    """Without TorchScript: the same fusions as the traced module's report (test_fx_frontend has more)."""
    model = Residual().eval()
    with torch.no_grad():
        traced = torch.jit.freeze(torch.jit.trace(model, X4()))
    assert sorted(e["pattern"] for e in jitfuse.report(model, X4()).fused()) == \
        sorted(e["pattern"] for e in jitfuse.report(traced, X4()).fused())


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "jitfuse.report", *args], capture_output=True, text=True, timeout=120)


def test_cli_on_a_saved_file(tmp_path):
    m, _ = residual()
    path = str(tmp_path / "model.pt")
    torch.jit.save(m, path)
    out = run_cli(path, "--input", "1x3x8x8")
    assert out.returncode == 0, out.stderr
    assert "conv2d_sum_relu" in out.stdout and "conv2d_relu: the result of aten::_convolution" in out.stdout
    entries = json.loads(run_cli(path, "--input", "1x3x8x8:float32", "--json").stdout)
    assert {e["pattern"] for e in entries if e["status"] == "fused"} == {"conv2d", "conv2d_sum_relu"}
    bad = run_cli(path, "--input", "1x3xeight")
    assert bad.returncode == 2 and "expected sizes like 1x3x224x224[:bf16]" in bad.stderr
    missing = run_cli(str(tmp_path / "nothing.pt"), "--input", "1x3x8x8")
    assert missing.returncode == 2 and "cannot load" in missing.stderr


def test_report_is_callable_after_importing_the_cli_module():
    # `import jitfuse.report` rebinds jitfuse.report to the CLI module; a fresh process, so that
    # nothing imported it before.
    code = ("import torch, jitfuse.report\n"
            "m = torch.jit.freeze(torch.jit.trace(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.ReLU()).eval(),"
            " torch.randn(1, 3, 8, 8)))\n"
            "print(sorted(e['pattern'] for e in jitfuse.report(m, torch.randn(1, 3, 8, 8)).fused()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['conv2d_relu']"


def test_cli_bf16_input(tmp_path):
    path = str(tmp_path / "model.pt")
    torch.jit.save(frozen_trace(Residual().to(torch.bfloat16), X4().bfloat16()), path)
    out = run_cli(path, "--input", "1x3x8x8:bf16")
    assert out.returncode == 0 and "conv2d_sum_relu" in out.stdout, out.stderr


def test_verbose_2_prints_refusals_as_they_happen(tmp_path):
    m, _ = residual()
    path = str(tmp_path / "model.pt")
    torch.jit.save(m, path)
    code = (f"import torch, jitfuse; m = torch.jit.load({path!r}); x = torch.randn(1, 3, 8, 8)\n"
            "with torch.no_grad():\n    m(x); m(x)")
    env = dict(os.environ, JITFUSE_VERBOSE="2")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert re.search(r"jitfuse: conv2d_relu refused aten::_convolution %\S+: the result of", out.stderr), out.stderr
    assert "jitfuse: conv2d_sum_relu <- " in out.stderr  # level 1's lines too
