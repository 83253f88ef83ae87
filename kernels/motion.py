"""Frame motion and motion-guided frame masking (ASMa eq. 3–4, HMTM / LMTM) as fused Triton kernels.

One program per sample (``grid = (N,)``):

1. motion: ``d_t = Σ_{c,v} |x[c,t+1,v] − x[c,t,v]| / (C·V)`` for all frames at once (a ``[T_PAD]``
   fp32 accumulator, the sample read in ``[T_PAD, V_BLOCK]`` tiles per channel), then
   ``a_t = d_t`` for ``t < L−1``, ``a_{L−1} = d_{L−2}``, ``a_t = 0`` for padded frames and ``L ≤ 1``;
   ``a`` is written to an ``(N, T)`` fp32 buffer (the output of :func:`frame_motion`).
2. selection (``motion_frame_mask`` only): the rank of every frame by pairwise counting,
   ``rank_t = #{s : key_s > key_t or (key_s = key_t and s < t)}`` with ``key = a`` (HMTM) or
   ``−a`` (LMTM) on valid frames and ``−inf`` on padded ones, so ties go to the lower index and
   padded frames are never chosen; frame t is masked iff it is valid and ``rank_t < k``.
   O(T²) comparisons per sample in ``[T_PAD, S_BLOCK]`` chunks, independent of k.
3. zeroing: ``x_masked = x · keep_t`` (multiplication, not a select, so it matches the reference
   bit for bit, signed zeros included), written with the bool mask.

The sample is read twice (motion, then zeroing) by the same program, the second time mostly from
L2; ``a`` is re-read from the buffer for the rank chunks after a block barrier.

Registered as ``torch.ops.fastskel.frame_motion``, ``torch.ops.fastskel.motion_frame_mask`` (with
autograd: ``∂x = g · keep``) and ``torch.ops.fastskel.frame_mask_backward``. On CUDA they are
``torch.library.triton_op`` s launched through ``wrap_triton``, so ``torch.compile(fullgraph=True)``
traces into the kernels. Under ``TRITON_INTERPRET=1`` ``triton_op`` cannot be used: its fake
implementation *is* the launcher, and the interpreter dereferences the fake tensors' data pointers;
there the same launchers are registered with ``torch.library.custom_op`` + ``register_fake`` (an
opaque op to the compiler), which keeps ``torch.compile`` and ``opcheck`` working on CPU.

Limitations: inputs are made contiguous (a copy for strided views); T is held in one tile
(``T_PAD = next_pow2(T)``, fine up to a few thousand frames); no double backward; block sizes are
fixed heuristics (no autotuning); NaN motion is not rejected here (the public op checks it).
"""
from typing import Optional, Tuple

import torch
import triton
import triton.language as tl

from . import INTERPRET, device_guard, register_op, wrap_triton

_TILE = 2 ** 18 if INTERPRET else 4096  # elements of the largest tile per program (the interpreter pays per op)


@triton.jit
def _motion_mask_kernel(x_ptr, len_ptr, a_ptr, mask_ptr, out_ptr, C, T, V, k,
                        HAS_LENGTHS: tl.constexpr, MASK: tl.constexpr, LARGEST: tl.constexpr,
                        T_PAD: tl.constexpr, V_BLOCK: tl.constexpr, S_BLOCK: tl.constexpr):
    n = tl.program_id(0).to(tl.int64)
    if HAS_LENGTHS:
        L = tl.load(len_ptr + n).to(tl.int32)
    else:
        L = T
    t = tl.arange(0, T_PAD)
    x_row = x_ptr + n * C * T * V

    acc = tl.zeros([T_PAD], tl.float32)
    for c in range(C):
        base = x_row + c * T * V
        for v0 in range(0, V, V_BLOCK):
            v = v0 + tl.arange(0, V_BLOCK)
            m = (t[:, None] < T - 1) & (v[None, :] < V)
            off = t[:, None] * V + v[None, :]
            x0 = tl.load(base + off, mask=m, other=0.0).to(tl.float32)
            x1 = tl.load(base + off + V, mask=m, other=0.0).to(tl.float32)
            acc += tl.sum(tl.abs(x1 - x0), axis=1)
    d = acc / (C * V)
    d_last = tl.sum(tl.where(t == L - 2, d, 0.0), axis=0)
    a = tl.where(t < L - 1, d, tl.where(t == L - 1, d_last, 0.0))
    a = tl.where(L >= 2, a, 0.0)
    tl.store(a_ptr + n * T + t, a, mask=t < T)

    if MASK:
        tl.debug_barrier()  # the rank chunks below re-read `a` written by other threads
        valid = t < L
        if LARGEST:
            key_t = tl.where(valid, a, float("-inf"))
        else:
            key_t = tl.where(valid, -a, float("-inf"))
        rank = tl.zeros([T_PAD], tl.int32)
        for s0 in range(0, T, S_BLOCK):
            s = s0 + tl.arange(0, S_BLOCK)
            a_s = tl.load(a_ptr + n * T + s, mask=s < T, other=0.0)
            if LARGEST:
                key_s = tl.where(s < L, a_s, float("-inf"))
            else:
                key_s = tl.where(s < L, -a_s, float("-inf"))
            beats = (key_s[None, :] > key_t[:, None]) | ((key_s[None, :] == key_t[:, None]) & (s[None, :] < t[:, None]))
            rank += tl.sum(beats.to(tl.int32), axis=1)
        chosen = valid & (rank < k)
        tl.store(mask_ptr + n * T + t, chosen, mask=t < T)
        keep = tl.where(chosen, 0.0, 1.0)
        out_row = out_ptr + n * C * T * V
        for c in range(C):
            for v0 in range(0, V, V_BLOCK):
                v = v0 + tl.arange(0, V_BLOCK)
                m = (t[:, None] < T) & (v[None, :] < V)
                off = c * T * V + t[:, None] * V + v[None, :]
                xv = tl.load(x_row + off, mask=m, other=0.0)
                tl.store(out_row + off, xv * keep[:, None], mask=m)


