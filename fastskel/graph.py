"""Skeleton topologies: joints, bones, degrees, left/right pairs, body parts and st-gcn partitions.

``SkeletonGraph.ntu25()`` reproduces st-gcn's ``ntu-rgb+d`` layout exactly (docs/design.md §3). The
``partition`` strategies follow st-gcn's ``Graph`` class (``max_hop=1``, ``dilation=1``),
including its quirk that hop distances beyond ``max_hop`` are infinite, which is why the NTU-25
"spatial" subsets hold 25 / 40 / 8 non-zeros rather than 25 / 24 / 24.

Nothing here hard-codes V=25: any rig is ``SkeletonGraph(edges, center)``, a mapping
(:meth:`SkeletonGraph.from_dict`) or a YAML/JSON file (:meth:`SkeletonGraph.from_file`). The
built-ins beyond NTU-25 and OpenPose-18 (``openpose25``, ``coco17``, ``mediapipe33``, ``h36m17``)
are data files in ``fastskel/graphs/*.yaml``.
"""
from __future__ import annotations

import json
import os
import warnings
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Tuple

import numpy as np
import torch

__all__ = ["SkeletonGraph"]

_NTU25_EDGES = (
    (0, 1), (1, 20), (2, 20), (3, 2), (4, 20), (5, 4), (6, 5), (7, 6), (8, 20), (9, 8), (10, 9),
    (11, 10), (12, 0), (13, 12), (14, 13), (15, 14), (16, 0), (17, 16), (18, 17), (19, 18),
    (21, 22), (22, 7), (23, 24), (24, 11),
)
_NTU25_LR = ((4, 8), (5, 9), (6, 10), (7, 11), (12, 16), (13, 17), (14, 18), (15, 19), (21, 23), (22, 24))
_NTU25_PARTS = {
    "torso": (0, 1, 20, 2, 3),
    "left_arm": (4, 5, 6, 7, 21, 22),
    "right_arm": (8, 9, 10, 11, 23, 24),
    "left_leg": (12, 13, 14, 15),
    "right_leg": (16, 17, 18, 19),
}

# st-gcn's "openpose" layout (Kinetics-Skeleton, 18 joints), centre = neck (1).
_OPENPOSE18_EDGES = (
    (4, 3), (3, 2), (7, 6), (6, 5), (13, 12), (12, 11), (10, 9), (9, 8), (11, 5), (8, 2), (5, 1),
    (2, 1), (0, 1), (15, 0), (14, 0), (17, 15), (16, 14),
)
_OPENPOSE18_LR = ((2, 5), (3, 6), (4, 7), (8, 11), (9, 12), (10, 13), (14, 15), (16, 17))
_OPENPOSE18_PARTS = {
    "torso": (0, 1, 14, 15, 16, 17),
    "right_arm": (2, 3, 4),
    "left_arm": (5, 6, 7),
    "right_leg": (8, 9, 10),
    "left_leg": (11, 12, 13),
}


_GRAPH_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "graphs")


def _data_graph_names() -> Tuple[str, ...]:
    try:
        return tuple(sorted(f[:-5] for f in os.listdir(_GRAPH_DIR) if f.endswith(".yaml")))
    except OSError:
        return ()


