"""The fused conv ops called directly: right answers on odd inputs, ATen-like errors on bad ones."""
import pytest
import torch
import torch.nn.functional as F

import jitfuse  # noqa: F401  (registers torch.ops.jitfuse)
from harness import cpu_flags

ops = torch.ops.jitfuse
W, B = torch.randn(16, 8, 3, 3), torch.randn(16)
GEOM = ([1, 1], [1, 1], [1, 1], 1)


def ref(x, w=W, b=B):
    return F.conv2d(x, w, b, 1, 1)


def test_direct_calls_match_aten():
    x, y = torch.randn(2, 8, 7, 9), torch.randn(2, 16, 7, 9)
    torch.testing.assert_close(ops.conv2d(x, W, B, *GEOM), ref(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ops.conv2d_relu(x, W, None, *GEOM), F.relu(ref(x, b=None)))
    torch.testing.assert_close(ops.conv2d_sum_relu(x, W, B, *GEOM, y, 2.0), F.relu(ref(x) + 2 * y))
    torch.testing.assert_close(ops.conv2d_hardtanh(x, W, B, *GEOM, -1, 2), F.hardtanh(ref(x), -1, 2))
    torch.testing.assert_close(ops.conv2d_elu(x, W, B, *GEOM, 0.3), F.elu(ref(x), 0.3))
    torch.testing.assert_close(ops.conv2d_sigmoid(x, W, B, *GEOM), torch.sigmoid(ref(x)))
    torch.testing.assert_close(ops.conv2d_silu(x, W, B, *GEOM), F.silu(ref(x)))


@pytest.mark.parametrize("make", [
    lambda x: x.transpose(2, 3).contiguous().transpose(2, 3),  # non-contiguous view
    lambda x: x.contiguous(memory_format=torch.channels_last),
    lambda x: x[:, :, ::2, 1:],                                # strided slice
], ids=["transposed_view", "channels_last", "strided_slice"])
def test_odd_layouts_give_right_answers(make):
    x = make(torch.randn(2, 8, 10, 11))
    torch.testing.assert_close(ops.conv2d_relu(x, W, B, *GEOM), F.relu(ref(x)), rtol=1e-5, atol=1e-5)


def test_empty_batch_gives_an_empty_result():
    out = ops.conv2d_relu(torch.randn(0, 8, 5, 5), W, B, *GEOM)
    assert out.shape == (0, 16, 5, 5)


def test_broadcast_other_is_expanded():
    x, y = torch.randn(2, 8, 5, 5), torch.randn(1, 16, 1, 5)
    torch.testing.assert_close(ops.conv2d_sum(x, W, B, *GEOM, y, 1), ref(x) + y)


# op, arguments, message: each must raise a RuntimeError naming the problem
ERRORS = [
    ("float64 input", lambda: ops.conv2d(torch.randn(1, 8, 5, 5).double(), W.double(), None, *GEOM),
     "float32 or bfloat16"),
    ("mixed dtypes", lambda: ops.conv2d(torch.randn(1, 8, 5, 5).bfloat16(), W, None, *GEOM),
     "same dtype"),
    ("2-D input", lambda: ops.conv2d(torch.randn(8, 5), W, B, *GEOM), "4-D input"),  # 3-D: unbatched, as ATen
    ("5-D input to conv2d", lambda: ops.conv2d(torch.randn(1, 8, 2, 5, 5), W, B, *GEOM), "4-D input"),
    ("channel mismatch", lambda: ops.conv2d(torch.randn(1, 3, 5, 5), W, B, *GEOM), "channels"),
    ("bias shape", lambda: ops.conv2d(torch.randn(1, 8, 5, 5), W, torch.randn(3), *GEOM), "bias"),
    ("kernel larger than input", lambda: ops.conv2d(torch.randn(1, 8, 1, 1), W, B, [1, 1], [0, 0],
                                                    [1, 1], 1), "smaller than the dilated kernel"),
    ("bad groups", lambda: ops.conv2d(torch.randn(1, 8, 5, 5), W, B, [1, 1], [1, 1], [1, 1], 3),
     "divisible by groups"),
    ("zero stride", lambda: ops.conv2d(torch.randn(1, 8, 5, 5), W, B, [0, 1], [1, 1], [1, 1], 1),
     "stride"),
    ("stride length", lambda: ops.conv2d(torch.randn(1, 8, 5, 5), W, B, [1, 1, 1], [1, 1], [1, 1], 1),
     "stride must have"),
    ("other does not fit", lambda: ops.conv2d_sum(torch.randn(1, 8, 5, 5), W, B, *GEOM,
                                                  torch.randn(1, 16, 4, 5), 1), "broadcast|size"),
]


@pytest.mark.parametrize("case,call,message", ERRORS, ids=[e[0] for e in ERRORS])
def test_bad_input_raises_a_clear_error(case, call, message):
    with pytest.raises(RuntimeError, match=message):
        call()


# ---- Winograd F(2x2, 3x3): 3x3 stride-1 convolutions with 64+ channels (bf16 too, without AMX) --

WINOGRAD_CASES = [  # batch, channels in, out, height, width, padding (49+ output pixels)
    (1, 64, 64, 14, 14, 1),
    (3, 64, 128, 9, 7, 1),     # odd sizes: tiles hang over the bottom and right edges
    (5, 128, 64, 8, 7, 0),     # no padding
    (3, 64, 64, 6, 6, 2),      # padding 2: tiles start outside the image
    (32, 96, 80, 2, 3, 1),
]


@pytest.fixture
def winograd_toggle():
    yield
    jitfuse.set_winograd_enabled(True)


@pytest.mark.parametrize("n,c,k,h,w,pad", WINOGRAD_CASES, ids=[str(c) for c in WINOGRAD_CASES])
@pytest.mark.parametrize("tail", ["relu", "sum_relu", "sum_alpha", "sum_", "none", "nchw"])
def test_winograd_matches_direct_convolution(n, c, k, h, w, pad, tail, winograd_toggle):
    torch.manual_seed(0)
    x = torch.randn(n, c, h, w)
    if tail != "nchw":
        x = x.contiguous(memory_format=torch.channels_last)
    wt, b = torch.randn(k, c, 3, 3) * 0.05, torch.randn(k)
    oh, ow = h + 2 * pad - 2, w + 2 * pad - 2
    y = torch.randn(n, k, oh, ow).contiguous(memory_format=torch.channels_last)
    geom = ([1, 1], [pad, pad], [1, 1], 1)
    exact = F.conv2d(x.double(), wt.double(), b.double(), 1, pad)
    call, ref = {
        "relu": (lambda: ops.conv2d_relu(x, wt, b, *geom), F.relu(exact)),
        "sum_relu": (lambda: ops.conv2d_sum_relu(x, wt, b, *geom, y, 1), F.relu(exact + y.double())),
        "sum_alpha": (lambda: ops.conv2d_sum(x, wt, b, *geom, y, -0.5), exact - 0.5 * y.double()),
        "sum_": (lambda: ops.conv2d_sum_relu_(x, wt, b, *geom, y.clone(), 1), F.relu(exact + y.double())),
        "none": (lambda: ops.conv2d(x, wt, None, *geom), F.conv2d(x.double(), wt.double(), None, 1, pad)),
        "nchw": (lambda: ops.conv2d_relu(x, wt, b, *geom), F.relu(exact)),
    }[tail]
    fmt = torch.contiguous_format if tail == "nchw" else torch.channels_last
    jitfuse.set_winograd_enabled(False)
    direct = call()
    jitfuse.set_winograd_enabled(True)
    winograd = call()
    assert not torch.equal(winograd, direct), "the Winograd path did not run"
    for got in (direct, winograd):
        assert got.shape == ref.shape and got.is_contiguous(memory_format=fmt)
        err = ((got.double() - ref).abs().max() / ref.abs().max()).item()
        assert err <= 1e-5, err


def test_ops_and_models_run_under_inference_mode(winograd_toggle):
    """Under torch.inference_mode the weights (tensors made there) and what ops derive from them
    (Winograd's transformed filter, the dynamic linears' column sums and smoothing reciprocals) are
    inference tensors, which have no version counter: the weight caches must not ask for one."""
    torch.manual_seed(0)
    with torch.inference_mode():
        x = torch.randn(1, 64, 14, 14).contiguous(memory_format=torch.channels_last)
        w, b = torch.randn(64, 64, 3, 3) * 0.05, torch.randn(64)
        jitfuse.set_winograd_enabled(False)
        direct = ops.conv2d_relu(x, w, b, *GEOM)
        jitfuse.set_winograd_enabled(True)
        winograd = ops.conv2d_relu(x, w, b, *GEOM)
        assert not torch.equal(winograd, direct), "the Winograd path did not run"
        torch.testing.assert_close(winograd, F.relu(F.conv2d(x, w, b, 1, 1)), rtol=1e-5, atol=1e-5)

        xs, smooth = torch.randn(6, 32), torch.rand(32) + 0.5
        qw, ws, bl = torch.randint(-64, 64, (16, 32), dtype=torch.int8), torch.rand(16) * 0.01, torch.randn(16)
        got = ops.qlinear_dynamic(xs, smooth, qw, ws, bl)
        torch.testing.assert_close(got, F.linear(xs / smooth, qw.float() * ws[:, None], bl), rtol=0, atol=0.05)

    model = torch.nn.Sequential(torch.nn.Conv2d(64, 64, 3, padding=1), torch.nn.ReLU()).eval()
    xm = torch.randn(1, 64, 14, 14)
    with torch.inference_mode():
        frozen = torch.jit.freeze(torch.jit.script(model))
        for _ in range(3):
            y = frozen(xm)
        kinds = [n.kind() for n in torch.jit.last_executed_optimized_graph().nodes()]
        assert "jitfuse::conv2d_relu" in kinds, kinds
        torch.testing.assert_close(y, model(xm), rtol=1e-5, atol=1e-5)


def test_winograd_leaves_other_convolutions_to_onednn(winograd_toggle):
    """Small (25 pixels), strided, dilated, grouped and narrow (fp32 below 64 channels, bf16 below
    128 where oneDNN has native bf16; elsewhere bf16 computes in fp32, by fp32's rule) convolutions
    run the direct kernel: same bits whether Winograd is on or off."""
    torch.manual_seed(0)
    x = torch.randn(2, 64, 10, 10)
    w = torch.randn(64, 64, 3, 3)
    calls = [lambda: ops.conv2d(x[:1, :, :5, :5], w, None, [1, 1], [1, 1], [1, 1], 1),  # 25 pixels
             lambda: ops.conv2d(x, w, None, [2, 2], [1, 1], [1, 1], 1),
             lambda: ops.conv2d(x, w, None, [1, 1], [2, 2], [2, 2], 1),
             lambda: ops.conv2d(x, w[:, :32], None, [1, 1], [1, 1], [1, 1], 2),
             lambda: ops.conv2d(x[:, :32], w[:32, :32], None, [1, 1], [1, 1], [1, 1], 1),
             lambda: ops.conv2d(x[:, :32].bfloat16(), w[:32, :32].bfloat16(), None, [1, 1], [1, 1], [1, 1], 1)]
    if {"avx512_bf16"} <= cpu_flags() or "amx_bf16" in cpu_flags():
        calls.append(lambda: ops.conv2d(x.bfloat16(), w.bfloat16(), None, [1, 1], [1, 1], [1, 1], 1))  # bf16 below 128
    def winograd_changes_bits(call):
        jitfuse.set_winograd_enabled(False)
        a = call()
        jitfuse.set_winograd_enabled(True)
        return not torch.equal(a, call())

    # Positive control: a 64-channel, 100-pixel, stride-1 float32 layer does take Winograd, so
    # "same bits" below means the switch was passed over, not that it does nothing.
    assert winograd_changes_bits(lambda: ops.conv2d(x, w, None, [1, 1], [1, 1], [1, 1], 1))
    for i, call in enumerate(calls):
        assert not winograd_changes_bits(call), f"call {i} ran Winograd"


@pytest.mark.skipif(not {"avx512_bf16"} <= cpu_flags() or "amx_bf16" in cpu_flags(),
                    reason="bfloat16 Winograd runs where oneDNN has native bf16 kernels but no AMX")
@pytest.mark.parametrize("pad", [0, 1])
@pytest.mark.parametrize("c", [128, 256])
def test_winograd_bf16_matches_within_bf16_tolerance(pad, c, winograd_toggle):
    torch.manual_seed(0)
    x = torch.randn(3, c, 9, 11).contiguous(memory_format=torch.channels_last).bfloat16()
    wt, b = (torch.randn(c, c, 3, 3) * 0.03).bfloat16(), torch.randn(c).bfloat16()
    oh, ow = 9 + 2 * pad - 2, 11 + 2 * pad - 2
    y = torch.randn(3, c, oh, ow).contiguous(memory_format=torch.channels_last).bfloat16()
    geom = ([1, 1], [pad, pad], [1, 1], 1)
    ref = F.relu(F.conv2d(x.double(), wt.double(), b.double(), 1, pad) + y.double())
    jitfuse.set_winograd_enabled(False)
    direct = ops.conv2d_sum_relu(x, wt, b, *geom, y, 1)
    jitfuse.set_winograd_enabled(True)
    winograd = ops.conv2d_sum_relu(x, wt, b, *geom, y, 1)
    assert not torch.equal(winograd, direct), "the Winograd path did not run"
    assert winograd.dtype == torch.bfloat16 and winograd.is_contiguous(memory_format=torch.channels_last)
    err = ((winograd.double() - ref).abs().max() / ref.abs().max()).item()
    assert err <= 2e-2, err
