"""Every jitfuse op has a fake implementation (jitfuse/fake.py) for torch.compile's and
torch.export's tracers, and it tells what the real kernel returns: shape, dtype, strides, and for
the in-place ops the tensor they write. The calls are those of test_op_errors' table that the
kernels accept (contiguous, channels_last, non-contiguous, empty batches, unbatched inputs...).
"""
import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode

import jitfuse.fake
from test_op_errors import CASES, TABLE, all_ops, family


class JitfuseCalls(TorchDispatchMode):
    """Records each jitfuse op called, with its arguments and what the kernel returned."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func.namespace == "jitfuse":
            self.calls.append((func, args, kwargs or {}, out))
        return out


def real_calls(op):
    calls = []
    for case in CASES:
        if TABLE[op][CASES.index(case)] != "right":
            continue
        torch.manual_seed(0)
        fused, _ = family(op)(op, case)
        recorder = JitfuseCalls()
        with torch.no_grad(), recorder:
            fused()
        calls += [(case, *c) for c in recorder.calls]
    return calls


def layout(t):
    return t.shape, t.dtype, t.stride() if t.numel() else None


def check_fake(func, args, kwargs, real, case=""):
    """The fake, on fake copies of the arguments, returns what the kernel returned: same layouts,
    and the argument itself where the kernel returned its argument."""
    with FakeTensorMode() as mode:
        fake_args = [mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args]
        fake = func(*fake_args, **kwargs)
    reals = real if isinstance(real, (tuple, list)) else (real,)
    fakes = fake if isinstance(fake, (tuple, list)) else (fake,)
    assert [layout(f) for f in fakes] == [layout(r) for r in reals], case
    for a, fake_a in zip(args, fake_args):
        for r, f in zip(reals, fakes):
            if r is a:
                assert f is fake_a, (case, "the kernel returns its argument; the fake must too")


def test_every_op_has_a_fake():
    assert jitfuse.fake.faked_ops() == all_ops()


@pytest.mark.parametrize("op", sorted(TABLE))
def test_fake_tells_what_the_kernel_returns(op):
    calls = real_calls(op)
    assert calls, "no accepted call of the op in test_op_errors' table"
    for case, func, args, kwargs, real in calls:
        check_fake(func, args, kwargs, real, case)

def bert_qkv(dtype, batch=2, seq=16, heads=4, dim=64):
    qkv = torch.randn(batch, seq, 3 * heads * dim).to(dtype)
    q, k, v = (t.view(batch, seq, heads, dim).transpose(1, 2) for t in qkv.split(heads * dim, -1))
    return q, k, v, torch.zeros(batch, 1, 1, seq)


def qweight(n, k):
    return torch.randint(-127, 128, (n, k), dtype=torch.int8), torch.rand(n) / 100


# Calls the error table does not make: bf16, Winograd-sized 3x3 convs, BERT's attention on views
# of a QKV projection (each kernel the CPU has), the int8 linears in bf16 models.
ops = torch.ops.jitfuse
EXTRA = {
    "conv2d_relu bf16 nchw 3x3x64": lambda: ops.conv2d_relu(
        torch.randn(1, 64, 14, 14).bfloat16(), torch.randn(64, 64, 3, 3).bfloat16(), None, [1], [1], [1], 1),
    "conv2d f32 nchw 3x3x64 (Winograd's)": lambda: ops.conv2d(
        torch.randn(1, 64, 14, 14), torch.randn(64, 64, 3, 3), torch.randn(64), [1], [1], [1], 1),
    "conv2d_sum_relu bf16 channels_last 1x1": lambda: ops.conv2d_sum_relu(
        torch.randn(2, 64, 7, 7).bfloat16().contiguous(memory_format=torch.channels_last),
        torch.randn(256, 64, 1, 1).bfloat16(), None, [1], [0], [1], 1,
        torch.randn(2, 256, 7, 7).bfloat16(), 1.0),
    "attention bf16 heads_last": lambda: ops.attention(*bert_qkv(torch.bfloat16), 0.125, False, True),
    "attention f32 low precision": lambda: ops.attention(*bert_qkv(torch.float32), 8.0, True, True, True),
    "attention f32 heads first": lambda: ops.attention(*bert_qkv(torch.float32), None, False, False),
    "qlinear_dynamic_gelu bf16": lambda: ops.qlinear_dynamic_gelu(
        torch.randn(2, 16, 64).bfloat16(), None, *qweight(256, 64), torch.randn(256), "none"),
    "qlinear_dynamic_rows bf16": lambda: ops.qlinear_dynamic_rows(
        torch.randn(2, 16, 64).bfloat16(), torch.rand(64) + 0.5, *qweight(256, 64), None, torch.rand(256) + 0.5),
    "add_layernorm bf16": lambda: ops.add_layernorm(
        torch.randn(2, 16, 64).bfloat16(), torch.randn(2, 16, 64).bfloat16(), 1, [64],
        torch.ones(64).bfloat16(), torch.zeros(64).bfloat16(), 1e-12),
    "linear_gelu bf16": lambda: ops.linear_gelu(
        torch.randn(2, 16, 64).bfloat16(), torch.randn(256, 64).bfloat16(), None, "tanh"),
}


@pytest.mark.parametrize("name", sorted(EXTRA))
def test_fake_on_model_shapes(name):
    recorder = JitfuseCalls()
    with torch.no_grad(), recorder:
        EXTRA[name]()
    (func, args, kwargs, real), = recorder.calls
    check_fake(func, args, kwargs, real, name)


class Fused(torch.nn.Module):
    """A model written with jitfuse ops, as a fusing front-end would leave it."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Parameter(torch.randn(32, 3, 3, 3), requires_grad=False)
        self.fc = torch.nn.Parameter(torch.randn(64, 32), requires_grad=False)
        self.qfc, self.qfc_scales = qweight(16, 64)

    def forward(self, x):
        y = ops.conv2d_relu(x, self.conv, None, [1], [1], [1], 1)
        y = ops.adaptive_avg_pool2d(y, [1, 1]).flatten(1)
        y = ops.linear_gelu(y, self.fc, None, "none")
        return ops.qlinear_dynamic(y, None, self.qfc, self.qfc_scales, None)


def test_export_compile_and_aotinductor_trace_the_ops(tmp_path):
    torch.manual_seed(0)
    model, x = Fused().eval(), torch.randn(2, 3, 16, 16)
    expected = model(x)
    program = torch.export.export(model, (x,))
    called = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    assert {"jitfuse.conv2d_relu.default", "jitfuse.linear_gelu.default", "jitfuse.qlinear_dynamic.default"} <= called
    torch.testing.assert_close(program.module()(x), expected)
    torch.testing.assert_close(torch.compile(model, fullgraph=True)(x), expected)
    # AOTInductor compiles C++ that calls the ops through the dispatcher (about 20 s on 2 cores)
    package = torch._inductor.aoti_compile_and_package(program, package_path=str(tmp_path / "fused.pt2"))
    torch.testing.assert_close(torch._inductor.aoti_load_package(package)(x), expected)
