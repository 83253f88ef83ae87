"""Prototype-head objectives of DINO/iBOT/SLiM without the ``(tokens × K)`` logits.

A DINO head ends in ``K`` weight-normed prototypes ``W`` ``(K, D)``; its logits are ``s = z Wᵀ``
for L2-normalised embeddings ``z`` ``(n, D)``. SLiM (seed 002, App. A) uses K = 65,536 for the cls
head and the masked-patch head, so one fp32 logit matrix of a batch-128 step (~70k masked tokens)
is ~18 GB, and the materialised loss holds several of them (teacher logits, Sinkhorn ``Q``,
student logits, log-softmax, their gradients). Here both objectives stream over blocks of
``chunk_size`` prototypes and hold only ``O(n · chunk)`` at a time, forward and backward.

**Sinkhorn-Knopp** (SwAV/DINOv2 ``sinkhorn_knopp_teacher``; SLiM App. A, 3 iterations) in the log
domain. The targets are kept *implicit*::

    q[i, k] = exp(z_i·w_k / τ_t + row_i + col_k)          (SinkhornTargets)
    iteration:  col_k = −log K − LSE_i (z_i·w_k/τ_t + row_i)      (prototype marginals 1/K)
                row_i = −log B − LSE_k (z_i·w_k/τ_t + col_k)      (sample marginals 1/B)
    finally     row_i += log B                                   (each target row sums to 1)

which is DINOv2's ``Q /= Q.sum(1); Q /= K; Q /= Q.sum(0); Q /= B; Q *= B`` exactly (its initial
global ``Q /= Q.sum()`` is a scale that the first prototype normalisation removes). One
iteration is one pass over the prototype blocks: a block's ``col`` is final as soon as its
column LSE over all samples is known, so the row LSE accumulates online in the same pass.
Under ``torch.distributed`` the sample count ``B`` and every column LSE are reduced across ranks
(max, then sum of exponentials), as DINOv2 all-reduces its sums; rows stay local.

**Cross-entropy** ``ℓ_i = −Σ_k q_ik log softmax(z_i·Wᵀ/τ_s)_k = LSE_i·Σ_k q_ik − Σ_k q_ik s_ik/τ_s``
(iBOT eq. / SLiM eq. 4 and 6) with an online LSE in the forward, and the backward recomputing each
block: ``∂ℓ_i/∂s_ik = (softmax_ik·Σ_k q_ik − q_ik)/τ_s``, ``dz = G W``, ``dW = Gᵀ z``. The targets
are a :class:`SinkhornTargets` (recomputed per block from the teacher embeddings, never stored)
or a dense ``(n_t, K)`` probability tensor; ``index`` maps student rows to target rows (SLiM's
seven student views per teacher cls) without repeating the teacher's work.

Both are ``torch.library.custom_op`` (``fastskel::prototype_cross_entropy``,
``fastskel::prototype_cross_entropy_backward``, ``fastskel::sinkhorn_knopp``), so
``torch.compile(fullgraph=True)`` traces through them. The materialised references
(:func:`prototype_cross_entropy_reference`, :func:`sinkhorn_reference`) sit at the end of this file.

Backends: only "torch" — this streaming PyTorch implementation (on any device); a fused Triton
kernel does not exist yet, so an explicit "triton"/"cpp" raises ``BackendUnavailableError``.

Limitations: block logits are computed in the inputs' dtype (bf16 under autocast, like DINOv2)
then exponentiated in fp32; the forward and every Sinkhorn iteration recompute the block matmuls
(the price of the memory bound: 3 + 1 + 1 passes of ``n·K·D`` MACs instead of 1 + 1); targets are
constants (no gradient flows to the teacher side).
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional, Tuple, Union

import torch
import torch.distributed as dist

from fastskel.backend import resolve
from . import _checks as chk

IMPLEMENTED = ("torch",)
DEFAULT_BLOCK_ELEMENTS = 1 << 22   # fp32 elements of one (n × chunk) block: 16 MiB

__all__ = [
    "SinkhornTargets", "default_chunk_size", "prototype_cross_entropy", "prototype_cross_entropy_reference",
    "sinkhorn_knopp", "sinkhorn_reference",
]


class SinkhornTargets(NamedTuple):
    """Implicit teacher targets ``q[i, k] = exp(z_i·w_k / temp + row_i + col_k)``, rows summing to 1.

    ``z`` ``(n, D)`` and ``prototypes`` ``(K, D)`` are the teacher's (no gradient); ``row`` ``(n,)``
    and ``col`` ``(K,)`` are float32 log-scalings from :func:`sinkhorn_knopp`.
    """

    z: torch.Tensor
    prototypes: torch.Tensor
    temp: float
    row: torch.Tensor
    col: torch.Tensor

    def block(self, start: int, end: int) -> torch.Tensor:
        """Targets of prototypes ``[start, end)``: float32 ``(n, end − start)``."""
        s = (self.z @ self.prototypes[start:end].T).float() / self.temp
        return torch.exp(s + self.row[:, None] + self.col[None, start:end])

    def materialize(self) -> torch.Tensor:
        """All targets, float32 ``(n, K)`` (tests and small K only)."""
        return self.block(0, self.prototypes.shape[0])

    def index_select(self, index: torch.Tensor) -> "SinkhornTargets":
        """The targets of rows ``index`` (repeats allowed)."""
        return self._replace(z=self.z.index_select(0, index), row=self.row.index_select(0, index))


def default_chunk_size(n: int, k: int, block_elements: int = DEFAULT_BLOCK_ELEMENTS) -> int:
    """Prototypes per block so that one ``(n × chunk)`` fp32 block holds ~``block_elements``
    (16 MiB; a block pass keeps ~4 such temporaries): at least 128 (so a GPU matmul stays wide
    enough), a multiple of 128 unless it covers all ``k``."""
    c = max(128, (block_elements // max(n, 1)) // 128 * 128)
    return k if c >= k else c


def _world() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _online_lse(m: torch.Tensor, l: torch.Tensor, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Merge the row-wise LSE state ``(max m, Σ exp(x − m) = l)`` with the block ``x`` (n, c)."""
    bm = x.amax(1)
    new_m = torch.maximum(m, bm)
    safe = torch.where(torch.isfinite(new_m), new_m, torch.zeros_like(new_m))
    l = l * torch.exp(m - safe) + torch.exp(x - safe[:, None]).sum(1)
    return new_m, l


