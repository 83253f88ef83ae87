"""Attention with separate query/key lengths, shared queries, key padding and RoPE (SPEC §4)."""
from __future__ import annotations

from typing import Optional

import torch

from fastskel.backend import resolve
from . import _checks as chk
from . import reference
from .reference import Rope

IMPLEMENTED = ("torch",)


def check_attention_args(q, k, v, scale, key_padding_mask, rope):
    for name, t in (("q", q), ("k", k), ("v", v)):
        chk.tensor(t, name, 4, shape_hint="(B, H, L, d)")
    if k.shape != v.shape:
        raise ValueError(f"v: expected shape {tuple(k.shape)} like k, got {tuple(v.shape)}")
    b, h, lk, d = k.shape
    if q.shape[0] not in (1, b) or q.shape[1] != h or q.shape[3] != d:
        raise ValueError(f"q: expected shape ({{1 or {b}}}, {h}, Lq, {d}) to match k, got {tuple(q.shape)}")
    if q.dtype != k.dtype or v.dtype != k.dtype:
        raise TypeError(f"q, k, v: expected one dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    for name, t in (("k", k), ("v", v)):
        chk.same_device(name, t, q, "q")
    if min(q.shape[2], lk, d) == 0:
        raise ValueError(f"q, k: expected non-empty lengths and head dim, got Lq={q.shape[2]}, Lk={lk}, d={d}")
    if scale is not None:
        chk.positive_float(scale, "scale")
    if key_padding_mask is not None:
        chk.tensor(key_padding_mask, "key_padding_mask", 2, dtypes=(torch.bool,), shape_hint=f"({b}, {lk})")
        if key_padding_mask.shape != (b, lk):
            raise ValueError(f"key_padding_mask: expected shape ({b}, {lk}), got {tuple(key_padding_mask.shape)}")
        chk.same_device("key_padding_mask", key_padding_mask, q, "q")
    if rope is not None:
        if not isinstance(rope, tuple) or len(rope) not in (2, 3):
            raise TypeError(f"rope: expected Rope(q_pos, k_pos[, base]) or None, got {type(rope).__name__}")
        rope = Rope(*rope)
        if d % 2:
            raise ValueError(f"rope: expected an even head dim, got d={d}")
        for name, pos, n in (("rope.q_pos", rope.q_pos, q.shape[2]), ("rope.k_pos", rope.k_pos, lk)):
            chk.tensor(pos, name, 1, dtypes=(), shape_hint=f"({n},)")
            if pos.shape[0] != n:
                raise ValueError(f"{name}: expected shape ({n},), got {tuple(pos.shape)}")
    return rope


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: Optional[float] = None,
              key_padding_mask: Optional[torch.Tensor] = None, rope: Optional[Rope] = None,
              backend: Optional[str] = None) -> torch.Tensor:
    """``softmax(q kᵀ·scale) v``; q ``(Bq, H, Lq, d)`` with Bq ∈ {1, B}, k, v ``(B, H, Lk, d)``.

    ``key_padding_mask`` bool ``(B, Lk)``, True = ignore; fully-masked queries give zeros. ``rope``:
    :class:`~fastskel.ops.Rope` positions for q and k (negative = unrotated). Output ``(B, H, Lq, d)``
    in q's dtype, softmax in float32.
    """
    rope = check_attention_args(q, k, v, scale, key_padding_mask, rope)
    impl = resolve("attention", backend, q.device, IMPLEMENTED)
    return reference.attention(q, k, v, scale, key_padding_mask, rope)
