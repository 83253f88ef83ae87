"""Readable pure-PyTorch references of every fastskel op: the spec in code (docs/design.md §4).

These functions take already-validated arguments (the public ops in ``fastskel.ops`` check them),
compute in float32 where precision matters, and are written for clarity, vectorised over the batch
so that benchmarks against them are fair. Every fast path is tested against them.

Conventions: skeletons are ``(N, C, T, V)``; ``lengths`` is an int64 ``(N,)`` tensor of valid
frames (``None`` = all ``T`` frames valid).
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

__all__ = [
    "Rope", "apply_rope", "attention", "barlow_twins_loss", "degree_joint_mask", "degree_log_probs",
    "dropout_add_relu", "dropout_keep_mask",
    "focal_reconstruction_loss", "frame_motion", "graph_conv", "graph_conv_channel_mix", "gumbel_from_uniform",
    "motion_energy_weights", "motion_frame_mask", "normalize_embeddings", "patchify", "unpatchify",
]


def _lengths(lengths: Optional[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    n, t = x.shape[0], x.shape[2]
    if lengths is None:
        return torch.full((n,), t, dtype=torch.int64, device=x.device)
    return lengths.to(device=x.device, dtype=torch.int64)


# --------------------------------------------------------------------------- motion & frame masks
def frame_motion(x: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Per-frame motion score ``a_t`` (ASMa eq. 3–4), float32 ``(N, T)``.

    ``a_t = mean_{c,v} |x[:, c, t+1, v] − x[:, c, t, v]|`` for ``t < L−1``; ``a_{L−1} = a_{L−2}``
    (the last valid frame repeats its predecessor's score); ``a_t = 0`` for padded frames ``t ≥ L``
    and for sequences with ``L ≤ 1``.
    """
    n, _, t, _ = x.shape
    L = _lengths(lengths, x)
    if t < 2:
        return torch.zeros(n, t, dtype=torch.float32, device=x.device)
    diff = (x[:, :, 1:].float() - x[:, :, :-1].float()).abs().mean(dim=(1, 3))  # (N, T-1)
    frames = torch.arange(t, device=x.device).expand(n, t)
    src = torch.minimum(frames, (L - 2).clamp(min=0)[:, None]).clamp(max=t - 2)
    a = diff.gather(1, src)
    valid = (frames < L[:, None]) & (L[:, None] >= 2)
    return torch.where(valid, a, torch.zeros_like(a))


