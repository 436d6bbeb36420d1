"""JITFUSE_DISABLE and JITFUSE_VERBOSE are read when the library loads: run them in a child."""
import os
import subprocess
import sys
import textwrap

import torch

import jitfuse

SCRIPT = textwrap.dedent("""
    import torch, torch.nn as nn, torch.nn.functional as F, jitfuse
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.c2, self.c3 = nn.Conv2d(4, 4, 3, padding=1), nn.Conv3d(4, 4, 3, padding=1)
        def forward(self, x, y, z):
            return F.relu(self.c2(x) + y), F.silu(self.c3(z))
    x, y, z = torch.randn(1, 4, 6, 6), torch.randn(1, 4, 6, 6), torch.randn(1, 4, 3, 4, 4)
    with torch.no_grad():
        m = torch.jit.freeze(torch.jit.trace(M().eval(), (x, y, z)))
        m(x, y, z); m(x, y, z)
        print(sorted({n.kind() for n in m.graph_for(x, y, z).nodes() if n.kind().startswith("jitfuse::conv")}))
""")


def run_child(**env):
    return subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                          env={**os.environ, **env}, check=True, timeout=300)


def test_jitfuse_disable_turns_named_patterns_off():
    out = run_child(JITFUSE_DISABLE="conv2d_sum_relu, conv3d_silu").stdout
    assert "jitfuse::conv2d_sum" in out and "conv2d_sum_relu" not in out
    assert "jitfuse::conv3d'" in out and "conv3d_silu" not in out


def test_jitfuse_verbose_prints_one_line_per_rewrite():
    err = run_child(JITFUSE_VERBOSE="1").stderr
    lines = [l for l in err.splitlines() if l.startswith("jitfuse: ")]
    assert any(l.startswith("jitfuse: conv2d_sum_relu <- aten::_convolution") and "aten::add" in l
               and "aten::relu" in l for l in lines), err
    assert any(l.startswith("jitfuse: conv3d_silu <- aten::_convolution") for l in lines), err
    assert len(lines) == 2, lines


def test_loading_twice_is_a_no_op():
    import importlib
    importlib.reload(jitfuse)
    jitfuse._load()
    assert sum(p.endswith("libjitfuse.so") for p in torch.ops.loaded_libraries) == 1

