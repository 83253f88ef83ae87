"""Spatio-temporal patches of AMR/MAMP: ``(N, C, T, V)`` ↔ ``(N, (T/l)·V, l·C)``."""
from __future__ import annotations

import torch

from . import _checks as chk
from . import reference


def patchify(x: torch.Tensor, frames_per_patch: int) -> torch.Tensor:
    """``(N, C, T, V)`` → ``(N, (T/l)·V, l·C)``; tokens t-block major then joint, features (frame, channel)."""
    chk.skeleton(x)
    t = x.shape[2]
    l = chk.integer(frames_per_patch, "frames_per_patch", 1, t)
    if t % l:
        raise ValueError(f"frames_per_patch: expected a divisor of T={t}, got {l}")
    return reference.patchify(x, l)


def unpatchify(tokens: torch.Tensor, frames_per_patch: int, num_joints: int) -> torch.Tensor:
    """Inverse of :func:`patchify`: ``(N, (T/l)·V, l·C)`` → ``(N, C, T, V)``."""
    chk.tensor(tokens, "tokens", 3, dtypes=(), shape_hint="(N, (T/l)·V, l·C)")
    l = chk.integer(frames_per_patch, "frames_per_patch", 1)
    v = chk.integer(num_joints, "num_joints", 1)
    if tokens.shape[1] % v:
        raise ValueError(f"num_joints: expected a divisor of the token count {tokens.shape[1]}, got {v}")
    if tokens.shape[2] % l:
        raise ValueError(f"frames_per_patch: expected a divisor of the feature size {tokens.shape[2]}, got {l}")
    return reference.unpatchify(tokens, l, v)
