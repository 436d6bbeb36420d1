"""The fused conv ops called directly: right answers on odd inputs, ATen-like errors on bad ones."""
import pytest
import torch
import torch.nn.functional as F

import jitfuse  # noqa: F401  (registers torch.ops.jitfuse)

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
    ("3-D input", lambda: ops.conv2d(torch.randn(8, 5, 5), W, B, *GEOM), "4-D input"),
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