@triton.jit
def _frame_keep_kernel(g_ptr, mask_ptr, out_ptr, total, CTV, T, V, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = offs < total
    frame = (offs // CTV) * T + (offs // V) % T
    chosen = tl.load(mask_ptr + frame, mask=m, other=0)
    g = tl.load(g_ptr + offs, mask=m, other=0.0)
    tl.store(out_ptr + offs, g * tl.where(chosen, 0.0, 1.0), mask=m)


def _blocks(t: int, v: int) -> Tuple[int, int, int]:
    t_pad = triton.next_power_of_2(max(t, 1))
    v_block = max(1, min(triton.next_power_of_2(v), _TILE // t_pad))
    s_block = max(1, min(t_pad, _TILE // t_pad))
    return t_pad, v_block, s_block


def _launch(x: torch.Tensor, lengths: Optional[torch.Tensor], k: int, largest: bool, mask: bool):
    with device_guard(x):
        x = x.contiguous()
        n, c, t, v = x.shape
        a = torch.empty((n, t), dtype=torch.float32, device=x.device)
        if mask:
            keep_mask = torch.empty((n, t), dtype=torch.bool, device=x.device)
            out = torch.empty_like(x)
        else:
            keep_mask, out = a, a
        t_pad, v_block, s_block = _blocks(t, v)
        lens = lengths.contiguous() if lengths is not None else a
        wrap_triton(_motion_mask_kernel)[(n,)](
            x, lens, a, keep_mask, out, c, t, v, k,
            HAS_LENGTHS=lengths is not None, MASK=mask, LARGEST=largest,
            T_PAD=t_pad, V_BLOCK=v_block, S_BLOCK=s_block, num_warps=4 if t_pad <= 128 else 8)
        return a, keep_mask, out




# --------------------------------------------------------------------------- frame_motion
def _frame_motion(x: torch.Tensor, lengths: Optional[torch.Tensor]) -> torch.Tensor:
    return _launch(x, lengths, 0, True, False)[0]


def _frame_motion_fake(x, lengths):
    return x.new_empty((x.shape[0], x.shape[2]), dtype=torch.float32)


frame_motion_op = register_op("frame_motion", _frame_motion, _frame_motion_fake)


# --------------------------------------------------------------------------- motion_frame_mask
def _motion_frame_mask(x: torch.Tensor, k: int, largest: bool,
                       lengths: Optional[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
    _, mask, out = _launch(x, lengths, k, largest, True)
    return out, mask


def _motion_frame_mask_fake(x, k, largest, lengths):
    return torch.empty_like(x, memory_format=torch.contiguous_format), \
        x.new_empty((x.shape[0], x.shape[2]), dtype=torch.bool)


motion_frame_mask_op = register_op("motion_frame_mask", _motion_frame_mask, _motion_frame_mask_fake)


def _frame_mask_backward(grad: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    with device_guard(grad):
        grad = grad.contiguous()
        n, c, t, v = grad.shape
        out = torch.empty_like(grad)
        total = grad.numel()
        block = 1024
        wrap_triton(_frame_keep_kernel)[(triton.cdiv(total, block),)](
            grad, mask.contiguous(), out, total, c * t * v, t, v, BLOCK=block)
        return out


def _frame_mask_backward_fake(grad, mask):
    return torch.empty_like(grad, memory_format=torch.contiguous_format)


frame_mask_backward_op = register_op("frame_mask_backward", _frame_mask_backward, _frame_mask_backward_fake)


def _setup_context(ctx, inputs, output):
    ctx.save_for_backward(output[1])


def _backward(ctx, grad_out, grad_mask):
    (mask,) = ctx.saved_tensors
    gx = torch.ops.fastskel.frame_mask_backward(grad_out, mask) if ctx.needs_input_grad[0] else None
    return gx, None, None, None


torch.library.register_autograd("fastskel::motion_frame_mask", _backward, setup_context=_setup_context)


def frame_motion(x: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``a_t`` (ASMa eq. 3–4), float32 ``(N, T)``; arguments already validated by the public op."""
    return torch.ops.fastskel.frame_motion(x, lengths)


def motion_frame_mask(x: torch.Tensor, k: int, largest: bool = True,
                      lengths: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Fused motion + top-k/bottom-k + zeroing: ``(x_masked, mask)``; validated arguments."""
    return torch.ops.fastskel.motion_frame_mask(x, k, largest, lengths)
