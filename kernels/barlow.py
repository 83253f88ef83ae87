"""Barlow Twins loss in Gram form: Triton kernels, launchers and ``torch.library`` registration.

With ``a = z1ₙ``, ``c = z2ₙ`` (``B × D``, per-feature normalised over the batch) and ``s = B``
("batchnorm") or ``1`` ("cosine"), ``C = aᵀc / s`` is never built. Instead::

    d_i  = C_ii = Σ_b a[b,i] c[b,i] / s
    ΣC²  = ⟨G1, G2⟩_F / s²,     G1 = a aᵀ,  G2 = c cᵀ   (B × B)
    loss = Σ_i (1 − d_i)² + λ (ΣC² − Σ_i d_i²)
    ∂loss/∂a = (2/s)((1 − λ) d − 1) ⊙ c + (2λ/s²) G2 a     (and symmetrically for c)

followed by the backward of the normalisation, per feature column i over the batch:
"batchnorm" ``∂z = r (g − mean_b g − a · mean_b(g a))`` with ``r = 1/sqrt(var + 1e-5)``;
"cosine" ``∂z = (g − a Σ_b(g a)) / max(‖z_i‖, 1e-12)`` (no projection where the norm is clamped).

Kernels (forward): ``_norm_diag`` (statistics, ``a``/``c`` in fp32, ``d`` and the diagonal partial
sums, one program per feature block), ``_gram`` (upper-triangular tiles of ``G1``/``G2``, split-K
partials, ``tl.dot`` in IEEE fp32 — no TF32), ``_gram_reduce`` (split-K sum and ``⟨G1, G2⟩`` partials),
``_loss`` (one program: the final sums in float64). Backward: ``_bwd`` (``G a`` tiles, the diagonal
term, column sums and the normalisation backward, one program per feature block and side).
Work O(B²D), memory O(BD + B²): no ``D × D`` buffer (saved: ``zₙ`` 2·B·D fp32 and ``G``; the
backward adds 2·B·D fp32, finished in place for fp32 inputs, plus the output for other dtypes).

Registered as ``torch.ops.fastskel.barlow_twins_triton`` (forward: loss plus the saved tensors) and
``torch.ops.fastskel.barlow_twins_triton_backward`` with ``torch.library.triton_op`` +
``wrap_triton``, so ``torch.compile(fullgraph=True)`` traces into the kernels.

Limitations: inputs are made contiguous (a copy for strided views); ``z1`` and ``z2`` share one
dtype; block sizes are fixed heuristics (no autotuning); the loss is exact up to fp32 rounding of
``G`` entries, so where B ≥ D and ``C ≈ I`` the total-minus-diagonal subtraction loses relative
accuracy (``fastskel.ops.barlow_twins_loss`` picks the materialised form there under "auto").
"""
from __future__ import annotations

from typing import Tuple

import torch
import triton
import triton.language as tl
from torch.library import triton_op

from . import INTERPRET, device_guard, wrap_triton

EPS_BN = tl.constexpr(1e-5)   # tl.constexpr: a plain float global cannot be read by a compiled kernel
EPS_COS = tl.constexpr(1e-12)
_FORCE_SPLIT = None  # tests set it to exercise the split-K path under the interpreter


