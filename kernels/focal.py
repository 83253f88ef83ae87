"""AMR focal reconstruction: motion-energy weights (eq. 3–4, multi-scale) and the weighted loss
(eq. 5), as Triton kernels.

``motion_energy_weights`` — one program per sample, two passes:

1. per window scale n (a constexpr, up to four scales per launch): the sample's valid frames are
   read in ``[WB windows, next_pow2(n) frames, V]`` tiles per channel; per (window, joint)
   ``e = Σ_c Σ_t (s_t − μ)² / cnt`` with the window mean μ taken first (two-pass in registers, no
   ``E[x²] − μ²`` cancellation); ``e`` goes to a small ``(N, S, T_w, V)`` scratch buffer and its
   sum over the sequence's valid windows and joints gives ``e_t`` (the threshold).
2. ``[BLOCK_T, V]`` output tiles: for each frame and scale, ``e`` of its window is gathered from the
   scratch buffer and ``w = 1 / (1 + k·e_t / (e + eps))`` accumulated; the sum over scales divided by
   the number of scales (0 on padded frames) is written as float32 ``(N, T, V)``.

x itself is read once per scale in pass 1 (by the same program, so the second and third reads
mostly hit L2) and never in pass 2. More than four scales run as chained launches that carry the
running sum in the output. The arithmetic follows :func:`fastskel.ops.reference.motion_energy_weights`
(same operation order in eq. 4); sums are accumulated in a different order, so results agree to
fp32 rounding, not bit for bit.

``focal_reconstruction_loss`` — forward: ``Σ w·(pred − target)²`` over flat blocks of
``pred``/``target`` (weight per element, or per patch ``(N, P)`` gathered by ``offs // D``), one fp32
partial sum per program, then the partials summed in torch and divided by ``N·P`` (deterministic:
no atomics). Backward: one elementwise pass ``∂pred = 2·w·(pred − target)·g / (N·P)``,
``∂target = −∂pred`` (written only when target needs a gradient); ``g`` is read on device (no sync).

Registered as ``torch.ops.fastskel.motion_energy_weights``, ``...focal_reconstruction_loss`` (with
autograd) and ``...focal_reconstruction_loss_backward``: ``triton_op`` + ``wrap_triton`` on CUDA,
``custom_op`` + ``register_fake`` under ``TRITON_INTERPRET=1`` (see :mod:`fastskel.kernels.motion`).

Limitations: inputs are made contiguous; the weights are not differentiable (a target weighting,
as in the paper); no double backward; fixed block sizes (no autotuning).
"""
from typing import List, Optional, Tuple

import torch
import triton
import triton.language as tl

from . import INTERPRET, device_guard, register_op, wrap_triton

_TILE = 16384 if INTERPRET else 4096
_MAX_SCALES = 4


@triton.jit
def _energy_pass1(x_row, scratch_row, L, C, T, V, n_win_max,
                  N_W: tl.constexpr, NB: tl.constexpr, WB: tl.constexpr, V_PAD: tl.constexpr):
    """Write e (WB windows at a time) of one scale to scratch; return the threshold e_t."""
    j = tl.arange(0, NB)
    v = tl.arange(0, V_PAD)
    vm = v < V
    n_win = (L + N_W - 1) // N_W
    esum = tl.zeros([WB, V_PAD], tl.float32)
    for w0 in range(0, n_win, WB):
        wi = w0 + tl.arange(0, WB)
        t = wi[:, None] * N_W + j[None, :]                                      # [WB, NB]
        fm = (j[None, :] < N_W) & (t < L)
        cnt = tl.maximum(tl.minimum(L - wi * N_W, N_W), 0).to(tl.float32)       # [WB]
        inv_cnt = 1.0 / tl.maximum(cnt, 1.0)
        m = fm[:, :, None] & vm[None, None, :]
        off = t[:, :, None] * V + v[None, None, :]
        sq = tl.zeros([WB, V_PAD], tl.float32)
        for c in range(C):
            xs = tl.load(x_row + c * T * V + off, mask=m, other=0.0).to(tl.float32)
            mu = tl.sum(xs, axis=1) * inv_cnt[:, None]
            dev = tl.where(m, xs - mu[:, None, :], 0.0)
            sq += tl.sum(dev * dev, axis=1)
        e = sq * inv_cnt[:, None]
        wv = (wi < n_win)[:, None] & vm[None, :]
        tl.store(scratch_row + wi[:, None] * V + v[None, :], e, mask=wv)
        esum += tl.where(wv, e, 0.0)
    total = tl.sum(tl.sum(esum, axis=1), axis=0)
    return total / (tl.maximum(n_win, 1) * V).to(tl.float32)


