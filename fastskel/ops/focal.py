"""AMR motion-energy focal weights (eq. 3–4, multi-scale) and focal reconstruction loss (eq. 5).

Backends: "triton" (:mod:`fastskel.kernels.focal`: the weights in one two-pass kernel per sample;
the loss as one fused reduction forward and one elementwise pass backward; CUDA, or CPU under
``TRITON_INTERPRET=1``) and "torch" (:mod:`fastskel.ops.reference`).
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from fastskel.backend import resolve
from . import _checks as chk
from . import reference

IMPLEMENTED = ("triton", "torch")


def _windows(windows) -> tuple:
    if isinstance(windows, int) or not hasattr(windows, "__iter__"):
        raise TypeError(f"windows: expected a sequence of ints, got {type(windows).__name__}")
    windows = tuple(windows)
    if not windows:
        raise ValueError("windows: expected at least one window size, got ()")
    return tuple(chk.integer(w, "windows", 1) for w in windows)


def motion_energy_weights(x: torch.Tensor, windows: Sequence[int] = (4, 8, 12), k: float = 0.01,
                          eps: float = 1e-6, lengths: Optional[torch.Tensor] = None,
                          backend: Optional[str] = None) -> torch.Tensor:
    """Multi-scale motion-energy weights of AMR, float32 ``(N, T, V)`` in ``[0, 1)``.

    Per window size n: ``e = mean_t ‖s_t − μ‖²`` per (window, joint) over non-overlapping windows
    of the valid frames (the last may be short); ``e_t`` = mean of e over the sequence;
    ``w = 1 / (1 + k·e_t / (e + eps))``; averaged over the window sizes; 0 on padded frames.
    Not differentiable (a target weighting): the result never requires grad. The Triton kernel
    agrees with the reference to fp32 rounding (sums in another order), not bit for bit.
    """
    chk.skeleton(x)
    L = chk.lengths(lengths, x)
    windows = _windows(windows)
    k = chk.positive_float(k, "k")
    eps = chk.positive_float(eps, "eps")
    impl = resolve("motion_energy_weights", backend, x.device, IMPLEMENTED)
    if impl == "triton":
        from fastskel.kernels import focal as kernels

        return kernels.motion_energy_weights(x.detach(), windows, k, eps, L)
    return reference.motion_energy_weights(x.detach(), windows, k, eps, L)


def focal_reconstruction_loss(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor,
                              backend: Optional[str] = None) -> torch.Tensor:
    """AMR eq. 5: ``mean_N (1/P) Σ_p Σ_d w·(pred − target)²`` over all P patches, float32 scalar.

    ``pred``, ``target`` ``(N, P, D)``; ``weight`` ``(N, P, D)`` or ``(N, P)`` (one weight per patch).
    Differentiable in ``pred`` and ``target``; ``weight`` is treated as a constant. Accumulated in
    fp32 for any input dtype; gradients come back in the inputs' dtypes.
    """
    chk.tensor(pred, "pred", 3, shape_hint="(N, P, D)")
    chk.tensor(target, "target", 3, shape_hint="(N, P, D)")
    chk.tensor(weight, "weight", shape_hint="(N, P, D) or (N, P)")
    if target.shape != pred.shape:
        raise ValueError(f"target: expected shape {tuple(pred.shape)} like pred, got {tuple(target.shape)}")
    if weight.shape not in (pred.shape, pred.shape[:2]):
        raise ValueError(f"weight: expected shape {tuple(pred.shape)} or {tuple(pred.shape[:2])}, got {tuple(weight.shape)}")
    if pred.numel() == 0:
        raise ValueError(f"pred: expected a non-empty (N, P, D) tensor, got shape {tuple(pred.shape)}")
    for name, t in (("target", target), ("weight", weight)):
        chk.same_device(name, t, pred, "pred")
    impl = resolve("focal_reconstruction_loss", backend, pred.device, IMPLEMENTED)
    if impl == "triton":
        from fastskel.kernels import focal as kernels

        return kernels.focal_reconstruction_loss(pred, target, weight.detach())
    return reference.focal_reconstruction_loss(pred, target, weight.detach())
