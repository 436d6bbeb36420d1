"""The FX front-end (jitfuse.fx, torch.compile(backend="jitfuse"), jitfuse.export) runs the same
pass tables as the TorchScript executor: on the same models both fuse the same set of ops, and the
fused graphs give the eager answer. The switches mean the same on both."""
import collections
import os
import sys

import pytest
import torch
import torch.nn.functional as F

import jitfuse
import jitfuse.compile
import jitfuse.export
import jitfuse.fx
from deploy_models import make_model
from harness import TOLERANCE, fx_spelled_jitfuse_ops, max_rel_err, optimized

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "bench"))
from encoder import Encoder, bert_base  # noqa: E402


def torchscript_fused(model, inputs):
    """The jitfuse ops of the executor's optimized plan (its types specialized, as the FX graph's are)."""
    _, kinds = optimized(model, inputs)
    return collections.Counter(fx_spelled_jitfuse_ops(kinds))


def fx_ops(gm):
    return collections.Counter(n.target.name().split("::")[1] for n in gm.graph.nodes
                               if n.op == "call_function" and isinstance(n.target, torch._ops.OpOverload)
                               and n.target.namespace == "jitfuse")


def exported(model, inputs):
    with torch.no_grad():
        return torch.export.export(model, inputs, strict=False).module()


def first(out):
    return out[0] if isinstance(out, (tuple, list)) else out


def encoder_inputs(batch=2, seq=24):
    ids, mask = torch.randint(0, 1000, (batch, seq)), torch.ones(batch, seq, dtype=torch.long)
    mask[-1, seq - 4:] = 0
    return ids, mask


