"""Fused attention for small, odd-length problems: Triton forward and backward (docs/design.md §4.7).

``O = softmax(s) V`` with ``s = scale · rope(Q) rope(K)ᵀ`` per (batch, head); q ``(Bq, H, Lq, d)``
with Bq ∈ {1, B}, k, v ``(B, H, Lk, d)``; optional key padding mask ``(B, Lk)`` (True = ignore) and
rotate-half RoPE of q and k at per-token positions (negative position = token left unrotated).

Kernels (flash-attention style, after the Triton fused-attention tutorial / FlashAttention-2):

- ``_attn_fwd``: online softmax over key blocks in base 2 (``exp2``, ``qk_scale = scale·log2 e``),
  fp32 accumulation, saves the log-sum-exp ``lse`` (base 2) per query row. One program handles one
  query block of ``PAIRS`` consecutive (batch, head) pairs, looping over them, so that tiny problems
  (ASMa: 13 × 13 tokens) do not launch thousands of near-empty programs.
- ``_attn_bwd_fused`` (all keys of a pair fit one register tile: ``next_pow2(Lk) · d ≤ 4096``, i.e.
  Lk ≤ 128 at d = 32, ≤ 64 at d = 64): one program per ``PAIRS`` pairs loops over query blocks in
  the key-major orientation of the Triton tutorial (``Sᵀ = k q̃ᵀ``); ``Pᵀ`` is recomputed once per
  query block from ``lse``, ``delta = rowsum(dO ∘ O)`` is computed in place, dk and dv stay in
  registers and dq is written per query block. One launch, no recomputation, no atomics (Bq > 1).
- ``_attn_bwd_delta`` + ``_attn_bwd_tiled`` (longer key sequences): the FlashAttention-2 split —
  program ``(pair, j)`` accumulates dk, dv of key block j over all query blocks, then dq of query
  block j over all key blocks (``P`` is recomputed in both passes; deterministic without Bq = 1).

The backward uses ``dS = P ∘ (dP − delta)``, ``dq = scale · dS k̃``, ``dk = scale · dSᵀ q̃``,
``dv = Pᵀ dO`` with ``q̃, k̃`` the rotated inputs; RoPE's gradient rotates dq, dk back by the
transposed rotation (angle −θ). **Query broadcast** (Bq = 1, AMR's shared learnable queries): the
batch sum of dq happens inside the kernels with fp32 ``atomic_add`` into an ``(H, Lq, d)`` buffer,
cast to q's dtype afterwards.

Registration: ``fastskel::attention_fwd`` / ``fastskel::attention_bwd`` via
:func:`fastskel.kernels.register_op` — ``torch.library.triton_op`` with ``wrap_triton`` launches, so
``torch.compile(fullgraph=True)`` sees the kernels themselves; under ``TRITON_INTERPRET=1`` an
opaque ``custom_op`` with an explicit fake (``wrap_triton`` hands back the interpreted function and
the op body would run the interpreter on FakeTensors). Autograd is attached with
``register_autograd``. :func:`attention` calls the ops while ``torch.compile`` traces and the
equivalent ``AttentionFunction`` (same launchers, no dispatcher round trip) in eager mode.

Limitations (honest list):

- head dim d ∈ {16, 32, 64, 128}; dtypes fp32, bf16, fp16 (fp64 is not supported); q, k, v must
  share dtype and device; the last dimension is made contiguous (copy) when it is strided.
- no causal mask, dropout or additive bias; masking is key padding only.
- Bq = 1: dq is summed with fp32 atomics, so its summation order (hence its last bits) varies run to
  run. Everything else is deterministic.
- fp32 inputs use IEEE fp32 dots (no TF32): exact but slower than bf16/fp16.
- RoPE is computed in fp32 in the kernel (``cos``/``sin`` of ``pos · inv_freq``) and the rotated
  q, k are rounded to the input dtype before the matmul (bf16/fp16), so results differ from the
  fp32 reference by that rounding. Positions are per token, shared by batch and heads.
- no double backward (the backward op has no autograd formula).
- the (batch, head) base offsets are 64-bit; offsets within one (batch, head) slice are 32-bit, so
  ``L · stride(2)`` of each tensor must stay below 2³¹ (checked: a clear ``ValueError``).
- configurations are autotuned on CUDA on first use of each shape (a few seconds of compiling).
- under the interpreter, bf16 dots are computed from fp32-upcast tiles (the Triton 3.x interpreter
  multiplies bf16 bit patterns otherwise); the rounding of P and dS to bf16 is kept.
- a fully masked query row (every key padded) gives zeros in the output and zero gradients.
- status: verified against the reference under the interpreter, and every kernel compiles for
  sm_80/sm_90 offline (``fastskel.kernels.compile_check``: Triton's compiler → ptxas). bf16/fp16:
  the default configs do not spill at the methods' shapes. **fp32 spills**: the forward's default
  takes 8 warps for fp32 (no spills at AMR's shapes), but the fp32 backward defaults spill (AMR
  fused backward ~0.8–1 KB per thread, MAMP/SLiM tiled backward 0.8–2.6 KB; see
  benchmarks/results/triton-compile-*.md), and so do many fp32 autotune candidates; fp32 (AMP off,
  ASMa's aligner) is therefore slower than the bf16/fp16 path by more than the dot precision alone;
  not yet run or timed on a GPU — tests/test_attention.py's CUDA tests and
  benchmarks/bench_attention.py are ready for that.
"""
from __future__ import annotations

