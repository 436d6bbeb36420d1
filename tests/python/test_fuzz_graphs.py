"""Property-based graph tests: random small models built from the ops jitfuse fuses, traced,
frozen and run fused, against the same model run by stock PyTorch (jitfuse off). Zero mismatches
beyond the stated tolerances, zero crashes.

Examples per test: the "ci" hypothesis profile (default, a few hundred in all) or the "thorough"
one (over a thousand): `pytest tests/python/test_fuzz_graphs.py --hypothesis-profile=thorough`.
Every failure hypothesis finds becomes a plain test in test_fuzz_regressions.py.

Tolerances (relative to the output's largest magnitude): float32 1e-5 per fused op; float64 is
never fused (exact); bfloat16 is compared with a float32 run on the same bf16 weights and inputs:
jitfuse (rounding once per fused op) must be at most twice as far from it as stock bf16 (rounding
after every op), or within 1e-2.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import jitfuse
from harness import max_rel_err, node_kinds

ACTIVATIONS = ["none", "relu", "relu_", "sigmoid", "silu", "swish", "hardtanh", "relu6", "elu", "gelu"]
DTYPES = [torch.float32, torch.float32, torch.bfloat16, torch.float64]


def activation(x, name):
    if name == "relu":
        return F.relu(x)
    if name == "relu_":
        return x.relu_()
    if name == "sigmoid":
        return torch.sigmoid(x)
    if name == "silu":
        return F.silu(x)
    if name == "swish":
        return x * torch.sigmoid(x)
    if name == "hardtanh":
        return F.hardtanh(x, -0.5, 1.5)
    if name == "relu6":
        return F.relu6(x)
    if name == "elu":
        return F.elu(x, 0.7)
    if name == "gelu":
        return F.gelu(x)
    return x


# ---- conv nets -------------------------------------------------------------------------------


@st.composite
def conv_nets(draw):
    dim = draw(st.sampled_from([2, 2, 2, 3]))
    spatial = [draw(st.integers(1, 9 if dim == 2 else 5)) for _ in range(dim)]
    channels = draw(st.integers(1, 8))
    steps, shape = [], [channels] + spatial
    for _ in range(draw(st.integers(1, 4))):
        groups = draw(st.sampled_from([g for g in (1, 2, 4) if shape[0] % g == 0]))
        out = groups * draw(st.integers(1, 4))
        k = draw(st.integers(1, 3))
        stride, pad, dil = draw(st.integers(1, 2)), draw(st.integers(0, 2)), draw(st.integers(1, 2))
        new_spatial = [(s + 2 * pad - dil * (k - 1) - 1) // stride + 1 for s in shape[1:]]
        assume(all(s >= 1 for s in new_spatial))
        same = new_spatial == shape[1:] and out == shape[0]
        # what is added after the conv: nothing, the conv's input (a residual), a broadcast
        sum_with = draw(st.sampled_from(["none", "broadcast", "scalar_row"] + (["input"] * 2 if same else [])))
        steps.append(dict(groups=groups, out=out, k=k, stride=stride, pad=pad, dil=dil,
                          bias=draw(st.booleans()), sum_with=sum_with,
                          conv_left=draw(st.booleans()), alpha=draw(st.sampled_from([1, 1, 2.0])),
                          inplace_add=draw(st.booleans()), act=draw(st.sampled_from(ACTIVATIONS)),
                          keep=draw(st.booleans())))  # keep: the conv output is also returned
        shape = [out] + new_spatial
    return dict(dim=dim, batch=draw(st.integers(1, 3)), channels=channels, spatial=spatial, steps=steps,
                dtype=draw(st.sampled_from(DTYPES)), channels_last=draw(st.booleans()),
                seed=draw(st.integers(0, 2**16)))


class ConvNet(nn.Module):
    def __init__(self, spec):
        super().__init__()
        torch.manual_seed(spec["seed"])
        conv = nn.Conv2d if spec["dim"] == 2 else nn.Conv3d
        self.spec, channels = spec, spec["channels"]
        self.convs = nn.ModuleList()
        self.extras = nn.ParameterList()
        for s in spec["steps"]:
            self.convs.append(conv(channels, s["out"], s["k"], s["stride"], s["pad"], s["dil"], s["groups"], s["bias"]))
            extra_shape = [s["out"]] + [1] * spec["dim"] if s["sum_with"] == "broadcast" else [1]
            self.extras.append(nn.Parameter(torch.randn(extra_shape), requires_grad=False))
            channels = s["out"]

    def forward(self, x):
        kept = []
        for conv, extra, s in zip(self.convs, self.extras, self.spec["steps"]):
            y = conv(x)
            if s["keep"]:
                kept.append(y)
            if s["sum_with"] != "none":
                other = x if s["sum_with"] == "input" else extra
                if s["conv_left"]:
                    y = y.add_(other, alpha=s["alpha"]) if s["inplace_add"] and not s["keep"] else y.add(other, alpha=s["alpha"])
                else:
                    y = other + y
            x = activation(y, s["act"]) if not (s["act"] == "relu_" and s["keep"]) else F.relu(y)
        return tuple([x] + kept)


# ---- transformer-like blocks -----------------------------------------------------------------


@st.composite
def transformer_nets(draw):
    heads, head_dim = draw(st.integers(1, 3)), draw(st.integers(1, 8))
    return dict(batch=draw(st.integers(1, 3)), seq=draw(st.integers(1, 9)), heads=heads, head_dim=head_dim,
                ffn=draw(st.integers(1, 24)), scale_op=draw(st.sampled_from(["div", "mul"])),
                mask_first=draw(st.booleans()), act=draw(st.sampled_from(["relu", "gelu", "gelu_tanh", "none"])),
                residual_first=draw(st.booleans()), bias=draw(st.booleans()), qkv=draw(st.sampled_from([1, 3])),
                dtype=draw(st.sampled_from(DTYPES)), seed=draw(st.integers(0, 2**16)))


class Block(nn.Module):
    """Q/K/V linears, scaled masked softmax attention, head merge, out linear + add & LayerNorm,
    a feed-forward with an activation + add & LayerNorm."""

    def __init__(self, spec):
        super().__init__()
        torch.manual_seed(spec["seed"])
        h = spec["heads"] * spec["head_dim"]
        self.spec = spec
        self.q, self.k, self.v = (nn.Linear(h, h, bias=spec["bias"]) for _ in range(3))
        self.out, self.ln1, self.ln2 = nn.Linear(h, h), nn.LayerNorm(h), nn.LayerNorm(h)
        self.ffn1, self.ffn2 = nn.Linear(h, spec["ffn"], bias=spec["bias"]), nn.Linear(spec["ffn"], h)

    def forward(self, x, mask):
        s = self.spec
        b, n, h = x.shape
        split = lambda t: t.view(b, n, s["heads"], s["head_dim"]).transpose(1, 2)  # noqa: E731
        if s["qkv"] == 3:
            q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        else:  # one linear read by one consumer: nothing to merge
            q = k = v = split(self.q(x))
        scores = torch.matmul(q, k.transpose(-1, -2))
        scores = scores / (s["head_dim"] ** 0.5) if s["scale_op"] == "div" else scores * (s["head_dim"] ** -0.5)
        scores = mask + scores if s["mask_first"] else scores + mask
        ctx = torch.matmul(torch.softmax(scores, dim=-1), v)
        ctx = ctx.transpose(1, 2).contiguous().view(b, n, h)
        a = self.out(ctx)
        x = self.ln1(x + a if s["residual_first"] else a + x)
        f = self.ffn1(x)
        f = {"relu": F.relu, "gelu": F.gelu, "none": lambda t: t,
             "gelu_tanh": lambda t: F.gelu(t, approximate="tanh")}[s["act"]](f)
        return self.ln2(self.ffn2(f) + x)


# ---- the property ----------------------------------------------------------------------------


def run_frozen(model, inputs, enabled):
    """Outputs (a tuple) and the jitfuse ops in the optimized graph."""
    jitfuse.set_enabled(enabled)
    try:
        with torch.no_grad():
            m = torch.jit.freeze(torch.jit.trace(model, inputs, check_trace=False))
            for _ in range(2):
                m(*inputs)
            out = m(*inputs)
            fused_ops = [k for k in node_kinds(m.graph_for(*inputs)) if k.startswith("jitfuse::")]
    finally:
        jitfuse.set_enabled(True)
    return (out if isinstance(out, tuple) else (out,)), fused_ops


def check_model(model, inputs, dtype):
    model = model.eval()
    if dtype != torch.float32:
        model = model.to(dtype)
        inputs = tuple(t.to(dtype) if t.is_floating_point() else t for t in inputs)
    fused, fused_ops = run_frozen(model, inputs, True)
    stock, _ = run_frozen(model, inputs, False)
    assert len(fused) == len(stock)
    # Every conv and linear has a constant weight: float32/bf16 models always fuse something;
    # float64 ones never get a oneDNN conv or linear (LayerNorm and softmax have float64 paths).
    if dtype == torch.float64:
        assert not [k for k in fused_ops if "conv" in k or "linear" in k], fused_ops
    else:
        assert fused_ops
    if dtype == torch.bfloat16:
        with torch.no_grad():
            ref = model.float()(*(t.float() if t.is_floating_point() else t for t in inputs))
        ref = ref if isinstance(ref, tuple) else (ref,)
        for f, s, r in zip(fused, stock, ref):
            assert f.shape == r.shape and f.dtype == torch.bfloat16
            err_f, err_s = max_rel_err(f, r), max_rel_err(s, r)
            assert err_f <= max(2 * err_s, 1e-2), (err_f, err_s)
        return
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    for f, s in zip(fused, stock):
        assert f.shape == s.shape and f.dtype == s.dtype
        assert max_rel_err(f, s) <= tol * 10 if f.numel() else True  # 10: a chain of fused ops


SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


@settings(**SETTINGS)
@given(conv_nets())
def test_random_conv_nets_match_stock(spec):
    x = torch.randn([spec["batch"], spec["channels"]] + spec["spatial"])
    if spec["channels_last"]:
        x = x.contiguous(memory_format=torch.channels_last if spec["dim"] == 2 else torch.channels_last_3d)
    check_model(ConvNet(spec), (x,), spec["dtype"])


@settings(**SETTINGS)
@given(transformer_nets())
def test_random_transformer_blocks_match_stock(spec):
    torch.manual_seed(spec["seed"])
    x = torch.randn(spec["batch"], spec["seq"], spec["heads"] * spec["head_dim"])
    mask = torch.zeros(spec["batch"], 1, 1, spec["seq"])
    mask[..., spec["seq"] // 2 + 1:] = -10000.0
    check_model(Block(spec), (x, mask), spec["dtype"])