@triton.jit
def _energy_weight(scratch_row, t, v, fm, e_t, k, eps, V, N_W: tl.constexpr):
    e = tl.load(scratch_row + (t[:, None] // N_W) * V + v[None, :], mask=fm, other=1.0)
    return 1.0 / (1.0 + k * e_t / (e + eps))


@triton.jit
def _energy_kernel(x_ptr, len_ptr, scratch_ptr, out_ptr, C, T, V, n_win_max, k, eps, n_scales,
                   HAS_LENGTHS: tl.constexpr, ACCUMULATE: tl.constexpr, FINAL: tl.constexpr,
                   W0: tl.constexpr, W1: tl.constexpr, W2: tl.constexpr, W3: tl.constexpr,
                   NB0: tl.constexpr, NB1: tl.constexpr, NB2: tl.constexpr, NB3: tl.constexpr,
                   WB0: tl.constexpr, WB1: tl.constexpr, WB2: tl.constexpr, WB3: tl.constexpr,
                   V_PAD: tl.constexpr, BLOCK_T: tl.constexpr):
    n = tl.program_id(0).to(tl.int64)
    if HAS_LENGTHS:
        L = tl.load(len_ptr + n).to(tl.int32)
    else:
        L = T
    x_row = x_ptr + n * C * T * V
    s_stride = n_win_max * V
    s_row = scratch_ptr + n * 4 * s_stride
    e_t0 = _energy_pass1(x_row, s_row, L, C, T, V, n_win_max, W0, NB0, WB0, V_PAD)
    e_t1 = 0.0
    e_t2 = 0.0
    e_t3 = 0.0
    if W1 > 0:
        e_t1 = _energy_pass1(x_row, s_row + s_stride, L, C, T, V, n_win_max, W1, NB1, WB1, V_PAD)
    if W2 > 0:
        e_t2 = _energy_pass1(x_row, s_row + 2 * s_stride, L, C, T, V, n_win_max, W2, NB2, WB2, V_PAD)
    if W3 > 0:
        e_t3 = _energy_pass1(x_row, s_row + 3 * s_stride, L, C, T, V, n_win_max, W3, NB3, WB3, V_PAD)
    tl.debug_barrier()  # pass 2 gathers e written by other threads

    v = tl.arange(0, V_PAD)
    vm = v < V
    for t0 in range(0, T, BLOCK_T):
        t = t0 + tl.arange(0, BLOCK_T)
        om = (t[:, None] < T) & vm[None, :]
        fm = (t[:, None] < L) & vm[None, :]
        off = n * T * V + t[:, None] * V + v[None, :]
        if ACCUMULATE:
            acc = tl.load(out_ptr + off, mask=om, other=0.0)
        else:
            acc = tl.zeros([BLOCK_T, V_PAD], tl.float32)
        acc += _energy_weight(s_row, t, v, fm, e_t0, k, eps, V, W0)
        if W1 > 0:
            acc += _energy_weight(s_row + s_stride, t, v, fm, e_t1, k, eps, V, W1)
        if W2 > 0:
            acc += _energy_weight(s_row + 2 * s_stride, t, v, fm, e_t2, k, eps, V, W2)
        if W3 > 0:
            acc += _energy_weight(s_row + 3 * s_stride, t, v, fm, e_t3, k, eps, V, W3)
        if FINAL:
            acc = tl.where(fm, acc, 0.0) / n_scales
        tl.store(out_ptr + off, acc, mask=om)


@triton.jit
def _focal_fwd_kernel(p_ptr, t_ptr, w_ptr, part_ptr, total, D,
                      PER_PATCH: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = offs < total
    p = tl.load(p_ptr + offs, mask=m, other=0.0).to(tl.float32)
    q = tl.load(t_ptr + offs, mask=m, other=0.0).to(tl.float32)
    if PER_PATCH:
        w = tl.load(w_ptr + offs // D, mask=m, other=0.0).to(tl.float32)
    else:
        w = tl.load(w_ptr + offs, mask=m, other=0.0).to(tl.float32)
    d = p - q
    tl.store(part_ptr + pid, tl.sum(w * d * d, axis=0))


@triton.jit
def _focal_bwd_kernel(p_ptr, t_ptr, w_ptr, g_ptr, gp_ptr, gt_ptr, total, D, scale,
                      PER_PATCH: tl.constexpr, TARGET_GRAD: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = offs < total
    p = tl.load(p_ptr + offs, mask=m, other=0.0).to(tl.float32)
    q = tl.load(t_ptr + offs, mask=m, other=0.0).to(tl.float32)
    if PER_PATCH:
        w = tl.load(w_ptr + offs // D, mask=m, other=0.0).to(tl.float32)
    else:
        w = tl.load(w_ptr + offs, mask=m, other=0.0).to(tl.float32)
    g = tl.load(g_ptr).to(tl.float32)
    gp = 2.0 * w * (p - q) * (g * scale)
    tl.store(gp_ptr + offs, gp, mask=m)
    if TARGET_GRAD:
        tl.store(gt_ptr + offs, -gp, mask=m)




# --------------------------------------------------------------------------- motion_energy_weights
def _motion_energy_weights(x: torch.Tensor, windows: List[int], k: float, eps: float,
                           lengths: Optional[torch.Tensor]) -> torch.Tensor:
    with device_guard(x):
        x = x.contiguous()
        nb, c, t, v = x.shape
        out = torch.empty((nb, t, v), dtype=torch.float32, device=x.device)
        v_pad = triton.next_power_of_2(v)
        n_win_max = triton.cdiv(t, min(windows))
        scratch = torch.empty((nb, _MAX_SCALES, n_win_max, v), dtype=torch.float32, device=x.device)
        block_t = max(1, min(triton.next_power_of_2(t), _TILE // v_pad))
        lens = lengths.contiguous() if lengths is not None else out
        chunks = [list(windows[i:i + _MAX_SCALES]) for i in range(0, len(windows), _MAX_SCALES)]
        for ci, chunk in enumerate(chunks):
            ws = chunk + [0] * (_MAX_SCALES - len(chunk))
            nbs = [triton.next_power_of_2(w) if w else 1 for w in ws]
            t_pad = triton.next_power_of_2(t)
            wbs = [max(1, min(_TILE // (nbk * v_pad), triton.next_power_of_2(triton.cdiv(t_pad, w))))
                   if w else 1 for w, nbk in zip(ws, nbs)]
            wrap_triton(_energy_kernel)[(nb,)](
                x, lens, scratch, out, c, t, v, n_win_max, k, eps, len(windows),
                HAS_LENGTHS=lengths is not None, ACCUMULATE=ci > 0, FINAL=ci == len(chunks) - 1,
                W0=ws[0], W1=ws[1], W2=ws[2], W3=ws[3], NB0=nbs[0], NB1=nbs[1], NB2=nbs[2], NB3=nbs[3],
                WB0=wbs[0], WB1=wbs[1], WB2=wbs[2], WB3=wbs[3], V_PAD=v_pad, BLOCK_T=block_t, num_warps=4)
        return out


def _motion_energy_weights_fake(x, windows, k, eps, lengths):
    return x.new_empty((x.shape[0], x.shape[2], x.shape[3]), dtype=torch.float32)


motion_energy_weights_op = register_op("motion_energy_weights", _motion_energy_weights,
                                     _motion_energy_weights_fake)


# --------------------------------------------------------------------------- focal loss
_BLOCK = 4096


def _focal_loss(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    with device_guard(pred):
        pred, target, weight = pred.contiguous(), target.contiguous(), weight.contiguous()
        n, p, d = pred.shape
        total = pred.numel()
        grid = triton.cdiv(total, _BLOCK)
        partials = torch.empty((grid,), dtype=torch.float32, device=pred.device)
        wrap_triton(_focal_fwd_kernel)[(grid,)](
            pred, target, weight, partials, total, d, PER_PATCH=weight.dim() == 2, BLOCK=_BLOCK)
        return partials.sum() / (n * p)


def _focal_loss_fake(pred, target, weight):
    return pred.new_empty((), dtype=torch.float32)


focal_loss_op = register_op("focal_reconstruction_loss", _focal_loss, _focal_loss_fake)


def _focal_loss_backward(grad: torch.Tensor, pred: torch.Tensor, target: torch.Tensor,
                         weight: torch.Tensor, target_grad: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    with device_guard(pred):
        pred, target, weight = pred.contiguous(), target.contiguous(), weight.contiguous()
        n, p, d = pred.shape
        total = pred.numel()
        gp = torch.empty_like(pred)
        gt = torch.empty_like(target) if target_grad else pred.new_empty((0,), dtype=target.dtype)
        wrap_triton(_focal_bwd_kernel)[(triton.cdiv(total, _BLOCK),)](
            pred, target, weight, grad, gp, gt if target_grad else gp, total, d, 1.0 / (n * p),
            PER_PATCH=weight.dim() == 2, TARGET_GRAD=target_grad, BLOCK=_BLOCK)
        return gp, gt


def _focal_loss_backward_fake(grad, pred, target, weight, target_grad):
    gt = torch.empty_like(target) if target_grad else pred.new_empty((0,), dtype=target.dtype)
    return torch.empty_like(pred, memory_format=torch.contiguous_format), gt


focal_loss_backward_op = register_op("focal_reconstruction_loss_backward", _focal_loss_backward,
                                   _focal_loss_backward_fake)


def _setup_context(ctx, inputs, output):
    pred, target, weight = inputs
    ctx.save_for_backward(pred, target, weight)


def _backward(ctx, grad):
    pred, target, weight = ctx.saved_tensors
    if not (ctx.needs_input_grad[0] or ctx.needs_input_grad[1]):
        return None, None, None
    gp, gt = torch.ops.fastskel.focal_reconstruction_loss_backward(
        grad, pred, target, weight, bool(ctx.needs_input_grad[1]))
    return (gp if ctx.needs_input_grad[0] else None), (gt if ctx.needs_input_grad[1] else None), None


torch.library.register_autograd("fastskel::focal_reconstruction_loss", _backward, setup_context=_setup_context)


def motion_energy_weights(x: torch.Tensor, windows, k: float = 0.01, eps: float = 1e-6,
                          lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Multi-scale motion-energy weights, float32 ``(N, T, V)``; validated arguments."""
    return torch.ops.fastskel.motion_energy_weights(x, list(windows), float(k), float(eps), lengths)


def focal_reconstruction_loss(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``mean_N (1/P) Σ_p Σ_d w·(pred − target)²``, float32 scalar; validated arguments."""
    return torch.ops.fastskel.focal_reconstruction_loss(pred, target, weight)