def _target_block(start: int, end: int, t_z: Optional[torch.Tensor], t_w: Optional[torch.Tensor],
                  t_temp: float, t_row: Optional[torch.Tensor], t_col: Optional[torch.Tensor],
                  t_dense: Optional[torch.Tensor], t_index: Optional[torch.Tensor]) -> torch.Tensor:
    if t_dense is not None:
        q = t_dense[:, start:end].float()
    else:
        s = (t_z @ t_w[start:end].T).float() / t_temp
        q = torch.exp(s + t_row[:, None] + t_col[None, start:end])
    return q if t_index is None else q.index_select(0, t_index)


# --------------------------------------------------------------------------- cross-entropy op
@torch.library.custom_op("fastskel::prototype_cross_entropy", mutates_args=())
def _ce_forward(z: torch.Tensor, w: torch.Tensor, temp: float, t_z: Optional[torch.Tensor],
                t_w: Optional[torch.Tensor], t_temp: float, t_row: Optional[torch.Tensor],
                t_col: Optional[torch.Tensor], t_dense: Optional[torch.Tensor],
                t_index: Optional[torch.Tensor], chunk: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(loss (n,), lse (n,), qsum (n,))`` float32; ``lse`` of ``z·Wᵀ/temp`` and ``Σ_k q`` are
    kept for the backward."""
    n, k = z.shape[0], w.shape[0]
    f32 = dict(device=z.device, dtype=torch.float32)
    m = torch.full((n,), float("-inf"), **f32)
    l = torch.zeros((n,), **f32)
    qs = torch.zeros((n,), **f32)
    qsum = torch.zeros((n,), **f32)
    for a in range(0, k, chunk):
        b = min(a + chunk, k)
        s = (z @ w[a:b].T).float().div_(temp)
        q = _target_block(a, b, t_z, t_w, t_temp, t_row, t_col, t_dense, t_index)
        qs += (q * s).sum(1)
        qsum += q.sum(1)
        m, l = _online_lse(m, l, s)
    lse = m + torch.log(l)
    return lse * qsum - qs, lse, qsum


@_ce_forward.register_fake
def _(z, w, temp, t_z, t_w, t_temp, t_row, t_col, t_dense, t_index, chunk):
    e = lambda: z.new_empty((z.shape[0],), dtype=torch.float32)  # noqa: E731
    return e(), e(), e()


@torch.library.custom_op("fastskel::prototype_cross_entropy_backward", mutates_args=())
def _ce_backward(grad: torch.Tensor, z: torch.Tensor, w: torch.Tensor, temp: float, lse: torch.Tensor,
                 qsum: torch.Tensor, t_z: Optional[torch.Tensor], t_w: Optional[torch.Tensor], t_temp: float,
                 t_row: Optional[torch.Tensor], t_col: Optional[torch.Tensor], t_dense: Optional[torch.Tensor],
                 t_index: Optional[torch.Tensor], chunk: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(dz, dW)`` in the dtypes of ``z`` and ``W`` for the upstream per-row ``grad`` (n,)."""
    n, k = z.shape[0], w.shape[0]
    g = grad.float() / temp
    dz = torch.zeros(z.shape, device=z.device, dtype=torch.float32)
    dw = torch.empty(w.shape, device=w.device, dtype=w.dtype)
    for a in range(0, k, chunk):
        b = min(a + chunk, k)
        wb = w[a:b]
        s = (z @ wb.T).float().div_(temp)
        p = torch.exp(s.sub_(lse[:, None]))
        q = _target_block(a, b, t_z, t_w, t_temp, t_row, t_col, t_dense, t_index)
        gs = p.mul_(qsum[:, None]).sub_(q).mul_(g[:, None])            # ∂ℓ/∂(z·w), (n, c)
        gs = gs.to(z.dtype)
        if z.dtype == torch.float32:
            dz.addmm_(gs, wb.float())
        else:
            dz += (gs @ wb.to(z.dtype)).float()
        dw[a:b] = (gs.T @ z).to(w.dtype)
    return dz.to(z.dtype), dw


@_ce_backward.register_fake
def _(grad, z, w, temp, lse, qsum, t_z, t_w, t_temp, t_row, t_col, t_dense, t_index, chunk):
    return torch.empty_like(z), torch.empty_like(w)


def _ce_setup_context(ctx, inputs, output):
    z, w, temp, t_z, t_w, t_temp, t_row, t_col, t_dense, t_index, chunk = inputs
    _, lse, qsum = output
    ctx.save_for_backward(z, w, lse, qsum, t_z, t_w, t_row, t_col, t_dense, t_index)
    ctx.temp, ctx.t_temp, ctx.chunk = temp, t_temp, chunk


def _ce_autograd(ctx, grad, _grad_lse, _grad_qsum):
    z, w, lse, qsum, t_z, t_w, t_row, t_col, t_dense, t_index = ctx.saved_tensors
    dz, dw = _ce_backward(grad, z, w, ctx.temp, lse, qsum, t_z, t_w, ctx.t_temp, t_row, t_col,
                          t_dense, t_index, ctx.chunk)
    return dz, dw, None, None, None, None, None, None, None, None, None


_ce_forward.register_autograd(_ce_autograd, setup_context=_ce_setup_context)


# --------------------------------------------------------------------------- Sinkhorn op
@torch.library.custom_op("fastskel::sinkhorn_knopp", mutates_args=())
def _sinkhorn(z: torch.Tensor, w: torch.Tensor, temp: float, n_iters: int, chunk: int,
              distributed: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    """Log-scalings ``(row (n,), col (K,))`` float32 of the Sinkhorn-Knopp targets."""
    n, k = z.shape[0], w.shape[0]
    f32 = dict(device=z.device, dtype=torch.float32)
    world = distributed and _world()
    total = float(n)
    if world:                                   # the global row count (the only host read-back)
        t = torch.tensor(total, **f32)
        dist.all_reduce(t)
        total = float(t)
    row = torch.zeros((n,), **f32)
    col = torch.zeros((k,), **f32)
    if total == 0.0:
        return row, col
    log_b, log_k = math.log(total), math.log(k)
    for _ in range(n_iters):
        rm = torch.full((n,), float("-inf"), **f32)
        rl = torch.zeros((n,), **f32)
        for a in range(0, k, chunk):
            b = min(a + chunk, k)
            x = (z @ w[a:b].T).float().div_(temp)                         # (n, c)
            xc = x + row[:, None]
            cm = xc.amax(0) if n else torch.full((b - a,), float("-inf"), **f32)
            if world:
                dist.all_reduce(cm, op=dist.ReduceOp.MAX)
            cm = torch.where(torch.isfinite(cm), cm, torch.zeros_like(cm))
            cs = torch.exp(xc.sub_(cm[None, :])).sum(0) if n else torch.zeros((b - a,), **f32)
            if world:
                dist.all_reduce(cs)
            col[a:b] = -log_k - (cm + torch.log(cs))
            rm, rl = _online_lse(rm, rl, x.add_(col[None, a:b]))
        row = -log_b - (rm + torch.log(rl))
    return row + log_b, col


@_sinkhorn.register_fake
def _(z, w, temp, n_iters, chunk, distributed):
    return z.new_empty((z.shape[0],), dtype=torch.float32), w.new_empty((w.shape[0],), dtype=torch.float32)


# --------------------------------------------------------------------------- public ops
def _check_zw(z, prototypes, zname: str, wname: str) -> None:
    chk.tensor(z, zname, 2, shape_hint="(n, D)")
    chk.tensor(prototypes, wname, 2, shape_hint="(K, D)")
    if prototypes.shape[1] != z.shape[1]:
        raise ValueError(f"{wname}: expected (K, {z.shape[1]}) to match {zname}'s D, got {tuple(prototypes.shape)}")
    if prototypes.shape[0] == 0:
        raise ValueError(f"{wname}: expected K >= 1 prototypes, got shape {tuple(prototypes.shape)}")
    if prototypes.dtype != z.dtype:
        raise TypeError(f"{wname}: expected dtype {z.dtype} like {zname}, got {prototypes.dtype}")
    chk.same_device(wname, prototypes, z, zname)


def _chunk(chunk_size, n: int, k: int) -> int:
    if chunk_size is None:
        return default_chunk_size(n, k)
    return min(chk.integer(chunk_size, "chunk_size", 1), k)


def sinkhorn_knopp(z: torch.Tensor, prototypes: torch.Tensor, temp: float, n_iters: int = 3,
                   chunk_size: Optional[int] = None, distributed: bool = True,
                   backend: Optional[str] = None) -> SinkhornTargets:
    """Sinkhorn-Knopp teacher targets of the logits ``z·prototypesᵀ/temp``, kept implicit.

    Equals DINOv2's ``sinkhorn_knopp_teacher(z @ prototypes.T, temp, n_iterations)`` (see the
    module docstring) without storing the ``(n, K)`` matrix.

    Args:
        z: teacher embeddings ``(n, D)`` (L2-normalised in a DINO head); no gradient is tracked.
        prototypes: teacher prototypes ``(K, D)``, same dtype and device.
        temp: teacher temperature τ_t > 0 (SLiM: 0.04 → 0.07).
        n_iters: Sinkhorn iterations ≥ 1 (3 in SLiM/DINOv2).
        chunk_size: prototypes per block; ``None`` = :func:`default_chunk_size`.
        distributed: under an initialised ``torch.distributed`` with several ranks, reduce the
            sample count and the prototype marginals across ranks (every rank must call it).
        backend: only "torch"/"auto" (see the module docstring).

    Returns: :class:`SinkhornTargets` (``.materialize()`` gives the dense ``(n, K)`` targets).
    """
    _check_zw(z, prototypes, "z", "prototypes")
    temp = chk.positive_float(temp, "temp")
    n_iters = chk.integer(n_iters, "n_iters", 1)
    resolve("sinkhorn_knopp", backend, z.device, IMPLEMENTED)
    z, prototypes = z.detach(), prototypes.detach()
    chunk = _chunk(chunk_size, z.shape[0], prototypes.shape[0])
    row, col = torch.ops.fastskel.sinkhorn_knopp(z, prototypes, temp, n_iters, chunk, bool(distributed))
    return SinkhornTargets(z, prototypes, temp, row, col)


def prototype_cross_entropy(z: torch.Tensor, prototypes: torch.Tensor,
                            targets: Union[SinkhornTargets, torch.Tensor], temp: float,
                            index: Optional[torch.Tensor] = None, chunk_size: Optional[int] = None,
                            backend: Optional[str] = None) -> torch.Tensor:
    """Per-row cross-entropy ``ℓ_i = −Σ_k q_ik · log softmax(z_i·prototypesᵀ / temp)_k``, streamed.

    Args:
        z: student embeddings ``(n, D)``; differentiable.
        prototypes: student prototypes ``(K, D)``; differentiable.
        targets: :class:`SinkhornTargets` over ``n_t`` rows, or dense probabilities ``(n_t, K)``
            (constants; not differentiated).
        temp: student temperature τ_s > 0 (0.1 in SLiM).
        index: int64 ``(n,)`` target row of each student row; ``None`` = the identity (n_t = n).
        chunk_size: prototypes per block; ``None`` = :func:`default_chunk_size`.
        backend: only "torch"/"auto".

    Returns: float32 ``(n,)``; reduce it (mean, per-sequence weights) outside.
    """
    _check_zw(z, prototypes, "z", "prototypes")
    temp = chk.positive_float(temp, "temp")
    n, k = z.shape[0], prototypes.shape[0]
    if isinstance(targets, SinkhornTargets):
        _check_zw(targets.z, targets.prototypes, "targets.z", "targets.prototypes")
        if targets.prototypes.shape[0] != k:
            raise ValueError(f"targets: expected K={k} prototypes like prototypes, got {targets.prototypes.shape[0]}")
        chk.same_device("targets.z", targets.z, z, "z")
        n_t = targets.z.shape[0]
        t_z, t_w, t_temp, t_row, t_col, t_dense = (targets.z.detach(), targets.prototypes.detach(), float(targets.temp),
                                                   targets.row, targets.col, None)
    elif isinstance(targets, torch.Tensor):
        chk.tensor(targets, "targets", 2, shape_hint=f"(n_t, {k})")
        if targets.shape[1] != k:
            raise ValueError(f"targets: expected (n_t, {k}) probabilities, got {tuple(targets.shape)}")
        chk.same_device("targets", targets, z, "z")
        n_t = targets.shape[0]
        t_z = t_w = t_row = t_col = None
        t_temp, t_dense = 1.0, targets.detach()
    else:
        raise TypeError(f"targets: expected SinkhornTargets or a (n_t, K) tensor, got {type(targets).__name__}")
    if index is not None:
        chk.tensor(index, "index", 1, dtypes=(torch.int64, torch.int32), shape_hint=f"({n},)")
        if index.shape[0] != n:
            raise ValueError(f"index: expected shape ({n},) to match z, got {tuple(index.shape)}")
        chk.same_device("index", index, z, "z")
        if chk.data_checks_enabled() and n and (int(index.min()) < 0 or int(index.max()) >= n_t):
            raise ValueError(f"index: expected values in [0, {n_t}), got [{int(index.min())}, {int(index.max())}]")
        index = index.long()
    elif n_t != n:
        raise ValueError(f"targets: expected {n} rows like z (or pass index), got {n_t}")
    resolve("prototype_cross_entropy", backend, z.device, IMPLEMENTED)
    chunk = _chunk(chunk_size, max(n, n_t), k)
    return torch.ops.fastskel.prototype_cross_entropy(z, prototypes, temp, t_z, t_w, t_temp, t_row, t_col,
                                                      t_dense, index, chunk)[0]


# --------------------------------------------------------------------------- materialised references
def sinkhorn_reference(logits: torch.Tensor, temp: float, n_iters: int = 3) -> torch.Tensor:
    """DINOv2's ``SinkhornKnopp`` on materialised teacher logits ``(n, K)`` → targets ``(n, K)``.

    Single process, float32, literally ``Q = exp(logits/τ)ᵀ; Q /= ΣQ; repeat: Q /= Q.sum(1)·K;
    Q /= Q.sum(0)·B; Q *= B`` (the exponent shifted by its max, which the normalisation cancels).
    """
    x = logits.float() / temp
    q = torch.exp(x - x.max()).T                     # (K, B)
    k, b = q.shape
    q = q / q.sum()
    for _ in range(n_iters):
        q = q / q.sum(1, keepdim=True) / k
        q = q / q.sum(0, keepdim=True) / b
    return (q * b).T


def prototype_cross_entropy_reference(logits: torch.Tensor, targets: torch.Tensor, temp: float) -> torch.Tensor:
    """``−Σ_k targets · log_softmax(logits / temp)`` per row, float32 ``(n,)`` (materialised)."""
    return -(targets.float() * torch.log_softmax(logits.float() / temp, dim=-1)).sum(-1)
