"""Multi-head attention modules on :func:`fastskel.ops.attention` (Triton fast path on CUDA).

``MultiheadAttention``: self-attention with a fused qkv projection and optional RoPE (SLiM, the
AMR/MAMP encoders). ``MultiheadCrossAttention`` (alias ``CrossAttention``): queries attend to a
separate key/value sequence of another length (AMR's decoder, ASMa's feature alignment); queries
with batch 1 are shared across the batch (learnable query sets) without expanding them, and their
gradient is summed over the batch inside the kernel.

Both take ``key_padding_mask`` (bool ``(B, Lk)``, True = ignore) and ``rope``
(:class:`~fastskel.ops.Rope`), and pass ``backend`` to :func:`fastskel.ops.attention`. On the
Triton path the attention output is stored ``(B, L, H, d)``, so merging heads before ``proj`` is a
view, not a copy. Parameter names follow timm (``qkv``/``q``/``kv``/``proj``), so their state dicts
load timm-style checkpoints.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from fastskel.ops import Rope, attention


def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    b, l, d = x.shape
    return x.view(b, l, heads, d // heads).transpose(1, 2)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    b, h, l, d = x.shape
    return x.transpose(1, 2).reshape(b, l, h * d)


def _check_dims(dim: int, heads: int) -> None:
    if dim % heads:
        raise ValueError(f"heads: expected a divisor of dim={dim}, got {heads}")


class MultiheadAttention(nn.Module):
    """Self-attention ``(B, L, dim) → (B, L, dim)`` with fused qkv (timm ``Attention`` key names).

    ``forward(x, key_padding_mask=None, rope=None)``; the head dim is ``dim // heads``.
    """

    def __init__(self, dim: int, heads: int = 8, qkv_bias: bool = True, backend: Optional[str] = None):
        super().__init__()
        _check_dims(dim, heads)
        self.heads = heads
        self.backend = backend
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, key_padding_mask: Optional[torch.Tensor] = None,
                rope: Optional[Rope] = None) -> torch.Tensor:
        b, l, d = x.shape
        qkv = self.qkv(x).view(b, l, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        out = attention(qkv[0], qkv[1], qkv[2], key_padding_mask=key_padding_mask, rope=rope, backend=self.backend)
        return self.proj(_merge_heads(out))


class MultiheadCrossAttention(nn.Module):
    """Cross-attention: queries ``(Bq, Lq, dim)`` (Bq ∈ {1, B}) to keys/values ``(B, Lk, kv_dim)``.

    ``forward(query, context, key_padding_mask=None, rope=None)`` → ``(B, Lq, dim)``; ``rope``
    positions are those of the queries and of the context tokens.
    """

    def __init__(self, dim: int, heads: int = 8, kv_dim: Optional[int] = None, qkv_bias: bool = True,
                 backend: Optional[str] = None):
        super().__init__()
        _check_dims(dim, heads)
        self.heads = heads
        self.backend = backend
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(kv_dim or dim, 2 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, query: torch.Tensor, context: torch.Tensor,
                key_padding_mask: Optional[torch.Tensor] = None, rope: Optional[Rope] = None) -> torch.Tensor:
        b, lk, _ = context.shape
        d = self.q.out_features
        q = _split_heads(self.q(query), self.heads)
        kv = self.kv(context).view(b, lk, 2, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        out = attention(q, kv[0], kv[1], key_padding_mask=key_padding_mask, rope=rope, backend=self.backend)
        return self.proj(_merge_heads(out))


CrossAttention = MultiheadCrossAttention
