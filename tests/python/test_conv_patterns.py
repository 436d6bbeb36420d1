"""Every conv pattern: fused node present, replaced nodes gone, output equal to the unfused model,
for fp32 and bf16, NCHW and channels_last. Then what must be left alone, or stay right."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import jitfuse
from harness import TOLERANCE, assert_matches, fused_ops, max_rel_err, optimized

REPLACED = {"aten::_convolution", "aten::conv2d", "aten::conv3d", "aten::relu", "aten::relu_",
            "aten::add", "aten::add_", "aten::sigmoid", "aten::sigmoid_", "aten::mul", "aten::mul_",
            "aten::hardtanh", "aten::hardtanh_", "aten::relu6", "aten::relu6_", "aten::silu",
            "aten::silu_", "aten::elu", "aten::elu_"}


class ConvThen(nn.Module):
    """A conv followed by `tail(conv_output, other)`."""

    def __init__(self, dim, tail, bias=True, **conv_args):
        super().__init__()
        args = dict(kernel_size=3, padding=1)
        args.update(conv_args)
        self.conv = (nn.Conv2d if dim == 2 else nn.Conv3d)(8, 16, bias=bias, **args)
        self.tail = tail

    def forward(self, x, y):
        return self.tail(self.conv(x), y)


def iadd(t, y):
    t += y
    return t


def swish(t, y):
    return t * torch.sigmoid(t)


# pattern name, conv dim, tail: one row per spelling a real graph contains
PATTERNS = [
    ("conv2d_relu", 2, lambda t, y: F.relu(t)),
    ("conv2d_relu", 2, lambda t, y: F.relu(t, inplace=True)),
    ("conv2d_sum", 2, lambda t, y: t + y),
    ("conv2d_sum", 2, lambda t, y: y + t),
    ("conv2d_sum", 2, iadd),
    ("conv2d_sum", 2, lambda t, y: torch.add(t, y, alpha=0.5)),
    ("conv2d_sum_relu", 2, lambda t, y: F.relu(t + y)),
    ("conv2d_sum_relu", 2, lambda t, y: F.relu(y + t)),
    ("conv2d_sum_relu", 2, lambda t, y: F.relu(iadd(t, y), inplace=True)),
    ("conv2d_sigmoid", 2, lambda t, y: torch.sigmoid(t)),
    ("conv2d_swish", 2, swish),
    ("conv2d_swish", 2, lambda t, y: torch.sigmoid(t) * t),
    ("conv2d_hardtanh", 2, lambda t, y: F.hardtanh(t, -0.5, 0.5)),
    ("conv2d_hardtanh", 2, lambda t, y: F.relu6(t)),
    ("conv2d_hardtanh", 2, lambda t, y: F.hardtanh(t, inplace=True)),
    ("conv2d_silu", 2, lambda t, y: F.silu(t)),
    ("conv2d_elu", 2, lambda t, y: F.elu(t, alpha=0.7)),
    ("conv2d", 2, lambda t, y: t),
    ("conv3d_relu", 3, lambda t, y: F.relu(t)),
    ("conv3d_sum", 3, lambda t, y: t + y),
    ("conv3d_sum_relu", 3, lambda t, y: F.relu(t + y)),
    ("conv3d_silu", 3, lambda t, y: F.silu(t)),
    ("conv3d_sigmoid", 3, lambda t, y: torch.sigmoid(t)),
    ("conv3d_swish", 3, swish),
    ("conv3d_hardtanh", 3, lambda t, y: F.relu6(t)),
    ("conv3d_elu", 3, lambda t, y: F.elu(t)),
    ("conv3d", 3, lambda t, y: t),
]


def make_inputs(dim, dtype=torch.float32, n=2, size=None, channels_last=False):
    spatial = size or ((12, 10) if dim == 2 else (5, 6, 7))
    x = torch.randn((n, 8) + tuple(spatial), dtype=dtype)
    y = torch.randn((n, 16) + tuple(spatial), dtype=dtype)
    if channels_last:
        fmt = torch.channels_last if dim == 2 else torch.channels_last_3d
        x, y = x.contiguous(memory_format=fmt), y.contiguous(memory_format=fmt)
    return x, y


def build(dim, tail, dtype, channels_last, **conv_args):
    model = ConvThen(dim, tail, **conv_args).to(dtype).eval()
    if channels_last:
        model = model.to(memory_format=torch.channels_last if dim == 2 else torch.channels_last_3d)
    return model


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("name,dim,tail", PATTERNS, ids=[f"{p[0]}-{i}" for i, p in enumerate(PATTERNS)])
def test_pattern_fuses_and_matches(name, dim, tail, dtype, channels_last):
    model = build(dim, tail, dtype, channels_last)
    inputs = make_inputs(dim, dtype, channels_last=channels_last)
    m, kinds = optimized(model, inputs)
    assert f"jitfuse::{name}" in kinds, kinds
    assert not set(kinds) & REPLACED, set(kinds) & REPLACED
    got = assert_matches(m, model, inputs, dtype)
    fmt = (torch.channels_last if dim == 2 else torch.channels_last_3d) if channels_last \
        else torch.contiguous_format
    assert got.is_contiguous(memory_format=fmt), "the output keeps the user's memory format"


class ScriptedConvSumRelu(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(8, 16, 3, padding=1)

    def forward(self, x, y):
        return F.relu(self.conv(x) + y)


class ScriptedConv3dSilu(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(8, 16, 3, padding=1)

    def forward(self, x, y):
        return F.silu(self.conv(x))


@pytest.mark.parametrize("model_cls,name,dim", [(ScriptedConvSumRelu, "conv2d_sum_relu", 2),
                                                (ScriptedConv3dSilu, "conv3d_silu", 3)])
def test_scripted_conv_spelling_fuses(model_cls, name, dim):
    model = model_cls().eval()
    inputs = make_inputs(dim)
    m, kinds = optimized(model, inputs, script=True)
    assert f"jitfuse::{name}" in kinds and not set(kinds) & REPLACED, kinds
    assert_matches(m, model, inputs, torch.float32)


GEOMETRIES = {
    "no_bias": dict(bias=False),
    "stride2": dict(stride=2),
    "dilation2": dict(dilation=2, padding=2),
    "padding0_k1": dict(kernel_size=1, padding=0),
    "groups2": dict(groups=2),
    "asymmetric": dict(kernel_size=(3, 1), stride=(2, 1), padding=(1, 0)),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("geometry", GEOMETRIES, ids=list(GEOMETRIES))
def test_conv_geometries_fuse(geometry, dtype):
    model = build(2, lambda t, y: F.relu(t), dtype, False, **GEOMETRIES[geometry])
    inputs = make_inputs(2, dtype)
    m, kinds = optimized(model, inputs)
    assert "jitfuse::conv2d_relu" in kinds and not set(kinds) & REPLACED, kinds
    assert_matches(m, model, inputs, dtype)


def test_depthwise_conv_fuses():
    class Depthwise(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(8, 8, 3, padding=1, groups=8)

        def forward(self, x):
            return F.relu6(self.conv(x))

    model, x = Depthwise().eval(), torch.randn(2, 8, 9, 9)
    m, kinds = optimized(model, (x,))
    assert "jitfuse::conv2d_hardtanh" in kinds and not set(kinds) & REPLACED, kinds
    assert_matches(m, model, (x,), torch.float32)


def test_shape_change_after_fusion_stays_right():
    model = build(2, lambda t, y: F.relu(t + y), torch.float32, False)
    m, kinds = optimized(model, make_inputs(2))
    assert "jitfuse::conv2d_sum_relu" in kinds
    for n, size in [(1, (7, 9)), (3, (16, 5)), (5, (1, 1)), (2, (33, 17))]:
        assert_matches(m, model, make_inputs(2, n=n, size=size), torch.float32)


# ---- what must stay right, fused or not -------------------------------------------------------

def stays_right(tail, inputs=None, dim=2, dtype=torch.float32):
    model = build(dim, tail, dtype, False)
    inputs = inputs or make_inputs(dim, dtype)
    m, kinds = optimized(model, inputs)
    assert_matches(m, model, inputs, dtype)
    return kinds


def test_broadcasting_add_stays_right():
    stays_right(lambda t, y: t + y[:1, :, :1, :1])
    stays_right(lambda t, y: F.relu(y[:, :1] + t))


def test_add_that_grows_the_output_stays_right():
    x, y = make_inputs(2, n=1)
    y = torch.randn(3, 16, 12, 10)
    stays_right(lambda t, y: F.relu(t + y), inputs=(x, y))


def test_add_of_another_dtype_stays_right():
    model = build(2, lambda t, y: t + y.double(), torch.float32, False)
    inputs = make_inputs(2)
    m, _ = optimized(model, inputs)
    with torch.no_grad():
        got, ref = m(*inputs), model(*inputs)
    assert got.dtype == torch.float64 and max_rel_err(got, ref) <= 1e-5


def test_conv_output_read_twice_is_not_fused_into_its_activation():
    kinds = stays_right(lambda t, y: F.relu(t) + t)
    assert "jitfuse::conv2d_relu" not in kinds and "aten::relu" in kinds


def test_sum_operand_read_later_is_not_overwritten():
    stays_right(lambda t, y: (t + y) * y)
    stays_right(lambda t, y: F.relu(t + y) + y)


def test_add_into_the_other_operand_is_not_fused():
    """y += conv(x) writes into y: a fused op returning a new tensor would lose that write."""
    model = build(2, lambda t, y: y.add_(t), torch.float32, False)
    x, y = make_inputs(2)
    m, kinds = optimized(model, (x, y.clone()))
    assert "jitfuse::conv2d_sum" not in kinds
    y1, y2 = y.clone(), y.clone()
    with torch.no_grad():
        got, ref = m(x, y1), model(x, y2)
    assert max_rel_err(got, ref) <= 1e-5 and max_rel_err(y1, y2) <= 1e-5


def test_float64_is_left_alone():
    kinds = stays_right(lambda t, y: F.relu(t + y), dtype=torch.float64)
    assert not fused_ops(kinds), kinds


def test_transposed_conv_is_left_alone():
    class Transposed(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.ConvTranspose2d(8, 16, 3, padding=1)

        def forward(self, x):
            return F.relu(self.conv(x))

    model, x = Transposed().eval(), torch.randn(2, 8, 9, 9)
    m, kinds = optimized(model, (x,))
    assert not fused_ops(kinds) and "aten::_convolution" in kinds, kinds
    assert_matches(m, model, (x,), torch.float32)


def test_module_that_was_not_frozen_is_left_alone():
    model = build(2, lambda t, y: F.relu(t + y), torch.float32, False)
    inputs = make_inputs(2)
    with torch.no_grad():
        m = torch.jit.trace(model, inputs)
        for _ in range(3):
            m(*inputs)
        from harness import node_kinds
        kinds = node_kinds(m.graph_for(*inputs))
    assert not fused_ops(kinds), kinds
    assert_matches(m, model, inputs, torch.float32)


def test_padding_same_stays_right():
    stays_right(lambda t, y: F.relu(t), inputs=None)
    model = ConvThen(2, lambda t, y: F.relu(t), padding="same").eval()
    inputs = make_inputs(2)
    m, _ = optimized(model, inputs)
    assert_matches(m, model, inputs, torch.float32)


# ---- switches --------------------------------------------------------------------------------

def test_set_enabled_false_keeps_modules_stock():
    model = build(2, lambda t, y: F.relu(t + y), torch.float32, False)
    jitfuse.set_enabled(False)
    assert not jitfuse.is_enabled()
    m, kinds = optimized(model, make_inputs(2))
    assert not fused_ops(kinds), kinds
    jitfuse.set_enabled(True)
    m, kinds = optimized(model, make_inputs(2))
    assert "jitfuse::conv2d_sum_relu" in kinds


def test_one_pattern_can_be_turned_off():
    model = build(2, lambda t, y: F.relu(t + y), torch.float32, False)
    jitfuse.set_pattern_enabled("conv2d_sum_relu", False)
    assert not jitfuse.is_pattern_enabled("conv2d_sum_relu")
    m, kinds = optimized(model, make_inputs(2))
    assert "jitfuse::conv2d_sum_relu" not in kinds
    assert "jitfuse::conv2d_sum" in kinds and "aten::relu" in kinds
    assert_matches(m, model, make_inputs(2), torch.float32)


def test_unknown_pattern_name_is_an_error():
    with pytest.raises(RuntimeError, match="unknown pattern 'conv2d_nope'"):
        jitfuse.set_pattern_enabled("conv2d_nope", False)


def test_every_seed_conv_pattern_has_a_name():
    names = set(jitfuse.patterns())
    for n in ["conv2d_relu", "conv2d_sum", "conv2d_sum_relu", "conv2d_sigmoid", "conv2d_swish",
              "conv2d_hardtanh", "conv2d_silu", "conv2d_elu", "conv3d_relu", "conv3d_sum",
              "conv3d_sum_relu", "conv3d_silu", "conv2d", "conv3d"]:
        assert n in names


# ---- the sum writes into its operand only when nothing reads it afterwards --------------------

class Residual(nn.Module):
    """ResNet's shape: out = relu(conv_b(relu(conv_a(x))) + identity), identity = conv_c(x)."""

    def __init__(self, read_identity_later=False):
        super().__init__()
        self.conv_a = nn.Conv2d(8, 8, 3, padding=1)
        self.conv_b = nn.Conv2d(8, 16, 3, padding=1)
        self.conv_c = nn.Conv2d(8, 16, 1)
        self.read_identity_later = read_identity_later

    def forward(self, x):
        identity = self.conv_c(x)
        out = F.relu(self.conv_b(F.relu(self.conv_a(x))) + identity)
        return out * identity if self.read_identity_later else out


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_sum_writes_into_a_dead_fresh_operand(dtype):
    model, x = Residual().to(dtype).eval(), torch.randn(2, 8, 9, 9, dtype=dtype)
    m, kinds = optimized(model, (x,))
    assert kinds.get("jitfuse::conv2d_sum_relu_") == 1, kinds
    assert_matches(m, model, (x,), dtype)
    assert_matches(m, model, (torch.randn(3, 8, 5, 7, dtype=dtype),), dtype)