@triton.jit
def _norm_diag_kernel(z1_ptr, z2_ptr, ac_ptr, inv_ptr, beta_ptr, d_ptr, dpart_ptr,
                      B, D, inv_s, n_dblocks,
                      COSINE: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_D: tl.constexpr):
    pid = tl.program_id(0)
    cols = pid * BLOCK_D + tl.arange(0, BLOCK_D)
    cmask = cols < D
    rows0 = tl.arange(0, BLOCK_B)

    s1 = tl.zeros([BLOCK_D], tl.float32)
    s2 = tl.zeros([BLOCK_D], tl.float32)
    for b0 in range(0, B, BLOCK_B):
        rows = b0 + rows0
        m = (rows < B)[:, None] & cmask[None, :]
        offs = rows[:, None] * D + cols[None, :]
        x1 = tl.load(z1_ptr + offs, mask=m, other=0.0).to(tl.float32)
        x2 = tl.load(z2_ptr + offs, mask=m, other=0.0).to(tl.float32)
        if COSINE:
            s1 += tl.sum(x1 * x1, axis=0)
            s2 += tl.sum(x2 * x2, axis=0)
        else:
            s1 += tl.sum(x1, axis=0)
            s2 += tl.sum(x2, axis=0)

    if COSINE:
        n1 = tl.sqrt_rn(s1)
        n2 = tl.sqrt_rn(s2)
        inv1 = 1.0 / tl.maximum(n1, EPS_COS)
        inv2 = 1.0 / tl.maximum(n2, EPS_COS)
        beta1 = tl.where(n1 > EPS_COS, 1.0, 0.0)
        beta2 = tl.where(n2 > EPS_COS, 1.0, 0.0)
        mean1 = tl.zeros([BLOCK_D], tl.float32)
        mean2 = tl.zeros([BLOCK_D], tl.float32)
    else:
        mean1 = s1 / B
        mean2 = s2 / B
        v1 = tl.zeros([BLOCK_D], tl.float32)
        v2 = tl.zeros([BLOCK_D], tl.float32)
        for b0 in range(0, B, BLOCK_B):  # two-pass variance: no E[x²] − E[x]² cancellation
            rows = b0 + rows0
            m = (rows < B)[:, None] & cmask[None, :]
            offs = rows[:, None] * D + cols[None, :]
            x1 = tl.load(z1_ptr + offs, mask=m, other=0.0).to(tl.float32)
            x2 = tl.load(z2_ptr + offs, mask=m, other=0.0).to(tl.float32)
            e1 = tl.where(m, x1 - mean1[None, :], 0.0)
            e2 = tl.where(m, x2 - mean2[None, :], 0.0)
            v1 += tl.sum(e1 * e1, axis=0)
            v2 += tl.sum(e2 * e2, axis=0)
        inv1 = 1.0 / tl.sqrt_rn(v1 / B + EPS_BN)
        inv2 = 1.0 / tl.sqrt_rn(v2 / B + EPS_BN)
        beta1 = tl.zeros([BLOCK_D], tl.float32) + 1.0 / B
        beta2 = beta1

    dacc = tl.zeros([BLOCK_D], tl.float32)
    for b0 in range(0, B, BLOCK_B):
        rows = b0 + rows0
        m = (rows < B)[:, None] & cmask[None, :]
        offs = rows[:, None] * D + cols[None, :]
        x1 = tl.load(z1_ptr + offs, mask=m, other=0.0).to(tl.float32)
        x2 = tl.load(z2_ptr + offs, mask=m, other=0.0).to(tl.float32)
        a = tl.where(m, (x1 - mean1[None, :]) * inv1[None, :], 0.0)
        c = tl.where(m, (x2 - mean2[None, :]) * inv2[None, :], 0.0)
        tl.store(ac_ptr + offs, a, mask=m)
        tl.store(ac_ptr + B * D + offs, c, mask=m)
        dacc += tl.sum(a * c, axis=0)

    d = dacc * inv_s
    tl.store(d_ptr + cols, d, mask=cmask)
    tl.store(inv_ptr + cols, inv1, mask=cmask)
    tl.store(inv_ptr + D + cols, inv2, mask=cmask)
    tl.store(beta_ptr + cols, beta1, mask=cmask)
    tl.store(beta_ptr + D + cols, beta2, mask=cmask)
    one_minus = tl.where(cmask, 1.0 - d, 0.0)
    dz = tl.where(cmask, d, 0.0)
    tl.store(dpart_ptr + pid, tl.sum(one_minus * one_minus, axis=0))
    tl.store(dpart_ptr + n_dblocks + pid, tl.sum(dz * dz, axis=0))


