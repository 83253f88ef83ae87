"""Barlow Twins loss (ASMa eq. 5–6; official Barlow Twins / PSTL normalisation) in Gram form.

For a batch smaller than the embedding width (B < D) the ``D × D`` cross-correlation never needs
to exist. With ``zₙ`` the normalised embeddings and ``s = B`` ("batchnorm") or ``1`` ("cosine")::

    C = z1ₙᵀ z2ₙ / s,   C_ii = Σ_b z1ₙ[b,i] z2ₙ[b,i] / s,   Σ_ij C_ij² = ⟨G1, G2⟩_F / s²,  G = zₙ zₙᵀ
    loss = Σ_i (1 − C_ii)² + λ (Σ_ij C_ij² − Σ_i C_ii²)
    ∂loss/∂z1ₙ = (2/s)((1 − λ) C_ii − 1) ⊙ z2ₙ + (2λ/s²) G2 z1ₙ        (z2ₙ symmetrically)

then back through the normalisation analytically: O(B²D) work and O(BD + B²) memory instead of
O(BD²) and O(D²).

Implementations, chosen by ``backend`` (docs/design.md §2):

- ``"triton"``: fused kernels in :mod:`fastskel.kernels.barlow` (CUDA, or CPU under ``TRITON_INTERPRET=1``).
- ``"torch"``: the materialised reference :func:`fastskel.ops.reference.barlow_twins_loss`.
- ``"auto"``: the materialised reference where B ≥ D (there it is the cheaper form and has no
  total-minus-diagonal cancellation); else Triton for CUDA tensors; else the Gram-form PyTorch op
  ``torch.ops.fastskel.barlow_twins_gram`` (any device).
- ``"cpp"``: there is no ``fastskel._C`` kernel for this op, so an explicit request raises
  ``BackendUnavailableError`` like every op without one. The CPU fast path is not C++: it is the
  Gram algorithm in plain PyTorch (BLAS matmuls on ``B × B`` / ``B × D``), where a C++ kernel would
  call the same BLAS; calling it "cpp" would misreport what runs. Reach it with "auto" (B < D) or
  directly as ``torch.ops.fastskel.barlow_twins_gram(z1, z2, lambd, cosine)[0]``.

Precision: normalisation, Gram matrices and gradients in float32 (Triton's ``tl.dot`` in IEEE
fp32, never TF32); the final sums (``Σ(1 − C_ii)²``, ``⟨G1, G2⟩``, ``Σ C_ii²``) in float64. ``C``
has rank ≤ B, so ``ΣC² ≥ (Σ C_ii)²/B``: when ``C_ii ≈ 1`` the off-diagonal part is at least
``(D − B)/D`` of the total and the total-minus-diagonal subtraction amplifies fp32 rounding by at
most ``D/(D − B)`` (tested at D = 6144 and at B = 480, D = 512 against float64). At B ≥ D that
bound is gone, which is one more reason "auto" switches to the materialised form there.

Cost: work ``4B²D`` multiply-adds (two Gram products forward, two ``G·zₙ`` backward) against the
materialised ``3BD²`` plus elementwise passes over ``D²``, i.e. a ``3D/4B``-fold flop reduction
(36× at the ASMa shape B=128, D=6144, 6× at B=1024, D=8192). Memory: the forward saves ``zₙ``
(2·B·D fp32) and ``G`` (2·B²); the PyTorch backward allocates little beyond the two gradients.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from fastskel.backend import get_backend, resolve
from . import _checks as chk
from . import reference

IMPLEMENTED = ("triton", "torch")
NORMALIZE = ("batchnorm", "cosine")
_EPS_BN = 1e-5
_EPS_COS = 1e-12

__all__ = ["barlow_twins_loss"]


# --------------------------------------------------------------------------- Gram form, PyTorch
@torch.library.custom_op("fastskel::barlow_twins_gram", mutates_args=())
def _gram_forward(z1: torch.Tensor, z2: torch.Tensor, lambd: float, cosine: bool
                  ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(loss, ac (2,B,D) fp32 normalised embeddings, G (2,B,B), d = C_ii (D,), inv (2,D), beta (2,D))``.

    ``inv`` is the per-feature scale of the normalisation and ``beta`` the weight of its projection
    term in the backward (``1/B`` for batchnorm; 1, or 0 where the norm was clamped, for cosine).
    """
    with torch.autocast(z1.device.type, enabled=False):  # AMP would run the Gram products in bf16
        return _gram_forward_impl(z1, z2, lambd, cosine)


