"""jitfuse.optimize: fused before the first call, saved fused, loaded fused; and without jitfuse
a fused file fails with a message naming it."""
import os
import subprocess
import sys
import textwrap

import torch

import jitfuse
from deploy_models import make_model, save_all
from harness import assert_matches, fused_ops, node_kinds


def first_call_kinds(module, x):
    with torch.no_grad():
        module(x)
    return node_kinds(torch.jit.last_executed_optimized_graph())


def test_optimize_fuses_before_the_first_call():
    model, x = make_model(), torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        frozen = torch.jit.freeze(torch.jit.trace(model, x))
        frozen(x)  # an executor that already exists must not keep the optimized copy unfused
        fused = jitfuse.optimize(frozen)
    kinds = node_kinds(fused.graph)
    assert {"jitfuse::conv2d_relu", "jitfuse::conv2d_sum_relu_", "jitfuse::conv2d_silu"} <= set(kinds), kinds
    assert "aten::_convolution" not in kinds
    assert "jitfuse::conv2d_silu" in first_call_kinds(fused, x)
    assert_matches(fused, model, (x,), torch.float32)


def test_optimize_is_idempotent_under_the_executor():
    model, x = make_model(), torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        fused = jitfuse.optimize(torch.jit.freeze(torch.jit.trace(model, x)))
        for _ in range(3):
            fused(x)
        kinds = node_kinds(fused.graph_for(x))
    assert kinds.get("jitfuse::to_channels_last") == 1 and kinds.get("jitfuse::like_memory_format") == 1, kinds


def test_saved_fused_module_loads_fused_and_right(tmp_path):
    model, x, expected = save_all(str(tmp_path))
    loaded = torch.jit.load(str(tmp_path / "fused.pt"))
    assert "jitfuse::conv2d_sum_relu_" in first_call_kinds(loaded, x)
    assert_matches(loaded, model, (x,), torch.float32)


def test_saved_fused_int8_module_loads_fused_and_right(tmp_path):
    """An int8 module fused offline saves with its int8 weights and loads fused: its first call
    runs the int8 ops and gives the numbers of the module it was saved from."""
    save_all(str(tmp_path))
    io = torch.jit.load(str(tmp_path / "int8_io.pt"))
    loaded = torch.jit.load(str(tmp_path / "int8_fused.pt"))
    kinds = first_call_kinds(loaded, io.input)
    assert "jitfuse::qconv2d_relu" in kinds and "aten::_convolution" not in kinds, kinds
    with torch.no_grad():
        assert torch.equal(loaded(io.input), io.expected)


def test_optimize_rejects_what_is_not_a_script_module():
    import pytest
    with pytest.raises(TypeError, match="ScriptModule"):
        jitfuse.optimize(make_model())


def test_optimize_wants_a_frozen_module():
    import pytest
    model, x = make_model(), torch.randn(2, 3, 32, 32)
    with pytest.raises(RuntimeError, match="freeze the module first"):
        jitfuse.optimize(torch.jit.trace(model, x))


def test_loading_a_fused_file_without_jitfuse_names_jitfuse(tmp_path):
    save_all(str(tmp_path))
    script = f"import torch; torch.jit.load({str(tmp_path / 'fused.pt')!r})"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode != 0
    assert "jitfuse::" in out.stderr, out.stderr[-2000:]


def test_optimize_a_loaded_module(tmp_path):
    """A loaded file builds its int lists with prim::ListConstruct: optimize folds them first."""
    model, x, expected = save_all(str(tmp_path))
    fused = jitfuse.optimize(torch.jit.load(str(tmp_path / "plain.pt")))
    assert "jitfuse::conv2d_sum_relu_" in node_kinds(fused.graph)
    assert_matches(fused, model, (x,), torch.float32)
