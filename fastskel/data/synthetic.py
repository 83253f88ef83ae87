"""``SyntheticSkeletons``: the embedded default dataset — seeded, class-structured NTU-25 motion.

Every sample is produced by forward kinematics of a rest skeleton:

1. **Skeleton.** An adult NTU-25 (Kinect v2) rest pose in metres (pelvis at the origin, y up,
   +x toward the subject's right, the subject facing -z, i.e. the camera), rooted at SpineBase (0);
   bones are rest offsets child − parent. Other graphs get a deterministic procedural rest pose.
2. **Class motion.** Each even class owns 1–3 distinct *motion groups* (e.g. right-arm forward
   swing, left-leg step, bow, twist, head nod, whole-body turn); each group has a static offset
   angle, an amplitude, a frequency, a phase; a class may add whole-body translation (walking) and a
   vertical bob (jumping). ~30% of classes are two-person interactions (the second body faces the
   first and performs its own class-specific motion). Each odd class is a *tempo variant* of the
   class before it: same limbs, static pose, locomotion and partner, but in the other tempo band
   (slow 0.6–1.1 vs fast 1.9–3.2 cycles per ``T`` frames) with new phases — a linear model on raw
   coordinates barely tells such siblings apart, a temporal network does. Group angle
   ``θ(t) = off + amp·sin(2π·f·t/T + φ)`` times per-joint weights gives rotation vectors, composed
   by Rodrigues' formula; joints are placed parent-first (``p_v = p_par + G_par·(s_v·b_v)``).
3. **Per-sample variation.** Subject bone-length scale (global U[0.85, 1.15] × per-bone
   U[0.95, 1.05]), amplitude (×U[0.75, 1.25]) / offset (+N(0, 0.15)) / frequency (×U[0.9, 1.1])
   jitter, a common random phase shift (keeping the class's relative phases), small idle motion on
   every group, a view rotation (yaw U[-45°, 45°], pitch N(0, 5°)), a position in front of the
   camera (z ≈ 2.3–3.8 m), sensor noise N(0, 8 mm), a valid length U[T/2, T] with zero padding
   after it. By default each sample is then translated like CTR-GCN's ``seq_translation`` (body 0's
   SpineMid at frame 0 = origin).

Learnability (pinned by tests/test_data_synthetic.py): with 10 classes a ridge probe on the raw
flattened input reaches ~0.55–0.6 (chance 0.1); a 4-block ST-GCN reaches > 0.95 on 6 classes
within 10 epochs of 240 samples.

Class prototypes depend only on ``(num_classes, graph, class_seed)``; samples on ``seed``. So two
datasets with different ``seed`` share classes (train on one, test on the other), and
``split="train" | "test"`` gives a stratified partition of one generated set.

Limitations: the motion is a sum of sinusoids on a rigid tree; there is no ground contact, no
self-collision and no joint-limit model, and the hand/thumb joints follow the wrist rigidly.
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

from ..graph import SkeletonGraph
from .dataset import SkeletonDataset

__all__ = ["SyntheticSkeletons", "ntu25_rest_pose"]

_X, _Y, _Z = (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)

# Adult rest pose (m): +x subject's right, +y up, -z forward (toward the camera).
_NTU_REST_RIGHT = {
    8: (0.18, 0.49, 0.02), 9: (0.22, 0.21, 0.03), 10: (0.23, -0.04, 0.0), 11: (0.23, -0.12, -0.01),
    24: (0.20, -0.13, -0.05), 23: (0.23, -0.20, -0.02),
    16: (0.09, -0.03, 0.0), 17: (0.10, -0.45, -0.02), 18: (0.10, -0.86, 0.02), 19: (0.10, -0.92, -0.10),
}
_NTU_MIRROR = {8: 4, 9: 5, 10: 6, 11: 7, 24: 22, 23: 21, 16: 12, 17: 13, 18: 14, 19: 15}
_NTU_REST_CENTER = {0: (0.0, 0.0, 0.0), 1: (0.0, 0.30, 0.01), 20: (0.0, 0.52, 0.0),
                    2: (0.0, 0.60, -0.01), 3: (0.0, 0.76, -0.02)}

# Motion groups for NTU-25: name -> [(joint whose subtree rotates, axis, weight)].
_NTU_GROUPS: Dict[str, List[Tuple[int, Tuple[float, float, float], float]]] = {
    "l_arm_fwd": [(4, _X, 1.0), (5, _X, 0.6)],
    "r_arm_fwd": [(8, _X, 1.0), (9, _X, 0.6)],
    "l_arm_side": [(4, _Z, -1.0), (5, _X, 0.5)],
    "r_arm_side": [(8, _Z, 1.0), (9, _X, 0.5)],
    "l_elbow": [(5, _X, 1.2)],
    "r_elbow": [(9, _X, 1.2)],
    "l_leg": [(12, _X, 0.8), (13, _X, -1.0)],
    "r_leg": [(16, _X, 0.8), (17, _X, -1.0)],
    "bow": [(1, _X, 0.7), (2, _X, 0.3)],
    "twist": [(1, _Y, 0.6)],
    "side_bend": [(1, _Z, 0.5)],
    "head": [(2, _X, 0.6)],
    "turn": [(0, _Y, 1.0)],
}


def ntu25_rest_pose() -> np.ndarray:
    """The adult NTU-25 rest pose ``(25, 3)`` in metres used by :class:`SyntheticSkeletons`."""
    p = np.zeros((25, 3))
    for j, v in _NTU_REST_CENTER.items():
        p[j] = v
    for j, v in _NTU_REST_RIGHT.items():
        p[j] = v
        p[_NTU_MIRROR[j]] = (-v[0], v[1], v[2])
    return p


def _tree(graph: SkeletonGraph, root: int) -> Tuple[List[int], List[int]]:
    """(parent per joint, BFS order) of the graph's spanning tree from ``root``."""
    nbrs: Dict[int, List[int]] = {v: [] for v in range(graph.V)}
    for i, j in graph.edges:
        nbrs[i].append(j)
        nbrs[j].append(i)
    par, order = [-1] * graph.V, [root]
    par[root] = root
    k = 0
    while k < len(order):
        u = order[k]
        k += 1
        for w in sorted(nbrs[u]):
            if par[w] < 0:
                par[w] = u
                order.append(w)
    return par, order


