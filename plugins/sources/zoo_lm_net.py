"""The zoo language model's network: a small decoder in LLaMA's style.

Pre-norm blocks with RMSNorm, causal multi-head attention with rotary position embeddings (RoPE, the
half-split convention of LLaMA's reference code: dimension ``i`` pairs with ``i + d/2``), and a SwiGLU
MLP (``down(silu(gate(x)) * up(x))``); no biases anywhere. The input embedding and the output head are
separate (untied) weights, so the head is a plain ``nn.Linear`` a compressor can target like any other
layer and no tensor is stored twice. Every projection is an ``nn.Linear``, so every compressor finds
them. Input: token ids (N×T int64, T up to ``context``); output: logits N×T×vocab.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def rotary_tables(context: int, head_dim: int, base: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin (context × head_dim) of the rotary angles ``t · base^(-2i/head_dim)``."""
    inv = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles = torch.outer(torch.arange(context, dtype=torch.float64), inv)
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos().float(), angles.sin().float()


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    turned = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + turned * sin


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q_proj = nn.Linear(dim, dim, bias=False)
        self.k_proj = nn.Linear(dim, dim, bias=False)
        self.v_proj = nn.Linear(dim, dim, bias=False)
        self.o_proj = nn.Linear(dim, dim, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape
        q, k, v = (p(x).view(n, t, self.heads, -1).transpose(1, 2) for p in (self.q_proj, self.k_proj, self.v_proj))
        q, k = rotate(q, cos, sin), rotate(k, cos, sin)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.o_proj(out.transpose(1, 2).reshape(n, t, d))


class SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.gate_proj = nn.Linear(dim, hidden, bias=False)
        self.up_proj = nn.Linear(dim, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, hidden: int, eps: float):
        super().__init__()
        self.attn_norm = nn.RMSNorm(dim, eps=eps)
        self.attn = Attention(dim, heads)
        self.mlp_norm = nn.RMSNorm(dim, eps=eps)
        self.mlp = SwiGLU(dim, hidden)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), cos, sin)
        return x + self.mlp(self.mlp_norm(x))


class TinyLlama(nn.Module):
    """A LLaMA-style decoder: ``vocab`` tokens, ``layers`` blocks of width ``dim`` with ``heads`` heads
    and a SwiGLU MLP of ``hidden`` units, a context of ``context`` tokens."""

    rope_cos: torch.Tensor
    rope_sin: torch.Tensor

    def __init__(self, vocab: int, dim: int, layers: int, heads: int, hidden: int, context: int, eps: float = 1e-5):
        super().__init__()
        if dim % heads or (dim // heads) % 2:
            raise ValueError(f"dim {dim} must split into {heads} heads of an even width")
        self.context = context
        self.embed = nn.Embedding(vocab, dim)
        self.blocks = nn.ModuleList(Block(dim, heads, hidden, eps) for _ in range(layers))
        self.norm = nn.RMSNorm(dim, eps=eps)
        self.lm_head = nn.Linear(dim, vocab, bias=False)
        cos, sin = rotary_tables(context, dim // heads)
        self.register_buffer("rope_cos", cos, persistent=False)  # derived: not in the state_dict
        self.register_buffer("rope_sin", sin, persistent=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"the language model reads token ids (int64), got {tokens.dtype}")
        t = tokens.shape[-1]
        if t > self.context:
            raise ValueError(f"{t} tokens exceed the context of {self.context}")
        cos, sin = self.rope_cos[:t], self.rope_sin[:t]
        x = self.embed(tokens)
        for block in self.blocks:
            x = block(x, cos, sin)
        return self.lm_head(self.norm(x))
