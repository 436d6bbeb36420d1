"""A BERT-like encoder written in the project (the tests' and benchmark's own), and a
transformers BertModel (4.46.3, random init from a BertConfig: nothing downloaded)."""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class EncoderLayer(nn.Module):
    def __init__(self, hidden, heads, ffn):
        super().__init__()
        self.heads, self.head_dim = heads, hidden // heads
        self.q, self.k, self.v = nn.Linear(hidden, hidden), nn.Linear(hidden, hidden), nn.Linear(hidden, hidden)
        self.out = nn.Linear(hidden, hidden)
        self.ln1, self.ln2 = nn.LayerNorm(hidden), nn.LayerNorm(hidden)
        self.ffn1, self.ffn2 = nn.Linear(hidden, ffn), nn.Linear(ffn, hidden)

    def split_heads(self, t, b, s):  # (b, s, hidden) -> (b * heads, s, head_dim)
        return t.view(b, s, self.heads, self.head_dim).transpose(1, 2).contiguous().view(b * self.heads, s, self.head_dim)

    def forward(self, x, mask):
        b, s, hidden = x.shape
        q, k, v = (self.split_heads(f(x), b, s) for f in (self.q, self.k, self.v))
        scores = torch.bmm(q, k.transpose(1, 2)) / math.sqrt(self.head_dim) + mask
        ctx = torch.bmm(torch.softmax(scores, -1), v)
        ctx = ctx.view(b, self.heads, s, self.head_dim).transpose(1, 2).contiguous().view(b, s, hidden)
        x = self.ln1(self.out(ctx) + x)
        return self.ln2(self.ffn2(F.gelu(self.ffn1(x))) + x)


class Encoder(nn.Module):
    """Token embeddings, then `layers` post-LayerNorm layers; mask: 1 keeps a token, 0 drops it."""

    def __init__(self, vocab=1000, hidden=128, heads=4, ffn=512, layers=2, max_len=512):
        super().__init__()
        self.heads = heads
        self.tokens, self.positions = nn.Embedding(vocab, hidden), nn.Embedding(max_len, hidden)
        self.ln = nn.LayerNorm(hidden)
        self.layers = nn.ModuleList(EncoderLayer(hidden, heads, ffn) for _ in range(layers))

    def forward(self, ids, mask):
        pos = torch.arange(ids.size(1)).unsqueeze(0)
        x = self.tokens(ids)
        x += self.positions(pos)
        x = self.ln(x)
        add_mask = ((1.0 - mask.to(x.dtype)) * -10000.0)[:, None, :].repeat_interleave(self.heads, 0)
        for layer in self.layers:
            x = layer(x, add_mask)
        return x


def bert_base(seed=0):
    """transformers' BertModel, BERT-base shape, eager attention, traceable (torchscript=True)."""
    from transformers import BertConfig, BertModel
    torch.manual_seed(seed)
    return BertModel(BertConfig(torchscript=True, attn_implementation="eager")).eval()
