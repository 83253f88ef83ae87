"""Semantic tube masking (SLiM seed 002, §3.3 and App. C, Algorithm 1), batched on the device.

On the token grid of a view (``T_b = T/P_T`` temporal blocks × ``V`` joints, ``P_J = 1``)::

    N_mask = round(r·N), r ~ U[0.5, 0.9]            (N = T_b·V tokens)
    while C < N_mask:
        P_max = min(N_mask − C, A_max)              (A_max = 0.5·N)
        G ~ U(body parts); S ⊆ G connected, w = |S|
        A ~ U(A_min, P_max)                         (A_min = 8)
        h = min(max(round(A / w), 1), T_b)          (constant tube volume: small S → long tube)
        t ~ U{0, …, T_b − h};  M[t : t+h, S] = 1;  C = ΣM

Every sample of the batch runs the loop at once (one vectorised iteration per tube).

Decisions where Algorithm 1 is silent or loose (documented for users):

- **Exact count.** ``N_mask`` is clamped to ``[⌈lo·N⌉, ⌊hi·N⌋]`` and each tube is capped so it
  can never overshoot (``w ≤ P_max`` and ``h ≤ ⌊P_max / w⌋``), so every mask has exactly
  ``N_mask`` tokens and the ratio bounds hold strictly; Algorithm 1 as printed may overshoot by
  up to ``w − 1`` tokens on its last tube. When ``P_max < A_min`` the area is drawn from
  ``U(P_max, P_max)`` (the lower bound is clamped).
- **Connected subset.** ``S`` is drawn by first drawing its size ``w`` uniformly in
  ``[1, min(|G|, P_max)]`` and then one connected induced subgraph of ``G`` of that size uniformly
  (connected subsets are enumerated once per graph; parts up to 16 joints).
- **Termination.** Tubes over already-masked tokens add nothing; after ``max_iters`` iterations
  (never reached in practice, see the tests) the remaining count is filled with single-token
  tubes (``w = h = 1``) on random unmasked part joints, so the loop always ends.
- Joints that belong to no part are never masked (``N_mask`` is capped at the maskable tokens).
"""
from __future__ import annotations

import math
from itertools import combinations
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from fastskel.graph import SkeletonGraph

__all__ = ["TubeTable", "connected_subsets", "semantic_tube_mask"]

MAX_PART_JOINTS = 16
SYNC_EVERY = 4          # iterations between host checks of "all masks complete"


def connected_subsets(graph: SkeletonGraph, joints: Sequence[int]) -> List[Tuple[int, ...]]:
    """All non-empty subsets of ``joints`` whose induced subgraph in ``graph`` is connected."""
    joints = tuple(sorted(set(int(j) for j in joints)))
    if len(joints) > MAX_PART_JOINTS:
        raise ValueError(f"graph.parts: expected parts of at most {MAX_PART_JOINTS} joints, got {len(joints)}")
    nbr: Dict[int, set] = {j: set() for j in joints}
    for i, j in graph.edges:
        if i in nbr and j in nbr:
            nbr[i].add(j)
            nbr[j].add(i)
    out = []
    for size in range(1, len(joints) + 1):
        for sub in combinations(joints, size):
            s = set(sub)
            seen, stack = {sub[0]}, [sub[0]]
            while stack:
                u = stack.pop()
                for w in nbr[u] & s:
                    if w not in seen:
                        seen.add(w)
                        stack.append(w)
            if len(seen) == size:
                out.append(sub)
    return out


