"""SLiM's views and augmentations as its official code runs them (KAIST-VICLab/SLiM 2b8bb41,
``slim/data/augmentations.py`` and ``slim/data/datasets/ntu.py``), batched on the input's device.

fastskel's own implementation of that recipe (the paper's text is in
:func:`fastskel.data.transforms.hierarchical_views` and the ``slim_*`` transforms). Input: bodies
``(N, C, T, V)`` whose valid frames are ``[0, L)``; no transform synchronises with the host.

**Buffer** (``NTU._prepare_buffer``): the valid frames, followed by themselves reversed, forward
again, … until at least ``min_buffer`` = 150 frames: buffer frame ``j`` is source frame
``j mod L`` on even laps and ``L − 1 − (j mod L)`` on odd laps; ``T_buf = L·⌈150 / L⌉`` (``L`` when
``L ≥ 150``). Crops index the buffer, so short clips never read zero padding.

**Crop** (``DataAugmentationDINO._interpolated_crop``) of ``window`` frames: minimum length
``thres = max(8, min(16, window))``; the span is the valid frames ``[0, L)`` (a global view) or the
range ``[s, e)`` of the global view (a local view), replaced by the whole buffer ``[0, T_buf)``
when shorter than ``thres``. ``p ~ U(lo, hi)``, ``c = min(max(⌊span·p⌋, thres), span)``, start
``b ~ U{0, …, span − c}``; the frames:

- ``c < window``: all ``c`` frames, linearly interpolated to ``window`` (``F.interpolate(mode=
  "linear", align_corners=False)``): interpolation only ever upsamples;
- ``window ≤ c < 2·window``: ``c − window`` of the ``window + 1`` gaps (before each kept frame and
  after the last) chosen uniformly without replacement, each skipping one frame:
  ``i + #{chosen gaps ≤ i}`` (sorted random frames);
- ``c ≥ 2·window``: segment ``i`` = ``[⌊i·c/window⌋, ⌊(i+1)·c/window⌋)``, one uniform frame from each.

The crop's range ``(first, last + 1)`` (buffer frames) bounds the local crops of that global view.

**Augmentations** (``_apply_geometric`` + the per-view extras), each draw per sample:
flip (p 0.5: swap left/right joints, negate x) → bone scaling (p 0.5: three factors
``U[0.85, 1.15]``, torso / both arms / both legs) → rotation (p 0.5: ``R = Rz(γ)·Ry(β)·Rx(α)``,
α, β, γ ~ U[−0.3, 0.3] rad) → Gaussian noise σ 0.01 always (global 1) | σ 0.05 with p 0.1 then
axis drop p 0.2 (one of x, y, z zeroed; global 2) | σ 0.01 with p 0.5 (locals).

**Bone scaling differs on purpose.** The official ``random_scale`` rebuilds joints
``X'_v = X'_parent(v) + s·B_v`` in index order ``v = 1, …, 24``, but joints 2, 4 and 8 are children of
joint 20, which is rebuilt only later: they read an unset (zero) parent, so with every ``s = 1``
it moves 14 joints by up to 0.38 m. :func:`official_bone_scale` rebuilds along the tree from joint 0
(the official root): ``X'_j = X_0 + Σ_{k on 0→j} s_k·B_k``, the rebuild the official comment
("topological order") intends.
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from ..graph import SkeletonGraph
from .transforms import slim_mirror, slim_rotate

__all__ = ["OFFICIAL_LOCAL_VIEWS", "buffer_length", "official_crop", "official_bone_scale", "official_geometric",
           "gaussian_noise", "axis_drop", "official_augment", "official_test_crop"]

# (frames, fraction of the global range, crops per global view): ``local_crops_config``
OFFICIAL_LOCAL_VIEWS: Tuple[Tuple[int, Tuple[float, float], int], ...] = (
    (32, (0.35, 0.7), 1), (16, (0.15, 0.4), 2), (8, (0.05, 0.2), 1))
ROTATE_RAD = 0.3


# ---------------------------------------------------------------------------------------- helpers
def _gen_device(generator, device) -> torch.device:
    return generator.device if generator is not None else torch.device(device)


def _rand(shape, generator, device, dtype=torch.float32) -> torch.Tensor:
    """``U[0, 1)`` drawn on the generator's device (``device``'s default RNG without one), on ``device``."""
    return torch.rand(shape, generator=generator, device=_gen_device(generator, device), dtype=dtype).to(device)


def _randn(shape, generator, device, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(shape, generator=generator, device=_gen_device(generator, device), dtype=dtype).to(device)


def _check(x: torch.Tensor, name: str = "x") -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor (N, C, T, V), got {type(x).__name__}")
    if x.dim() != 4 or not x.dtype.is_floating_point:
        raise ValueError(f"{name}: expected a floating (N, C, T, V) tensor, got {x.dtype} shape {tuple(x.shape)}")


def _prob(p: float, name: str) -> float:
    if not 0.0 <= float(p) <= 1.0:
        raise ValueError(f"{name}: expected a probability in [0, 1], got {p}")
    return float(p)


# ---------------------------------------------------------------------------------------- crops
def buffer_length(lengths: torch.Tensor, min_buffer: int = 150) -> torch.Tensor:
    """``T_buf = L·⌈min_buffer / L⌉`` for ``L < min_buffer``, else ``L`` (the official ping-pong buffer)."""
    L = lengths.to(torch.int64).clamp_min(1)
    return torch.where(L < min_buffer, L * ((min_buffer + L - 1) // L), L)


def _buffer_to_frame(j: torch.Tensor, L: torch.Tensor) -> torch.Tensor:
    """Source frame of buffer frame ``j`` (forward on even laps, reversed on odd ones)."""
    L = L.clamp_min(1)
    lap, r = j // L, j % L
    return torch.where(lap % 2 == 0, r, L - 1 - r)


def official_crop(x: torch.Tensor, lengths: torch.Tensor, window: int, p_interval: Sequence[float],
                  within: Optional[Tuple[torch.Tensor, torch.Tensor]] = None, min_buffer: int = 150,
                  generator: Optional[torch.Generator] = None
                  ) -> Tuple[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
    """One official crop per sample (module docstring): ``(view (N, C, window, V), (first, end))``,
    the range in buffer frames. ``within``: the ``(first, end)`` of the global view a local crop
    lies in; ``None`` for a global view."""
    _check(x)
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"window: expected an int >= 1, got {window!r}")
    lo, hi = (float(v) for v in p_interval)
    if not 0.0 <= lo <= hi <= 1.0:
        raise ValueError(f"p_interval: expected (lo, hi) with 0 <= lo <= hi <= 1, got {tuple(p_interval)}")
    n, c, t, v = x.shape
    dev = x.device
    L = lengths.to(device=dev, dtype=torch.int64).reshape(n)
    t_buf = buffer_length(L, min_buffer)
    thres = max(8, min(16, window))
    if within is None:
        span = torch.where(L >= thres, L, t_buf)
        base = torch.zeros_like(L)
    else:
        first, end = (w.to(device=dev, dtype=torch.int64).reshape(n) for w in within)
        span, base = end - first, first
    short = span < thres
    span, base = torch.where(short, t_buf, span), torch.where(short, torch.zeros_like(base), base)

    u_p, u_b = _rand((2, n), generator, dev, torch.float64)
    u_gap = _rand((n, window + 1), generator, dev)
    u_seg = _rand((n, window), generator, dev, torch.float64)
    p = u_p * (hi - lo) + lo
    crop = torch.minimum((span.to(torch.float64) * p).floor().to(torch.int64).clamp_min(thres), span)
    room = span - crop + 1
    bias = torch.minimum((u_b * room.to(torch.float64)).floor().to(torch.int64), room - 1)

    i = torch.arange(window, device=dev)
    # c < window: positions of F.interpolate(linear, align_corners=False) over the c frames
    src = ((crop.to(torch.float32) / window)[:, None] * (i[None].to(torch.float32) + 0.5) - 0.5).clamp_min(0.0)
    up0 = torch.minimum(src.floor().to(torch.int64), (crop - 1)[:, None])
    up1 = torch.minimum(up0 + 1, (crop - 1)[:, None])
    lam = torch.where(crop[:, None] < window, src - up0.to(torch.float32), torch.zeros_like(src))
    # window <= c < 2·window: c − window of the window + 1 gaps, uniformly without replacement
    rank = u_gap.argsort(1).argsort(1)
    chosen = (rank < (crop - window)[:, None]).to(torch.int64)
    skip = i[None] + chosen.cumsum(1)[:, :window]
    # c >= 2·window: one uniform frame per segment [⌊i·c/w⌋, ⌊(i+1)·c/w⌋)
    bids = (torch.arange(window + 1, device=dev)[None] * crop[:, None]) // window
    size = bids[:, 1:] - bids[:, :-1]
    seg = bids[:, :-1] + torch.minimum((u_seg * size.to(torch.float64)).floor().to(torch.int64),
                                       (size - 1).clamp_min(0))
    cw = crop[:, None]
    idx0 = torch.where(cw < window, up0, torch.where(cw < 2 * window, skip, seg))
    idx1 = torch.where(cw < window, up1, idx0)
    off = (bias + base)[:, None]
    j0 = (idx0 + off).clamp(max=(t_buf - 1)[:, None]).clamp_min(0)
    j1 = (idx1 + off).clamp(max=(t_buf - 1)[:, None]).clamp_min(0)
    f0, f1 = _buffer_to_frame(j0, L[:, None]), _buffer_to_frame(j1, L[:, None])
    out = _gather_lerp(x, f0, f1, lam, L)
    last = torch.where(cw < window, crop[:, None] - 1, idx0[:, -1:]).squeeze(1)
    first_ = (bias + base).clamp(max=t_buf - 1) + torch.where(crop < window, 0, idx0[:, 0])
    end_ = (bias + base + last).clamp(max=t_buf - 1) + 1
    return out, (first_.clamp(max=t_buf - 1), end_)



def _gather_lerp(x: torch.Tensor, f0: torch.Tensor, f1: torch.Tensor, lam: torch.Tensor,
                 L: torch.Tensor) -> torch.Tensor:
    """``out[n, :, i] = (1 − λ)·x[n, :, f0[n, i]] + λ·x[n, :, f1[n, i]]`` (zero for empty clips),
    ``x (N, C, T, V)`` → ``(N, C, W, V)`` with ``W = f0.shape[1]``."""
    n, c, t, v = x.shape
    window = f0.shape[1]
    rows = x.transpose(1, 2).reshape(n * t, c * v)
    row = (torch.arange(n, device=x.device) * t)[:, None]
    g0 = rows.index_select(0, (row + f0.clamp(max=t - 1)).reshape(-1)).view(n, window, c * v)
    g1 = rows.index_select(0, (row + f1.clamp(max=t - 1)).reshape(-1)).view(n, window, c * v)
    w1 = lam.to(x.dtype)[..., None]
    out = (g0 * (1 - w1) + g1 * w1) * (L > 0).to(x.dtype)[:, None, None]
    return out.view(n, window, c, v).transpose(1, 2).contiguous()

def official_test_crop(x: torch.Tensor, lengths: torch.Tensor, window: int = 64, p: float = 0.95,
                       thres: int = 64, min_buffer: int = 150) -> torch.Tensor:
    """``DownstreamAugmentation._test_sampling``: ``c = min(max(⌊L·p⌋, thres), L)`` frames from
    ``b = ⌊(1 − p)·L/2⌋``; ``c ≥ window``: frames ``b + ⌊i·c/window⌋``; else the ``c`` frames from
    ``b`` (buffer frames: past ``L`` they come from the reversed lap) linearly interpolated to ``window``."""
    _check(x)
    n, c, t, v = x.shape
    dev = x.device
    L = lengths.to(device=dev, dtype=torch.int64).reshape(n)
    Lc = L.clamp_min(1)
    crop = torch.minimum((Lc.to(torch.float64) * p).floor().to(torch.int64).clamp_min(thres), Lc)
    bias = ((1.0 - p) * Lc.to(torch.float64) / 2).floor().to(torch.int64)
    i = torch.arange(window, device=dev)
    src = ((crop.to(torch.float32) / window)[:, None] * (i[None].to(torch.float32) + 0.5) - 0.5).clamp_min(0.0)
    up0 = torch.minimum(src.floor().to(torch.int64), (crop - 1)[:, None])
    up1 = torch.minimum(up0 + 1, (crop - 1)[:, None])
    small = crop[:, None] < window
    lam = torch.where(small, src - up0.to(torch.float32), torch.zeros_like(src))
    stride = (i[None] * crop[:, None]) // window
    t_buf = buffer_length(L, min_buffer)[:, None]
    j0 = (torch.where(small, up0, stride) + bias[:, None]).clamp(max=t_buf - 1)
    j1 = (torch.where(small, up1, stride) + bias[:, None]).clamp(max=t_buf - 1)
    f0, f1 = _buffer_to_frame(j0, Lc[:, None]), _buffer_to_frame(j1, Lc[:, None])
    return _gather_lerp(x, f0, f1, lam, L)


# ---------------------------------------------------------------------------------------- augmentations
_TREES: Dict[tuple, tuple] = {}


def _scale_tree(g: SkeletonGraph, root: int, device) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(parents (V,), ancestor matrix A (V, V), group (V,))`` of ``g``'s tree re-rooted at ``root``;
    ``A[j, k] = 1`` when bone ``parent(k)→k`` lies on ``root→j``; groups 0 torso, 1 arms, 2 legs (by
    the part names: "arm" / "leg" in the name, else torso)."""
    key = (g.edges, g.num_joints, root, tuple(sorted((k, tuple(p)) for k, p in g.parts.items())), str(device))
    hit = _TREES.get(key)
    if hit is None:
        V = g.num_joints
        adj: Dict[int, List[int]] = {j: [] for j in range(V)}
        for a, b in g.edges:
            adj[a].append(b)
            adj[b].append(a)
        parent, order = {root: root}, [root]
        for j in order:
            for k in adj[j]:
                if k not in parent:
                    parent[k] = j
                    order.append(k)
        par = [parent.get(j, j) for j in range(V)]     # joints off the tree keep themselves as parent
        A = torch.zeros(V, V)
        for j in range(V):
            k, seen = j, 0
            while par[k] != k and seen <= V:
                A[j, k], k, seen = 1.0, par[k], seen + 1
        group = [0] * V
        for name, joints in g.parts.items():
            gid = 1 if "arm" in name.lower() else 2 if "leg" in name.lower() else 0
            for j in joints:
                group[j] = gid
        hit = _TREES[key] = (torch.tensor(par, device=device), A.to(device), torch.tensor(group, device=device))
    return hit