def _gram_forward_impl(z1, z2, lambd, cosine):
    b, d = z1.shape
    ac = torch.empty((2, b, d), device=z1.device, dtype=torch.float32)
    inv = torch.empty((2, d), device=z1.device, dtype=torch.float32)
    beta = torch.empty((2, d), device=z1.device, dtype=torch.float32)
    dot0 = torch.linalg.vecdot  # Σ_b x[b, i] y[b, i] per column, without a B×D temporary
    for i, z in enumerate((z1, z2)):
        zf = z.float()
        if cosine:
            norm = dot0(zf, zf, dim=0).sqrt_()
            torch.reciprocal(norm.clamp(min=_EPS_COS), out=inv[i])
            beta[i].copy_(norm > _EPS_COS)
            torch.mul(zf, inv[i], out=ac[i])
        else:  # two-pass: centre, then the biased variance of the centred values
            torch.sub(zf, zf.sum(0).div_(b), out=ac[i])
            torch.rsqrt(dot0(ac[i], ac[i], dim=0).div_(b).add_(_EPS_BN), out=inv[i])
            beta[i].fill_(1.0 / b)
            ac[i].mul_(inv[i])
    s = 1.0 if cosine else float(b)
    diag = dot0(ac[0], ac[1], dim=0).div_(s)
    gram = torch.bmm(ac, ac.transpose(1, 2))
    f64 = torch.float64
    total = (gram[0] * gram[1]).sum(dtype=f64) / (s * s)
    loss = (1 - diag).square().sum(dtype=f64) + lambd * (total - diag.square().sum(dtype=f64))
    return loss.float(), ac, gram, diag, inv, beta


@_gram_forward.register_fake
def _(z1, z2, lambd, cosine):
    b, d = z1.shape
    f32 = dict(device=z1.device, dtype=torch.float32)
    return (torch.empty((), **f32), torch.empty((2, b, d), **f32), torch.empty((2, b, b), **f32),
            torch.empty((d,), **f32), torch.empty((2, d), **f32), torch.empty((2, d), **f32))


@torch.library.custom_op("fastskel::barlow_twins_gram_backward", mutates_args=())
def _gram_backward(grad: torch.Tensor, ac: torch.Tensor, gram: torch.Tensor, diag: torch.Tensor,
                   inv: torch.Tensor, beta: torch.Tensor, lambd: float, cosine: bool,
                   dtype: torch.dtype) -> Tuple[torch.Tensor, torch.Tensor]:
    """Gradients of ``z1`` and ``z2`` (in ``dtype``) for the upstream scalar ``grad``."""
    with torch.autocast(ac.device.type, enabled=False):
        return _gram_backward_impl(grad, ac, gram, diag, inv, beta, lambd, cosine, dtype)


def _gram_backward_impl(grad, ac, gram, diag, inv, beta, lambd, cosine, dtype):
    b = ac.shape[1]
    s = 1.0 if cosine else float(b)
    grad = grad.float()
    coef = (2.0 / s) * ((1.0 - lambd) * diag - 1.0) * grad
    kgram = grad * (2.0 * lambd / (s * s))
    out = []
    for i in (0, 1):
        own, oth = ac[i], ac[1 - i]
        # ∂loss/∂own = coef ⊙ other + (2λ/s²) G_other own
        g = torch.mm(gram[1 - i] * kgram, own).addcmul_(oth, coef)
        proj = torch.linalg.vecdot(g, own, dim=0).mul_(beta[i] * inv[i])
        shift = g.sum(0).mul_(inv[i] / b) if not cosine else None
        g.mul_(inv[i])
        if shift is not None:
            g.sub_(shift)
        g.addcmul_(own, proj, value=-1.0)
        out.append(g.to(dtype))
    return out[0], out[1]


@_gram_backward.register_fake
def _(grad, ac, gram, diag, inv, beta, lambd, cosine, dtype):
    shape = ac.shape[1:]
    return (torch.empty(shape, device=ac.device, dtype=dtype), torch.empty(shape, device=ac.device, dtype=dtype))


