"""AMR's decoupled cross-attention decoder (seed 004 §3.2, eq. 2, App. A).

A fixed set of learnable queries (one per target patch, plus a separable spatio-temporal
positional embedding) attends to the encoded visible tokens; there is no self-attention among the
queries. Per layer (pre-norm)::

    q = q + MCA(LN(q), LN(kv))
    q = q + MLP(LN(q))

then a final LayerNorm and the prediction head ``Linear-GELU-Linear-GELU-Linear`` (the paper's
"3-layer MLP"). The queries are held once, with batch 1, and broadcast by
:func:`fastskel.ops.attention` (``Bq = 1``), so the first layer's query projection runs once per
batch instead of once per sample.

Limitations: the keys/values must already carry their positional embedding (the caller adds
AMR's decoder pos embed of the visible tokens); no dropout.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from .attention import MultiheadCrossAttention
from .transformer import Mlp, SeparablePosEmbed

__all__ = ["CrossAttentionDecoder", "CrossAttentionLayer", "PredictionHead"]


class CrossAttentionLayer(nn.Module):
    """``q += MCA(LN(q), LN(kv)); q += MLP(LN(q))``; q ``(Bq, Lq, dim)`` with Bq ∈ {1, B}, kv ``(B, Lk, dim)``."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 eps: float = 1e-6, backend: Optional[str] = None):
        super().__init__()
        self.norm_q = nn.LayerNorm(dim, eps=eps)
        self.norm_kv = nn.LayerNorm(dim, eps=eps)
        self.attn = MultiheadCrossAttention(dim, heads, qkv_bias=qkv_bias, backend=backend)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, q: torch.Tensor, kv: torch.Tensor,
                key_padding_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        q = q + self.attn(self.norm_q(q), self.norm_kv(kv), key_padding_mask=key_padding_mask)
        return q + self.mlp(self.norm2(q))


class PredictionHead(nn.Sequential):
    """``Linear(dim→hidden) · GELU · Linear(hidden→hidden) · GELU · Linear(hidden→out)``."""

    def __init__(self, dim: int, hidden: int, out: int):
        super().__init__(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(),
                         nn.Linear(hidden, out))


class CrossAttentionDecoder(nn.Module):
    """Learnable queries on a ``(t_blocks, joints)`` grid decode a context ``(B, Lk, dim)`` into
    ``(B, t_blocks · joints, out_dim)`` predictions (token order t-block major, then joint).

    Args:
        t_blocks, joints: the query grid (AMR: 5 × 25 = 125 queries for r = 6).
        dim: width of queries and context; depth: layers (AMR: 5); heads; mlp_ratio.
        out_dim: prediction size per query (AMR: r·l·C = 72).
        head_hidden: hidden width of the prediction head (default ``dim``; AMR's 3.8 GFLOPs).
        eps: LayerNorm eps; backend: passed to ``fastskel.ops.attention``.
    """

    def __init__(self, t_blocks: int, joints: int, dim: int, depth: int, heads: int, out_dim: int,
                 mlp_ratio: float = 4.0, head_hidden: Optional[int] = None, qkv_bias: bool = True,
                 eps: float = 1e-6, backend: Optional[str] = None):
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth: expected an int >= 1, got {depth}")
        self.num_queries = t_blocks * joints
        self.queries = nn.Parameter(torch.empty(1, self.num_queries, dim))
        nn.init.trunc_normal_(self.queries, std=0.02)
        self.query_pos = SeparablePosEmbed(t_blocks, joints, dim)
        self.layers = nn.ModuleList(CrossAttentionLayer(dim, heads, mlp_ratio, qkv_bias, eps, backend)
                                    for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.head = PredictionHead(dim, head_hidden or dim, out_dim)

    def forward(self, context: torch.Tensor, key_padding_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        if context.dim() != 3 or context.shape[-1] != self.queries.shape[-1]:
            raise ValueError(f"context: expected (B, Lk, {self.queries.shape[-1]}), got {tuple(context.shape)}")
        q = self.queries + self.query_pos()[None]           # (1, Lq, dim): shared across the batch
        for layer in self.layers:
            q = layer(q, context, key_padding_mask)
        return self.head(self.norm(q))