@triton.jit
def _gram_kernel(ac_ptr, part_ptr, B, D, k_per_split, n_tiles,
                 BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr):
    # One upper-triangular tile (pm ≤ pn) of G = x xᵀ for side x ∈ {a, c}, over one K (feature) range;
    # the tile and its mirror go to this split's partial buffer.
    pid = tl.program_id(0)
    split = tl.program_id(1)
    side = tl.program_id(2)
    pm = pid // n_tiles
    pn = pid % n_tiles
    if pm <= pn:
        x_ptr = ac_ptr + side * B * D
        rm = pm * BLOCK_M + tl.arange(0, BLOCK_M)
        rn = pn * BLOCK_M + tl.arange(0, BLOCK_M)
        rk0 = tl.arange(0, BLOCK_K)
        acc = tl.zeros([BLOCK_M, BLOCK_M], tl.float32)
        k_start = split * k_per_split
        for k0 in range(k_start, k_start + k_per_split, BLOCK_K):
            rk = k0 + rk0
            kmask = rk < D
            xm = tl.load(x_ptr + rm[:, None] * D + rk[None, :], mask=(rm < B)[:, None] & kmask[None, :], other=0.0)
            xn = tl.load(x_ptr + rn[None, :] * D + rk[:, None], mask=kmask[:, None] & (rn < B)[None, :], other=0.0)
            acc += tl.dot(xm, xn, input_precision="ieee")
        out = part_ptr + (split * 2 + side) * B * B
        omask = (rm < B)[:, None] & (rn < B)[None, :]
        tl.store(out + rm[:, None] * B + rn[None, :], acc, mask=omask)
        if pm != pn:
            tl.store(out + rn[None, :] * B + rm[:, None], acc, mask=omask)