def _procedural_rest(graph: SkeletonGraph, par: List[int], order: List[int]) -> np.ndarray:
    """A deterministic rest pose for any tree: children fan out from their parent's direction."""
    rng = np.random.default_rng(12345 + graph.V)
    p = np.zeros((graph.V, 3))
    direction = {order[0]: np.array([0.0, 1.0, 0.0])}
    for v in order[1:]:
        d = direction[par[v]] + rng.normal(0.0, 0.6, 3)
        d /= np.linalg.norm(d)
        direction[v] = d
        p[v] = p[par[v]] + d * rng.uniform(0.12, 0.3)
    return p


def _rodrigues(r: torch.Tensor) -> torch.Tensor:
    """Rotation matrices ``(..., 3, 3)`` of rotation vectors ``r`` ``(..., 3)``:
    ``R = cos θ·I + sin θ·[k]ₓ + (1 − cos θ)·k kᵀ``."""
    theta = r.norm(dim=-1, keepdim=True)
    k = r / theta.clamp_min(1e-12)
    kx, ky, kz = k.unbind(-1)
    zero = torch.zeros_like(kx)
    K = torch.stack([zero, -kz, ky, kz, zero, -kx, -ky, kx, zero], -1).reshape(*r.shape[:-1], 3, 3)
    s, c = torch.sin(theta)[..., None], torch.cos(theta)[..., None]
    eye = torch.eye(3, dtype=r.dtype)
    return c * eye + s * K + (1 - c) * (k[..., :, None] * k[..., None, :])


def _rot_y(a: torch.Tensor) -> torch.Tensor:
    c, s = torch.cos(a), torch.sin(a)
    o, z = torch.ones_like(a), torch.zeros_like(a)
    return torch.stack([c, z, s, z, o, z, -s, z, c], -1).reshape(*a.shape, 3, 3)


def _rot_x(a: torch.Tensor) -> torch.Tensor:
    c, s = torch.cos(a), torch.sin(a)
    o, z = torch.ones_like(a), torch.zeros_like(a)
    return torch.stack([o, z, z, z, c, -s, z, s, c], -1).reshape(*a.shape, 3, 3)