def _setup_context(ctx, inputs, output):
    z1, _, lambd, cosine = inputs
    _, ac, gram, diag, inv, beta = output
    ctx.save_for_backward(ac, gram, diag, inv, beta)
    ctx.mark_non_differentiable(ac, gram, diag, inv, beta)
    ctx.set_materialize_grads(False)  # else autograd builds zero gradients for them (2·B·D + 2·B²)
    ctx.lambd, ctx.cosine, ctx.dtype = lambd, cosine, z1.dtype


def _backward(ctx, grad, *_unused):
    if grad is None:
        return None, None, None, None
    ac, gram, diag, inv, beta = ctx.saved_tensors
    dz1, dz2 = _gram_backward(grad, ac, gram, diag, inv, beta, ctx.lambd, ctx.cosine, ctx.dtype)
    return dz1, dz2, None, None


_gram_forward.register_autograd(_backward, setup_context=_setup_context)


# --------------------------------------------------------------------------- public op
def barlow_twins_loss(z1: torch.Tensor, z2: torch.Tensor, lambd: float = 2e-4,
                      normalize: str = "batchnorm", backend: Optional[str] = None) -> torch.Tensor:
    """``Σ_i (1 − C_ii)² + λ Σ_{i≠j} C_ij²`` (ASMa eq. 6), a float32 scalar, differentiable in
    ``z1`` and ``z2``.

    ``C = z1ₙᵀ z2ₙ / B`` with "batchnorm" (per-feature standardisation over the batch, biased
    variance, eps 1e-5: official Barlow Twins / PSTL ``BatchNorm1d(affine=False)``), or
    ``C = z1ₙᵀ z2ₙ`` with "cosine" (each feature column L2-normalised over the batch, norms clamped
    at 1e-12: ASMa eq. 5). Computed in Gram form for B < D (see the module docstring); "auto"
    uses the materialised ``D × D`` form where B ≥ D.

    Args:
        z1, z2: ``(B, D)`` embeddings of the two views, B ≥ 2, same shape, dtype and device
            (fp32, bf16, fp16 or fp64; computed in fp32, gradients returned in the input dtype).
        lambd: weight λ ≥ 0 of the off-diagonal (redundancy) term; 2e-4 in ASMa.
        normalize: "batchnorm" or "cosine".
        backend: "auto" | "triton" | "cpp" | "torch" or None (process default); see the module docstring.

    Limitations: the whole batch must be on one device (for DDP use
    :class:`fastskel.nn.BarlowTwinsLoss`, which all-gathers); NaN/inf inputs propagate to the loss.
    """
    chk.tensor(z1, "z1", 2, shape_hint="(B, D)")
    chk.tensor(z2, "z2", 2, shape_hint="(B, D)")
    if z2.shape != z1.shape:
        raise ValueError(f"z2: expected shape {tuple(z1.shape)} like z1, got {tuple(z2.shape)}")
    chk.same_device("z2", z2, z1, "z1")
    if z2.dtype != z1.dtype:
        raise TypeError(f"z2: expected dtype {z1.dtype} like z1, got {z2.dtype}")
    if z1.shape[0] < 2 or z1.shape[1] < 1:
        raise ValueError(f"z1: expected B >= 2 samples and D >= 1 features, got shape {tuple(z1.shape)}")
    lambd = chk.positive_float(lambd, "lambd", allow_zero=True)
    chk.choice(normalize, "normalize", NORMALIZE)
    cosine = normalize == "cosine"
    requested = backend if backend is not None else get_backend()
    impl = resolve("barlow_twins_loss", backend, z1.device, IMPLEMENTED)
    if requested == "auto":
        b, d = z1.shape
        impl = "torch" if b >= d else ("triton" if impl == "triton" else "gram")
    if impl == "triton":
        from fastskel.kernels import barlow as kernel

        return kernel.barlow_twins_loss(z1, z2, lambd, cosine)
    if impl == "gram":
        return torch.ops.fastskel.barlow_twins_gram(z1, z2, lambd, cosine)[0]
    return reference.barlow_twins_loss(z1, z2, lambd, normalize)