MODELS = {
    "small_resnet": (make_model, lambda: (torch.randn(2, 3, 32, 32),)),
    "encoder": (lambda: Encoder(layers=2).eval(), encoder_inputs),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_both_front_ends_fuse_the_same_ops(name, dtype):
    torch.manual_seed(0)
    build, make_inputs = MODELS[name]
    model = build().to(dtype)
    inputs = tuple(t.to(dtype) if t.is_floating_point() else t for t in make_inputs())
    expected = torchscript_fused(model, inputs)
    assert expected, "the TorchScript passes fused nothing: the comparison would prove nothing"
    fused = jitfuse.fx.fuse(exported(model, inputs))
    assert fx_ops(fused) == expected
    with torch.no_grad():
        got, ref = first(fused(*inputs)), first(model(*inputs))
    assert got.dtype == ref.dtype and got.shape == ref.shape
    assert max_rel_err(got, ref) <= TOLERANCE[dtype]


def test_bert_base_fuses_the_same_ops_on_both_front_ends():
    model = bert_base()
    ids, mask = torch.randint(0, model.config.vocab_size, (1, 128)), torch.ones(1, 128, dtype=torch.long)
    mask[:, 100:] = 0
    expected = torchscript_fused(model, (ids, mask))
    layers = model.config.num_hidden_layers
    assert expected["attention"] == layers and expected["linear_gelu"] == layers
    fused = jitfuse.fx.fuse(exported(model, (ids, mask)))
    assert fx_ops(fused) == expected
    with torch.no_grad():
        assert (first(fused(ids, mask)) - first(model(ids, mask))).abs().max().item() <= 1e-4


def test_switches_mean_the_same():
    model, inputs = make_model(), (torch.randn(1, 3, 16, 16),)
    gm = exported(model, inputs)
    jitfuse.set_enabled(False)
    try:
        assert jitfuse.fx.fuse(gm) is gm
    finally:
        jitfuse.set_enabled(True)
    jitfuse.set_pattern_enabled("conv2d_relu", False)
    try:
        ops = fx_ops(jitfuse.fx.fuse(gm))
        assert ops == torchscript_fused(model, inputs) and "conv2d_relu" not in ops
    finally:
        jitfuse.set_pattern_enabled("conv2d_relu", True)
    assert "conv2d_relu" in fx_ops(jitfuse.fx.fuse(gm))


def test_weights_that_are_inputs_are_left_alone():
    """A weight the graph takes as an input is not constant: no pattern may take it."""
    class Conv(torch.nn.Module):
        def forward(self, x, w):
            return F.relu(F.conv2d(x, w, None, 1, 1))
    x, w = torch.randn(1, 8, 8, 8), torch.randn(8, 8, 3, 3)
    fused = jitfuse.fx.fuse(exported(Conv(), (x, w)))
    assert not fx_ops(fused)
    torch.testing.assert_close(fused(x, w), F.relu(F.conv2d(x, w, None, 1, 1)))


def test_symbolic_shapes_are_left_unfused_with_a_warning():
    """The tables match graphs specialized to their shapes; a dynamic batch is not one (yet)."""
    model, x = make_model(), torch.randn(2, 3, 16, 16)
    batch = torch.export.Dim("batch")
    with torch.no_grad():
        gm = torch.export.export(model, (x,), dynamic_shapes=({0: batch},), strict=False).module()
    with pytest.warns(UserWarning, match="symbolic shapes"):
        assert jitfuse.fx.fuse(gm) is gm


def test_compile_backend_by_name():
    model, inputs = make_model(), (torch.randn(2, 3, 32, 32),)
    seen = []

    def recording(gm, example_inputs):
        compiled = jitfuse.compile.backend(gm, example_inputs)
        seen.append(getattr(compiled, "jitfuse_graph", None))
        return compiled

    with torch.no_grad():
        ref = model(*inputs)
        torch._dynamo.reset()
        torch.testing.assert_close(torch.compile(model, backend="jitfuse")(*inputs), ref)
        torch._dynamo.reset()
        # inductor's options reach inductor (the default wrapper is C++)
        python_wrapper = torch.compile(model, backend="jitfuse", options={"cpp_wrapper": False})
        torch.testing.assert_close(python_wrapper(*inputs), ref)
        torch._dynamo.reset()
        with pytest.raises(Exception, match="no_such_option"):
            torch.compile(model, backend="jitfuse", options={"no_such_option": 1})(*inputs)
        torch._dynamo.reset()
        torch.testing.assert_close(torch.compile(model, backend=recording)(*inputs), ref)
    assert fx_ops(seen[0]) == torchscript_fused(model, inputs)
    # with gradients on, weights are not constants: inductor gets the graph as it is
    torch._dynamo.reset()
    seen.clear()
    out = torch.compile(model, backend=recording)(*inputs)
    assert seen == [None] and out.requires_grad
    torch._dynamo.reset()


def test_export_package_runs_fused_in_aotinductor(tmp_path):
    model, inputs = make_model(), (torch.randn(2, 3, 32, 32),)
    program = jitfuse.export.fuse_program(model, inputs)
    assert fx_ops(program.module()) == torchscript_fused(model, inputs)
    path = jitfuse.export.package(model, inputs, tmp_path / "model.pt2")
    with torch.no_grad():
        torch.testing.assert_close(torch._inductor.aoti_load_package(path)(*inputs), model(*inputs))


def test_optimize_ir_names_a_bad_call():
    ir = "graph(%x : Tensor):\n  %y : Tensor = aten::relu(%x)\n  return (%y)\n"
    with pytest.raises(RuntimeError, match="2 constants for a graph of 1 inputs"):
        torch.ops.jitfuse._optimize_ir(ir, [torch.zeros(1), torch.zeros(1)])
    with pytest.raises(RuntimeError):
        torch.ops.jitfuse._optimize_ir("graph(%x : Tensor):\n  return (%undefined)\n", [])


def test_report_on_exported_compiled_and_eager_models():
    model, inputs = make_model(), (torch.randn(1, 3, 16, 16),)
    with torch.no_grad():
        frozen = torch.jit.freeze(torch.jit.trace(model, inputs))
    expected = sorted(e["pattern"] for e in jitfuse.report(frozen, *inputs).fused())
    assert expected
    with torch.no_grad():
        program = torch.export.export(model, inputs, strict=False)
    for subject in (program, torch.compile(model, backend="jitfuse"), model):
        r = jitfuse.report(subject, *inputs)
        assert sorted(e["pattern"] for e in r.fused()) == expected, type(subject).__name__
        # nodes are named as in the exported graph
        assert any("conv2d" in e["node"] for e in r.fused()), [e["node"] for e in r.fused()]
        assert "conv2d_sum_relu" in str(r)
    torch._dynamo.reset()