class TubeTable:
    """The spatial tube candidates of a graph: every connected subset of every body part.

    ``subsets`` bool ``(S, V)``, ``part`` ``(S,)``, ``size`` ``(S,)``, ``part_size`` ``(P,)``,
    ``maskable`` bool ``(V,)`` (joints in some part).
    """

    def __init__(self, graph: SkeletonGraph, device: torch.device | str = "cpu"):
        parts = [tuple(p) for p in graph.parts.values() if len(p)]
        if not parts:
            raise ValueError(f"graph: expected body parts (SkeletonGraph.parts) for tube masking, '{graph.name}' has none")
        rows, part, size = [], [], []
        for k, joints in enumerate(parts):
            for sub in connected_subsets(graph, joints):
                r = [False] * graph.V
                for j in sub:
                    r[j] = True
                rows.append(r)
                part.append(k)
                size.append(len(sub))
        self.graph = graph
        self.subsets = torch.tensor(rows, dtype=torch.bool, device=device)
        self.part = torch.tensor(part, dtype=torch.int64, device=device)
        self.size = torch.tensor(size, dtype=torch.int64, device=device)
        self.part_size = torch.tensor([len(set(p)) for p in parts], dtype=torch.int64, device=device)
        self.maskable = self.subsets.any(0)
        self.num_maskable = sum(any(col) for col in zip(*rows))     # on the host: no device read per mask

    def to(self, device) -> "TubeTable":
        device = torch.device(device)
        if self.subsets.device == device:
            return self
        new = object.__new__(TubeTable)
        new.graph, new.num_maskable = self.graph, self.num_maskable
        for k in ("subsets", "part", "size", "part_size", "maskable"):
            setattr(new, k, getattr(self, k).to(device))
        return new


def _rand(shape, generator, device) -> torch.Tensor:
    """``U[0, 1)`` on the generator's device (the device's default RNG without one), moved to ``device``."""
    gdev = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=gdev).to(device)