@dataclass(frozen=True, eq=False)
class SkeletonGraph:
    """An undirected skeleton tree (or any connected graph) over ``num_joints`` joints.

    Args:
        edges: undirected joint pairs ``(i, j)``, 0-based, no self loops.
        center: the root joint (st-gcn's ``center``), used for the "spatial" partition and bones.
        num_joints: V; defaults to ``max(edge index) + 1``.
        lr_pairs: (left, right) joint pairs swapped by a mirror.
        parts: body-part name -> joints (SLiM's semantic tube masking, bone-aware scaling).
        name: a label for messages.
    """

    edges: Tuple[Tuple[int, int], ...]
    center: int
    num_joints: int = -1
    lr_pairs: Tuple[Tuple[int, int], ...] = ()
    parts: Mapping[str, Tuple[int, ...]] = field(default_factory=dict)
    name: str = "custom"

    def __post_init__(self):
        edges = tuple((int(i), int(j)) for i, j in self.edges)
        if not edges:
            raise ValueError("edges: expected at least one (i, j) pair, got none")
        v = self.num_joints if self.num_joints > 0 else 1 + max(max(e) for e in edges)
        for i, j in edges:
            if i == j or not (0 <= i < v and 0 <= j < v):
                raise ValueError(f"edges: expected distinct joints in [0, {v}), got ({i}, {j})")
        if not 0 <= self.center < v:
            raise ValueError(f"center: expected a joint in [0, {v}), got {self.center}")
        object.__setattr__(self, "edges", edges)
        object.__setattr__(self, "num_joints", v)
        object.__setattr__(self, "lr_pairs", tuple((int(a), int(b)) for a, b in self.lr_pairs))
        object.__setattr__(self, "parts", {k: tuple(int(j) for j in p) for k, p in dict(self.parts).items()})
        if np.isinf(self.hop_distance(max_hop=v)).any():
            raise ValueError(f"edges: the graph '{self.name}' is not connected")

    # ----------------------------------------------------------------- built-in topologies
    @classmethod
    def ntu25(cls) -> "SkeletonGraph":
        """NTU RGB+D (Kinect v2) 25 joints, st-gcn's ``ntu-rgb+d`` layout, centre 20 (spine)."""
        return cls(_NTU25_EDGES, 20, 25, _NTU25_LR, _NTU25_PARTS, "ntu25")

    @classmethod
    def openpose18(cls) -> "SkeletonGraph":
        """Kinetics-Skeleton / OpenPose 18 joints, st-gcn's ``openpose`` layout, centre 1 (neck)."""
        return cls(_OPENPOSE18_EDGES, 1, 18, _OPENPOSE18_LR, _OPENPOSE18_PARTS, "openpose18")

    @classmethod
    def builtin_names(cls) -> Tuple[str, ...]:
        """Names accepted by :meth:`get` (aliases included)."""
        return tuple(sorted({"ntu25", "ntu", "ntu-rgb+d", "openpose18", "openpose", "body25"}
                            | set(_data_graph_names())))

    @classmethod
    def get(cls, name: "str | SkeletonGraph | Mapping[str, Any]") -> "SkeletonGraph":
        """The graph itself, a built-in by name, a mapping (:meth:`from_dict`) or a YAML/JSON file."""
        if isinstance(name, SkeletonGraph):
            return name
        if isinstance(name, Mapping):
            return cls.from_dict(name)
        if isinstance(name, os.PathLike):
            return cls.from_file(name)
        if not isinstance(name, str):
            raise TypeError(f"graph: expected a name, a mapping, a file or a SkeletonGraph, got {type(name).__name__}")
        builders = {"ntu25": cls.ntu25, "ntu": cls.ntu25, "ntu-rgb+d": cls.ntu25,
                    "openpose18": cls.openpose18, "openpose": cls.openpose18}
        if name in builders:
            return builders[name]()
        alias = {"body25": "openpose25"}.get(name, name)
        if alias in _data_graph_names():
            return cls.from_file(os.path.join(_GRAPH_DIR, alias + ".yaml"))
        if name.lower().endswith((".yaml", ".yml", ".json")) or os.path.isfile(name):
            return cls.from_file(name)
        raise ValueError(f"graph: expected one of {list(cls.builtin_names())} or a .yaml/.json file, got {name!r}")

    @classmethod
    def for_joints(cls, num_joints: int) -> "SkeletonGraph":
        """The built-in graph with ``num_joints`` joints (25 → NTU, 18 → OpenPose, 17 → COCO, 33 → MediaPipe)."""
        by_v = {25: "ntu25", 18: "openpose18", 17: "coco17", 33: "mediapipe33"}
        if num_joints in by_v:
            return cls.get(by_v[num_joints])
        raise ValueError(f"graph: no built-in graph has V={num_joints} joints; give one with --graph FILE.yaml "
                         f"(or graph= a SkeletonGraph / {{edges: [...], center: ...}} mapping)")

    # ----------------------------------------------------------------- graphs as data
    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str = "graph") -> "SkeletonGraph":
        """A graph from a mapping with ``edges`` and ``center`` (or ``root``); optional ``num_joints``,
        ``parts`` (name -> joints), ``lr_pairs`` (alias ``left_right``), ``name``.

        Missing ``parts`` default to the subtrees hanging off the centre (see :meth:`default_parts`);
        missing ``lr_pairs`` leave mirroring without pairs (the transforms warn once).
        """
        if not isinstance(d, Mapping):
            raise ValueError(f"{source}: expected a mapping with 'edges' and 'center', got {type(d).__name__}")
        known = {"edges", "center", "root", "num_joints", "parts", "lr_pairs", "left_right", "name"}
        extra = sorted(set(d) - known)
        if extra:
            raise ValueError(f"{source}: unknown field(s) {extra}; expected some of {sorted(known)}")
        if "edges" not in d:
            raise ValueError(f"{source}: missing field 'edges' (a list of [i, j] joint pairs)")
        center = d.get("center", d.get("root"))
        if center is None:
            raise ValueError(f"{source}: missing field 'center' (the root joint used for centring and bones)")
        try:
            edges = [(int(i), int(j)) for i, j in d["edges"]]
            lr = [(int(a), int(b)) for a, b in (d.get("lr_pairs", d.get("left_right")) or ())]
            parts = {str(k): tuple(int(j) for j in v) for k, v in dict(d.get("parts") or {}).items()}
            center, v = int(center), int(d.get("num_joints", -1))
        except (TypeError, ValueError) as e:
            raise ValueError(f"{source}: malformed field ({e}); edges/lr_pairs expect [i, j] pairs, parts "
                             "name -> joint list, center/num_joints integers") from None
        g = cls(tuple(edges), center, v, tuple(lr), parts, str(d.get("name", "custom")))
        if not g.parts:
            object.__setattr__(g, "parts", g.default_parts())
        for pname, joints in g.parts.items():
            bad = [j for j in joints if not 0 <= j < g.V]
            if bad:
                raise ValueError(f"{source}: parts.{pname}: joints {bad} are outside [0, {g.V})")
        for a, b in g.lr_pairs:
            if not (0 <= a < g.V and 0 <= b < g.V) or a == b:
                raise ValueError(f"{source}: lr_pairs: expected distinct joints in [0, {g.V}), got ({a}, {b})")
        return g

    @classmethod
    def from_file(cls, path: "str | os.PathLike") -> "SkeletonGraph":
        """A graph from a YAML (``.yaml``/``.yml``) or JSON file holding the mapping of :meth:`from_dict`."""
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise ValueError(f"graph: no such graph file: {path!r}")
        try:
            with open(path, "r", encoding="utf-8") as f:
                text = f.read()
            if path.lower().endswith(".json"):
                d = json.loads(text)
            else:
                import yaml

                d = yaml.safe_load(text)
        except UnicodeDecodeError as e:
            raise ValueError(f"{path}: not a text file ({e.reason})") from None
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None
        except Exception as e:  # yaml.YAMLError
            mark = getattr(e, "problem_mark", None)
            where = f":{mark.line + 1}" if mark is not None else ""
            raise ValueError(f"{path}{where}: invalid YAML ({getattr(e, 'problem', None) or e})") from None
        g = cls.from_dict(d, source=path)
        if g.name == "custom":
            object.__setattr__(g, "name", os.path.splitext(os.path.basename(path))[0])
        return g

    def to_dict(self) -> Dict[str, Any]:
        """Plain lists/dicts (safe for ``torch.load(weights_only=True)``, YAML and JSON)."""
        return {"name": self.name, "num_joints": self.V, "center": self.center,
                "edges": [list(e) for e in self.edges], "lr_pairs": [list(p) for p in self.lr_pairs],
                "parts": {k: list(v) for k, v in self.parts.items()}}

    def default_parts(self) -> Dict[str, Tuple[int, ...]]:
        """Body parts when a rig gives none: the centre with its leaf neighbours is ``torso``, and
        each other subtree hanging off the centre (on the BFS tree of :attr:`parents`) is one part."""
        par = self.parents
        top = {}
        for j in range(self.V):
            k = j
            while par[k] != self.center and k != self.center:
                k = par[k]
            top.setdefault(k, []).append(j)
        parts: Dict[str, Tuple[int, ...]] = {"torso": tuple([self.center])}
        torso = [self.center]
        for k in sorted(top):
            if k == self.center:
                continue
            if len(top[k]) == 1:
                torso.extend(top[k])
            else:
                parts[f"limb{len(parts)}"] = tuple(sorted(top[k]))
        parts["torso"] = tuple(sorted(torso))
        return parts

    # ----------------------------------------------------------------- structure
    @property
    def V(self) -> int:
        return self.num_joints

    def adjacency(self) -> np.ndarray:
        """Symmetric 0/1 adjacency ``(V, V)`` without self loops."""
        a = np.zeros((self.V, self.V), dtype=np.float64)
        for i, j in self.edges:
            a[i, j] = a[j, i] = 1.0
        return a

    @property
    def degrees(self) -> np.ndarray:
        """Node degrees ``d_v`` (number of incident bones), int64 ``(V,)``."""
        return self.adjacency().sum(1).astype(np.int64)

    def hop_distance(self, max_hop: int = 1) -> np.ndarray:
        """st-gcn ``get_hop_distance``: hops between joints, ``inf`` beyond ``max_hop``."""
        a = self.adjacency() + np.eye(self.V)
        dist = np.full((self.V, self.V), np.inf)
        reach = [np.linalg.matrix_power(a, d) > 0 for d in range(max_hop + 1)]
        for d in range(max_hop, -1, -1):
            dist[reach[d]] = d
        return dist

    @property
    def parents(self) -> Tuple[int, ...]:
        """Parent of each joint on the BFS tree from the centre (``parents[center] == center``).

        For NTU-25 this is the bone list of 2s-AGCN/CTR-GCN (``ntu_pairs``), 0-based.
        """
        par = [-1] * self.V
        par[self.center] = self.center
        nbrs: Dict[int, list] = {v: [] for v in range(self.V)}
        for i, j in self.edges:
            nbrs[i].append(j)
            nbrs[j].append(i)
        q = deque([self.center])
        while q:
            u = q.popleft()
            for w in sorted(nbrs[u]):
                if par[w] < 0:
                    par[w] = u
                    q.append(w)
        return tuple(par)

    def flip_permutation(self) -> Tuple[int, ...]:
        """Joint permutation that swaps every left/right pair (a mirror's relabelling); the identity,
        with one warning, for a graph without ``lr_pairs`` (the left/right flip is then disabled)."""
        if not self.lr_pairs:
            warnings.warn(f"graph '{self.name}' has no lr_pairs: left/right joint swaps are disabled "
                          "(add lr_pairs to the graph file to enable mirroring)", stacklevel=2)
        perm = list(range(self.V))
        for a, b in self.lr_pairs:
            perm[a], perm[b] = b, a
        return tuple(perm)

    def part_index(self) -> np.ndarray:
        """Body-part id per joint, int64 ``(V,)`` in the order of ``parts``; -1 where unassigned."""
        out = np.full(self.V, -1, dtype=np.int64)
        for k, joints in enumerate(self.parts.values()):
            out[list(joints)] = k
        return out

    # ----------------------------------------------------------------- st-gcn partitions
    def partition(self, strategy: str = "spatial", dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """st-gcn adjacency subsets ``(K, V, V)``; ``A[k, v, w]`` weights joint v's message to w.

        ``A_norm = (A + I)·D⁻¹`` with D the column sums, then:
        - "uniform": ``[A_norm]`` (K=1);
        - "distance": ``A_norm`` split by hop distance 0, 1 (K=2);
        - "spatial": self; (hop-1 entries whose endpoints are equally far from the centre, or where
          the receiving joint w is closer) merged with "close"; and "further" (K=3). Subsets are
          not renormalised, exactly as st-gcn.
        """
        hop = self.hop_distance(max_hop=1)
        adj = (hop <= 1).astype(np.float64)
        norm = adj / adj.sum(0, keepdims=True)
        if strategy == "uniform":
            subsets = [norm]
        elif strategy == "distance":
            subsets = [np.where(hop == h, norm, 0.0) for h in (0, 1)]
        elif strategy == "spatial":
            subsets = []
            c = self.center
            for h in (0, 1):
                root = np.zeros_like(norm)
                close = np.zeros_like(norm)
                further = np.zeros_like(norm)
                for i in range(self.V):
                    for j in range(self.V):
                        if hop[j, i] != h:
                            continue
                        if hop[j, c] == hop[i, c]:
                            root[j, i] = norm[j, i]
                        elif hop[j, c] > hop[i, c]:
                            close[j, i] = norm[j, i]
                        else:
                            further[j, i] = norm[j, i]
                if h == 0:
                    subsets.append(root)
                else:
                    subsets.extend([root + close, further])
        else:
            raise ValueError(f"strategy: expected 'spatial', 'uniform' or 'distance', got {strategy!r}")
        return torch.tensor(np.stack(subsets), dtype=dtype)

    def check_num_joints(self, V: int, arg: str = "x") -> None:
        """Raise ``ValueError`` naming ``arg`` when its joint count does not match the graph."""
        if V != self.V:
            raise ValueError(f"{arg}: expected V={self.V} joints to match graph '{self.name}', got V={V}")

    def __repr__(self) -> str:
        return f"SkeletonGraph(name={self.name!r}, V={self.V}, edges={len(self.edges)}, center={self.center})"

