"""Degree-guided joint masking (ASMa eq. 1–2, HDSM / LDSM) by Gumbel-top-n, as one Triton kernel.

``grid = (cdiv(N, ROWS), cdiv(C·T, BLOCK_CT))`` (``ROWS = 1`` unless a sample's ``(C·T, V)``
plane is smaller than one tile of 4096 elements): each program takes a sample's uniforms ``u`` ``(V,)`` (drawn
by the public op from its ``torch.Generator``) and the log-probabilities ``log p`` ``(V,)``, forms
the Gumbel keys ``log p_v − log(−log u_v)`` (``u`` clamped to ``[1e-20, 1 − 1e-7]`` like
:func:`fastskel.ops.reference.gumbel_from_uniform`), ranks them by pairwise counting
(``rank_v = #{w : key_w > key_v or (key_w = key_v and w < v)}``, ties → lower index) and masks the
``n`` joints of rank < n; then it zeroes those joints in its ``[BLOCK_CT, V]`` slice of the
``(C·T, V)`` plane (``x · keep``, a multiplication like the reference). The ``V²`` ranking is
repeated by the ``cdiv(C·T, BLOCK_CT)`` programs of a sample — cheap next to the tile they write —
so the whole op is one launch with ``N·cdiv(C·T, BLOCK_CT)`` programs; the program with
``pid1 = 0`` writes the bool mask.

Same generator, same joints: on CUDA the logarithms are ``libdevice.log`` (the CUDA math library's
``logf`` that ``torch.log`` uses), so keys — and joints — match the reference bit for bit. Under
``TRITON_INTERPRET=1`` the kernel's ``tl.log`` is NumPy's, which differs from torch's CPU ``log`` in
the last ulp for about a third of the inputs; the chosen joints then differ from the reference only
where two keys are within a few ulp of each other (rare; the tests bound it).

Registered as ``torch.ops.fastskel.degree_joint_mask`` (autograd ``∂x = g · keep``) and
``torch.ops.fastskel.joint_mask_backward``: ``triton_op`` + ``wrap_triton`` on CUDA,
``custom_op`` + ``register_fake`` under the interpreter (see :mod:`fastskel.kernels.motion`).

Limitations: inputs are made contiguous; V is held in one tile (``next_pow2(V)``, fine up to a few
hundred joints); no double backward; fixed block sizes.
"""
from typing import Tuple

import torch
import triton
import triton.language as tl

from . import INTERPRET, device_guard, register_op, wrap_triton

_TILE = 65536 if INTERPRET else 4096  # elements per program tile (the interpreter pays per program)

if INTERPRET:
    @triton.jit
    def _log(x):
        return tl.log(x)
else:
    from triton.language.extra import libdevice

    @triton.jit
    def _log(x):
        return libdevice.log(x)


@triton.jit
def _joint_mask_kernel(x_ptr, u_ptr, logp_ptr, out_ptr, mask_ptr, N, CT, V, n_sel,
                       V_PAD: tl.constexpr, ROWS: tl.constexpr, BLOCK_CT: tl.constexpr):
    rows = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS)
    pid_ct = tl.program_id(1)
    v = tl.arange(0, V_PAD)
    rm = rows < N
    vm = v < V
    m2 = rm[:, None] & vm[None, :]
    u = tl.load(u_ptr + rows[:, None] * V + v[None, :], mask=m2, other=0.5).to(tl.float32)
    u = tl.minimum(tl.maximum(u, 1e-20), 1.0 - 1e-7)
    log_p = tl.load(logp_ptr + v, mask=vm, other=0.0)
    key = log_p[None, :] + -_log(-_log(u))
    key = tl.where(vm[None, :], key, float("-inf"))               # [ROWS, V_PAD]
    key_w = key[:, None, :]
    key_v = key[:, :, None]
    earlier = (v[None, :] < v[:, None])[None, :, :]
    beats = (key_w > key_v) | ((key_w == key_v) & earlier)          # [ROWS, v, w]: w ranks above v
    rank = tl.sum(beats.to(tl.int32), axis=2)
    chosen = vm[None, :] & (rank < n_sel)
    if pid_ct == 0:
        tl.store(mask_ptr + rows[:, None] * V + v[None, :], chosen, mask=m2)

    ct = pid_ct * BLOCK_CT + tl.arange(0, BLOCK_CT)
    m = rm[:, None, None] & (ct[None, :, None] < CT) & vm[None, None, :]
    off = rows[:, None, None] * CT * V + ct[None, :, None] * V + v[None, None, :]
    xv = tl.load(x_ptr + off, mask=m, other=0.0)
    keep = tl.where(chosen, 0.0, 1.0)
    tl.store(out_ptr + off, xv * keep[:, None, :], mask=m)