def test_sum_operand_read_afterwards_is_not_written():
    model, x = Residual(read_identity_later=True).eval(), torch.randn(2, 8, 9, 9)
    m, kinds = optimized(model, (x,))
    assert "jitfuse::conv2d_sum_relu" in kinds and "jitfuse::conv2d_sum_relu_" not in kinds, kinds
    assert_matches(m, model, (x,), torch.float32)


def test_sum_operand_that_is_a_graph_input_is_not_written():
    model = build(2, lambda t, y: F.relu(t + y), torch.float32, False)
    m, kinds = optimized(model, make_inputs(2))
    assert "jitfuse::conv2d_sum_relu" in kinds and "jitfuse::conv2d_sum_relu_" not in kinds, kinds


# ---- pooling on oneDNN, in the layout the fused convs leave -----------------------------------

class ConvPoolHead(nn.Module):
    """ResNet's stem and head: conv, relu, max pool, conv, global average pool, flatten."""

    def __init__(self, pool_size=1, ceil_mode=False):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 7, stride=2, padding=3)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=ceil_mode)
        self.conv = nn.Conv2d(16, 32, 3, padding=1)
        self.head = nn.AdaptiveAvgPool2d(pool_size)

    def forward(self, x):
        x = self.pool(F.relu(self.stem(x)))
        return torch.flatten(self.head(F.relu(self.conv(x))), 1)