def semantic_tube_mask(batch: int, time_blocks: int, table: TubeTable, ratio: Tuple[float, float] = (0.5, 0.9),
                       min_area: float = 8.0, max_area: float = 0.5, apply: Optional[torch.Tensor] = None,
                       generator: Optional[torch.Generator] = None, device: torch.device | str | None = None,
                       max_iters: int = 256, return_tubes: bool = False, stratified: bool = False,
                       sync: bool = True):
    """Semantic tube masks ``(batch, time_blocks·V)`` bool (True = masked), token order t-block
    major then joint (as :func:`fastskel.ops.patchify`).

    Args:
        batch: number of masks B.
        time_blocks: T_b (temporal tokens of the view).
        table: :class:`TubeTable` of the skeleton graph.
        ratio: ``(lo, hi)`` bounds of the masking ratio r ~ U[lo, hi] (SLiM: 0.5, 0.9).
        min_area: A_min in tokens (8).
        max_area: A_max as a fraction of N (0.5).
        apply: optional bool ``(B,)``; rows where False get an empty mask (SLiM's p = 0.5 on local views).
        generator: random source (on ``device``).
        device: where the masks are built (default: the table's).
        max_iters: tube iterations before the single-token fill (see the module docstring).
        return_tubes: also return the list of tubes, a dict of ``(B, I)`` tensors ``part``,
            ``start``, ``height``, ``active`` and ``joints`` ``(B, I, V)``, for inspection/tests.
        stratified: ratios stratified over the batch, ``r_i = lo + (hi − lo)·(π_i + u_i)/B`` with
            ``π`` a random permutation (the official SLiM / DINOv2 collate).
        sync: check on the host whether every mask is complete (early exit). ``False`` never
            synchronises: exactly ``max_iters`` tube iterations, then the single-token fill, all on
            the device (the training path; finished rows are unchanged by further iterations).
    """
    lo, hi = (float(r) for r in ratio)
    if not 0.0 <= lo <= hi <= 1.0:
        raise ValueError(f"ratio: expected (lo, hi) with 0 <= lo <= hi <= 1, got {ratio}")
    if isinstance(time_blocks, bool) or not isinstance(time_blocks, int) or time_blocks < 1:
        raise ValueError(f"time_blocks: expected an int >= 1, got {time_blocks!r}")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 0:
        raise ValueError(f"batch: expected an int >= 0, got {batch!r}")
    device = torch.device(device) if device is not None else table.subsets.device
    table = table.to(device)
    v = table.graph.V
    tb = time_blocks
    n_tok = tb * v
    maskable = table.num_maskable * tb
    b = batch
    f32 = dict(device=device, dtype=torch.float32)

    if stratified and b:
        rank = _rand(b, generator, device).argsort().argsort().float()
        r = lo + (hi - lo) * (rank + _rand(b, generator, device)) / b
    else:
        r = lo + (hi - lo) * _rand(b, generator, device)
    n_mask = torch.round(r * n_tok).clamp(math.ceil(lo * n_tok - 1e-9), math.floor(hi * n_tok + 1e-9))
    n_mask = n_mask.clamp(max=maskable)
    if apply is not None:
        if not isinstance(apply, torch.Tensor) or apply.dtype != torch.bool or apply.shape != (b,):
            raise ValueError(f"apply: expected a bool tensor of shape ({b},), got {getattr(apply, 'shape', apply)}")
        n_mask = torch.where(apply.to(device), n_mask, torch.zeros_like(n_mask))
    a_max = max_area * n_tok
    mask = torch.zeros(b, tb, v, dtype=torch.bool, device=device)
    count = torch.zeros(b, **f32)
    t_idx = torch.arange(tb, device=device)
    n_parts = table.part_size.shape[0]
    tubes: Dict[str, list] = {k: [] for k in ("part", "start", "height", "active", "joints")}

    for it in range(max_iters):
        active = count < n_mask
        if b == 0 or (sync and it % SYNC_EVERY == 0 and not bool(active.any())):   # finished rows stay unchanged
            break
        p_max = torch.minimum(n_mask - count, torch.full_like(count, a_max)).clamp(min=1.0)
        part = torch.floor(_rand(b, generator, device) * n_parts).long().clamp(max=n_parts - 1)
        w_max = torch.minimum(table.part_size[part].float(), torch.floor(p_max))
        w = torch.floor(_rand(b, generator, device) * w_max).clamp(max=w_max - 1) + 1           # (B,) in [1, w_max]
        elig = (table.part[None, :] == part[:, None]) & (table.size[None, :] == w.long()[:, None])
        score = torch.where(elig, _rand((b, elig.shape[1]), generator, device), torch.full_like(elig, -1.0, dtype=torch.float32))
        joints = table.subsets[score.argmax(1)]                                                   # (B, V)
        a_lo = torch.minimum(torch.full_like(p_max, float(min_area)), p_max)
        area = a_lo + (p_max - a_lo) * _rand(b, generator, device)
        h = torch.round(area / w).clamp(min=1, max=tb)
        h = torch.minimum(h, torch.floor(p_max / w)).clamp(min=1)
        start = torch.floor(_rand(b, generator, device) * (tb - h + 1)).clamp(max=tb - h)
        tm = (t_idx[None, :] >= start[:, None]) & (t_idx[None, :] < (start + h)[:, None])         # (B, T_b)
        tube = tm[:, :, None] & joints[:, None, :] & active[:, None, None]
        mask |= tube
        count = mask.flatten(1).sum(1).float()
        if return_tubes:
            for k, val in (("part", part), ("start", start.long()), ("height", h.long()), ("active", active),
                           ("joints", joints)):
                tubes[k].append(val)

    need = (n_mask - count).long()
    if b and (not sync or bool((need > 0).any())):     # single-token tubes on unmasked part joints
        free = ~mask & table.maskable[None, None, :]
        score = torch.where(free, _rand((b, tb, v), generator, device), torch.full((b, tb, v), -1.0, **f32))
        order = score.flatten(1).argsort(1, descending=True)
        rank = torch.empty_like(order)
        rank.scatter_(1, order, torch.arange(n_tok, device=device).expand(b, -1))
        fill = (rank < need[:, None]).view(b, tb, v)
        mask |= fill
        if return_tubes:
            part_of = table.graph.part_index()
            for bi, ti, vi in fill.nonzero().tolist():
                one = torch.zeros(b, dtype=torch.bool, device=device)
                one[bi] = True
                jv = torch.zeros(b, v, dtype=torch.bool, device=device)
                jv[bi, vi] = True
                st = torch.zeros(b, dtype=torch.long, device=device)
                st[bi] = ti
                tubes["part"].append(torch.full((b,), int(part_of[vi]), dtype=torch.long, device=device))
                tubes["start"].append(st)
                tubes["height"].append(torch.ones(b, dtype=torch.long, device=device))
                tubes["active"].append(one)
                tubes["joints"].append(jv)
    out = mask.view(b, n_tok)
    if not return_tubes:
        return out
    if tubes["part"]:
        rec = {k: torch.stack(val, 1) for k, val in tubes.items()}
    else:
        rec = {"part": torch.zeros(b, 0, dtype=torch.long, device=device),
               "start": torch.zeros(b, 0, dtype=torch.long, device=device),
               "height": torch.zeros(b, 0, dtype=torch.long, device=device),
               "active": torch.zeros(b, 0, dtype=torch.bool, device=device),
               "joints": torch.zeros(b, 0, v, dtype=torch.bool, device=device)}
    return out, rec
