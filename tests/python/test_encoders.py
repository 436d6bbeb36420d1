"""End to end: the project's encoder and transformers' BERT-base fuse in every layer and give the
stock answer (fp32 max abs err <= 1e-4; bf16 cosine to fp32 >= 0.9999)."""
import os
import sys

import torch

import jitfuse  # noqa: F401
from harness import node_kinds

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "bench"))
from encoder import Encoder, bert_base  # noqa: E402

UNFUSED = ("aten::linear", "aten::softmax", "aten::gelu", "aten::layer_norm", "aten::bmm", "aten::matmul",
           "jitfuse::div_add_softmax")  # the scaled masked softmax is fused further, into attention


def run_frozen(model, inputs, enabled=True):
    jitfuse.set_enabled(enabled)
    try:
        with torch.no_grad():
            m = torch.jit.freeze(torch.jit.trace(model, inputs, check_trace=False, strict=False))
            for _ in range(3):
                m(*inputs)
            out = m(*inputs)
            return (out[0] if isinstance(out, tuple) else out), node_kinds(m.graph_for(*inputs))
    finally:
        jitfuse.set_enabled(True)


def cosine(a, b):
    return torch.nn.functional.cosine_similarity(a.float().flatten(), b.float().flatten(), dim=0).item()


def test_own_encoder_fuses_every_layer():
    model = Encoder(layers=3).eval()
    ids, mask = torch.randint(0, 1000, (2, 24)), torch.ones(2, 24, dtype=torch.long)
    mask[1, 20:] = 0
    ref, _ = run_frozen(model, (ids, mask), enabled=False)
    got, kinds = run_frozen(model, (ids, mask))
    assert kinds.get("jitfuse::linear") == 3 * 3  # merged q/k/v, out, ffn2 per layer
    assert kinds.get("jitfuse::linear_gelu") == 3
    assert kinds.get("jitfuse::add_layernorm") == 2 * 3 + 1  # two per layer, and the embeddings'
    assert kinds.get("jitfuse::attention") == 3
    assert kinds.get("jitfuse::view_transpose_contiguous_view") == 4 * 3
    assert not any(kinds.get(k) for k in UNFUSED), kinds
    assert (got - ref).abs().max().item() <= 1e-4


def test_bert_base_fuses_every_layer_and_matches_stock():
    model = bert_base()
    ids = torch.randint(0, model.config.vocab_size, (1, 128))
    mask = torch.ones(1, 128, dtype=torch.long)
    mask[:, 100:] = 0
    ref, _ = run_frozen(model, (ids, mask), enabled=False)
    got, kinds = run_frozen(model, (ids, mask))
    layers = model.config.num_hidden_layers
    assert kinds.get("jitfuse::linear") == 3 * layers + 1  # merged q/k/v, attention out, ffn out; pooler
    assert kinds.get("jitfuse::linear_gelu") == layers
    assert kinds.get("jitfuse::add_layernorm") == 2 * layers + 1
    assert kinds.get("jitfuse::attention") == layers
    assert not any(kinds.get(k) for k in UNFUSED), kinds
    assert (got - ref).abs().max().item() <= 1e-4

    bf16 = bert_base().to(torch.bfloat16)
    got16, kinds16 = run_frozen(bf16, (ids, mask))
    assert kinds16.get("jitfuse::attention") == layers and not any(kinds16.get(k) for k in UNFUSED), kinds16
    assert cosine(got16, ref) >= 0.9999