import itertools
import math
import os
from typing import List, Optional, Tuple

import torch
import triton
import triton.language as tl

from fastskel.kernels import INTERPRET, device_guard, register_op, wrap_triton

__all__ = ["AttentionFunction", "DTYPES", "HEAD_DIMS", "attention", "attention_bwd", "attention_fwd", "inv_freq",
           "unsupported"]

HEAD_DIMS = (16, 32, 64, 128)
DTYPES = (torch.float32, torch.bfloat16, torch.float16)
MAX_FUSED_KEYS = 256         # the fused backward keeps every key of a pair in one tile ...
MAX_FUSED_KEY_ELEMS = 4096   # ... while BLOCK_N · d stays within this many elements (registers)
AUTOTUNE = os.environ.get("FASTSKEL_ATTN_AUTOTUNE", "1") != "0"   # "0": heuristic configs, no tuning
CONFIG_OVERRIDE: Optional[dict] = None   # {"fwd" | "bwd_fused" | "bwd_tiled": {meta-parameters}}
# Triton before 3.9 (3.6: the GPU image's) keeps more of the RoPE backward's rotate-half live: every
# 32-64 x 32-64 tiled-backward tile spills on sm_80 in bf16 (ptxas; 1,916 B at 64 x 64, 8 warps),
# 16 x 64 with 4 warps and 1 stage does not, so that is the RoPE default there (and a tuning option).
_TRITON_VERSION = tuple(int(p) for p in triton.__version__.split("+")[0].split(".")[:2] if p.isdigit())
_ROPE_BWD_TILED_OLD = dict(BLOCK_M=16, BLOCK_N=64, num_warps=4, num_stages=1)


# --------------------------------------------------------------------------- device helpers
@triton.jit
def _dot(a, b, PREC: tl.constexpr, UPCAST: tl.constexpr):
    if UPCAST:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    else:
        return tl.dot(a, b, input_precision=PREC)


@triton.jit
def _rope(x, pos, inv_freq, ROWS: tl.constexpr, HALF: tl.constexpr, SIGN: tl.constexpr):
    """Rotate-half RoPE of an fp32 ``(ROWS, 2·HALF)`` tile; ``SIGN = -1`` applies the transpose."""
    ang = pos[:, None] * inv_freq[None, :]
    on = pos[:, None] >= 0
    c = tl.where(on, tl.cos(ang), 1.0)
    s = tl.where(on, tl.sin(ang), 0.0) * SIGN
    x1, x2 = tl.split(tl.permute(tl.reshape(x, (ROWS, 2, HALF)), (0, 2, 1)))
    y = tl.join(x1 * c - x2 * s, x2 * c + x1 * s)
    return tl.reshape(tl.permute(y, (0, 2, 1)), (ROWS, 2 * HALF))


@triton.jit
def _key_keep(MASK, b, smb, offs_n, n_valid, HAS_MASK: tl.constexpr):
    keep = n_valid
    if HAS_MASK:
        pad = tl.load(MASK + b * smb + offs_n, mask=n_valid, other=1)
        keep = keep & (pad == 0)
    return keep


# --------------------------------------------------------------------------- forward
@triton.jit
def _attn_fwd(Q, K, V, O, LSE, MASK, QPOS, KPOS, INVF, qk_scale,
              sqb, sqh, sqm, skb, skh, skn, svb, svh, svn, sob, soh, som, smb,
              B, H, Lq, Lk, BH_BUCKET,
              D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, PAIRS: tl.constexpr,
              HAS_MASK: tl.constexpr, HAS_ROPE: tl.constexpr, DOT_PREC: tl.constexpr, UPCAST: tl.constexpr):
    pid_p = tl.program_id(0)
    pid_m = tl.program_id(1)
    HALF: tl.constexpr = D // 2
    dt = Q.dtype.element_ty
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, D)
    m_valid = offs_m < Lq
    if HAS_ROPE:
        invf = tl.load(INVF + tl.arange(0, HALF))
        qpos = tl.load(QPOS + offs_m, mask=m_valid, other=-1.0)
    first = pid_p * PAIRS
    n_pairs = tl.minimum(PAIRS, B * H - first)
    for i in range(0, n_pairs):
        pair = first + i
        h = (pair // B).to(tl.int64)            # 64-bit: b · stride may pass 2³¹
        b = pair - h * B
        q = tl.load(Q + b * sqb + h * sqh + offs_m[:, None] * sqm + offs_d[None, :],
                    mask=m_valid[:, None], other=0.0)
        if HAS_ROPE:
            q = _rope(q.to(tl.float32), qpos, invf, BLOCK_M, HALF, 1.0).to(dt)
        m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
        l_i = tl.zeros([BLOCK_M], tl.float32)
        acc = tl.zeros([BLOCK_M, D], tl.float32)
        for start_n in range(0, Lk, BLOCK_N):
            offs_n = start_n + tl.arange(0, BLOCK_N)
            n_valid = offs_n < Lk
            k = tl.load(K + b * skb + h * skh + offs_n[:, None] * skn + offs_d[None, :],
                        mask=n_valid[:, None], other=0.0)
            if HAS_ROPE:
                kpos = tl.load(KPOS + offs_n, mask=n_valid, other=-1.0)
                k = _rope(k.to(tl.float32), kpos, invf, BLOCK_N, HALF, 1.0).to(dt)
            v = tl.load(V + b * svb + h * svh + offs_n[:, None] * svn + offs_d[None, :],
                        mask=n_valid[:, None], other=0.0)
            keep = _key_keep(MASK, b, smb, offs_n, n_valid, HAS_MASK)
            s = _dot(q, tl.trans(k), DOT_PREC, UPCAST) * qk_scale
            s = tl.where(keep[None, :], s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, 1))
            m_sub = tl.where(m_new == float("-inf"), 0.0, m_new)   # rows with no key yet
            p = tl.exp2(s - m_sub[:, None])
            alpha = tl.exp2(m_i - m_sub)
            l_i = l_i * alpha + tl.sum(p, 1)
            acc = acc * alpha[:, None] + _dot(p.to(dt), v, DOT_PREC, UPCAST)
            m_i = m_new
        has = l_i > 0.0
        l_safe = tl.where(has, l_i, 1.0)
        out = acc / l_safe[:, None]
        lse = tl.where(has, m_i + tl.log2(l_safe), float("inf"))
        tl.store(O + b * sob + h * soh + offs_m[:, None] * som + offs_d[None, :], out.to(dt),
                 mask=m_valid[:, None])
        tl.store(LSE + (b * H + h) * Lq + offs_m, lse, mask=m_valid)