@triton.jit
def _joint_keep_kernel(g_ptr, mask_ptr, out_ptr, total, CTV, V, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = offs < total
    joint = (offs // CTV) * V + offs % V
    chosen = tl.load(mask_ptr + joint, mask=m, other=0)
    g = tl.load(g_ptr + offs, mask=m, other=0.0)
    tl.store(out_ptr + offs, g * tl.where(chosen, 0.0, 1.0), mask=m)




def _degree_joint_mask(x: torch.Tensor, n: int, log_p: torch.Tensor,
                       uniform: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    with device_guard(x):
        x = x.contiguous()
        nb, c, t, v = x.shape
        out = torch.empty_like(x)
        mask = torch.empty((nb, v), dtype=torch.bool, device=x.device)
        v_pad = triton.next_power_of_2(v)
        block_ct = max(1, min(triton.next_power_of_2(c * t), _TILE // v_pad))
        # several samples per program only when a sample's plane is smaller than one tile
        rows = max(1, min(_TILE // (block_ct * v_pad), _TILE // (v_pad * v_pad), triton.next_power_of_2(nb)))
        grid = (triton.cdiv(nb, rows), triton.cdiv(c * t, block_ct))
        wrap_triton(_joint_mask_kernel)[grid](
            x, uniform.contiguous(), log_p.contiguous(), out, mask, nb, c * t, v, n,
            V_PAD=v_pad, ROWS=rows, BLOCK_CT=block_ct, num_warps=4)
        return out, mask


def _degree_joint_mask_fake(x, n, log_p, uniform):
    return (torch.empty_like(x, memory_format=torch.contiguous_format),
            x.new_empty((x.shape[0], x.shape[3]), dtype=torch.bool))


degree_joint_mask_op = register_op("degree_joint_mask", _degree_joint_mask, _degree_joint_mask_fake)


def _joint_mask_backward(grad: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    with device_guard(grad):
        grad = grad.contiguous()
        nb, c, t, v = grad.shape
        out = torch.empty_like(grad)
        total = grad.numel()
        block = 1024
        wrap_triton(_joint_keep_kernel)[(triton.cdiv(total, block),)](
            grad, mask.contiguous(), out, total, c * t * v, v, BLOCK=block)
        return out


def _joint_mask_backward_fake(grad, mask):
    return torch.empty_like(grad, memory_format=torch.contiguous_format)


joint_mask_backward_op = register_op("joint_mask_backward", _joint_mask_backward, _joint_mask_backward_fake)


def _setup_context(ctx, inputs, output):
    ctx.save_for_backward(output[1])


def _backward(ctx, grad_out, grad_mask):
    (mask,) = ctx.saved_tensors
    gx = torch.ops.fastskel.joint_mask_backward(grad_out, mask) if ctx.needs_input_grad[0] else None
    return gx, None, None, None


torch.library.register_autograd("fastskel::degree_joint_mask", _backward, setup_context=_setup_context)


def degree_joint_mask(x: torch.Tensor, n: int, log_p: torch.Tensor,
                      uniform: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Gumbel-top-n joint mask with the given uniforms ``(N, V)``; validated arguments."""
    return torch.ops.fastskel.degree_joint_mask(x, n, log_p, uniform)