def official_bone_scale(x: torch.Tensor, graph, low: float = 0.85, high: float = 1.15, p: float = 0.5,
                        root: int = 0, generator: Optional[torch.Generator] = None,
                        return_scales: bool = False):
    """Bone scaling with three factors (official ``random_scale``; exact rebuild, see the module
    docstring): with probability ``p`` per sample, ``s_torso, s_arms, s_legs ~ U[low, high]``; bone
    ``B_j = X_j − X_parent(j)`` (tree rooted at ``root``, joint 0 for NTU) scales with the factor of
    its child joint's group; ``X'_j = X_root + Σ_{k on root→j} s_k·B_k``. Returns ``x'`` (and the
    per-joint factors ``(N, V)`` when ``return_scales``)."""
    _check(x)
    p = _prob(p, "p")
    if not 0 < low <= high:
        raise ValueError(f"low, high: expected 0 < low <= high, got ({low}, {high})")
    g = SkeletonGraph.get(graph)
    g.check_num_joints(x.shape[3])
    n = x.shape[0]
    par, A, group = _scale_tree(g, root, x.device)
    u = _rand((n, 4), generator, x.device)
    s3 = torch.where((u[:, 3] < p)[:, None], low + (high - low) * u[:, :3], torch.ones_like(u[:, :3]))
    s = s3[:, group]                                                       # (N, V)
    bones = (x - x.index_select(3, par)) * s[:, None, None].to(x.dtype)
    out = x[..., root:root + 1] + torch.einsum("jk,nctk->nctj", A.to(x.dtype), bones)
    return (out, s) if return_scales else out