# --------------------------------------------------------------------------- backward
@triton.jit
def _attn_bwd_fused(Q, K, V, O, DO, LSE, DQ, DK, DV, MASK, QPOS, KPOS, INVF, qk_scale, scale,
                    sqb, sqh, sqm, skb, skh, skn, svb, svh, svn, sob, soh, som, sdob, sdoh, sdom,
                    sdqb, sdqh, sdqm, sdkb, sdkh, sdkn, sdvb, sdvh, sdvn, smb,
                    B, H, Lq, Lk, BH_BUCKET,
                    D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, PAIRS: tl.constexpr,
                    HAS_MASK: tl.constexpr, HAS_ROPE: tl.constexpr, Q_BCAST: tl.constexpr,
                    DOT_PREC: tl.constexpr, UPCAST: tl.constexpr):
    pid = tl.program_id(0)
    HALF: tl.constexpr = D // 2
    dt = Q.dtype.element_ty
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, D)
    n_valid = offs_n < Lk
    if HAS_ROPE:
        invf = tl.load(INVF + tl.arange(0, HALF))
        kpos = tl.load(KPOS + offs_n, mask=n_valid, other=-1.0)
    first = pid * PAIRS
    n_pairs = tl.minimum(PAIRS, B * H - first)
    for i in range(0, n_pairs):
        pair = first + i
        h = (pair // B).to(tl.int64)            # 64-bit: b · stride may pass 2³¹
        b = pair - h * B
        k = tl.load(K + b * skb + h * skh + offs_n[:, None] * skn + offs_d[None, :], mask=n_valid[:, None], other=0.0)
        if HAS_ROPE:
            k = _rope(k.to(tl.float32), kpos, invf, BLOCK_N, HALF, 1.0).to(dt)
        v = tl.load(V + b * svb + h * svh + offs_n[:, None] * svn + offs_d[None, :], mask=n_valid[:, None], other=0.0)
        keep = _key_keep(MASK, b, smb, offs_n, n_valid, HAS_MASK)
        dk = tl.zeros([BLOCK_N, D], tl.float32)
        dv = tl.zeros([BLOCK_N, D], tl.float32)
        for start_m in range(0, Lq, BLOCK_M):
            offs_m = start_m + tl.arange(0, BLOCK_M)
            m_valid = offs_m < Lq
            q = tl.load(Q + b * sqb + h * sqh + offs_m[:, None] * sqm + offs_d[None, :],
                        mask=m_valid[:, None], other=0.0)
            if HAS_ROPE:
                qpos = tl.load(QPOS + offs_m, mask=m_valid, other=-1.0)
                q = _rope(q.to(tl.float32), qpos, invf, BLOCK_M, HALF, 1.0).to(dt)
            do = tl.load(DO + b * sdob + h * sdoh + offs_m[:, None] * sdom + offs_d[None, :],
                         mask=m_valid[:, None], other=0.0)
            o = tl.load(O + b * sob + h * soh + offs_m[:, None] * som + offs_d[None, :],
                        mask=m_valid[:, None], other=0.0)
            delta = tl.sum(do.to(tl.float32) * o.to(tl.float32), 1)
            lse = tl.load(LSE + (b * H + h) * Lq + offs_m, mask=m_valid, other=float("inf"))
            st = _dot(k, tl.trans(q), DOT_PREC, UPCAST) * qk_scale
            pt = tl.where(keep[:, None], tl.exp2(st - lse[None, :]), 0.0)
            dv += _dot(pt.to(dt), do, DOT_PREC, UPCAST)
            dpt = _dot(v, tl.trans(do), DOT_PREC, UPCAST)
            dst = (pt * (dpt - delta[None, :])).to(dt)
            dk += _dot(dst, q, DOT_PREC, UPCAST)
            dq = _dot(tl.trans(dst), k, DOT_PREC, UPCAST) * scale
            if HAS_ROPE:
                dq = _rope(dq, qpos, invf, BLOCK_M, HALF, -1.0)
            if Q_BCAST:
                full = m_valid[:, None] & (offs_d[None, :] < D)
                tl.atomic_add(DQ + h * sdqh + offs_m[:, None] * sdqm + offs_d[None, :], dq, mask=full)
            else:
                tl.store(DQ + b * sdqb + h * sdqh + offs_m[:, None] * sdqm + offs_d[None, :], dq.to(dt),
                         mask=m_valid[:, None])
        dk = dk * scale
        if HAS_ROPE:
            dk = _rope(dk, kpos, invf, BLOCK_N, HALF, -1.0)
        tl.store(DK + b * sdkb + h * sdkh + offs_n[:, None] * sdkn + offs_d[None, :], dk.to(dt), mask=n_valid[:, None])
        tl.store(DV + b * sdvb + h * sdvh + offs_n[:, None] * sdvn + offs_d[None, :], dv.to(dt), mask=n_valid[:, None])


@triton.jit
def _attn_bwd_delta(O, DO, DELTA, sob, soh, som, sdob, sdoh, sdom, B, H, Lq,
                    D: tl.constexpr, BLOCK_M: tl.constexpr):
    pair = tl.program_id(0)
    h = (pair // B).to(tl.int64)                # 64-bit: b · stride may pass 2³¹
    b = pair - h * B
    offs_m = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, D)
    m_valid = offs_m < Lq
    o = tl.load(O + b * sob + h * soh + offs_m[:, None] * som + offs_d[None, :], mask=m_valid[:, None], other=0.0)
    do = tl.load(DO + b * sdob + h * sdoh + offs_m[:, None] * sdom + offs_d[None, :], mask=m_valid[:, None], other=0.0)
    tl.store(DELTA + (b * H + h) * Lq + offs_m, tl.sum(o.to(tl.float32) * do.to(tl.float32), 1), mask=m_valid)


@triton.jit
def _attn_bwd_tiled(Q, K, V, DO, LSE, DELTA, DQ, DK, DV, MASK, QPOS, KPOS, INVF, qk_scale, scale,
                    sqb, sqh, sqm, skb, skh, skn, svb, svh, svn, sdob, sdoh, sdom,
                    sdqb, sdqh, sdqm, sdkb, sdkh, sdkn, sdvb, sdvh, sdvn, smb,
                    B, H, Lq, Lk, BH_BUCKET,
                    D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                    HAS_MASK: tl.constexpr, HAS_ROPE: tl.constexpr, Q_BCAST: tl.constexpr,
                    DOT_PREC: tl.constexpr, UPCAST: tl.constexpr):
    pair = tl.program_id(0)
    blk = tl.program_id(1)
    HALF: tl.constexpr = D // 2
    dt = Q.dtype.element_ty
    h = (pair // B).to(tl.int64)                # 64-bit: b · stride may pass 2³¹
    b = pair - h * B
    row0 = (b * H + h) * Lq
    offs_d = tl.arange(0, D)
    if HAS_ROPE:
        invf = tl.load(INVF + tl.arange(0, HALF))
    if blk * BLOCK_N < Lk:                      # dk, dv of key block `blk`
        offs_n = blk * BLOCK_N + tl.arange(0, BLOCK_N)
        n_valid = offs_n < Lk
        k = tl.load(K + b * skb + h * skh + offs_n[:, None] * skn + offs_d[None, :], mask=n_valid[:, None], other=0.0)
        if HAS_ROPE:
            kpos = tl.load(KPOS + offs_n, mask=n_valid, other=-1.0)
            k = _rope(k.to(tl.float32), kpos, invf, BLOCK_N, HALF, 1.0).to(dt)
        v = tl.load(V + b * svb + h * svh + offs_n[:, None] * svn + offs_d[None, :], mask=n_valid[:, None], other=0.0)
        keep = _key_keep(MASK, b, smb, offs_n, n_valid, HAS_MASK)
        dk = tl.zeros([BLOCK_N, D], tl.float32)
        dv = tl.zeros([BLOCK_N, D], tl.float32)
        for start_m in range(0, Lq, BLOCK_M):
            offs_m = start_m + tl.arange(0, BLOCK_M)
            m_valid = offs_m < Lq
            q = tl.load(Q + b * sqb + h * sqh + offs_m[:, None] * sqm + offs_d[None, :],
                        mask=m_valid[:, None], other=0.0)
            if HAS_ROPE:
                qpos = tl.load(QPOS + offs_m, mask=m_valid, other=-1.0)
                q = _rope(q.to(tl.float32), qpos, invf, BLOCK_M, HALF, 1.0).to(dt)
            do = tl.load(DO + b * sdob + h * sdoh + offs_m[:, None] * sdom + offs_d[None, :],
                         mask=m_valid[:, None], other=0.0)
            lse = tl.load(LSE + row0 + offs_m, mask=m_valid, other=float("inf"))
            delta = tl.load(DELTA + row0 + offs_m, mask=m_valid, other=0.0)
            st = _dot(k, tl.trans(q), DOT_PREC, UPCAST) * qk_scale
            pt = tl.where(keep[:, None], tl.exp2(st - lse[None, :]), 0.0)
            dv += _dot(pt.to(dt), do, DOT_PREC, UPCAST)
            dpt = _dot(v, tl.trans(do), DOT_PREC, UPCAST)
            dst = (pt * (dpt - delta[None, :])).to(dt)
            dk += _dot(dst, q, DOT_PREC, UPCAST)
        dk = dk * scale
        if HAS_ROPE:
            dk = _rope(dk, kpos, invf, BLOCK_N, HALF, -1.0)
        tl.store(DK + b * sdkb + h * sdkh + offs_n[:, None] * sdkn + offs_d[None, :], dk.to(dt), mask=n_valid[:, None])
        tl.store(DV + b * sdvb + h * sdvh + offs_n[:, None] * sdvn + offs_d[None, :], dv.to(dt), mask=n_valid[:, None])
    if blk * BLOCK_M < Lq:                      # dq of query block `blk`
        offs_m = blk * BLOCK_M + tl.arange(0, BLOCK_M)
        m_valid = offs_m < Lq
        q = tl.load(Q + b * sqb + h * sqh + offs_m[:, None] * sqm + offs_d[None, :], mask=m_valid[:, None], other=0.0)
        if HAS_ROPE:
            qpos = tl.load(QPOS + offs_m, mask=m_valid, other=-1.0)
            q = _rope(q.to(tl.float32), qpos, invf, BLOCK_M, HALF, 1.0).to(dt)
        do = tl.load(DO + b * sdob + h * sdoh + offs_m[:, None] * sdom + offs_d[None, :],
                     mask=m_valid[:, None], other=0.0)
        lse = tl.load(LSE + row0 + offs_m, mask=m_valid, other=float("inf"))
        delta = tl.load(DELTA + row0 + offs_m, mask=m_valid, other=0.0)
        dq = tl.zeros([BLOCK_M, D], tl.float32)
        for start_n in range(0, Lk, BLOCK_N):
            offs_n = start_n + tl.arange(0, BLOCK_N)
            n_valid = offs_n < Lk
            k = tl.load(K + b * skb + h * skh + offs_n[:, None] * skn + offs_d[None, :],
                        mask=n_valid[:, None], other=0.0)
            if HAS_ROPE:
                kpos = tl.load(KPOS + offs_n, mask=n_valid, other=-1.0)
                k = _rope(k.to(tl.float32), kpos, invf, BLOCK_N, HALF, 1.0).to(dt)
            v = tl.load(V + b * svb + h * svh + offs_n[:, None] * svn + offs_d[None, :],
                        mask=n_valid[:, None], other=0.0)
            keep = _key_keep(MASK, b, smb, offs_n, n_valid, HAS_MASK)
            s = _dot(q, tl.trans(k), DOT_PREC, UPCAST) * qk_scale
            p = tl.where(keep[None, :], tl.exp2(s - lse[:, None]), 0.0)
            dp = _dot(do, tl.trans(v), DOT_PREC, UPCAST)
            ds = (p * (dp - delta[:, None])).to(dt)
            dq += _dot(ds, k, DOT_PREC, UPCAST)
        dq = dq * scale
        if HAS_ROPE:
            dq = _rope(dq, qpos, invf, BLOCK_M, HALF, -1.0)
        if Q_BCAST:
            full = m_valid[:, None] & (offs_d[None, :] < D)
            tl.atomic_add(DQ + h * sdqh + offs_m[:, None] * sdqm + offs_d[None, :], dq, mask=full)
        else:
            tl.store(DQ + b * sdqb + h * sdqh + offs_m[:, None] * sdqm + offs_d[None, :], dq.to(dt),
                     mask=m_valid[:, None])


# --------------------------------------------------------------------------- configurations
def _p2(n: int) -> int:
    return max(16, triton.next_power_of_2(int(n)))


def _tiny(lq: int, lk: int) -> bool:
    return _p2(lq) * _p2(lk) <= 64 * 64


def _fused_bwd(lk: int, d: int) -> bool:
    return _p2(lk) <= MAX_FUSED_KEYS and _p2(lk) * d <= MAX_FUSED_KEY_ELEMS


def _fwd_space(lq: int, lk: int, d: int) -> List[dict]:
    """Candidate forward configs, the heuristic default first (the one the interpreter runs).

    Chosen so that every candidate compiles for sm_90 without (or with a few bytes of) register
    spills (checked with ptxas): tiles of 128 × 128 and more only with 8 warps."""
    pm, pn = _p2(lq), _p2(lk)
    bns = [pn] if pn <= 128 else [64, 128]
    bms = sorted({min(pm, 64), min(pm, 128)})
    pairs = [2, 1, 4, 8] if _tiny(lq, lk) else [1]
    stages = [2] if pn <= 128 else [2, 3]
    out = []
    for m, n, g, s in itertools.product(bms, bns, pairs, stages):
        size = m * n * max(d, 32) // 32
        warps = [8] if size >= 128 * 128 else ([4, 8] if size >= 64 * 64 else [4, 2])
        if pn > 128 and warps == [4, 8]:   # long keys (SLiM 205): 4 warps spill on sm_80 in bf16
            warps = [8, 4]
        out += [dict(BLOCK_M=m, BLOCK_N=n, PAIRS=g, num_warps=w, num_stages=s) for w in warps]
    return out


def _bwd_fused_space(lq: int, lk: int, d: int) -> List[dict]:
    pm, pn = _p2(lq), _p2(lk)
    big = pn * d >= 4096
    bms = [min(pm, 32)] + ([64] if pm >= 64 else []) + ([16] if pm >= 32 and not big else [])
    pairs = [2, 1, 4, 8] if _tiny(lq, lk) else [1]
    warps = [8] if big else ([4, 8] if pn * d >= 1024 else [4, 2])
    return [dict(BLOCK_M=m, BLOCK_N=pn, PAIRS=g, num_warps=w, num_stages=s)
            for m, g, w, s in itertools.product(bms, pairs, warps, [1, 2])]


def _bwd_tiled_space(lq: int, lk: int, d: int) -> List[dict]:
    if d <= 64:   # (BLOCK_M, BLOCK_N, warps, stages) that compile for sm_90 without spilling (ptxas)
        cands = [(64, 64, 8, 2), (64, 64, 4, 2), (64, 64, 8, 3), (32, 64, 8, 2), (64, 128, 8, 2), (64, 128, 8, 3)]
        if _TRITON_VERSION < (3, 9):
            cands.append(tuple(_ROPE_BWD_TILED_OLD.values()))
    else:
        cands = [(32, 64, 8, 2), (32, 64, 4, 2), (32, 64, 8, 3)]
    return [dict(BLOCK_M=m, BLOCK_N=n, num_warps=w, num_stages=s) for m, n, w, s in cands]


def _bwd_tiled_default_first(space: List[dict], rope: bool, d: int) -> List[dict]:
    """RoPE on Triton < 3.9: the config that does not spill there first (see _ROPE_BWD_TILED_OLD)."""
    if rope and d <= 64 and _TRITON_VERSION < (3, 9):
        return [_ROPE_BWD_TILED_OLD] + [c for c in space if c != _ROPE_BWD_TILED_OLD]
    return space


def _bucket(n: int) -> int:
    """The autotune key's B·H: the next power of two (unused by the kernels' arithmetic)."""
    return triton.next_power_of_2(max(int(n), 1))


def _key(c: dict) -> tuple:
    return tuple(sorted(c.items()))


def _superset(space_fn) -> List[triton.Config]:
    """Every config ``space_fn`` can propose; the autotuner's pruner keeps the current shape's."""
    sizes = (1, 16, 32, 64, 128, 129, 256, 257)
    seen, out = set(), []
    for lq, lk, d in itertools.product(sizes, sizes, HEAD_DIMS):
        for c in space_fn(lq, lk, d):
            if _key(c) not in seen:
                seen.add(_key(c))
                kw = {k: v for k, v in c.items() if k not in ("num_warps", "num_stages")}
                out.append(triton.Config(kw, num_warps=c["num_warps"], num_stages=c["num_stages"]))
    return out


def _pruner(space_fn):
    def prune(configs, named_args, **kwargs):
        args = {**named_args, **kwargs}
        want = {_key(c) for c in space_fn(args["Lq"], args["Lk"], args["D"])}
        kept = [c for c in configs
                if _key({**c.kwargs, "num_warps": c.num_warps, "num_stages": c.num_stages}) in want]
        return kept or configs[:1]
    return prune


def _autotune(kernel, space_fn, key, reset=None):  # pragma: no cover - CUDA only
    return triton.autotune(_superset(space_fn), key=key, reset_to_zero=reset,
                           prune_configs_by={"early_config_prune": _pruner(space_fn)})(kernel)


_KEY = ["Lq", "Lk", "BH_BUCKET", "D", "HAS_MASK", "HAS_ROPE"]   # B·H bucketed: AMR's B varies per batch
if INTERPRET:
    _fwd_tuned = _bwd_fused_tuned = _bwd_tiled_tuned = None
else:  # pragma: no cover - CUDA only
    _fwd_tuned = _autotune(_attn_fwd, _fwd_space, _KEY)
    _bwd_fused_tuned = _autotune(_attn_bwd_fused, _bwd_fused_space, _KEY + ["Q_BCAST"], ["DQ"])
    _bwd_tiled_tuned = _autotune(_attn_bwd_tiled, _bwd_tiled_space, _KEY + ["Q_BCAST"], ["DQ"])


def _wrap(kernel, traced: bool):
    return wrap_triton(kernel) if traced and not INTERPRET else kernel


_BEST: dict = {}   # (kernel, shape/flags key) -> the autotuner's pick, launched without its per-call key building


def _launch(name, raw, tuned, space, grid, args, kwargs, traced):
    """Launch one kernel: the autotuned one on CUDA; the default config of ``space`` under the
    interpreter or with ``AUTOTUNE`` off; ``CONFIG_OVERRIDE[name]`` when set (tests, tuning).
    ``traced``: called from the registered op, whose body torch.compile traces (``wrap_triton``)."""
    cfg = (CONFIG_OVERRIDE or {}).get(name)
    if cfg is None and (INTERPRET or not AUTOTUNE):
        cfg = space[0]
    if cfg is not None:
        _wrap(raw, traced)[grid](*args, **kwargs, **cfg)
        return
    if traced:  # pragma: no cover - CUDA only
        wrap_triton(tuned)[grid](*args, **kwargs)
        return
    key = (name, args[0].dtype, *args[-3:], *sorted(kwargs.items()))   # dtype, Lq, Lk, B·H bucket, flags
    cfg = _BEST.get(key)
    if cfg is None:  # pragma: no cover - CUDA only
        tuned[grid](*args, **kwargs)
        best = tuned.best_config
        _BEST[key] = {**best.kwargs, "num_warps": best.num_warps, "num_stages": best.num_stages}
    else:  # pragma: no cover - CUDA only
        raw[grid](*args, **kwargs, **cfg)


# --------------------------------------------------------------------------- host side
def _last_contig(t: torch.Tensor) -> torch.Tensor:
    return t if t.stride(-1) == 1 else t.contiguous()


def _bhld_like(b: int, h: int, l: int, d: int, like: torch.Tensor) -> torch.Tensor:
    """An empty ``(B, H, L, d)`` tensor stored as ``(B, L, H, d)``: merging heads is then a view."""
    return torch.empty((b, l, h, d), dtype=like.dtype, device=like.device).transpose(1, 2)


def _s3(t: torch.Tensor) -> Tuple[int, int, int]:
    return t.stride(0), t.stride(1), t.stride(2)


def _flags(q: torch.Tensor):
    prec = "ieee" if q.dtype == torch.float32 else "tf32"
    return dict(DOT_PREC=prec, UPCAST=INTERPRET and q.dtype == torch.bfloat16)


def _mask_arg(mask: Optional[torch.Tensor], q: torch.Tensor):
    if mask is None:
        return q, 0
    m = mask.contiguous().view(torch.uint8)
    return m, m.stride(0)


def _fwd_impl(q, k, v, key_padding_mask, q_pos, k_pos, inv_freq_, scale, traced=True):
    with device_guard(q):
        bq, h, lq, d = q.shape
        b, _, lk, _ = k.shape
        q, k, v = _last_contig(q), _last_contig(k), _last_contig(v)
        o = _bhld_like(b, h, lq, d, q)
        lse = torch.empty((b, h, lq), dtype=torch.float32, device=q.device)
        mask, smb = _mask_arg(key_padding_mask, q)
        rope = q_pos is not None
        qs = (0,) + _s3(q)[1:] if bq == 1 else _s3(q)
        args = (q, k, v, o, lse, mask, q_pos if rope else q, k_pos if rope else q, inv_freq_ if rope else q,
                scale * math.log2(math.e), *qs, *_s3(k), *_s3(v), *_s3(o), smb, b, h, lq, lk, _bucket(b * h))
        kw = dict(D=d, HAS_MASK=key_padding_mask is not None, HAS_ROPE=rope, **_flags(q))
        grid = lambda meta: (triton.cdiv(b * h, meta["PAIRS"]), triton.cdiv(lq, meta["BLOCK_M"]))  # noqa: E731
        space = _fwd_space(lq, lk, d)
        if q.dtype == torch.float32:   # fp32 tiles need twice the registers: 8 warps first (4 spill, ptxas)
            space = sorted(space, key=lambda c: c["num_warps"] != 8)
        _launch("fwd", _attn_fwd, _fwd_tuned, space, grid, args, kw, traced)
        return o, lse


def _fwd_fake(q, k, v, key_padding_mask, q_pos, k_pos, inv_freq_, scale):
    b, h, lk, d = k.shape
    lq = q.shape[2]
    return _bhld_like(b, h, lq, d, q), torch.empty((b, h, lq), dtype=torch.float32, device=q.device)


def _bwd_impl(do, q, k, v, o, lse, key_padding_mask, q_pos, k_pos, inv_freq_, scale, traced=True):
    with device_guard(q):
        bq, h, lq, d = q.shape
        b, _, lk, _ = k.shape
        q, k, v, o, do = (_last_contig(t) for t in (q, k, v, o, do))
        bcast = bq == 1 and b > 1
        dq = (torch.zeros((1, h, lq, d), dtype=torch.float32, device=q.device) if bcast
              else _bhld_like(bq, h, lq, d, q))
        dk, dv = _bhld_like(b, h, lk, d, k), _bhld_like(b, h, lk, d, v)
        mask, smb = _mask_arg(key_padding_mask, q)
        rope = q_pos is not None
        qs = (0,) + _s3(q)[1:] if bq == 1 else _s3(q)
        ropes = (q_pos if rope else q, k_pos if rope else q, inv_freq_ if rope else q)
        common_kw = dict(D=d, HAS_MASK=key_padding_mask is not None, HAS_ROPE=rope, Q_BCAST=bcast, **_flags(q))
        tail = (*_s3(dq), *_s3(dk), *_s3(dv), smb, b, h, lq, lk, _bucket(b * h))
        qk_scale = scale * math.log2(math.e)
        if _fused_bwd(lk, d):
            args = (q, k, v, o, do, lse, dq, dk, dv, mask, *ropes, qk_scale, scale,
                    *qs, *_s3(k), *_s3(v), *_s3(o), *_s3(do), *tail)
            grid = lambda meta: (triton.cdiv(b * h, meta["PAIRS"]),)  # noqa: E731
            _launch("bwd_fused", _attn_bwd_fused, _bwd_fused_tuned, _bwd_fused_space(lq, lk, d), grid, args,
                    common_kw, traced)
        else:
            delta = torch.empty((b, h, lq), dtype=torch.float32, device=q.device)
            blk = 64
            _wrap(_attn_bwd_delta, traced)[(b * h, triton.cdiv(lq, blk))](
                o, do, delta, *_s3(o), *_s3(do), b, h, lq, D=d, BLOCK_M=blk)
            args = (q, k, v, do, lse, delta, dq, dk, dv, mask, *ropes, qk_scale, scale,
                    *qs, *_s3(k), *_s3(v), *_s3(do), *tail)
            grid = lambda meta: (b * h, max(triton.cdiv(lk, meta["BLOCK_N"]),  # noqa: E731
                                            triton.cdiv(lq, meta["BLOCK_M"])))
            space = _bwd_tiled_default_first(_bwd_tiled_space(lq, lk, d), rope, d)
            _launch("bwd_tiled", _attn_bwd_tiled, _bwd_tiled_tuned, space, grid, args, common_kw, traced)
        if bcast:
            dq = dq.to(q.dtype)
        return dq, dk, dv


def _bwd_fake(do, q, k, v, o, lse, key_padding_mask, q_pos, k_pos, inv_freq_, scale):
    bq, h, lq, d = q.shape
    b, _, lk, _ = k.shape
    dq = (torch.empty((1, h, lq, d), dtype=q.dtype, device=q.device) if bq == 1 and b > 1
          else _bhld_like(bq, h, lq, d, q))
    return dq, _bhld_like(b, h, lk, d, k), _bhld_like(b, h, lk, d, v)


# --------------------------------------------------------------------------- registration
def attention_fwd_def(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_padding_mask: Optional[torch.Tensor],
                      q_pos: Optional[torch.Tensor], k_pos: Optional[torch.Tensor], inv_freq: Optional[torch.Tensor],
                      scale: float) -> Tuple[torch.Tensor, torch.Tensor]:
    return _fwd_impl(q, k, v, key_padding_mask, q_pos, k_pos, inv_freq, scale)


def attention_bwd_def(do: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, o: torch.Tensor,
                      lse: torch.Tensor, key_padding_mask: Optional[torch.Tensor], q_pos: Optional[torch.Tensor],
                      k_pos: Optional[torch.Tensor], inv_freq: Optional[torch.Tensor],
                      scale: float) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return _bwd_impl(do, q, k, v, o, lse, key_padding_mask, q_pos, k_pos, inv_freq, scale)


attention_fwd = register_op("attention_fwd", attention_fwd_def, _fwd_fake)
attention_bwd = register_op("attention_bwd", attention_bwd_def, _bwd_fake)


def _setup_context(ctx, inputs, output):
    q, k, v, mask, q_pos, k_pos, inv_freq_, scale = inputs
    o, lse = output
    ctx.save_for_backward(q, k, v, o, lse, mask, q_pos, k_pos, inv_freq_)
    ctx.scale = scale
    ctx.mark_non_differentiable(lse)


def _backward(ctx, do, _dlse):
    q, k, v, o, lse, mask, q_pos, k_pos, inv_freq_ = ctx.saved_tensors
    dq, dk, dv = attention_bwd(do, q, k, v, o, lse, mask, q_pos, k_pos, inv_freq_, ctx.scale)
    return dq, dk, dv, None, None, None, None, None


torch.library.register_autograd("fastskel::attention_fwd", _backward, setup_context=_setup_context)


class AttentionFunction(torch.autograd.Function):
    """The eager path: the same launchers without the custom-op dispatch (less host overhead for
    these microsecond-scale problems). ``torch.compile`` traces the registered ops instead."""

    @staticmethod
    def forward(ctx, q, k, v, key_padding_mask, q_pos, k_pos, inv_freq_, scale):
        o, lse = _fwd_impl(q, k, v, key_padding_mask, q_pos, k_pos, inv_freq_, scale, traced=False)
        ctx.save_for_backward(q, k, v, o, lse, key_padding_mask, q_pos, k_pos, inv_freq_)
        ctx.scale = scale
        return o

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, do):
        q, k, v, o, lse, mask, q_pos, k_pos, inv_freq_ = ctx.saved_tensors
        dq, dk, dv = _bwd_impl(do, q, k, v, o, lse, mask, q_pos, k_pos, inv_freq_, ctx.scale, traced=False)
        return dq, dk, dv, None, None, None, None, None


# --------------------------------------------------------------------------- entry points
_INV_FREQ_CACHE: dict = {}


def inv_freq(d: int, base: float, device: torch.device) -> torch.Tensor:
    """RoPE frequencies ``base^(−2i/d)``, i < d/2, float32 — the exact formula of the reference."""
    key = (d, float(base), str(device))
    cached = None if torch.compiler.is_compiling() else _INV_FREQ_CACHE.get(key)
    if cached is None:
        cached = base ** (-torch.arange(d // 2, device=device, dtype=torch.float32) * 2.0 / d)
        if not torch.compiler.is_compiling():
            _INV_FREQ_CACHE[key] = cached
    return cached


def unsupported(q: torch.Tensor) -> Optional[str]:
    """Why the Triton kernel cannot take ``q`` (its dtype / head dim), or ``None``."""
    if q.dtype not in DTYPES:
        return f"dtype {q.dtype} (Triton attention supports {[str(t) for t in DTYPES]})"
    if q.shape[-1] not in HEAD_DIMS:
        return f"head dim d={q.shape[-1]} (Triton attention supports {HEAD_DIMS})"
    return None


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: Optional[float] = None,
              key_padding_mask: Optional[torch.Tensor] = None, rope=None) -> torch.Tensor:
    """Triton attention on validated arguments (see :func:`fastskel.ops.attention`)."""
    d = q.shape[-1]
    for name, t in (("q", q), ("k", k), ("v", v)):
        if (t.shape[2] - 1) * t.stride(2) + d >= 2 ** 31:
            raise ValueError(f"{name}: expected L · stride(2) below 2**31 (32-bit offsets within a (batch, head) "
                             f"slice), got L={t.shape[2]}, stride(2)={t.stride(2)}")
    scale = 1.0 / math.sqrt(d) if scale is None else float(scale)
    q_pos = k_pos = freqs = None
    if rope is not None:
        q_pos = rope.q_pos.to(device=q.device, dtype=torch.float32).contiguous()
        k_pos = rope.k_pos.to(device=q.device, dtype=torch.float32).contiguous()
        freqs = inv_freq(d, rope.base, q.device)
    if torch.compiler.is_compiling():
        return attention_fwd(q, k, v, key_padding_mask, q_pos, k_pos, freqs, scale)[0]
    return AttentionFunction.apply(q, k, v, key_padding_mask, q_pos, k_pos, freqs, scale)
