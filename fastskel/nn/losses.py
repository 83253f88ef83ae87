"""Loss modules on :mod:`fastskel.ops`: ``BarlowTwinsLoss`` with a data-parallel mode."""
from __future__ import annotations

from typing import Optional, Union

import torch
from torch import nn

from fastskel.ops import _checks as chk
from fastskel.ops import barlow_twins_loss

__all__ = ["BarlowTwinsLoss"]


def _dist_active() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class _GatherWithGrad(torch.autograd.Function):
    """All ranks' ``z`` concatenated along the batch (rank order), differentiable.

    Backward: the ranks' gradients of the gathered tensor are summed and each rank keeps its own
    slice (reduce-scatter on NCCL, all-reduce + slice elsewhere), i.e. every rank receives
    ``Σ_ranks ∂L_r/∂z_local``; with the identical global loss on every rank that is
    ``world_size · ∂L/∂z_local``, which DDP's gradient averaging turns into the single-process gradient.
    (Same semantics as ``torch.distributed.nn.functional.all_gather``, deprecated in recent torch.)
    """

    @staticmethod
    def forward(ctx, z):
        import torch.distributed as dist

        z = z.contiguous()
        parts = [torch.empty_like(z) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, z)
        ctx.rank, ctx.b = dist.get_rank(), z.shape[0]
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad):
        import torch.distributed as dist

        grad = grad.contiguous()
        if dist.get_backend() == "nccl":
            out = grad.new_empty((ctx.b, *grad.shape[1:]))
            dist.reduce_scatter_tensor(out, grad)
            return out
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.b:(ctx.rank + 1) * ctx.b]


class BarlowTwinsLoss(nn.Module):
    """Barlow Twins loss ``Σ_i (1 − C_ii)² + λ Σ_{i≠j} C_ij²`` (ASMa eq. 5–6) on
    :func:`fastskel.ops.barlow_twins_loss` (Gram form for B < D, Triton on CUDA).

    Args:
        lambd: off-diagonal weight λ (ASMa: 2e-4).
        normalize: "batchnorm" (per-feature standardisation over the batch, official Barlow Twins /
            PSTL) or "cosine" (ASMa eq. 5).
        distributed: "auto" — when ``torch.distributed`` is initialised with more than one rank,
            all-gather both embeddings (with gradient) before normalising, so the per-feature
            statistics and ``C`` are those of the global batch and the loss equals the
            single-process loss on the concatenated batch (rank order); ``True`` — the same, and
            an error if no process group with more than one rank exists; ``False`` — local batch only.
        backend: the ops backend (None = process default).

    ``forward(z1, z2)`` with ``(B_local, D)`` embeddings returns the float32 scalar loss (identical
    on every rank). Communication: two all-gathers of ``B_local × D`` per call, instead of an
    all-reduce of the ``D × D`` cross-correlation.

    Gradients under data parallelism: each rank's ``z.grad`` is ``world_size · ∂L/∂z_local`` (every
    rank back-propagates the same global loss and the gather's backward sums them); DDP then
    averages parameter gradients over ranks, giving exactly the single-process gradient of ``L``
    on the global batch. Without DDP's averaging (e.g. a manual all-reduce SUM), divide by
    ``world_size``.

    Limitations: every rank must pass the same ``B_local`` (``DistributedSampler`` with
    ``drop_last=True``); the whole-group default process group is used.
    """

    def __init__(self, lambd: float = 2e-4, normalize: str = "batchnorm",
                 distributed: Union[str, bool] = "auto", backend: Optional[str] = None):
        super().__init__()
        self.lambd = chk.positive_float(lambd, "lambd", allow_zero=True)
        self.normalize = chk.choice(normalize, "normalize", ("batchnorm", "cosine"))
        if distributed not in ("auto", True, False):
            raise ValueError(f"distributed: expected 'auto', True or False, got {distributed!r}")
        self.distributed = distributed
        self.backend = backend

    def extra_repr(self) -> str:
        return f"lambd={self.lambd}, normalize={self.normalize!r}, distributed={self.distributed!r}"

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        gather = False
        if self.distributed is True:
            if not _dist_active():
                raise RuntimeError("distributed: True needs an initialised torch.distributed process group "
                                   "with world_size > 1")
            gather = True
        elif self.distributed == "auto":
            gather = _dist_active()
        if gather:
            chk.tensor(z1, "z1", 2, shape_hint="(B, D)")
            chk.tensor(z2, "z2", 2, shape_hint="(B, D)")
            if z2.shape != z1.shape:  # before the collective: a mismatch there would hang
                raise ValueError(f"z2: expected shape {tuple(z1.shape)} like z1, got {tuple(z2.shape)}")
            z1, z2 = _GatherWithGrad.apply(z1), _GatherWithGrad.apply(z2)
        return barlow_twins_loss(z1, z2, self.lambd, self.normalize, backend=self.backend)