@triton.jit
def _gram_reduce_kernel(part_ptr, g_ptr, gpart_ptr, BB, n_split, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    m = offs < BB
    g1 = tl.zeros([BLOCK], tl.float32)
    g2 = tl.zeros([BLOCK], tl.float32)
    for s in range(0, n_split):
        g1 += tl.load(part_ptr + (s * 2) * BB + offs, mask=m, other=0.0)
        g2 += tl.load(part_ptr + (s * 2 + 1) * BB + offs, mask=m, other=0.0)
    tl.store(g_ptr + offs, g1, mask=m)
    tl.store(g_ptr + BB + offs, g2, mask=m)
    tl.store(gpart_ptr + pid, tl.sum(g1 * g2, axis=0))


@triton.jit
def _loss_kernel(dpart_ptr, n_dblocks, gpart_ptr, n_gblocks, out_ptr, lambd, inv_s2, BLOCK: tl.constexpr):
    idx = tl.arange(0, BLOCK)
    on = tl.zeros([BLOCK], tl.float64)
    dsq = tl.zeros([BLOCK], tl.float64)
    gg = tl.zeros([BLOCK], tl.float64)
    for i0 in range(0, n_dblocks, BLOCK):
        m = i0 + idx < n_dblocks
        on += tl.load(dpart_ptr + i0 + idx, mask=m, other=0.0).to(tl.float64)
        dsq += tl.load(dpart_ptr + n_dblocks + i0 + idx, mask=m, other=0.0).to(tl.float64)
    for i0 in range(0, n_gblocks, BLOCK):
        m = i0 + idx < n_gblocks
        gg += tl.load(gpart_ptr + i0 + idx, mask=m, other=0.0).to(tl.float64)
    total = tl.sum(gg, axis=0) * inv_s2
    loss = tl.sum(on, axis=0) + lambd * (total - tl.sum(dsq, axis=0))
    tl.store(out_ptr, loss.to(tl.float32))


@triton.jit
def _bwd_kernel(ac_ptr, g_ptr, d_ptr, inv_ptr, beta_ptr, go_ptr, scratch_ptr, dz_ptr,
                B, D, lambd, inv_s, inv_s2, inv_b,
                CENTER: tl.constexpr, IN_PLACE: tl.constexpr,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    # side 0: ∂/∂z1 uses own = a, other = c, G_other = G2; side 1 the mirror.
    pid = tl.program_id(0)
    side = tl.program_id(1)
    own_ptr = ac_ptr + side * B * D
    oth_ptr = ac_ptr + (1 - side) * B * D
    gmat_ptr = g_ptr + (1 - side) * B * B
    scr_ptr = scratch_ptr + side * B * D
    out_ptr = dz_ptr + side * B * D

    cols = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    cmask = cols < D
    dcol = tl.load(d_ptr + cols, mask=cmask, other=0.0)
    inv = tl.load(inv_ptr + side * D + cols, mask=cmask, other=0.0)
    beta = tl.load(beta_ptr + side * D + cols, mask=cmask, other=0.0)
    go = tl.load(go_ptr).to(tl.float32)
    coef = 2.0 * inv_s * ((1.0 - lambd) * dcol - 1.0)
    kgram = 2.0 * lambd * inv_s2

    rk0 = tl.arange(0, BLOCK_K)
    sum_g = tl.zeros([BLOCK_N], tl.float32)
    sum_ga = tl.zeros([BLOCK_N], tl.float32)
    for m0 in range(0, B, BLOCK_M):
        rm = m0 + tl.arange(0, BLOCK_M)
        rmask = rm < B
        acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
        for k0 in range(0, B, BLOCK_K):
            rk = k0 + rk0
            kmask = rk < B
            gt = tl.load(gmat_ptr + rm[:, None] * B + rk[None, :], mask=rmask[:, None] & kmask[None, :], other=0.0)
            xt = tl.load(own_ptr + rk[:, None] * D + cols[None, :], mask=kmask[:, None] & cmask[None, :], other=0.0)
            acc += tl.dot(gt, xt, input_precision="ieee")
        m = rmask[:, None] & cmask[None, :]
        offs = rm[:, None] * D + cols[None, :]
        oth = tl.load(oth_ptr + offs, mask=m, other=0.0)
        own = tl.load(own_ptr + offs, mask=m, other=0.0)
        g = tl.where(m, (coef[None, :] * oth + kgram * acc) * go, 0.0)
        sum_g += tl.sum(g, axis=0)
        sum_ga += tl.sum(g * own, axis=0)
        tl.store(scr_ptr + offs, g, mask=m)

    if CENTER:
        mean_g = sum_g * inv_b
    else:
        mean_g = tl.zeros([BLOCK_N], tl.float32)
    proj = beta * sum_ga
    for m0 in range(0, B, BLOCK_M):
        rm = m0 + tl.arange(0, BLOCK_M)
        m = (rm < B)[:, None] & cmask[None, :]
        offs = rm[:, None] * D + cols[None, :]
        g = tl.load(scr_ptr + offs, mask=m, other=0.0)
        own = tl.load(own_ptr + offs, mask=m, other=0.0)
        dz = inv[None, :] * (g - mean_g[None, :] - own * proj[None, :])
        if IN_PLACE:  # fp32 output: finish in the scratch buffer (same program, same elements)
            tl.store(scr_ptr + offs, dz, mask=m)
        else:
            tl.store(out_ptr + offs, dz.to(out_ptr.dtype.element_ty), mask=m)


def _pow2(n: int, lo: int, hi: int) -> int:
    return max(lo, min(hi, triton.next_power_of_2(max(int(n), 1))))


def _num_sms(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 1


@triton_op("fastskel::barlow_twins_triton", mutates_args={})
def barlow_twins_triton(z1: torch.Tensor, z2: torch.Tensor, lambd: float, cosine: bool
                        ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Forward: ``(loss, ac (2,B,D) fp32 normalised embeddings, G (2,B,B), d (D,), inv (2,D), beta (2,D))``."""
    with device_guard(z1):
        z1 = z1.contiguous()
        z2 = z2.contiguous()
        b, dd = z1.shape
        dev = z1.device
        f32 = torch.float32
        inv_s = 1.0 if cosine else 1.0 / b

        ac = torch.empty((2, b, dd), device=dev, dtype=f32)
        inv = torch.empty((2, dd), device=dev, dtype=f32)
        beta = torch.empty((2, dd), device=dev, dtype=f32)
        diag = torch.empty((dd,), device=dev, dtype=f32)
        block_b = _pow2(b, 16, 64 if INTERPRET else 32)
        block_d = _pow2(dd, 16, 128 if INTERPRET else 64)
        n_dblocks = triton.cdiv(dd, block_d)
        dpart = torch.empty((2 * n_dblocks,), device=dev, dtype=f32)
        wrap_triton(_norm_diag_kernel)[(n_dblocks,)](
            z1, z2, ac, inv, beta, diag, dpart, b, dd, inv_s, n_dblocks,
            COSINE=cosine, BLOCK_B=block_b, BLOCK_D=block_d)

        block_m = _pow2(b, 16, 64)
        block_k = 32
        n_tiles = triton.cdiv(b, block_m)
        upper = n_tiles * (n_tiles + 1) // 2
        k_blocks = triton.cdiv(dd, block_k)
        # split K (features) until ~2 programs per SM: B=128 gives only 3 upper tiles per side
        n_split = 1 if INTERPRET else max(1, min(k_blocks, triton.cdiv(2 * _num_sms(dev), 2 * upper)))
        if _FORCE_SPLIT is not None:
            n_split = max(1, min(k_blocks, _FORCE_SPLIT))
        k_per_split = triton.cdiv(k_blocks, n_split) * block_k
        n_split = triton.cdiv(dd, k_per_split)
        part = torch.empty((n_split, 2, b, b), device=dev, dtype=f32)
        wrap_triton(_gram_kernel)[(n_tiles * n_tiles, n_split, 2)](
            ac, part, b, dd, k_per_split, n_tiles, BLOCK_M=block_m, BLOCK_K=block_k)

        gram = torch.empty((2, b, b), device=dev, dtype=f32)
        block_r = 1024
        n_gblocks = triton.cdiv(b * b, block_r)
        gpart = torch.empty((n_gblocks,), device=dev, dtype=f32)
        wrap_triton(_gram_reduce_kernel)[(n_gblocks,)](part, gram, gpart, b * b, n_split, BLOCK=block_r)

        loss = torch.empty((), device=dev, dtype=f32)
        wrap_triton(_loss_kernel)[(1,)](dpart, n_dblocks, gpart, n_gblocks, loss, float(lambd), inv_s * inv_s,
                                        BLOCK=256)
        return loss, ac, gram, diag, inv, beta


@triton_op("fastskel::barlow_twins_triton_backward", mutates_args={})
def barlow_twins_triton_backward(grad: torch.Tensor, ac: torch.Tensor, gram: torch.Tensor, diag: torch.Tensor,
                                 inv: torch.Tensor, beta: torch.Tensor, lambd: float, cosine: bool,
                                 dtype: torch.dtype) -> torch.Tensor:
    """Backward: ``(2, B, D)`` gradients of ``z1`` and ``z2`` (in ``dtype``) for upstream ``grad``."""
    with device_guard(ac):
        _, b, dd = ac.shape
        dev = ac.device
        inv_s = 1.0 if cosine else 1.0 / b
        grad = grad.to(torch.float32).reshape(1)
        scratch = torch.empty((2, b, dd), device=dev, dtype=torch.float32)
        in_place = dtype == torch.float32
        dz = scratch if in_place else torch.empty((2, b, dd), device=dev, dtype=dtype)  # unused by the kernel if in place
        block_m = _pow2(b, 16, 64)
        block_k = _pow2(b, 16, 32)
        block_n = _pow2(dd, 16, 128 if INTERPRET else 32)   # 64 spills on sm_80/sm_90 (compile_check)
        wrap_triton(_bwd_kernel)[(triton.cdiv(dd, block_n), 2)](
            ac, gram, diag, inv, beta, grad, scratch, dz, b, dd, float(lambd), inv_s, inv_s * inv_s, 1.0 / b,
            CENTER=not cosine, IN_PLACE=in_place, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k)
        return dz


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
    dz = barlow_twins_triton_backward(grad, ac, gram, diag, inv, beta, ctx.lambd, ctx.cosine, ctx.dtype)
    return dz[0], dz[1], None, None


barlow_twins_triton.register_autograd(_backward, setup_context=_setup_context)


def barlow_twins_loss(z1: torch.Tensor, z2: torch.Tensor, lambd: float, cosine: bool) -> torch.Tensor:
    """Launcher used by :func:`fastskel.ops.barlow_twins_loss`: the float32 scalar loss."""
    return barlow_twins_triton(z1, z2, float(lambd), bool(cosine))[0]
