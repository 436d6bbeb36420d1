"""Repeated calls leak nothing: RSS is flat after warm-up over 10k calls of fused fp32, encoder
and int8 modules (caches of primitives and prepacked weights fill during warm-up and stay)."""
import os
import sys

import pytest
import torch

import jitfuse  # noqa: F401
from deploy_models import int8_model, make_model
from harness import node_kinds

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "bench"))
from encoder import Encoder  # noqa: E402

# Under AddressSanitizer (scripts/sanitize.sh) freed memory waits in ASan's quarantine: RSS grows
# by design there. The normal run measures it.
pytestmark = pytest.mark.skipif("libasan" in os.environ.get("LD_PRELOAD", ""),
                                reason="ASan's quarantine keeps freed memory")

CALLS, WARMUP = 10_000, 1_000
GROWTH_LIMIT_MB = 4.0  # allocator noise; a leak of even 1 KB per call would be ~10 MB


def rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def conv_case():
    x = torch.randn(1, 3, 16, 16)
    return torch.jit.freeze(torch.jit.trace(make_model(), x)), (x,)


def encoder_case():
    torch.manual_seed(0)
    ids, mask = torch.randint(0, 1000, (1, 12)), torch.ones(1, 12, dtype=torch.long)
    return torch.jit.freeze(torch.jit.trace(Encoder(hidden=32, heads=2, ffn=64).eval(), (ids, mask))), (ids, mask)


def int8_case():
    x = torch.randn(1, 3, 16, 16)
    return int8_model(make_model(), x), (x,)


@pytest.mark.parametrize("make", [conv_case, encoder_case, int8_case], ids=["conv", "encoder", "int8"])
def test_rss_is_flat_over_ten_thousand_calls(make):
    module, inputs = make()
    with torch.no_grad():
        for _ in range(WARMUP):
            module(*inputs)
        assert any(k.startswith("jitfuse::") for k in node_kinds(module.graph_for(*inputs)))
        before = rss_mb()
        for _ in range(CALLS):
            module(*inputs)
        growth = rss_mb() - before
    print(f"RSS growth over {CALLS} calls: {growth:.2f} MB")
    assert growth <= GROWTH_LIMIT_MB
