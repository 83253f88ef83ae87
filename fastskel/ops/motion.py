"""Frame motion scores and motion-guided frame masking (ASMa eq. 3–4, HMTM / LMTM).

Backends: "triton" (:mod:`fastskel.kernels.motion`: one fused kernel per op, CUDA, or CPU under
``TRITON_INTERPRET=1``) and "torch" (:mod:`fastskel.ops.reference`). "auto" picks Triton for CUDA
tensors.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from fastskel.backend import resolve
from . import _checks as chk
from . import reference

IMPLEMENTED = ("triton", "torch")


def frame_motion(x: torch.Tensor, lengths: Optional[torch.Tensor] = None,
                 backend: Optional[str] = None) -> torch.Tensor:
    """Per-frame motion ``a_t = mean_{c,v} |x_{t+1} − x_t|`` (ASMa eq. 3–4), float32 ``(N, T)``.

    ``a_{L−1} = a_{L−2}``; 0 on padded frames (``t ≥ lengths``) and for sequences shorter than 2.
    ``lengths=None`` treats all ``T`` frames as valid. Not differentiable (a ranking score): the
    result never requires grad. Computed in fp32 for fp32/bf16/fp16/fp64 input (the Triton kernel
    accumulates fp64 input in fp32 too).
    """
    chk.skeleton(x)
    L = chk.lengths(lengths, x)
    impl = resolve("frame_motion", backend, x.device, IMPLEMENTED)
    if impl == "triton":
        from fastskel.kernels import motion as kernels

        return kernels.frame_motion(x.detach(), L)
    return reference.frame_motion(x.detach(), L)


def motion_frame_mask(x: torch.Tensor, k: int, largest: bool = True,
                      lengths: Optional[torch.Tensor] = None,
                      backend: Optional[str] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Zero the ``k`` valid frames with the largest (HMTM) or smallest (LMTM) motion ``a_t``.

    Ties → lower frame index; padded frames are never chosen; ``k`` must be below every valid
    length (``0 ≤ k < L``). Returns ``(x_masked, mask)``, ``mask`` bool ``(N, T)`` True where zeroed;
    gradients flow to the kept frames (``∂x = g · keep``).

    The Triton kernel fuses the motion, the per-sample selection (ranks by pairwise counting, so
    any k costs the same) and the zeroing in one launch. Motion is accumulated in fp32 in a
    different order than the reference, so frames whose motions differ only by rounding
    (≈1e-7 relative) may be ranked differently; exact ties (equal frames, ``a_{L−1} = a_{L−2}``)
    are resolved identically (lower index).
    """
    chk.skeleton(x)
    L = chk.lengths(lengths, x)
    t = x.shape[2]
    k = chk.integer(k, "k", 0, t - 1, what=f"(below T={t})")
    if not isinstance(largest, bool):
        raise TypeError(f"largest: expected a bool, got {type(largest).__name__}")
    if L is not None and k > 0 and chk.data_checks_enabled():
        short = int(L.min())
        if k >= short:
            raise ValueError(f"k: expected k < every valid length (k frames masked, at least one kept), "
                             f"got k={k} with a sequence of {short} valid frames")
    chk.finite(x, "x", "frames are ranked by motion")
    impl = resolve("motion_frame_mask", backend, x.device, IMPLEMENTED)
    if impl == "triton":
        from fastskel.kernels import motion as kernels

        return kernels.motion_frame_mask(x, k, largest, L)
    return reference.motion_frame_mask(x, k, largest, L)