@pytest.mark.parametrize("ceil_mode", [False, True], ids=["floor", "ceil"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_pooling_runs_on_onednn(dtype, channels_last, ceil_mode):
    model = ConvPoolHead(ceil_mode=ceil_mode).to(dtype).eval()
    x = torch.randn(2, 3, 37, 29, dtype=dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    m, kinds = optimized(model, (x,))
    assert kinds.get("jitfuse::max_pool2d") == 1 and kinds.get("jitfuse::adaptive_avg_pool2d") == 1, kinds
    assert not {"aten::max_pool2d", "aten::adaptive_avg_pool2d"} & set(kinds), kinds
    assert kinds.get("jitfuse::to_channels_last") == 1, "one layout change, before the stem"
    assert_matches(m, model, (x,), dtype)
    assert_matches(m, model, (torch.randn(1, 3, 20, 23, dtype=dtype),), dtype)


def test_pooling_left_alone_where_onednn_does_not_apply():
    model = ConvPoolHead(pool_size=2).eval()          # not a global average
    m, kinds = optimized(model, (torch.randn(2, 3, 32, 32),))
    assert "aten::adaptive_avg_pool2d" in kinds and "jitfuse::max_pool2d" in kinds, kinds
    assert_matches(m, model, (torch.randn(2, 3, 32, 32),), torch.float32)
    model64 = ConvPoolHead().double().eval()           # float64: no jitfuse op at all
    m, kinds = optimized(model64, (torch.randn(2, 3, 32, 32).double(),))
    assert not fused_ops(kinds), kinds
