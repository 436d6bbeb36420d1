"""Linear and transformer patterns: fused node present, replaced nodes gone, numbers equal to the
unfused model (fp32, bf16), new shapes after fusion, and what must be left alone."""
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import jitfuse
from harness import assert_matches, cpu_flags, fused_ops, optimized

H = 32


class Block(nn.Module):
    """Linears and a LayerNorm, and `body(self, x, y)` using them."""

    def __init__(self, body, bias=True):
        super().__init__()
        self.a, self.b, self.c = nn.Linear(H, H, bias=bias), nn.Linear(H, 2 * H, bias=bias), nn.Linear(H, H // 2, bias=bias)
        self.ln = nn.LayerNorm(H)
        self.body = body

    def forward(self, x, y):
        return self.body(self, x, y)


def scores_and_mask(x, y):
    """Attention-shaped scores (batch x 1 x seq x seq) and a BERT mask (batch x 1 x 1 x seq)."""
    scores = x.unsqueeze(1) @ y.unsqueeze(1).transpose(-1, -2)
    mask = (y[:, None, None, :, 0] > 0).to(x.dtype) * -10000.0
    return scores, mask


def qkv(s, x, y):
    return s.a(x) * 2, s.b(x).relu(), s.c(x) + 1


def embeddings_sum(s, x, y):
    e = x * 2
    e += y
    return s.ln(e)


# pattern name, body, aten kinds that must be gone
PATTERNS = [
    ("linear_relu", lambda s, x, y: F.relu(s.a(x)), {"aten::linear", "aten::relu"}),
    ("linear_relu", lambda s, x, y: F.relu(s.a(x), inplace=True), {"aten::linear", "aten::relu_"}),
    ("linear_gelu", lambda s, x, y: F.gelu(s.a(x)), {"aten::linear", "aten::gelu"}),
    ("linear_gelu", lambda s, x, y: F.gelu(s.a(x), approximate="tanh"), {"aten::linear", "aten::gelu"}),
    ("linear", lambda s, x, y: s.a(x) * y, {"aten::linear"}),
    ("linear_linear_linear", lambda s, x, y: torch.cat(qkv(s, x, y), -1), {"aten::linear"}),
    ("add_layernorm", lambda s, x, y: s.ln(x + y), {"aten::layer_norm", "aten::add"}),
    ("add_layernorm", lambda s, x, y: s.ln(y + s.a(x)), {"aten::layer_norm"}),
    ("add_layernorm", lambda s, x, y: s.ln(torch.add(x, y, alpha=0.5)), {"aten::layer_norm"}),
    ("add_layernorm", embeddings_sum, {"aten::layer_norm", "aten::add_"}),
    ("div_add_softmax", lambda s, x, y: torch.softmax((lambda sc, m: sc / 8.0 + m)(*scores_and_mask(x, y)), -1),
     {"aten::softmax", "aten::div"}),
    ("div_add_softmax", lambda s, x, y: torch.softmax((lambda sc, m: m + sc / 8.0)(*scores_and_mask(x, y)), -1),
     {"aten::softmax", "aten::div"}),
    ("mul_add_softmax", lambda s, x, y: F.softmax((lambda sc, m: sc * 0.125 + m)(*scores_and_mask(x, y)), dim=3),
     {"aten::softmax"}),
    ("view_transpose_contiguous_view",
     lambda s, x, y: s.a(x).view(x.size(0), x.size(1), 4, H // 4).transpose(1, 2).contiguous()
     .view(x.size(0) * 4, x.size(1), H // 4), {"aten::contiguous"}),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("name,body,gone", PATTERNS, ids=[f"{p[0]}-{i}" for i, p in enumerate(PATTERNS)])
def test_pattern_fuses_and_matches(name, body, gone, dtype):
    model = Block(body).to(dtype).eval()
    x, y = torch.randn(2, 12, H, dtype=dtype), torch.randn(2, 12, H, dtype=dtype)
    m, kinds = optimized(model, (x, y))
    fused = "jitfuse::linear" if name == "linear_linear_linear" else f"jitfuse::{name}"
    assert fused in kinds, kinds
    assert not set(kinds) & gone, set(kinds) & gone
    if name == "linear_linear_linear":
        assert kinds[fused] == 1 and "aten::split_with_sizes" in kinds, kinds
    assert_matches(m, model, (x, y), dtype)
    # other batch and sequence lengths after fusion, 1 and odd ones included
    for b, s in [(1, 1), (3, 7), (1, 33)]:
        x2, y2 = torch.randn(b, s, H, dtype=dtype), torch.randn(b, s, H, dtype=dtype)
        assert_matches(m, model, (x2, y2), dtype)


class HandWritten(nn.Module):
    """x @ W^T + b and addmm, as code written by hand (or traced by older torch) spells a linear."""

    def __init__(self, form):
        super().__init__()
        self.w, self.b, self.form = nn.Parameter(torch.randn(2 * H, H)), nn.Parameter(torch.randn(2 * H)), form

    def forward(self, x):
        if self.form == "addmm":
            return F.relu(torch.addmm(self.b, x.reshape(-1, H), self.w.t()))
        return F.gelu(x @ self.w.t() + self.b)


@pytest.mark.parametrize("form,fused", [("matmul_add", "jitfuse::linear_gelu"), ("addmm", "jitfuse::linear_relu")])
def test_matmul_add_and_addmm_spellings_fuse(form, fused):
    model, x = HandWritten(form).eval(), torch.randn(2, 5, H)
    m, kinds = optimized(model, (x,))
    assert fused in kinds and not {"aten::matmul", "aten::mm", "aten::addmm", "aten::t"} & set(kinds), kinds
    assert_matches(m, model, (x,), torch.float32)


def test_matmul_add_of_a_matrix_is_not_a_linear():
    class AddMatrix(nn.Module):
        def __init__(self):
            super().__init__()
            self.w, self.b = nn.Parameter(torch.randn(2 * H, H)), nn.Parameter(torch.randn(5, 2 * H))

        def forward(self, x):
            return x @ self.w.t() + self.b

    model, x = AddMatrix().eval(), torch.randn(2, 5, H)
    m, kinds = optimized(model, (x,))
    assert "aten::matmul" in kinds
    assert_matches(m, model, (x,), torch.float32)


@pytest.mark.parametrize("shape", [(5, H), (H,), (2, 3, 4, H)], ids=["2d", "1d", "4d"])
def test_linear_inputs_of_any_rank(shape):
    model = Block(lambda s, x, y: F.gelu(s.a(x)) + y).eval()
    x = torch.randn(shape)
    m, kinds = optimized(model, (x, torch.zeros(())))
    assert "jitfuse::linear_gelu" in kinds
    assert_matches(m, model, (x, torch.zeros(())), torch.float32)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_other_matmuls_are_taken_over_in_bf16_only(dtype):
    model = Block(lambda s, x, y: torch.matmul(s.a(x), y.transpose(1, 2))).to(dtype).eval()
    inputs = (torch.randn(2, 12, H, dtype=dtype), torch.randn(2, 12, H, dtype=dtype))
    m, kinds = optimized(model, inputs)
    if dtype == torch.bfloat16:
        assert kinds.get("jitfuse::matmul") == 1 and "aten::matmul" not in kinds, kinds
    else:
        assert "jitfuse::matmul" not in kinds and kinds.get("aten::matmul") == 1, kinds
    assert_matches(m, model, inputs, dtype)


# ---- attention: softmax(q @ k^T * scale + mask) @ v as one op ---------------------------------

class Attention(nn.Module):
    """Multi-head attention over a fused q/k/v projection, spelled as `form` does it: eager
    (HF BERT: matmul, scale, mask, softmax, matmul, permute), bmm over merged batch x heads (the
    bench encoder), or SDPA (transformers' default)."""

    def __init__(self, form, heads=4, mask=True):
        super().__init__()
        self.qkv, self.out = nn.Linear(H, 3 * H), nn.Linear(H, H)
        self.form, self.heads, self.mask = form, heads, mask

    def forward(self, x, keep):
        b, s, _ = x.shape
        h, d = self.heads, H // self.heads
        q, k, v = (t.view(b, s, h, d).permute(0, 2, 1, 3) for t in self.qkv(x).split(H, -1))
        mask = (1.0 - keep[:, None, None, :].to(x.dtype)) * -10000.0 if self.mask else None
        if self.form == "eager":
            scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(d)
            ctx = torch.matmul(torch.softmax(scores + mask, -1), v).permute(0, 2, 1, 3).contiguous()
        elif self.form == "eager_mul":
            scores = torch.matmul(q, k.transpose(2, 3)) * (1 / math.sqrt(d))
            ctx = torch.matmul(torch.softmax(mask + scores, dim=3), v).transpose(1, 2).contiguous()
        elif self.form == "bmm":
            q, k, v = (t.reshape(b * h, s, d) for t in (q, k, v))
            m = mask.expand(b, h, 1, s).reshape(b * h, 1, s)
            ctx = torch.bmm(torch.softmax(torch.bmm(q, k.transpose(1, 2)) / math.sqrt(d) + m, -1), v)
            ctx = ctx.view(b, h, s, d).transpose(1, 2).contiguous()
        else:  # sdpa, sdpa_scaled
            scale = 0.3 if self.form == "sdpa_scaled" else None
            ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale).transpose(1, 2)
        return self.out(ctx.reshape(b, s, H))


ATTENTION_FORMS = ["eager", "eager_mul", "bmm", "sdpa", "sdpa_scaled"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("form", ATTENTION_FORMS)
def test_attention_fuses_and_matches(form, dtype):
    model = Attention(form).to(dtype).eval()
    x, keep = torch.randn(2, 12, H, dtype=dtype), torch.ones(2, 12, dtype=torch.long)
    keep[1, 9:] = 0
    m, kinds = optimized(model, (x, keep))
    assert kinds.get("jitfuse::attention") == 1, kinds
    gone = {"aten::matmul", "aten::bmm", "aten::softmax", "aten::scaled_dot_product_attention",
            "jitfuse::div_add_softmax", "jitfuse::mul_add_softmax", "jitfuse::matmul"}
    assert not set(kinds) & gone, set(kinds) & gone
    # The op writes the context with heads behind the sequence: the permute after it went with it
    # (the eager forms keep q, k and v's three; the bmm form reshapes in between).
    heads_moved = {"eager": ("aten::permute", 3), "eager_mul": ("aten::transpose", 0), "sdpa": ("aten::transpose", 0),
                   "sdpa_scaled": ("aten::transpose", 0)}
    if form in heads_moved:
        kind, left = heads_moved[form]
        assert kinds.get(kind, 0) == left, kinds
    assert_matches(m, model, (x, keep), dtype)
    for b, s in [(1, 1), (3, 7), (1, 33)]:  # other shapes after fusion
        x2, keep2 = torch.randn(b, s, H, dtype=dtype), torch.ones(b, s, dtype=torch.long)
        assert_matches(m, model, (x2, keep2), dtype)


def test_sdpa_without_mask_fuses():
    model = Attention("sdpa", mask=False).eval()
    inputs = (torch.randn(2, 12, H), torch.ones(2, 12, dtype=torch.long))
    m, kinds = optimized(model, inputs)
    assert kinds.get("jitfuse::attention") == 1 and "aten::scaled_dot_product_attention" not in kinds, kinds
    assert_matches(m, model, inputs, torch.float32)


class OddAttention(nn.Module):
    def __init__(self, form):
        super().__init__()
        self.form = form

    def forward(self, q, k):
        if self.form == "causal":
            return F.scaled_dot_product_attention(q, k, k, is_causal=True)
        if self.form == "bool_mask":
            return F.scaled_dot_product_attention(q, k, k, attn_mask=k[..., :1].transpose(-1, -2) > 0)
        # k^T over other dims than the last two: not attention's q @ k^T
        return torch.matmul(torch.softmax(torch.matmul(q, k.transpose(1, 3)) / 8.0 + 1.0, -1), k.transpose(1, 3))


@pytest.mark.parametrize("form", ["causal", "bool_mask", "other_transpose"])
def test_attention_left_alone_where_its_meaning_differs(form):
    model = OddAttention(form).eval()
    q = torch.randn(2, 4, 4, 4)
    m, kinds = optimized(model, (q, torch.randn(2, 4, 4, 4)))
    assert "jitfuse::attention" not in kinds, kinds
    assert_matches(m, model, (q, torch.randn(2, 4, 4, 4)), torch.float32)


def test_module_that_was_not_frozen_keeps_its_bf16_matmuls():
    model = Block(lambda s, x, y: torch.matmul(s.a(x), y.transpose(1, 2))).to(torch.bfloat16).eval()
    inputs = (torch.randn(2, 12, H, dtype=torch.bfloat16), torch.randn(2, 12, H, dtype=torch.bfloat16))
    with torch.no_grad():
        m = torch.jit.trace(model, inputs)
        for _ in range(3):
            m(*inputs)
        from harness import node_kinds
        kinds = node_kinds(m.graph_for(*inputs))
    assert not fused_ops(kinds) and "aten::matmul" in kinds, kinds


def test_linear_without_bias_and_non_contiguous_input():
    model = Block(lambda s, x, y: F.relu(s.a(x.transpose(0, 1))), bias=False).eval()
    x = torch.randn(12, 2, H)
    m, kinds = optimized(model, (x, x))
    assert "jitfuse::linear_relu" in kinds
    assert_matches(m, model, (x, x), torch.float32)


def stays_right(body, inputs=None, dtype=torch.float32):
    model = Block(body).to(dtype).eval()
    inputs = inputs or (torch.randn(2, 12, H, dtype=dtype), torch.randn(2, 12, H, dtype=dtype))
    m, kinds = optimized(model, inputs)
    assert_matches(m, model, inputs, dtype)
    return kinds


def test_add_read_elsewhere_keeps_its_result():
    kinds = stays_right(lambda s, x, y: s.ln(t := x + y) * t)
    assert "jitfuse::add_layernorm" not in kinds and "aten::layer_norm" in kinds


def test_add_into_a_tensor_read_later_is_not_fused():
    def body(s, x, y):
        e = x * 2
        e2 = e
        e += y
        return s.ln(e) + e2
    kinds = stays_right(body)
    assert "jitfuse::add_layernorm" not in kinds


def test_add_into_a_view_is_not_fused():
    """e is a view of x: e += y writes into x, which is read afterwards."""
    def body(s, x, y):
        x = x * 1
        e = x.view(x.shape)
        e += y
        return s.ln(e) + x
    kinds = stays_right(body)
    assert "jitfuse::add_layernorm" not in kinds


def test_broadcasting_add_before_layernorm_stays_right():
    stays_right(lambda s, x, y: s.ln(x + y[:1, :1]))


def test_softmax_on_another_dim_is_left_alone():
    kinds = stays_right(lambda s, x, y: torch.softmax((lambda sc, m: sc / 8.0 + m)(*scores_and_mask(x, y)), 2))
    assert "jitfuse::div_add_softmax" not in kinds


def test_mask_that_grows_the_scores_stays_right():
    def body(s, x, y):
        scores, _ = scores_and_mask(x[:1], y[:1])
        return torch.softmax(scores / 8.0 + y[:, None, :, :1].transpose(-1, -2), -1)
    stays_right(body)


def test_float64_linears_are_left_alone():
    kinds = stays_right(lambda s, x, y: torch.cat(qkv(s, x, y), -1) + F.relu(s.a(x)).sum(), dtype=torch.float64)
    assert not fused_ops(kinds), kinds


def test_two_linears_on_one_input_are_not_merged():
    kinds = stays_right(lambda s, x, y: s.a(x).sum(-1) + s.b(x).sum(-1))
    assert kinds.get("jitfuse::linear") == 2 and "aten::split_with_sizes" not in kinds


def test_linear_x3_can_be_turned_off():
    jitfuse.set_pattern_enabled("linear_linear_linear", False)
    kinds = stays_right(lambda s, x, y: torch.cat(qkv(s, x, y), -1))
    assert kinds.get("jitfuse::linear") == 2 and kinds.get("jitfuse::linear_relu") == 1, kinds
    assert "aten::split_with_sizes" not in kinds


ops = torch.ops.jitfuse
LERRORS = [
    ("float64", lambda: ops.linear(torch.randn(2, H).double(), torch.randn(4, H).double(), None), "float32 or bfloat16"),
    ("in_features", lambda: ops.linear(torch.randn(2, H + 1), torch.randn(4, H), None), "cannot be multiplied"),
    ("weight rank", lambda: ops.linear(torch.randn(2, H), torch.randn(4, H, 1), None), "2-D weight"),
    ("bias shape", lambda: ops.linear(torch.randn(2, H), torch.randn(4, H), torch.randn(5)), "bias"),
    ("gelu mode", lambda: ops.linear_gelu(torch.randn(2, H), torch.randn(4, H), None, "fast"), "approximate"),
    ("layernorm shape", lambda: ops.add_layernorm(torch.randn(2, H), torch.randn(2, H), 1, [H + 1], None, None, 1e-5),
     "normalized_shape"),
]


@pytest.mark.parametrize("case,call,message", LERRORS, ids=[e[0] for e in LERRORS])
def test_bad_input_raises_a_clear_error(case, call, message):
    with pytest.raises(RuntimeError, match=message):
        call()


def test_direct_calls_match_aten():
    x, w, b = torch.randn(3, 5, H), torch.randn(7, H), torch.randn(7)
    torch.testing.assert_close(ops.linear_gelu(x, w, b, "tanh"), F.gelu(F.linear(x, w, b), approximate="tanh"))
    torch.testing.assert_close(ops.linear(torch.randn(0, H), w, b), torch.empty(0, 7))
    sc, m = torch.randn(2, 4, 6, 6), torch.randn(2, 1, 1, 6)
    torch.testing.assert_close(ops.div_add_softmax(sc, 8, m), torch.softmax(sc / 8 + m, -1))
    torch.testing.assert_close(ops.mul_add_softmax(sc, 0.5, m[0, 0, 0]), torch.softmax(sc * 0.5 + m[0, 0, 0], -1))


# ---- the attention op's implementations against float64 -------------------------------------
# The direct kernel (one head at a time, q, k, v read in place), the packed kernel (bf16 products
# on the AMX tiles, or as AVX-512 bf16 dot products; where the CPU has them) and the oneDNN
# primitives, each forced through jitfuse::_attention_with.
CPU_FLAGS = cpu_flags()
HAS_AMX = "amx" in jitfuse.onednn_isa()
HAS_AVX512_BF16 = {"avx512_bf16", "avx512bw"} <= CPU_FLAGS
KERNELS = ["direct", pytest.param("amx", marks=pytest.mark.skipif(not HAS_AMX, reason="no AMX on this CPU")),
           pytest.param("avx512_bf16", marks=pytest.mark.skipif(not HAS_AVX512_BF16, reason="no AVX-512 bf16")),
           "primitives"]
BF16_PRODUCTS = ("amx", "avx512_bf16")  # kernels that multiply in bf16 whatever the dtype

def fused_qkv_views(b, h, s, d):
    """q, k, v as a fused projection's views: [b, h, s, d], rows 3 * h * d apart."""
    x = torch.randn(b, s, 3 * h * d)
    return [t.view(b, s, h, d).permute(0, 2, 1, 3) for t in x.split(h * d, -1)]


def bert_mask(b, s, masked):
    mask = torch.zeros(b, 1, 1, s)
    mask[..., s - masked:] = -10000.0
    return mask


# name: () -> (q, k, v, mask or None)
ATTENTION_CASES = {
    "fused qkv views, BERT mask": lambda: (*fused_qkv_views(2, 3, 48, 32), bert_mask(2, 48, 5)),
    "keys and columns past whole vectors": lambda: (torch.randn(2, 2, 7, 24), torch.randn(2, 2, 37, 24),
                                                    torch.randn(2, 2, 37, 20), torch.randn(37)),
    "one key": lambda: (torch.randn(1, 2, 5, 16), torch.randn(1, 2, 1, 16), torch.randn(1, 2, 1, 16), None),
    "100 keys, no mask": lambda: (torch.randn(1, 2, 9, 16), torch.randn(1, 2, 100, 16), torch.randn(1, 2, 100, 48), None),
    "256 keys (rows 1 KB apart)": lambda: (torch.randn(1, 2, 12, 16), torch.randn(1, 2, 256, 16),
                                          torch.randn(1, 2, 256, 16), bert_mask(1, 256, 30)),
    "one head, rows split over threads": lambda: (torch.randn(1, 1, 50, 8), torch.randn(1, 1, 50, 8),
                                                  torch.randn(1, 1, 50, 8), torch.randn(1, 1, 50, 50)),
    "rank 3": lambda: (torch.randn(6, 9, 16), torch.randn(6, 11, 16), torch.randn(6, 11, 16), torch.randn(6, 9, 11)),
    "rank 5": lambda: (torch.randn(2, 2, 3, 5, 16), torch.randn(2, 2, 3, 6, 16), torch.randn(2, 2, 3, 6, 16),
                       torch.randn(2, 1, 3, 1, 6)),
    "mask per head": lambda: (*fused_qkv_views(2, 3, 10, 16), torch.randn(1, 3, 1, 10)),
    "mask along the queries only": lambda: (*fused_qkv_views(2, 3, 10, 16), torch.randn(2, 1, 10, 1)),
    "k transposed in memory, v strided": lambda: (torch.randn(2, 3, 10, 16),
                                                   torch.randn(2, 3, 16, 12).transpose(-1, -2),
                                                   torch.randn(2, 3, 24, 12).transpose(-1, -2), bert_mask(2, 12, 3)),
    "BERT heads: 16-row blocks, a partial one, keys past whole tiles": lambda: (
        *fused_qkv_views(2, 4, 70, 64)[:1], *fused_qkv_views(2, 4, 130, 64)[1:], bert_mask(2, 130, 9)),
    "128-wide heads (primitives where best)": lambda: (torch.randn(1, 2, 6, 128), torch.randn(1, 2, 20, 128),
                                                       torch.randn(1, 2, 20, 128), bert_mask(1, 20, 4)),
}


def attention64(q, k, v, mask, scale, heads_last):
    scores = q.double() @ k.double().transpose(-1, -2) * scale
    if mask is not None:
        scores = scores + mask.double()
    out = torch.softmax(scores, -1) @ v.double()
    return out.transpose(1, 2) if heads_last else out


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("case", list(ATTENTION_CASES))
def test_attention_kernels_match_float64(case, dtype, kernel):
    torch.manual_seed(0)  # the bf16 bounds below are statistical: the same data on every run
    q, k, v, mask = (t.to(dtype) if t is not None else None for t in ATTENTION_CASES[case]())
    # fp32: within 1e-5. bf16: the direct kernel rounds once (the context), the primitives also
    # round the probabilities; the packed kernel multiplies in bf16 whatever the dtype, and the
    # rounding error of its scores grows with the head width (128-wide heads of random data, a
    # sharp softmax at scale 0.3: up to 0.031 over 200 seeds on a Xeon with AMX).
    if dtype == torch.float32 and kernel not in BF16_PRODUCTS:
        tol = 1e-5
    else:
        tol = 2e-2 * max(1.0, q.shape[-1] / 64)
    for heads_last in [False, True] if q.dim() == 4 else [False]:
        for scale, divide in [(None, False), (8.0, True), (0.3, False)]:
            got = ops._attention_with(q, k, v, mask, scale, divide, heads_last, kernel)
            factor = 1 / math.sqrt(q.shape[-1]) if scale is None else (1 / scale if divide else scale)
            want = attention64(q, k, v, mask, factor, heads_last)
            assert got.dtype == dtype and got.shape == want.shape
            torch.testing.assert_close(got.double(), want, rtol=tol, atol=tol)


def test_attention_picks_the_direct_kernel_for_float32_heads_up_to_64_on_avx512():
    avx512 = "avx512f" in CPU_FLAGS
    q, k, v = fused_qkv_views(2, 3, 20, 32)
    mask = bert_mask(2, 20, 4)
    best = ops.attention(q, k, v, mask, None, False, True)
    chosen, other = ("direct", "primitives") if avx512 else ("primitives", "direct")
    assert torch.equal(best, ops._attention_with(q, k, v, mask, None, False, True, chosen))
    assert not torch.equal(best, ops._attention_with(q, k, v, mask, None, False, True, other))


@pytest.mark.skipif(not (HAS_AMX or HAS_AVX512_BF16), reason="no AMX and no AVX-512 bf16 on this CPU")
def test_attention_picks_the_packed_kernel_for_bf16_heads_of_64_queries():
    packed = "amx" if HAS_AMX else "avx512_bf16"
    q, k, v = (t.bfloat16() for t in fused_qkv_views(2, 3, 64, 64))
    mask = bert_mask(2, 64, 4)
    best = ops.attention(q, k, v, mask, None, False, True)
    assert torch.equal(best, ops._attention_with(q, k, v, mask, None, False, True, packed))
    assert not torch.equal(best, ops._attention_with(q, k, v, mask, None, False, True, "primitives"))
    # float32 heads of an int8 model (low_precision): the same bf16 products
    q32, k32, v32 = q.float(), k.float(), v.float()
    low = ops.attention(q32, k32, v32, mask, None, False, True, True)
    assert torch.equal(low, ops._attention_with(q32, k32, v32, mask, None, False, True, packed))
    few = ops.attention(q[:, :, :8], k, v, mask, None, False, True)  # 8 queries: packing k, v does not pay
    assert torch.equal(few, ops._attention_with(q[:, :, :8], k, v, mask, None, False, True, "primitives"))


@pytest.mark.parametrize("kernel", KERNELS)
def test_attention_rows_with_nan_or_nothing_to_attend_are_nan_as_in_aten(kernel):
    q, k, v = torch.randn(2, 2, 6, 16), torch.randn(2, 2, 19, 16), torch.randn(2, 2, 19, 16)
    mask = torch.zeros(2, 1, 6, 19)
    mask[0, :, 2] = float("-inf")  # query row 2 of batch 0 sees no key
    mask[0, :, 3, 5:] = float("-inf")  # row 3 sees 5 keys: its masked keys weigh 0, not NaN
    q[1, 1, 4, 3] = float("nan")
    k[1, 0, 17, 0] = float("nan")  # every row of batch 1 head 0 meets it
    got = ops._attention_with(q, k, v, mask, None, False, False, kernel)
    want = torch.softmax(q @ k.transpose(-1, -2) / 4 + mask, -1) @ v
    assert torch.equal(torch.isnan(got), torch.isnan(want)) and torch.isnan(want).any()
    tol = 2e-2 if kernel in BF16_PRODUCTS else 1e-5
    torch.testing.assert_close(got.nan_to_num(), want.nan_to_num(), rtol=tol, atol=tol)


def test_attention_kernel_name_is_checked():
    q = torch.randn(1, 2, 3, 4)
    with pytest.raises(RuntimeError, match='kernel is "direct", "amx", "avx512_bf16" or "primitives", got fast'):
        ops._attention_with(q, q, q, None, None, False, False, "fast")