def motion_frame_mask(x: torch.Tensor, k: int, largest: bool = True,
                      lengths: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Zero the ``k`` valid frames of largest (HMTM) or smallest (LMTM) motion ``a_t`` (ASMa §3.2).

    Ties go to the lower frame index; padded frames are never chosen. Returns ``(x_masked, mask)``
    with ``mask`` bool ``(N, T)`` (True = frame zeroed). ``x_masked = x · (1 − mask)`` so the
    gradient reaches the kept frames.
    """
    n, _, t, _ = x.shape
    L = _lengths(lengths, x)
    a = frame_motion(x, L)
    padded = torch.arange(t, device=x.device)[None, :] >= L[:, None]
    fill = float("-inf") if largest else float("inf")
    key = a.masked_fill(padded, fill)
    order = torch.sort(key, dim=1, descending=largest, stable=True).indices[:, :k]
    mask = torch.zeros(n, t, dtype=torch.bool, device=x.device).scatter_(1, order, True)
    return x * (~mask)[:, None, :, None].to(x.dtype), mask


# --------------------------------------------------------------------------- degree joint masks
def degree_log_probs(degrees: torch.Tensor, high: bool = True) -> torch.Tensor:
    """log of ASMa eq. 1 (``p_v = d_v / Σd``, HDSM) or eq. 2 (``1 − d_v / Σd``, LDSM), float32 ``(V,)``."""
    p = degrees.double() / degrees.double().sum()
    if not high:
        p = 1.0 - p
    return p.log().float()


def gumbel_from_uniform(u: torch.Tensor) -> torch.Tensor:
    """Gumbel(0, 1) noise ``−log(−log u)`` from uniforms in ``(0, 1)`` (clamped away from 0 and 1)."""
    u = u.float().clamp(1e-20, 1.0 - 1e-7)
    return -torch.log(-torch.log(u))


def degree_joint_mask(x: torch.Tensor, n: int, log_p: torch.Tensor,
                      uniform: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Zero ``n`` distinct joints per sample in all frames, drawn without replacement ∝ ``exp(log_p)``.

    Gumbel-top-k: the ``n`` largest ``log_p[v] + G[s, v]`` with ``G = −log(−log u)`` are exactly a
    draw of ``n`` joints without replacement with probabilities ∝ ``p`` (ties → lower index).
    ``uniform`` ``(N, V)`` is the noise the public op draws from its ``generator``, so every backend
    picks the same joints. Returns ``(x_masked, mask)`` with ``mask`` bool ``(N, V)``.
    """
    keys = log_p[None, :] + gumbel_from_uniform(uniform)
    order = torch.sort(keys, dim=1, descending=True, stable=True).indices[:, :n]
    mask = torch.zeros(keys.shape, dtype=torch.bool, device=x.device).scatter_(1, order, True)
    return x * (~mask)[:, None, None, :].to(x.dtype), mask


# --------------------------------------------------------------------------- AMR focal weights/loss
def motion_energy_weights(x: torch.Tensor, windows: Sequence[int] = (4, 8, 12), k: float = 0.01,
                          eps: float = 1e-6, lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
    """AMR focal weights (eq. 3–4, multi-scale fusion), float32 ``(N, T, V)``.

    For each window size ``n``: split the valid frames ``[0, L)`` into non-overlapping windows of
    ``n`` frames (the last may be shorter); per (window, joint) ``e = mean_t ‖s_t − μ‖²`` with
    ``s_t`` the C-vector of the joint at frame t and ``μ`` the window mean (eq. 3); the threshold
    ``e_t`` is the mean of ``e`` over the sequence's valid windows and all joints; the weight
    ``w = 1 / (1 + k·e_t / (e + eps))`` (eq. 4) is broadcast to the window's frames. The result is
    the mean of the per-scale weights; padded frames get weight 0.
    """
    nb, c, t, v = x.shape
    L = _lengths(lengths, x)
    xf = x.float()
    total = torch.zeros(nb, t, v, dtype=torch.float32, device=x.device)
    for n in windows:
        tw = -(-t // n)
        pad = tw * n - t
        xs = F.pad(xf, (0, 0, 0, pad)).view(nb, c, tw, n, v)
        frame = torch.arange(tw * n, device=x.device).view(tw, n)
        m = (frame[None] < L[:, None, None]).float()                      # (N, Tw, n)
        cnt = m.sum(-1)                                                    # (N, Tw)
        mw = m[:, None, :, :, None]                                        # (N, 1, Tw, n, 1)
        mu = (xs * mw).sum(3, keepdim=True) / cnt.clamp(min=1)[:, None, :, None, None]
        sq = ((xs - mu) ** 2 * mw).sum(1)                                  # (N, Tw, n, V)
        e = sq.sum(2) / cnt.clamp(min=1)[..., None]                        # (N, Tw, V)
        win_valid = (cnt > 0).float()
        n_valid = win_valid.sum(1).clamp(min=1)                            # (N,)
        e_t = (e * win_valid[..., None]).sum((1, 2)) / (n_valid * v)       # (N,)
        w = 1.0 / (1.0 + k * e_t[:, None, None] / (e + eps))               # (N, Tw, V)
        w_frames = w[:, :, None, :].expand(nb, tw, n, v).reshape(nb, tw * n, v)[:, :t]
        total += w_frames * m.view(nb, tw * n)[:, :t, None]
    return total / len(windows)


def focal_reconstruction_loss(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """AMR eq. 5: ``mean_N (1/P) Σ_p Σ_d w·(pred − target)²`` over all patches, float32 scalar.

    ``pred``, ``target``: ``(N, P, D)``; ``weight``: ``(N, P, D)`` or per patch ``(N, P)``.
    """
    w = weight.float()
    if w.dim() == 2:
        w = w[..., None]
    err = w * (pred.float() - target.float()) ** 2
    return err.sum(dim=(1, 2)).div(pred.shape[1]).mean()


# --------------------------------------------------------------------------- Barlow Twins
def normalize_embeddings(z: torch.Tensor, normalize: str = "batchnorm") -> torch.Tensor:
    """Per-feature normalisation over the batch, float32.

    "batchnorm": ``(z − mean_b) / sqrt(var_b + 1e-5)`` (biased variance, official Barlow Twins /
    PSTL ``BatchNorm1d(affine=False)``); "cosine": ``z / ‖z[:, i]‖₂`` (ASMa eq. 5, norms clamped at
    1e-12).
    """
    z = z.float()
    if normalize == "batchnorm":
        return (z - z.mean(0)) / torch.sqrt(z.var(0, unbiased=False) + 1e-5)
    return z / z.norm(dim=0).clamp(min=1e-12)


def barlow_twins_loss(z1: torch.Tensor, z2: torch.Tensor, lambd: float = 2e-4,
                      normalize: str = "batchnorm") -> torch.Tensor:
    """Barlow Twins, materialised: ``Σ_i (1 − C_ii)² + λ Σ_{i≠j} C_ij²``, float32 scalar.

    ``C = z1ₙᵀ z2ₙ / B`` for "batchnorm" and ``C = z1ₙᵀ z2ₙ`` for "cosine" (ASMa eq. 5–6), with
    ``zₙ`` from :func:`normalize_embeddings`. Builds the full ``D × D`` matrix.
    """
    b, d = z1.shape
    c = normalize_embeddings(z1, normalize).T @ normalize_embeddings(z2, normalize)
    if normalize == "batchnorm":
        c = c / b
    on_diag = (torch.diagonal(c) - 1).pow(2).sum()
    off_diag = c.flatten()[:-1].view(d - 1, d + 1)[:, 1:].pow(2).sum()
    return on_diag + lambd * off_diag


# --------------------------------------------------------------------------- attention
class Rope(NamedTuple):
    """Rotary position embedding for :func:`attention`: per-token positions of queries and keys.

    Positions are float ``(Lq,)`` / ``(Lk,)``; a negative position leaves that token unrotated
    (cls / register tokens). Pairs ``(i, i + d/2)`` rotate by ``pos · base^(−2i/d)`` (rotate-half).
    """

    q_pos: torch.Tensor
    k_pos: torch.Tensor
    base: float = 10000.0


def apply_rope(x: torch.Tensor, pos: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """Rotate-half RoPE of ``x`` ``(..., L, d)`` at positions ``pos`` ``(L,)``; float32 result."""
    d = x.shape[-1]
    half = d // 2
    inv = base ** (-torch.arange(half, device=x.device, dtype=torch.float32) * 2.0 / d)
    p = pos.float().to(x.device)
    ang = p[:, None] * inv[None, :]
    cos, sin = torch.cos(ang), torch.sin(ang)
    rotated = p[:, None] >= 0
    cos = torch.where(rotated, cos, torch.ones_like(cos))
    sin = torch.where(rotated, sin, torch.zeros_like(sin))
    xf = x.float()
    x1, x2 = xf[..., :half], xf[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: Optional[float] = None,
              key_padding_mask: Optional[torch.Tensor] = None, rope: Optional[Rope] = None) -> torch.Tensor:
    """``softmax(q kᵀ · scale) v`` per (batch, head), computed in float32, returned in ``q.dtype``.

    ``q`` ``(Bq, H, Lq, d)`` with ``Bq`` ∈ {1, B} (1 = queries shared across the batch), ``k``, ``v``
    ``(B, H, Lk, d)``; ``scale`` defaults to ``1/sqrt(d)``; ``key_padding_mask`` bool ``(B, Lk)``,
    True = ignore that key; a query whose keys are all masked outputs zeros. ``rope`` rotates q and
    k first (:class:`Rope`).
    """
    d = q.shape[-1]
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    qf, kf = q.float(), k.float()
    if rope is not None:
        qf = apply_rope(qf, rope.q_pos, rope.base)
        kf = apply_rope(kf, rope.k_pos, rope.base)
    s = torch.matmul(qf * scale, kf.transpose(-1, -2))                    # (B, H, Lq, Lk)
    if key_padding_mask is not None:
        s = s.masked_fill(key_padding_mask[:, None, None, :], float("-inf"))
    p = torch.softmax(s, dim=-1)
    p = torch.nan_to_num(p, nan=0.0)                                       # all keys masked
    return torch.matmul(p, v.float()).to(q.dtype)


# --------------------------------------------------------------------------- graph convolution
def graph_conv(x: torch.Tensor, A: torch.Tensor, weight: torch.Tensor,
               bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """st-gcn ``ConvTemporalGraphical`` (kernel 1): ``y[n,c,t,w] = Σ_k Σ_v (W_k x + b_k)[n,c,t,v]·A[k,v,w]``.

    ``x`` ``(N, C_in, T, V)``, ``A`` ``(K, V, V)``, ``weight`` ``(K·C_out, C_in)`` k-major,
    ``bias`` ``(K·C_out,)``; returns ``(N, C_out, T, V)``.
    """
    kk = A.shape[0]
    h = graph_conv_channel_mix(x, weight, bias)
    n, kc, t, v = h.shape
    h = h.view(n, kk, kc // kk, t, v)
    return torch.einsum("nkctv,kvw->nctw", h, A).contiguous()


def graph_conv_channel_mix(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The 1×1 convolution of st-gcn: ``h = W x + b``, ``(N, K·C_out, T, V)``."""
    h = torch.einsum("oc,nctv->notv", weight, x)
    return h if bias is None else h + bias[None, :, None, None]


# --------------------------------------------------------------------------- patches
def patchify(x: torch.Tensor, frames_per_patch: int) -> torch.Tensor:
    """``(N, C, T, V)`` → ``(N, (T/l)·V, l·C)``: token ``tb·V + v`` holds frames ``[tb·l, (tb+1)·l)``
    of joint v, features ordered (frame, channel)."""
    n, c, t, v = x.shape
    l = frames_per_patch
    return x.reshape(n, c, t // l, l, v).permute(0, 2, 4, 3, 1).reshape(n, (t // l) * v, l * c)


def unpatchify(tokens: torch.Tensor, frames_per_patch: int, num_joints: int) -> torch.Tensor:
    """Inverse of :func:`patchify`: ``(N, (T/l)·V, l·C)`` → ``(N, C, T, V)``."""
    n, p, f = tokens.shape
    l, v = frames_per_patch, num_joints
    tb, c = p // v, f // l
    return tokens.reshape(n, tb, v, l, c).permute(0, 4, 1, 3, 2).reshape(n, c, tb * l, v)


# --------------------------------------------------------------------------- dropout (st-gcn block tail)
def _mix32(x: torch.Tensor) -> torch.Tensor:
    """Wellons' "lowbias32" mixer on uint32 values held in int64."""
    m = 0xFFFFFFFF
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & m
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & m
    return x ^ (x >> 16)


def dropout_keep_mask(numel: int, p: float, seed: int, device=None) -> torch.Tensor:
    """The keep mask ``m`` (bool ``(numel,)``) of :func:`dropout_add_relu` for ``seed``.

    With ``(k0, k1)`` the low and high 32 bits of the 64-bit ``seed`` and all arithmetic mod 2^32:
    ``u_i = mix32(mix32(lo32(i) ⊕ k0) + k1 + hi32(i)·0x9E3779B9)``, ``mix32`` Wellons' lowbias32
    (``x ⊕= x≫16; x ·= 0x7feb352d; x ⊕= x≫15; x ·= 0x846ca68b; x ⊕= x≫16``);
    ``m_i = [u_i < min(round((1−p)·2^32), 2^32−1)]``, and every element is kept when ``p = 0``.
    """
    if p == 0.0:
        return torch.ones(numel, dtype=torch.bool, device=device)
    m32 = 0xFFFFFFFF
    s = int(seed) & ((1 << 64) - 1)
    k0, k1 = s & m32, s >> 32
    i = torch.arange(numel, dtype=torch.int64, device=device)
    u = _mix32((_mix32((i & m32) ^ k0) + k1 + (i >> 32) * 0x9E3779B9) & m32)
    return u < min(int(round((1.0 - p) * 2.0 ** 32)), m32)


def dropout_add_relu(x: torch.Tensor, residual: Optional[torch.Tensor], p: float, seed: int,
                     relu: bool = True) -> torch.Tensor:
    """st-gcn's block tail in one op: ``y = act(x·m/(1−p) + residual)``, ``act`` = ReLU or identity.

    ``m`` is :func:`dropout_keep_mask` of ``x.numel()`` elements in ``x``'s row-major order.
    Computed in fp32 (fp64 for fp64 input) as ``(x·m)·(1/(1−p))``, returned in ``x``'s dtype.
    """
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    scale = torch.tensor(1.0 / (1.0 - p), dtype=acc, device=x.device)
    m = dropout_keep_mask(x.numel(), p, seed, x.device).view(x.shape).to(acc)
    y = x.to(acc) * m * scale
    if residual is not None:
        y = y + residual.to(acc)
    return (torch.relu(y) if relu else y).to(x.dtype)
