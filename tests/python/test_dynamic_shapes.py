"""Dynamic shapes: a fused module called with 20 random batch sizes and spatial sizes / sequence
lengths (1 and sizes that are not multiples of the vector width among them) gives right answers
every time. The executor plans for the shapes it profiled; the fused kernels must take any."""
import os
import sys

import torch

import jitfuse  # noqa: F401
from deploy_models import int8_model, make_model
from harness import max_rel_err, node_kinds

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "bench"))
from encoder import Encoder  # noqa: E402

SIZES = torch.Generator().manual_seed(7)


def sizes(n, low, high, must=(1,)):
    """n sizes in [low, high]: the `must` ones, then random ones (odd ones included)."""
    out = list(must)
    while len(out) < n:
        out.append(int(torch.randint(low, high + 1, (1,), generator=SIZES)))
    return out


def test_conv_net_takes_any_batch_and_spatial_size():
    model = make_model()
    with torch.no_grad():
        m = torch.jit.freeze(torch.jit.trace(model, torch.randn(2, 3, 32, 32)))
        for _ in range(3):
            m(torch.randn(2, 3, 32, 32))
        assert "jitfuse::conv2d_sum_relu_" in node_kinds(m.graph_for(torch.randn(2, 3, 32, 32)))
        for n, hw in zip(sizes(20, 1, 5), sizes(20, 1, 37, must=(1, 2, 7, 9, 17, 33))):
            x = torch.randn(n, 3, hw, hw + 3)
            assert max_rel_err(m(x), model(x)) <= 1e-5, (n, hw)


def test_encoder_takes_any_batch_and_sequence_length():
    torch.manual_seed(0)
    model = Encoder(hidden=48, heads=3, ffn=100).eval()

    def inputs(b, s):
        ids = torch.randint(0, 1000, (b, s))
        mask = torch.ones(b, s, dtype=torch.long)
        mask[:, s // 2 + 1:] = 0
        return ids, mask

    with torch.no_grad():
        m = torch.jit.freeze(torch.jit.trace(model, inputs(2, 16)))
        for _ in range(3):
            m(*inputs(2, 16))
        kinds = node_kinds(m.graph_for(*inputs(2, 16)))
        assert "jitfuse::add_layernorm" in kinds and "jitfuse::linear_gelu" in kinds, kinds
        for b, s in zip(sizes(20, 1, 4), sizes(20, 1, 70, must=(1, 2, 3, 15, 17, 63))):
            x = inputs(b, s)
            assert max_rel_err(m(*x), model(*x)) <= 1e-5, (b, s)


def test_int8_net_takes_any_batch_and_spatial_size():
    """int8 against stock PyTorch running the same reference graph. An int8 op's accumulation
    order differs from ATen's float conv on dequantized values, so a value near a rounding tie can
    land one quantization step away; downstream that is at most ~3e-3 relative here (1e-2 allowed,
    most shapes agree to 1e-7)."""
    model = make_model()
    qmodel = int8_model(model, torch.randn(2, 3, 32, 32))
    jitfuse.set_enabled(False)
    stock = int8_model(model, torch.randn(2, 3, 32, 32))  # same calibration seed: same recipe
    jitfuse.set_enabled(True)
    with torch.no_grad():
        for _ in range(3):
            qmodel(torch.randn(2, 3, 32, 32))
        # the block input is read by nothing after the sum: the sum writes into it
        assert "jitfuse::qconv2d_sum_relu_" in node_kinds(qmodel.graph_for(torch.randn(2, 3, 32, 32)))
        for n, hw in zip(sizes(20, 1, 5), sizes(20, 2, 37, must=(2, 3, 7, 9, 17, 33))):
            x = torch.randn(n, 3, hw, hw + 1)
            jitfuse.set_enabled(False)
            ref = stock(x)
            jitfuse.set_enabled(True)
            got = qmodel(x)
            assert max_rel_err(got, ref) <= 1e-2, (n, hw)


class UnbatchedConv(torch.nn.Module):
    """Scripted, aten::conv2d takes a 3-D input as a batch of one; the executor's types need not
    say which rank the fused op gets. (The int8 ops take it too: test_op_errors' "wrong rank".)"""

    def __init__(self):
        super().__init__()
        self.conv, self.conv2 = torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x):
        y = torch.relu(self.conv(x))
        return torch.relu(self.conv2(y) + y)


def test_fused_convs_take_unbatched_inputs():
    torch.manual_seed(0)
    model = UnbatchedConv().eval()
    with torch.no_grad():
        m = torch.jit.freeze(torch.jit.script(model))
        for x in [torch.randn(2, 3, 9, 9)] * 3 + [torch.randn(3, 9, 9), torch.randn(3, 5, 7)]:
            assert max_rel_err(m(x), model(x)) <= 1e-5, x.shape
        assert "jitfuse::conv2d_sum_relu" in node_kinds(m.graph_for(torch.randn(3, 9, 9)))