class SyntheticSkeletons(SkeletonDataset):
    """Seeded, class-structured synthetic skeleton actions (see the module docstring).

    Args:
        num_classes: number of action classes K (labels ``0..K-1``, balanced).
        num_samples: samples generated (before ``split``).
        T: padded frame count of ``x``; valid lengths are drawn in ``[min_length, T]``.
        graph: a :class:`SkeletonGraph` or name; ``None`` = NTU-25.
        bodies: M, 1 or 2 (interaction classes fill body 2; others leave it zero).
        seed: sample randomness (subjects, views, noise, lengths, jitter).
        class_seed: class prototypes (which groups move, how); shared across ``seed``.
        split: ``"all"`` (default), ``"train"`` or ``"test"``: a stratified partition of the
            generated set, the last ``round(test_fraction·n_c)`` samples of each class being "test".
        test_fraction: fraction of each class that ``split="test"`` keeps.
        min_length: shortest valid length; default ``max(T // 2, 1)``.
        noise: sensor noise standard deviation in metres.
        center: translate every sample so that body 0's SpineMid (joint 1) in the first frame is the
            origin, as CTR-GCN's preprocessing (``seq_translation``) leaves NTU; ``False`` keeps camera
            coordinates (subject about 3 m in front of the camera).

        channels: ``"xyz"`` (camera metres), ``"xy"`` (pinhole projection ``(x/z, y/z)`` before
            centring, like a pose estimator's image coordinates) or ``"xy+score"`` (plus a
            confidence channel in [0.5, 1]; zero on padding).

    Attributes ``x`` float32 ``(N, C, T, V, M)`` (C = 3, 2 or 3), ``y`` int64, ``lengths`` int64,
    ``subjects`` int64 (a subject id per sample), ``class_groups`` (the motion groups per class);
    ``ds[i]`` → ``(x, length, label)``.
    """

    def __init__(self, num_classes: int = 10, num_samples: int = 500, T: int = 96,
                 graph: Optional[SkeletonGraph | str] = None, bodies: int = 2, seed: int = 0, *,
                 class_seed: int = 0, split: str = "all", test_fraction: float = 0.2,
                 min_length: Optional[int] = None, noise: float = 0.008, center: bool = True,
                 channels: str = "xyz"):
        for name, v, lo in (("num_classes", num_classes, 2), ("num_samples", num_samples, 1), ("T", T, 2)):
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ValueError(f"{name}: expected an int >= {lo}, got {v!r}")
        if bodies not in (1, 2):
            raise ValueError(f"bodies: expected 1 or 2, got {bodies!r}")
        if split not in ("all", "train", "test"):
            raise ValueError(f"split: expected 'all', 'train' or 'test', got {split!r}")
        if not 0.0 <= test_fraction <= 1.0:
            raise ValueError(f"test_fraction: expected a value in [0, 1], got {test_fraction}")
        min_length = max(T // 2, 1) if min_length is None else min_length
        if not 1 <= min_length <= T:
            raise ValueError(f"min_length: expected an int in [1, T={T}], got {min_length}")
        if channels not in ("xyz", "xy", "xy+score"):
            raise ValueError(f"channels: expected 'xyz', 'xy' or 'xy+score', got {channels!r}")
        self.channels = channels
        self.graph = SkeletonGraph.ntu25() if graph is None else SkeletonGraph.get(graph)
        self.num_classes_, self.T, self.bodies, self.seed, self.class_seed = num_classes, T, bodies, seed, class_seed
        self._setup_skeleton()
        self._make_classes(num_classes, class_seed)
        x, y, lengths, subjects = self._generate(num_samples, T, bodies, seed, min_length, noise, center)
        keep = self._split_index(y, split, test_fraction, num_classes)
        super().__init__(x[keep], y[keep], lengths[keep],
                         names=[f"synthetic_s{seed}_{i:06d}" for i in keep.tolist()])
        self.subjects = subjects[keep]
        self.split = split

    # ------------------------------------------------------------------ skeleton and classes
    def _setup_skeleton(self) -> None:
        g = self.graph
        is_ntu = g.V == 25 and set(map(tuple, map(sorted, g.edges))) == set(
            map(tuple, map(sorted, SkeletonGraph.ntu25().edges)))
        root = 0 if is_ntu else g.center
        self._par, self._order = _tree(g, root)
        rest = ntu25_rest_pose() if is_ntu else _procedural_rest(g, self._par, self._order)
        self._offsets = torch.tensor(rest - rest[self._par], dtype=torch.float64)  # root offset = 0
        self._offsets[root] = 0.0
        if is_ntu:
            self._groups = {k: list(v) for k, v in _NTU_GROUPS.items()}
        else:  # one group per non-root joint that has children, about a fixed pseudo-random axis
            rng = np.random.default_rng(777 + g.V)
            has_child = {p for v, p in enumerate(self._par) if v != root}
            self._groups = {}
            for v in sorted(has_child):
                a = rng.normal(size=3)
                self._groups[f"j{v}"] = [(v, tuple((a / np.linalg.norm(a)).tolist()), 1.0)]
            self._groups["turn"] = [(root, _Y, 1.0)]
        self._group_names = list(self._groups)
        G, V = len(self._group_names), g.V
        w = torch.zeros(G, V, 3, dtype=torch.float64)  # rotation vector per unit group angle
        for gi, name in enumerate(self._group_names):
            for j, axis, weight in self._groups[name]:
                w[gi, j] += weight * torch.tensor(axis, dtype=torch.float64)
        self._group_w = w
        self._actuated = [v for v in range(V) if bool(w[:, v].abs().sum() > 0)]

    def _make_classes(self, K: int, class_seed: int) -> None:
        gen = torch.Generator().manual_seed(10_007 * class_seed + 17)
        G = len(self._group_names)
        rand = lambda *s: torch.rand(*s, generator=gen, dtype=torch.float64)
        seen = set()
        cls = {k: torch.zeros(K, G, dtype=torch.float64) for k in ("off", "amp", "freq", "phase")}
        partner = {k: torch.zeros(K, G, dtype=torch.float64) for k in ("off", "amp", "freq", "phase")}
        trans = torch.zeros(K, 3, dtype=torch.float64)
        bob = torch.zeros(K, 2, dtype=torch.float64)  # amplitude (m), frequency
        interact = torch.zeros(K, dtype=torch.bool)
        groups: List[List[str]] = []

        def draw_groups():
            for _ in range(1000):
                k = int(torch.randint(1, min(3, G) + 1, (1,), generator=gen))
                sel = tuple(sorted(torch.randperm(G, generator=gen)[:k].tolist()))
                if sel not in seen or len(seen) >= 2 ** G - 1:
                    return sel
            return sel

        bands = ((0.6, 1.1), (1.9, 3.2))  # slow / fast tempo, cycles per T frames
        tempo = torch.zeros(K, dtype=torch.long)

        def fill(dst, c, sel):
            lo, hi = bands[int(tempo[c])]
            for gi in sel:
                dst["off"][c, gi] = (rand(1) * 0.7 - 0.35).item()
                dst["amp"][c, gi] = (0.3 + 0.7 * rand(1)).item()
                dst["freq"][c, gi] = (lo + (hi - lo) * rand(1)).item()
                dst["phase"][c, gi] = (2 * math.pi * rand(1)).item()

        for c in range(K):
            if c % 2 == 1:
                # the odd class is a tempo variant of its even sibling: same limbs, static pose,
                # locomotion and partner, a clearly different speed and new phases. A linear model
                # on raw coordinates barely separates the two; a temporal conv net does.
                groups.append(list(groups[c - 1]))
                tempo[c] = 1 - tempo[c - 1]
                lo, hi = bands[int(tempo[c])]
                for dst in (cls, partner):
                    moving = dst["amp"][c - 1] > 0
                    dst["off"][c], dst["amp"][c] = dst["off"][c - 1], dst["amp"][c - 1]
                    dst["freq"][c] = (lo + (hi - lo) * rand(G)) * moving
                    dst["phase"][c] = 2 * math.pi * rand(G) * moving
                trans[c], bob[c], interact[c] = trans[c - 1], bob[c - 1], interact[c - 1]
                continue
            tempo[c] = int(rand(1).item() < 0.5)
            sel = draw_groups()
            seen.add(sel)
            groups.append([self._group_names[i] for i in sel])
            fill(cls, c, sel)
            if rand(1).item() < 0.35:  # locomotion in the body frame (m over the sequence)
                trans[c] = torch.tensor([rand(1).item() * 1.6 - 0.8, 0.0, rand(1).item() * 1.6 - 0.8])
            if rand(1).item() < 0.2:
                bob[c] = torch.tensor([0.05 + 0.1 * rand(1).item(), 1.0 + 3.0 * rand(1).item()])
            if rand(1).item() < 0.3:
                interact[c] = True
                k = int(torch.randint(1, min(2, G) + 1, (1,), generator=gen))
                fill(partner, c, torch.randperm(G, generator=gen)[:k].tolist())
        self._cls, self._partner, self._trans, self._bob, self._interact = cls, partner, trans, bob, interact
        self.class_groups = groups
        self.interaction_classes = interact.nonzero().flatten().tolist()

    # ------------------------------------------------------------------ generation
    def _pose(self, angles: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """Forward kinematics: group angles ``(B, T, G)``, bone scales ``(B, V)`` → ``(B, T, V, 3)``."""
        B, T, _ = angles.shape
        V = self.graph.V
        actuated = self._actuated
        rotvec = torch.einsum("btg,gac->btac", angles, self._group_w[:, actuated].to(angles.dtype))
        R_act = _rodrigues(rotvec)  # (B, T, A, 3, 3) local rotation of each actuated joint's subtree
        R = {v: R_act[:, :, a] for a, v in enumerate(actuated)}
        pos = [None] * V
        glob = [None] * V
        root = self._order[0]
        glob[root] = R.get(root)
        pos[root] = torch.zeros(B, T, 3, dtype=angles.dtype)
        bones = (self._offsets[None] * scale[..., None]).to(angles.dtype)  # (B, V, 3)
        for v in self._order[1:]:
            p = self._par[v]
            g = glob[p]
            step = bones[:, None, v] if g is None else (g * bones[:, None, None, v]).sum(-1)
            pos[v] = pos[p] + step
            rv = R.get(v)
            glob[v] = g if rv is None else (rv if g is None else g @ rv)
        return torch.stack(pos, 2)

    def _angles(self, prm: Dict[str, torch.Tensor], y: torch.Tensor, u: torch.Tensor,
                gen: torch.Generator) -> torch.Tensor:
        """Per-sample jittered group angles ``(B, T, G)`` at normalised times ``u`` ``(B, T)``."""
        B, G = y.shape[0], len(self._group_names)
        r = lambda: torch.rand(B, G, generator=gen, dtype=torch.float32)
        n = lambda: torch.randn(B, G, generator=gen, dtype=torch.float32)
        prm = {k: v.float() for k, v in prm.items()}
        off = prm["off"][y] + 0.15 * n() * (prm["amp"][y] > 0)
        amp = prm["amp"][y] * (0.75 + 0.5 * r())
        freq = prm["freq"][y] * (0.9 + 0.2 * r())
        # a common random phase shift keeps the class's relative phases between groups
        shift = 2 * math.pi * torch.rand(B, 1, generator=gen, dtype=torch.float32)
        phase = prm["phase"][y] + shift + 0.3 * n()
        idle_amp, idle_f, idle_p = 0.05 * r(), 0.3 + 1.5 * r(), 2 * math.pi * r()
        w = 2 * math.pi * u[..., None]
        return (off[:, None] + amp[:, None] * torch.sin(w * freq[:, None] + phase[:, None])
                + idle_amp[:, None] * torch.sin(w * idle_f[:, None] + idle_p[:, None]))

    def _generate(self, N: int, T: int, M: int, seed: int, min_length: int, noise: float, center: bool):
        gen = torch.Generator().manual_seed(seed)
        K, V = self.num_classes_, self.graph.V
        y = torch.arange(N) % K
        y = y[torch.randperm(N, generator=gen)]
        lengths = torch.randint(min_length, T + 1, (N,), generator=gen)
        t = torch.arange(T, dtype=torch.float32)
        u = (t / T)[None].expand(N, T)  # (N, T) time in units of T frames: tempo is per frame
        subjects = torch.randint(0, 40, (N,), generator=gen)
        d = lambda *s: torch.rand(*s, generator=gen, dtype=torch.float32)

        out = torch.zeros(N, T, V, 3, M, dtype=torch.float32)
        inter = self._interact[y]
        for body in range(M):
            prm = self._cls if body == 0 else self._partner
            scale = (0.85 + 0.3 * d(N, 1)) * (0.95 + 0.1 * d(N, V))
            angles = self._angles(prm, y, u, gen)
            who = torch.arange(N) if body == 0 else inter.nonzero().flatten()  # body 2 only in interactions
            pose = torch.zeros(N, T, V, 3, dtype=torch.float32)
            if who.numel():
                pose[who] = self._pose(angles[who], scale[who])
            if body == 0:
                tr = self._trans.float()[y][:, None, :] * u[..., None] * (0.8 + 0.4 * d(N, 1, 1))
                bob_a, bob_f = self._bob.float()[y].unbind(-1)
                tr = tr.clone()
                tr[..., 1] += bob_a[:, None] * torch.sin(2 * math.pi * bob_f[:, None] * u).abs()
                pose = pose + tr[:, :, None, :]
            # interactions: body 0 at x=-0.55 facing +x, body 1 at x=+0.55 facing -x
            face = torch.where(inter, torch.full((N,), -math.pi / 2 if body == 0 else math.pi / 2, dtype=torch.float32),
                               torch.zeros(N, dtype=torch.float32))
            shift = torch.zeros(N, 3, dtype=torch.float32)
            shift[:, 0] = torch.where(inter, torch.tensor(-0.55 if body == 0 else 0.55, dtype=torch.float32), torch.tensor(0.0, dtype=torch.float32))
            pose = torch.einsum("nij,ntvj->ntvi", _rot_y(face), pose) + shift[:, None, None, :]
            out[..., body] = pose
        # camera: view rotation and placement, identical for both bodies of a sample
        yaw = (d(N) * 2 - 1) * math.radians(45)
        pitch = torch.randn(N, generator=gen, dtype=torch.float32) * math.radians(5)
        R = _rot_x(pitch) @ _rot_y(yaw)
        place = torch.stack([d(N) * 1.2 - 0.6, d(N) * 0.4 - 0.2, 2.3 + 1.5 * d(N)], -1)
        out = torch.einsum("nij,ntvjm->ntvim", R, out) + place[:, None, None, :, None]
        out = out + noise * torch.randn(out.shape, generator=gen, dtype=torch.float32)
        present = torch.ones(N, M, dtype=torch.bool)
        if M == 2:
            present[:, 1] = inter
        valid = torch.arange(T)[None, :] < lengths[:, None]  # (N, T)
        keep = valid[:, :, None, None, None] & present[:, None, None, None, :]
        if self.channels != "xyz":  # pinhole projection onto the image plane z = 1 (focal 1)
            out = out[..., :2, :] / out[..., 2:3, :].clamp_min(0.5)
        if center:  # CTR-GCN seq_translation: body 0's joint 1 (SpineMid) at frame 0 is the origin
            c = min(1, V - 1)
            out = out - out[:, :1, c:c + 1, :, :1]
        if self.channels == "xy+score":  # a detector-like confidence in [0.5, 1] per joint and frame
            out = torch.cat([out, 0.5 + 0.5 * d(N, T, V, 1, M)], 3)
        out = out * keep
        x = out.permute(0, 3, 1, 2, 4).contiguous()  # (N, 3, T, V, M)
        return x, y, lengths, subjects

    @staticmethod
    def _split_index(y: torch.Tensor, split: str, frac: float, K: int) -> torch.Tensor:
        if split == "all":
            return torch.arange(y.shape[0])
        is_test = torch.zeros(y.shape[0], dtype=torch.bool)
        for c in range(K):
            idx = (y == c).nonzero().flatten()
            n_test = int(round(frac * idx.numel()))
            if n_test:
                is_test[idx[idx.numel() - n_test:]] = True
        return (is_test if split == "test" else ~is_test).nonzero().flatten()

    @property
    def num_classes(self) -> int:
        return self.num_classes_

    def __repr__(self) -> str:
        return (f"SyntheticSkeletons(x={tuple(self.x.shape)}, classes={self.num_classes_}, "
                f"graph={self.graph.name!r}, seed={self.seed}, split={self.split!r})")
