"""Barlow Twins loss (ASMa eq. 5–6; official Barlow Twins / PSTL normalisation)."""
from __future__ import annotations

from typing import Optional

import torch

from fastskel.backend import resolve
from . import _checks as chk
from . import reference

IMPLEMENTED = ("torch",)
NORMALIZE = ("batchnorm", "cosine")


def barlow_twins_loss(z1: torch.Tensor, z2: torch.Tensor, lambd: float = 2e-4,
                      normalize: str = "batchnorm", backend: Optional[str] = None) -> torch.Tensor:
    """``Σ_i (1 − C_ii)² + λ Σ_{i≠j} C_ij²`` with ``C = z1ₙᵀ z2ₙ / B`` ("batchnorm": per-feature
    standardisation over the batch, biased variance, eps 1e-5) or ``C = z1ₙᵀ z2ₙ`` ("cosine": each
    feature column L2-normalised over the batch, ASMa eq. 5). float32 scalar.

    ``z1``, ``z2``: ``(B, D)`` with B ≥ 2.
    """
    chk.tensor(z1, "z1", 2, shape_hint="(B, D)")
    chk.tensor(z2, "z2", 2, shape_hint="(B, D)")
    if z2.shape != z1.shape:
        raise ValueError(f"z2: expected shape {tuple(z1.shape)} like z1, got {tuple(z2.shape)}")
    chk.same_device("z2", z2, z1, "z1")
    if z1.shape[0] < 2 or z1.shape[1] < 1:
        raise ValueError(f"z1: expected B >= 2 samples and D >= 1 features, got shape {tuple(z1.shape)}")
    chk.positive_float(lambd, "lambd", allow_zero=True)
    chk.choice(normalize, "normalize", NORMALIZE)
    impl = resolve("barlow_twins_loss", backend, z1.device, IMPLEMENTED)
    return reference.barlow_twins_loss(z1, z2, float(lambd), normalize)