def gaussian_noise(x: torch.Tensor, std: float, p: float, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """With probability ``p`` per sample, ``x + N(0, std²)`` on every element (official ``gaussian_noise``)."""
    p = _prob(p, "p")
    on = _rand((x.shape[0],), generator, x.device) < p
    noise = _randn(x.shape, generator, x.device, x.dtype) * std
    return x + noise * on.view(-1, *([1] * (x.dim() - 1))).to(x.dtype)


def axis_drop(x: torch.Tensor, p: float, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """With probability ``p`` per sample, one channel (uniform over the ``C`` = 3 axes) set to zero."""
    p = _prob(p, "p")
    u = _rand((x.shape[0], 2), generator, x.device)
    axis = (u[:, 1] * x.shape[1]).floor().clamp(max=x.shape[1] - 1).to(torch.int64)
    drop = (u[:, 0] < p)[:, None] & (torch.arange(x.shape[1], device=x.device)[None] == axis[:, None])
    return x * (~drop).to(x.dtype).view(x.shape[0], x.shape[1], *([1] * (x.dim() - 2)))


def official_geometric(x: torch.Tensor, graph, p: float = 0.5, scale_range: Tuple[float, float] = (0.85, 1.15),
                       tilt_rad: float = ROTATE_RAD, vertical_rad: float = ROTATE_RAD, root: int = 0,
                       generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Official ``_apply_geometric``: flip → three-factor bone scale → rotation (X, Z ±``tilt_rad``,
    Y ±``vertical_rad``; 0.3 rad each in pretraining), each with probability ``p`` per sample
    (rotation only for 3-D input)."""
    x = slim_mirror(x, p, graph, generator=generator)
    x = official_bone_scale(x, graph, scale_range[0], scale_range[1], p, root, generator=generator)
    if x.shape[1] == 3:
        x = slim_rotate(x, p, math.degrees(vertical_rad), math.degrees(tilt_rad), generator=generator)
    return x


def official_augment(x: torch.Tensor, kind: str, graph, p: float = 0.5,
                     scale_range: Tuple[float, float] = (0.85, 1.15), tilt_rad: float = ROTATE_RAD,
                     vertical_rad: float = ROTATE_RAD, root: int = 0,
                     generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """:func:`official_geometric`, then the extras of ``kind``: ``"global1"`` noise σ 0.01 (p 1);
    ``"global2"`` noise σ 0.05 (p 0.1), axis drop (p 0.2); ``"local"`` noise σ 0.01 (p 0.5)."""
    if kind not in ("global1", "global2", "local"):
        raise ValueError(f"kind: expected 'global1', 'global2' or 'local', got {kind!r}")
    x = official_geometric(x, graph, p, scale_range, tilt_rad, vertical_rad, root, generator)
    if kind == "global1":
        return gaussian_noise(x, 0.01, 1.0, generator)
    if kind == "global2":
        return axis_drop(gaussian_noise(x, 0.05, 0.1, generator), 0.2, generator)
    return gaussian_noise(x, 0.01, 0.5, generator)
