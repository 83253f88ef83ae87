"""Batched skeleton transforms on the tensor's device (no per-sample Python loops).

Every transform takes ``x`` as ``(N, C, T, V)`` or ``(N, C, T, V, M)`` (channel 0 = x, 1 = y
(vertical), 2 = z) and, where random, ``generator: torch.Generator | None``. The geometric ones
(:func:`shear`, :func:`random_rotate`, :func:`slim_rotate`, :func:`slim_mirror`, :func:`bone_scale`)
take ``channels`` (:mod:`fastskel.data.channels`: ``"xyz"``, ``"xy"``, ``"xy+score"``; ``None`` =
from C, 3 → xyz, 2 → xy) and act on the spatial channels only: 3-D for ``"xyz"``, in the image
plane for ``"xy"``/``"xy+score"``, whose score channel passes through unchanged. No transform synchronises
with the host (no ``.item()``, no Python-value tensors copied per call; constants are built once per
device and cached). Random numbers are drawn on the generator's device:

- ``generator=None``: on ``x``'s device with its default generator (``torch.manual_seed``);
- a generator on ``x``'s device (``torch.Generator(device="cuda")``): there, sync-free;
- a generator on another device (a CPU generator with a CUDA ``x``): on the generator's device, so
  the same seed gives the same result on CPU and CUDA, at the cost of **one** host→device copy per
  transform call (all of its draws stacked). Use a generator on ``x``'s device in a training loop.

``lengths`` given on the CPU are range-checked for free; on an accelerator the range check costs a
host sync and is skipped inside :func:`fastskel.data.skip_data_checks` (the training engine's step).
Parameters are drawn **per sample** (PSTL's reference code draws
one set per batch; per-sample is strictly more diverse and is what a batched loader needs). Zero
padding stays zero under every spatial transform (they are linear or act on bones).

- :func:`crop_resize` — MAMP/CTR-GCN ``valid_crop_resize``: crop 50–100% of the valid frames (at
  least ``min_frames``), linear resize to ``size`` (``F.interpolate(mode="bilinear",
  align_corners=False)`` along time, the MAMP code); one-value ``p_interval`` = centre crop (test).
- PSTL (ASMa's base): :func:`reflect_pad_crop`, :func:`shear`, :func:`random_rotate`,
  :func:`random_flip` (index swap only, as PSTL), composed by :func:`pstl_augment`.
- SLiM skeleton-aware augmentations (seed 002 App. D): :func:`slim_rotate` (``R = Rz·Ry·Rx``, yaw
  ±180°, tilt ±30°), :func:`slim_mirror` (negate x and swap left/right), :func:`bone_scale`
  (per body part, rebuilt from the root along the parents); :func:`hierarchical_views` (2 global
  views of 50–100% → 64 frames; 2 local crops each of 32/16/8 frames inside G1's interval).
- Streams: :func:`to_bone`, :func:`to_motion`.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import torch

from ..graph import SkeletonGraph
from ._checks import data_checks_enabled
from .channels import spatial_dims
from .core import valid_lengths

__all__ = [
    "Views", "bone_scale", "crop_resize", "hierarchical_views", "pstl_augment", "random_flip",
    "random_rotate", "reflect_pad_crop", "resample", "shear", "slim_mirror", "slim_rotate",
    "to_bone", "to_motion",
]


# ---------------------------------------------------------------------------------------- helpers
def _check_x(x, name: str = "x") -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor (N, C, T, V[, M]), got {type(x).__name__}")
    if x.dim() not in (4, 5):
        raise ValueError(f"{name}: expected a 4-D (N, C, T, V) or 5-D (N, C, T, V, M) tensor, got shape {tuple(x.shape)}")
    if not x.dtype.is_floating_point:
        raise TypeError(f"{name}: expected a floating dtype, got {x.dtype}")
    return x


def _lengths(lengths, x: torch.Tensor) -> torch.Tensor:
    if lengths is None:
        return valid_lengths(x)
    if not isinstance(lengths, torch.Tensor):
        raise TypeError(f"lengths: expected an integer torch.Tensor of shape ({x.shape[0]},), got {type(lengths).__name__}")
    if lengths.dtype.is_floating_point or lengths.dtype == torch.bool:
        raise TypeError(f"lengths: expected an integer dtype, got {lengths.dtype}")
    if lengths.shape != (x.shape[0],):
        raise ValueError(f"lengths: expected shape ({x.shape[0]},), got {tuple(lengths.shape)}")
    # free on the CPU; a host sync on an accelerator (skipped inside skip_data_checks())
    if lengths.numel() and (lengths.device.type == "cpu" or data_checks_enabled()):
        lo, hi = torch.stack(torch.aminmax(lengths)).tolist()
        if lo < 0 or hi > x.shape[2]:
            raise ValueError(f"lengths: expected values in [0, T={x.shape[2]}], got min {lo}, max {hi}")
    return lengths.to(device=x.device, dtype=torch.int64)


_GRAPHS: dict = {}
_CONSTS: dict = {}


def _graph(graph, V: int) -> SkeletonGraph:
    if graph is None:
        if V not in _GRAPHS:
            _GRAPHS[V] = SkeletonGraph.for_joints(V)
        g = _GRAPHS[V]
    else:
        g = SkeletonGraph.get(graph)
    g.check_num_joints(V)
    return g


def _graph_key(g: SkeletonGraph) -> tuple:
    return (g.edges, g.center, g.num_joints, g.lr_pairs, tuple((k, tuple(v)) for k, v in g.parts.items()))


def _const(g: SkeletonGraph, what: str, device, dtype=torch.int64) -> torch.Tensor:
    """Graph constants (``"parents"``, ``"flip"``, ``"parts"``, ``"ancestors"``) on ``device``,
    built once per (graph, device, dtype): no host→device copy after the first call."""
    key = (_graph_key(g), what, str(torch.device(device)), dtype)
    t = _CONSTS.get(key)
    if t is None:
        if what == "parents":
            t = torch.tensor(g.parents, dtype=dtype)
        elif what == "flip":
            t = torch.tensor(g.flip_permutation(), dtype=dtype)
        elif what == "parts":
            t = torch.as_tensor(g.part_index(), dtype=dtype)
        else:
            t = _ancestors(g)[0].to(dtype)
        t = _CONSTS[key] = t.to(device)
    return t


def _same_device(a: torch.device, b: torch.device) -> bool:
    return a.type == b.type and (a.index is None or b.index is None or a.index == b.index)


def _uniforms(generator, device, *specs) -> List[torch.Tensor]:
    """``U[0, 1)`` tensors, one per ``(shape, dtype)`` in ``specs``, on ``device``, drawn in order
    from ``generator`` on its own device (``x``'s device when ``None``). A generator on another
    device draws there and the draws move with one stacked copy (float64 holds fp32 exactly)."""
    device = torch.device(device)
    gdev = generator.device if generator is not None else device
    draws = [torch.rand(shape, generator=generator, device=gdev, dtype=dtype) for shape, dtype in specs]
    if _same_device(gdev, device):
        return draws
    flat = torch.cat([d.reshape(-1).to(torch.float64) for d in draws]).to(device)
    out, i = [], 0
    for d in draws:
        out.append(flat[i:i + d.numel()].reshape(d.shape).to(d.dtype))
        i += d.numel()
    return out


def _randint_from(u: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """Per-element integers uniform in ``[low, high)`` (``high > low``) from float64 uniforms ``u``."""
    span = (high - low).to(torch.float64)
    return low + torch.minimum((u * span).floor().to(torch.int64), (high - low - 1).clamp_min(0))


def _prob(v: float, name: str) -> float:
    if not 0.0 <= float(v) <= 1.0:
        raise ValueError(f"{name}: expected a probability in [0, 1], got {v}")
    return float(v)


def _apply_matrix(x: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
    """``out[n, :, ...] = R[n] @ x[n, :, ...]`` for ``R`` ``(N, 3, 3)``."""
    shape = x.shape
    out = torch.bmm(R.to(x.dtype), x.reshape(shape[0], shape[1], -1))
    return out.reshape(shape)


def _on_spatial(x: torch.Tensor, d: int, fn) -> torch.Tensor:
    """``fn`` applied to the first ``d`` (spatial) channels; the rest (a score) passes through."""
    if d == x.shape[1]:
        return fn(x)
    return torch.cat([fn(x[:, :d]), x[:, d:]], 1)


def _rot2d(a):
    """In-plane rotations ``[[c, −s], [s, c]]`` ``(..., 2, 2)`` by angles ``a`` (radians)."""
    c, s = torch.cos(a), torch.sin(a)
    return torch.stack([c, -s, s, c], -1).reshape(*a.shape, 2, 2)


def _rx(a):
    c, s, o, z = torch.cos(a), torch.sin(a), torch.ones_like(a), torch.zeros_like(a)
    return torch.stack([o, z, z, z, c, -s, z, s, c], -1).reshape(*a.shape, 3, 3)


def _ry(a):
    c, s, o, z = torch.cos(a), torch.sin(a), torch.ones_like(a), torch.zeros_like(a)
    return torch.stack([c, z, s, z, o, z, -s, z, c], -1).reshape(*a.shape, 3, 3)


def _rz(a):
    c, s, o, z = torch.cos(a), torch.sin(a), torch.ones_like(a), torch.zeros_like(a)
    return torch.stack([c, -s, z, s, c, z, z, z, o], -1).reshape(*a.shape, 3, 3)


# ------------------------------------------------------------------------------- temporal resampling
def resample(x: torch.Tensor, start: torch.Tensor, length: torch.Tensor, size: int) -> torch.Tensor:
    """Linearly resize each sample's window ``[start, start + length)`` to ``size`` frames.

    Exactly ``F.interpolate(window, size, mode="linear"/"bilinear", align_corners=False)``:
    source position ``s = max(0, (i + 0.5)·length/size − 0.5)`` (fp32, as PyTorch computes it),
    ``out_i = (1 − λ)·w[⌊s⌋] + λ·w[min(⌊s⌋ + 1, length − 1)]``, ``λ = s − ⌊s⌋``. Windows of length 0
    give zeros. Batched: two row gathers for all samples (no per-sample loop, no host sync).
    """
    _check_x(x)
    n, c, t = x.shape[:3]
    rest = x.shape[3:]
    start = start.to(device=x.device, dtype=torch.int64).reshape(n)
    length = length.to(device=x.device, dtype=torch.int64).reshape(n)
    scale = length.to(torch.float32) / float(size)  # fp32 like PyTorch's area_pixel_compute_scale
    i = torch.arange(size, device=x.device, dtype=torch.float32)
    src = (scale[:, None] * (i[None] + 0.5) - 0.5).clamp_min(0.0)
    i0 = src.floor().to(torch.int64)
    lam = src - i0.to(torch.float32)
    last = (length - 1).clamp_min(0)[:, None]
    i0 = torch.minimum(i0, last)
    i1 = torch.minimum(i0 + 1, last)
    base = (torch.arange(n, device=x.device) * t)[:, None] + start[:, None]
    idx0 = (base + i0).clamp(0, max(n * t - 1, 0)).reshape(-1)
    idx1 = (base + i1).clamp(0, max(n * t - 1, 0)).reshape(-1)
    # frames as rows: one contiguous row gather per output frame, then a lerp
    rows = x.transpose(1, 2).reshape(n * t, -1)
    g0 = rows.index_select(0, idx0)
    g1 = rows.index_select(0, idx1)
    valid = (length > 0).to(x.dtype)[:, None]
    w1 = (lam.to(x.dtype) * valid).reshape(-1, 1)
    w0 = ((1 - lam.to(x.dtype)) * valid).reshape(-1, 1)
    out = w0 * g0 + w1 * g1
    return out.reshape(n, size, c, *rest).transpose(1, 2).contiguous()


def crop_resize(x: torch.Tensor, lengths: Optional[torch.Tensor] = None, size: int = 120,
                p_interval: Sequence[float] = (0.5, 1.0), min_frames: int = 64,
                generator: Optional[torch.Generator] = None, return_window: bool = False):
    """MAMP / CTR-GCN ``valid_crop_resize`` for a batch.

    Per sample with ``L`` valid frames: if ``p_interval`` has two values, ``p ~ U(p_lo, p_hi)``,
    crop length ``l = min(max(⌊L·p⌋, min_frames), L)`` and start ``b ~ U{0, …, L − l}``; if it has
    one value ``p`` (evaluation), the centre crop ``b = ⌊(1 − p)·L/2⌋``, ``l = L − 2b``. The crop is
    linearly resized to ``size`` frames (:func:`resample`; MAMP: ``size=120``). Every output frame
    is valid (samples with ``L = 0`` stay all-zero).

    Returns ``x_out`` ``(N, C, size, V[, M])``, and ``(start, length)`` of the crops when
    ``return_window``.
    """
    _check_x(x)
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size: expected an int >= 1, got {size!r}")
    lengths = _lengths(lengths, x)
    p_interval = tuple(float(p) for p in p_interval)
    if len(p_interval) not in (1, 2) or not all(0.0 < p <= 1.0 for p in p_interval) or p_interval[0] > p_interval[-1]:
        raise ValueError(f"p_interval: expected (p,) or (lo, hi) with 0 < lo <= hi <= 1, got {p_interval}")
    n = x.shape[0]
    L = lengths
    if len(p_interval) == 1:
        bias = ((1.0 - p_interval[0]) * L.to(torch.float64) / 2).floor().to(torch.int64)
        start, crop = bias, L - 2 * bias
    else:
        lo, hi = p_interval
        u_p, u_b = _uniforms(generator, x.device, ((n,), torch.float64), ((n,), torch.float64))
        p = u_p * (hi - lo) + lo
        crop = torch.minimum((L.to(torch.float64) * p).floor().to(torch.int64).clamp_min(min_frames), L)
        start = _randint_from(u_b, torch.zeros_like(L), L - crop + 1)
    out = resample(x, start, crop, size)
    return (out, (start, crop)) if return_window else out


# ---------------------------------------------------------------------------------------- PSTL
def reflect_pad_crop(x: torch.Tensor, lengths: Optional[torch.Tensor] = None, padding_ratio: int = 6,
                     generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """PSTL/AimCLR ``temperal_crop``: reflect-pad ``P = L // padding_ratio`` frames at both ends
    (``flip(x[:P]) | x | flip(x[L−P:])``) and take ``L`` frames from a random start in
    ``[0, 2P]``. Applied to each sample's valid frames (with ``L = T`` this is PSTL's code);
    padded frames stay zero.
    """
    _check_x(x)
    if isinstance(padding_ratio, bool) or not isinstance(padding_ratio, int) or padding_ratio < 1:
        raise ValueError(f"padding_ratio: expected an int >= 1, got {padding_ratio!r}")
    L = _lengths(lengths, x)
    n, c, t = x.shape[:3]
    P = L // padding_ratio
    (u,) = _uniforms(generator, x.device, (P.shape, torch.float64))
    s = _randint_from(u, torch.zeros_like(P), 2 * P + 1)
    j = s[:, None] + torch.arange(t, device=x.device)[None]  # index into the padded sequence
    src = j - P[:, None]
    src = torch.where(src < 0, -src - 1, src)  # flip of the first P frames
    src = torch.where(src >= L[:, None], 2 * L[:, None] - 1 - src, src)  # flip of the last P frames
    valid = torch.arange(t, device=x.device)[None] < L[:, None]
    src = torch.where(valid, src, torch.zeros_like(src)).clamp(0, max(t - 1, 0))
    flat = x.reshape(n, c, t, -1)
    out = flat.gather(2, src[:, None, :, None].expand(n, c, t, flat.shape[-1]))
    out = out * valid[:, None, :, None].to(x.dtype)
    return out.reshape(x.shape)


def shear(x: torch.Tensor, amplitude: float = 0.5, generator: Optional[torch.Generator] = None,
          channels: Optional[str] = None) -> torch.Tensor:
    """PSTL/AimCLR shear: ``S = [[1, s01, s02], [s10, 1, s12], [s20, s21, 1]]``, off-diagonals
    ``U(−a, a)`` per sample; ``out_d = Σ_c x_c·S[c, d]`` (PSTL's ``einsum('nctvm,cd->ndtvm')``).

    2-D layouts (``"xy"``, ``"xy+score"``): the image-plane block ``[[1, s01], [s10, 1]]`` of the
    same draws (what the 3-D shear does to ``(x, y, 0)``); a score channel is left as it is."""
    _check_x(x)
    d = spatial_dims(x, channels)
    n = x.shape[0]
    (u,) = _uniforms(generator, x.device, ((n, 6), torch.float32))
    off = (u * 2 - 1) * amplitude
    one = torch.ones_like(off[:, 0])
    if d == 3:
        S = torch.stack([one, off[:, 0], off[:, 1], off[:, 2], one, off[:, 3], off[:, 4], off[:, 5], one], 1)
    else:
        S = torch.stack([one, off[:, 0], off[:, 2], one], 1)
    S = S.reshape(n, d, d).transpose(1, 2)
    return _on_spatial(x, d, lambda s: _apply_matrix(s, S))


def random_rotate(x: torch.Tensor, main_max_deg: float = 30.0, other_max_deg: float = 1.0,
                  generator: Optional[torch.Generator] = None, channels: Optional[str] = None) -> torch.Tensor:
    """PSTL ``random_rotate``: one main axis per sample (uniform over x, y, z) rotated by
    ``U(0, 30°)``, the other two by ``U(0, 1°)``; applied in the order x, y, z with PSTL's matrices
    (``R_x = [[1,0,0],[0,c,s],[0,−s,c]]``, ``R_y = [[c,0,−s],[0,1,0],[s,0,c]]``,
    ``R_z = [[c,s,0],[−s,c,0],[0,0,1]]``, each used as ``x·Rᵀ``) — i.e. ``x' = R_z R_y R_x x``.

    2-D layouts: one rotation in the image plane, ``θ ~ U(−main_max_deg, main_max_deg)`` per
    sample (rotations about x or y would leave the plane; PYSKL's ``RandomRot`` likewise rotates
    2-D keypoints in the plane), ``(x, y) ← R(θ)·(x, y)``; a score channel is left as it is."""
    _check_x(x)
    d = spatial_dims(x, channels)
    n = x.shape[0]
    if d == 2:
        (u2,) = _uniforms(generator, x.device, ((n,), torch.float32))
        R2 = _rot2d(torch.deg2rad((u2 * 2 - 1) * main_max_deg))
        return _on_spatial(x, 2, lambda s: _apply_matrix(s, R2))
    u_main, u = _uniforms(generator, x.device, ((n,), torch.float32), ((n, 3), torch.float32))
    main = (u_main * 3).floor().clamp(max=2).to(torch.int64)
    axis = torch.arange(3, device=x.device)[None]
    deg = torch.where(axis == main[:, None], u * main_max_deg, u * other_max_deg)
    a = torch.deg2rad(deg)
    # PSTL's matrices are the transposes (inverse rotations) of the right-handed ones.
    R = _rz(-a[:, 2]) @ _ry(-a[:, 1]) @ _rx(-a[:, 0])
    return _apply_matrix(x, R)


def random_flip(x: torch.Tensor, p: float = 0.5, graph: Optional[SkeletonGraph] = None,
                generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """PSTL ``random_spatial_flip``: with probability ``p`` per sample swap left/right joint indices
    (no coordinate negation — see :func:`slim_mirror` for the geometric mirror)."""
    _check_x(x)
    p = _prob(p, "p")
    g = _graph(graph, x.shape[3])
    perm = _const(g, "flip", x.device)
    do = _uniforms(generator, x.device, ((x.shape[0],), torch.float32))[0] < p
    shape = (-1,) + (1,) * (x.dim() - 1)
    return torch.where(do.view(shape), x.index_select(3, perm), x)


def pstl_augment(x: torch.Tensor, lengths: Optional[torch.Tensor] = None, shear_amplitude: float = 0.5,
                 padding_ratio: int = 6, flip_p: float = 0.5, graph: Optional[SkeletonGraph] = None,
                 generator: Optional[torch.Generator] = None, channels: Optional[str] = None) -> torch.Tensor:
    """PSTL's view augmentation (used by ASMa): ``flip(rotate(shear(reflect_pad_crop(x))))``;
    shear and rotation act on the spatial channels of ``channels`` (see :func:`shear`)."""
    x = reflect_pad_crop(x, lengths, padding_ratio, generator=generator)
    x = shear(x, shear_amplitude, generator=generator, channels=channels)
    x = random_rotate(x, generator=generator, channels=channels)
    return random_flip(x, flip_p, graph, generator=generator)


# ---------------------------------------------------------------------------------------- SLiM
def slim_rotate(x: torch.Tensor, p: float = 0.5, vert_deg: float = 180.0, tilt_deg: float = 30.0,
                generator: Optional[torch.Generator] = None, channels: Optional[str] = None) -> torch.Tensor:
    """SLiM skeleton-aware rotation (Alg. 2): with probability ``p`` per sample,
    ``α, γ ~ U(−tilt, tilt)`` about X and Z, ``β ~ U(−vert, vert)`` about the vertical Y axis,
    ``x' = R_z(γ)·R_y(β)·R_x(α)·x`` (right-handed matrices). Preserves bone lengths.

    2-D layouts: only the in-plane part, ``(x, y) ← R(γ)·(x, y)`` with ``γ ~ U(−tilt, tilt)`` about
    the image normal (the yaw β and the tilt α leave the image plane); a score channel is left as
    it is. Same draws as the 3-D case (``γ`` is its third)."""
    _check_x(x)
    d = spatial_dims(x, channels)
    p = _prob(p, "p")
    n = x.shape[0]
    (u,) = _uniforms(generator, x.device, ((n, 4), torch.float32))
    on = (u[:, 3] < p).to(u.dtype)
    a = [torch.deg2rad((u[:, k] * 2 - 1) * lim) * on for k, lim in enumerate((tilt_deg, vert_deg, tilt_deg))]
    R = _rz(a[2]) @ _ry(a[1]) @ _rx(a[0]) if d == 3 else _rot2d(a[2])
    return _on_spatial(x, d, lambda s: _apply_matrix(s, R))


_NO_PAIRS_WARNED: set = set()


def slim_mirror(x: torch.Tensor, p: float = 0.5, graph: Optional[SkeletonGraph] = None,
                generator: Optional[torch.Generator] = None, channels: Optional[str] = None) -> torch.Tensor:
    """SLiM skeleton-aware mirroring (Alg. 3): with probability ``p`` per sample, swap left/right
    joints (``graph.flip_permutation()``) and negate the x channel (channel 0 in every layout; a
    score channel is left as it is). ``p=1`` mirrors every sample; mirroring twice is the identity.

    A graph without ``lr_pairs`` disables the mirror (``x`` is returned unchanged, with one
    warning per graph): negating x without relabelling left and right would give bodies of the
    opposite chirality, and pairs guessed from the topology alone are ambiguous (arms and legs are
    equally symmetric subtrees). Give ``lr_pairs`` in the graph file to mirror."""
    _check_x(x)
    if channels:
        spatial_dims(x, channels)
    p = _prob(p, "p")
    g = _graph(graph, x.shape[3])
    if not g.lr_pairs:
        key = _graph_key(g)
        if key not in _NO_PAIRS_WARNED:
            _NO_PAIRS_WARNED.add(key)
            warnings.warn(f"slim_mirror: graph '{g.name}' has no lr_pairs, mirroring is disabled "
                          "(add lr_pairs to the graph file to enable it)", stacklevel=2)
        return x
    perm = _const(g, "flip", x.device)
    mirrored = x.index_select(3, perm)
    mirrored = torch.cat([-mirrored[:, :1], mirrored[:, 1:]], 1)
    do = _uniforms(generator, x.device, ((x.shape[0],), torch.float32))[0] < p
    return torch.where(do.view((-1,) + (1,) * (x.dim() - 1)), mirrored, x)


def _ancestors(g: SkeletonGraph) -> Tuple[torch.Tensor, int]:
    """``A[j, k] = 1`` when bone k (parent(k)→k) lies on the path root→j; and the root."""
    par = g.parents
    root = g.center  # parents[center] == center
    A = torch.zeros(g.V, g.V)
    for j in range(g.V):
        k = j
        while k != root:
            A[j, k] = 1.0
            k = par[k]
    return A, root


def bone_scale(x: torch.Tensor, low: float = 0.85, high: float = 1.15, p: float = 0.5,
               graph: Optional[SkeletonGraph] = None, generator: Optional[torch.Generator] = None,
               return_scales: bool = False, channels: Optional[str] = None):
    """SLiM bone-aware scaling (Alg. 4): bones ``B_j = X_j − X_parent(j)`` (graph parents, root =
    the graph centre); one factor ``s ~ U(low, high)`` per (sample, body, body part) scales the bones
    whose child joint is in that part (joints in no part: 1); joints are rebuilt from the root's
    trajectory: ``X'_j = X_root + Σ_{k on root→j} s_k·B_k`` (one matmul with the ancestor matrix —
    the same as the topological-order loop). Applied with probability ``p`` per sample. Bone
    directions are preserved exactly and lengths scale by ``s ∈ [low, high]``.

    Only the spatial channels are rebuilt (``channels``; a score channel is left as it is); with
    ``channels=None`` and C other than 2 or 3, every channel is (the layout-free behaviour).

    Returns ``x'`` (and the per-joint bone scales ``(N, V, M)`` when ``return_scales``).
    """
    _check_x(x)
    d = spatial_dims(x, channels) if channels or x.shape[1] in (2, 3) else x.shape[1]
    p = _prob(p, "p")
    if not 0 < low <= high:
        raise ValueError(f"low, high: expected 0 < low <= high, got ({low}, {high})")
    g = _graph(graph, x.shape[3])
    five = x.dim() == 5
    xx = x if five else x.unsqueeze(-1)
    n, c, t, v, m = xx.shape
    parts = _const(g, "parts", x.device)
    num_parts = max(int(g.part_index().max()) + 1, 1)
    u, u_apply = _uniforms(generator, x.device, ((n, m, num_parts), torch.float32), ((n,), torch.float32))
    apply = u_apply < p
    s_part = torch.where(apply[:, None, None], low + (high - low) * u, torch.ones_like(u))
    s_joint = torch.where(parts[None, None] >= 0, s_part.gather(2, parts.clamp_min(0)[None, None].expand(n, m, v)),
                          torch.ones(n, m, v, device=x.device))  # (N, M, V)
    A, root = _const(g, "ancestors", x.device, x.dtype), g.center
    par = _const(g, "parents", x.device)
    sp = xx[:, :d]
    bones = sp - sp.index_select(3, par)  # (N, d, T, V, M); root bone = 0
    scaled = bones * s_joint.permute(0, 2, 1).to(x.dtype)[:, None, None]
    out = sp[:, :, :, root:root + 1] + torch.einsum("jk,nctkm->nctjm", A, scaled)
    out = out if d == c else torch.cat([out, xx[:, d:]], 1)
    out = out if five else out.squeeze(-1)
    s_out = s_joint.permute(0, 2, 1) if five else s_joint.permute(0, 2, 1).squeeze(-1)
    return (out, s_out) if return_scales else out


@dataclass
class Views:
    """SLiM's hierarchical temporal views of a batch.

    Attributes:
        globals: ``[G1, G2]``, each ``(N, C, global_frames, V[, M])``.
        locals: ``{frames: [crop_1, crop_2]}`` for each local resolution (32, 16, 8 by default).
        intervals: ``{"G1": (start, length), "G2": …, "L32_0": …}`` in frames of the input.
    """

    globals: List[torch.Tensor]
    locals: dict
    intervals: dict


def hierarchical_views(x: torch.Tensor, lengths: Optional[torch.Tensor] = None, global_frames: int = 64,
                       global_scale: Tuple[float, float] = (0.5, 1.0),
                       local: Sequence[Tuple[int, Tuple[float, float]]] = ((32, (0.35, 0.7)), (16, (0.15, 0.4)), (8, (0.05, 0.2))),
                       num_global: int = 2, num_local: int = 2,
                       generator: Optional[torch.Generator] = None) -> Views:
    """SLiM hierarchical temporal sampling (App. B): ``num_global`` global intervals covering a
    ``U(global_scale)`` fraction of the valid frames (length ``max(1, round(L·p))``, random start),
    each linearly resampled to ``global_frames``; for every ``(frames, (lo, hi))`` in ``local``,
    ``num_local`` crops of a ``U(lo, hi)`` fraction of G1's interval placed inside G1's interval,
    resampled to ``frames``. Every interval lies inside the valid frames.
    """
    _check_x(x)
    L = _lengths(lengths, x)
    n = x.shape[0]
    dev = x.device

    # every draw up front (the order of the per-interval draws: p, then the start)
    num_draws = 2 * (num_global + num_local * len(local))
    draws = iter(_uniforms(generator, dev, *[((n,), torch.float64)] * num_draws))

    def interval(total, lo, hi, base):
        p = next(draws) * (hi - lo) + lo
        ln = torch.minimum((total.to(torch.float64) * p).round().to(torch.int64).clamp_min(1), total.clamp_min(1))
        ln = torch.where(total > 0, ln, torch.zeros_like(ln))
        st = base + _randint_from(next(draws), torch.zeros_like(total), (total - ln).clamp_min(0) + 1)
        return st, ln

    globals_, intervals = [], {}
    for k in range(num_global):
        st, ln = interval(L, *global_scale, torch.zeros_like(L))
        intervals[f"G{k + 1}"] = (st, ln)
        globals_.append(resample(x, st, ln, global_frames))
    locals_ = {}
    g_st, g_ln = intervals["G1"]
    for frames, (lo, hi) in local:
        crops = []
        for k in range(num_local):
            st, ln = interval(g_ln, lo, hi, g_st)
            intervals[f"L{frames}_{k}"] = (st, ln)
            crops.append(resample(x, st, ln, frames))
        locals_[frames] = crops
    return Views(globals_, locals_, intervals)


# ---------------------------------------------------------------------------------------- streams
def to_bone(x: torch.Tensor, graph: Optional[SkeletonGraph] = None, channels: Optional[str] = None) -> torch.Tensor:
    """Bone stream: ``b_j = x_j − x_parent(j)`` with the graph's parents (for NTU-25 the
    2s-AGCN/CTR-GCN ``ntu_pairs``); the root's bone is zero. With ``channels="xy+score"`` the
    score channel is not differenced: ``s_j = (s_j + s_parent(j)) / 2`` (PYSKL's ``JointToBone``)."""
    _check_x(x)
    g = _graph(graph, x.shape[3])
    xp = x.index_select(3, _const(g, "parents", x.device))
    b = x - xp
    if channels == "xy+score":
        b = torch.cat([b[:, :2], (x[:, 2:3] + xp[:, 2:3]) * 0.5], dim=1)
    return b


def to_motion(x: torch.Tensor, lengths: Optional[torch.Tensor] = None, channels: Optional[str] = None) -> torch.Tensor:
    """Motion stream: ``m_t = x_{t+1} − x_t`` for ``t < L − 1``, zero from ``L − 1`` on (the last
    valid frame and the padding — no spurious jump into the zero padding). ``lengths=None`` uses
    :func:`valid_lengths`; with full-length input this is PSTL's ``get_stream('motion')``. With
    ``channels="xy+score"`` the score channel is ``(s_{t+1} + s_t) / 2`` (PYSKL's ``ToMotion``)."""
    _check_x(x)
    L = _lengths(lengths, x)
    t = x.shape[2]
    m = torch.zeros_like(x)
    m[:, :, :-1] = x[:, :, 1:] - x[:, :, :-1]
    if channels == "xy+score":
        m[:, 2:3, :-1] = (x[:, 2:3, 1:] + x[:, 2:3, :-1]) * 0.5
    keep = torch.arange(t, device=x.device)[None] < (L - 1)[:, None]
    return m * keep.view(x.shape[0], 1, t, *([1] * (x.dim() - 3))).to(x.dtype)
