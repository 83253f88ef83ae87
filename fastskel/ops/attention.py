"""Attention with separate query/key lengths, shared queries, key padding and RoPE (docs/design.md §4.7).

The fast path is the fused Triton kernel of :mod:`fastskel.kernels.attention` (forward and backward,
registered as ``torch.ops.fastskel.attention_fwd`` / ``attention_bwd``); the reference is
:func:`fastskel.ops.reference.attention` (explicit softmax in float32).
"""
from __future__ import annotations

from typing import Optional

import torch

from fastskel.backend import BackendUnavailableError, get_backend, resolve
from . import _checks as chk
from . import reference
from .reference import Rope

IMPLEMENTED = ("triton", "torch")


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
        chk.positive_float(rope.base, "rope.base")
        if d % 2:
            raise ValueError(f"rope: expected an even head dim, got d={d}")
        for name, pos, n in (("rope.q_pos", rope.q_pos, q.shape[2]), ("rope.k_pos", rope.k_pos, lk)):
            chk.tensor(pos, name, 1, dtypes=(), shape_hint=f"({n},)")
            if pos.dtype == torch.bool or pos.dtype.is_complex:
                raise TypeError(f"{name}: expected integer or floating positions, got {pos.dtype}")
            if pos.shape[0] != n:
                raise ValueError(f"{name}: expected shape ({n},), got {tuple(pos.shape)}")
    return rope


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: Optional[float] = None,
              key_padding_mask: Optional[torch.Tensor] = None, rope: Optional[Rope] = None,
              backend: Optional[str] = None) -> torch.Tensor:
    """``softmax(q kᵀ·scale) v``; q ``(Bq, H, Lq, d)`` with Bq ∈ {1, B}, k, v ``(B, H, Lk, d)``.

    Args:
        q: queries; ``Bq = 1`` shares one query set across the batch (learnable queries) without
            expanding it; its gradient is summed over the batch.
        k, v: keys and values ``(B, H, Lk, d)``; ``Lk`` may differ from ``Lq``.
        scale: logit scale, default ``1/sqrt(d)``.
        key_padding_mask: bool ``(B, Lk)``, True = ignore that key; a query whose keys are all
            masked outputs zeros (and gets zero gradients).
        rope: :class:`~fastskel.ops.Rope` per-token positions of queries and keys (rotate-half
            pairs ``(i, i + d/2)``, angle ``pos · base^(−2i/d)``); a negative position leaves that
            token unrotated (cls / register tokens). Needs an even ``d``.
        backend: "triton" (the fused kernel: CUDA, or CPU under ``TRITON_INTERPRET=1``; head dims
            16/32/64/128, fp32/bf16/fp16), "torch" (the reference), or "auto"/None: Triton for CUDA
            tensors the kernel supports, else the reference.

    Returns:
        ``(B, H, Lq, d)`` in q's dtype; softmax statistics in float32. The Triton path returns it
        stored as ``(B, Lq, H, d)`` (so merging heads is a view).
    """
    rope = check_attention_args(q, k, v, scale, key_padding_mask, rope)
    requested = backend if backend is not None else get_backend()
    impl = resolve("attention", backend, q.device, IMPLEMENTED)
    if impl == "triton":
        from fastskel.kernels import attention as kernel

        why = kernel.unsupported(q)
        if why is None:
            return kernel.attention(q, k, v, scale, key_padding_mask, rope)
        if requested == "triton":
            raise BackendUnavailableError(
                f"backend: 'triton' was requested for attention, but it does not support {why}")
    return reference.attention(q, k, v, scale, key_padding_mask, rope)
