"""Readers of the skeleton formats people already have, and :func:`load` (format detection).

Every reader returns a :class:`SkeletonData` (``x`` float32 ``(N, C, T, V, M)``, ``y`` int64,
``lengths`` int64, ``names``). Malformed input raises ``ValueError`` naming the file (and line for
text formats); nothing is dropped silently.

Formats:

- **CTR-GCN / MAMP ``.npz``** — keys ``x_train, y_train, x_test, y_test``; ``x`` ``(N, T, M·V·C)``
  (NTU: ``(N, 300, 150)``, per frame body-major, then joint, then xyz), ``y`` one-hot ``(N, K)``
  (integer labels accepted too). Optional ``names_train``/``names_test`` (written by
  ``fastskel prepare``), ``layout_train``/``layout_test`` ``[C, V, M]`` and ``channels`` (a layout
  name such as ``"xy+score"``), written by :func:`write_ctrgcn_npz`, so its files read back
  without guessing.
- **st-gcn / AimCLR / PSTL ``.npy``** — ``(N, C, T, V, M)`` data + a label ``.pkl`` holding
  ``(names, labels)``; the label file is found next to the data (``train_data_joint.npy`` →
  ``train_label.pkl``) or given as ``label_path``.
- **PYSKL ``.pkl``** — ``{"split": {name: [frame_dir, …]}, "annotations": [{"frame_dir",
  "label", "keypoint" (M, T, V, C), "total_frames", …}]}``; bodies and frames are zero-padded to the
  largest in the split.
- **PKU-MMD raw** — per video a skeleton ``.txt`` with one frame per row of 150 numbers (2 bodies ×
  25 joints × xyz) and a label ``.txt`` with rows ``class,start,end,confidence`` (class 1-based →
  label ``class − 1``; frames ``start:end`` as a Python slice of the 0-based rows, as the usual
  PKU-MMD gendata scripts do).
- **NTU raw ``.skeleton``** — a file or a directory of them (:mod:`fastskel.data.ntu`).
"""
from __future__ import annotations

import os
import pickle
import re
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .core import SkeletonData
from .errors import DAMAGE_ERRORS, describe_damage, reader

__all__ = ["load", "read_ctrgcn_npz", "read_pku_mmd", "read_pyskl", "read_stgcn_npy", "write_ctrgcn_npz"]


# ------------------------------------------------------------------------------------------ CTR-GCN npz
def _onehot_to_labels(y: np.ndarray, path: str, key: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim == 1:
        if not np.issubdtype(y.dtype, np.integer) and not np.all(np.mod(y, 1) == 0):
            raise ValueError(f"{path}: {key}: expected integer labels or one-hot rows, got dtype {y.dtype}")
        return y.astype(np.int64)
    if y.ndim != 2:
        raise ValueError(f"{path}: {key}: expected one-hot (N, K) or labels (N,), got shape {y.shape}")
    row_sum = y.sum(1)
    if not (np.all((y == 0) | (y == 1)) and np.all(row_sum == 1)):
        bad = int(np.flatnonzero(~(np.all((y == 0) | (y == 1), axis=1) & (row_sum == 1)))[0])
        raise ValueError(f"{path}: {key}: row {bad} is not one-hot")
    return y.argmax(1).astype(np.int64)


@reader("CTR-GCN .npz")
def read_ctrgcn_npz(path: str, split: str = "train", num_joints: Optional[int] = None,
                    channels: Optional[int] = None, num_bodies: Optional[int] = None) -> SkeletonData:
    """CTR-GCN/MAMP ``NTU60_CS.npz``-style file → ``(N, C, T, V, M)``.

    The last dim is ``F = M·V·C``. ``channels`` C (default: the file's ``layout_*``, else 3; 3 =
    xyz, 2 = xy; 3 may also be xy+score, declared by the file's ``channels`` key or the caller).
    V and M: ``num_joints`` / ``num_bodies`` when given, else the file's ``layout_*`` key, else
    inferred from F: V = 25 when F is a multiple of 25·C (NTU); else the one split of F into
    M ∈ {1, 2} bodies × V joints, or the one whose V is a built-in graph's (17, 18, 25, 33).
    A width that splits both ways (F = 48, C = 3: 2 × 8 or 1 × 16 joints) is an error naming
    ``num_joints=`` / ``num_bodies=`` (on the command line, ``--graph`` gives V).
    """
    part = {"train": "train", "test": "test", "val": "test"}.get(split)
    if part is None:
        raise ValueError(f"split: expected 'train' or 'test', got {split!r}")
    with np.load(path, allow_pickle=False) as z:
        keys = set(z.files)
        if f"x_{part}" not in keys or f"y_{part}" not in keys:
            raise ValueError(f"{path}: expected keys x_{part} and y_{part} (CTR-GCN layout), got {sorted(keys)}")
        x = z[f"x_{part}"]
        y_raw = z[f"y_{part}"]
        y = _onehot_to_labels(y_raw, path, f"y_{part}")
        num_classes = int(y_raw.shape[1]) if y_raw.ndim == 2 else int(y.max(initial=-1)) + 1
        names = [str(s) for s in z[f"names_{part}"]] if f"names_{part}" in keys else None
        layout = z[f"layout_{part}"] if f"layout_{part}" in keys else None
        declared = _npz_channels(z["channels"], path) if "channels" in keys else None
        class_names = [str(s) for s in z["class_names"]] if "class_names" in keys else None
    if x.ndim != 3:
        raise ValueError(f"{path}: x_{part}: expected (N, T, M*V*C), got shape {x.shape}")
    n, t, f = x.shape
    channels, num_joints, m = _npz_layout(f, path, part, channels, num_joints, num_bodies, layout)
    if y.shape[0] != n:
        raise ValueError(f"{path}: y_{part}: expected {n} labels to match x_{part}, got {y.shape[0]}")
    x = np.ascontiguousarray(x.reshape(n, t, m, num_joints, channels).transpose(0, 4, 1, 3, 2), dtype=np.float32)
    _check_finite(x, path)
    meta = {"format": "ctrgcn_npz", "path": str(path)}
    if declared is not None:
        if {"xyz": 3, "xy": 2, "xy+score": 3}.get(declared) != channels:
            raise ValueError(f"{path}: channels: {declared!r} does not fit C={channels}")
        meta["channels"] = declared
    from .ntu import ntu_class_names

    class_names = class_names or ntu_class_names(num_classes, names or (), path)
    if class_names:
        meta["class_names"] = class_names
    return SkeletonData(x, y, names=names or [f"{part}_{i}" for i in range(n)], meta=meta)


_BUILTIN_V = (17, 18, 25, 33)  # joint counts of the built-in graphs (COCO/H36M, OpenPose, NTU/BODY_25, BlazePose)


def _npz_channels(a: np.ndarray, path: str) -> str:
    v = str(a.reshape(-1)[0]) if a.size == 1 and a.dtype.kind == "U" else None
    if v not in ("xyz", "xy", "xy+score"):
        raise ValueError(f"{path}: channels: expected one of 'xyz', 'xy', 'xy+score', got {a!r}")
    return v


def _pos_int(v, name: str, path: str) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or int(v) < 1:
        raise ValueError(f"{path}: {name}: expected an int >= 1, got {v!r}")
    return int(v)


def _npz_layout(f: int, path: str, part: str, C: Optional[int], V: Optional[int], M: Optional[int],
                layout: Optional[np.ndarray]) -> Tuple[int, int, int]:
    """``(C, V, M)`` of the last dim ``f`` (see :func:`read_ctrgcn_npz`)."""
    key = f"x_{part}"
    if layout is not None:
        ok = layout.shape == (3,) and layout.dtype.kind in "iu" and (layout >= 1).all()
        if not ok or int(np.prod(layout.astype(np.int64))) != f:
            raise ValueError(f"{path}: layout_{part}: expected [C, V, M] >= 1 with C*V*M = {f} (the last dim of "
                             f"{key}), got {layout.tolist() if layout.size < 8 else layout.shape}")
        lc, lv, lm = (int(a) for a in layout)
        for name, given, stored in (("channels", C, lc), ("num_joints", V, lv), ("num_bodies", M, lm)):
            if given is not None and given != stored:
                raise ValueError(f"{path}: {name}={given} contradicts the file's layout_{part} [C, V, M] = "
                                 f"{[lc, lv, lm]}")
        C = lc if C is None else C
        if V is None and M is None and C == lc:
            return lc, lv, lm
    C = 3 if C is None else _pos_int(C, "channels", path)
    if f % C:
        raise ValueError(f"{path}: {key}: last dim {f} is not a multiple of V*C (M*V*C with C={C}); "
                         "pass channels= / num_joints=")
    if V is not None:
        V = _pos_int(V, "num_joints", path)
        if f % (V * C) or (M is not None and f != _pos_int(M, "num_bodies", path) * V * C):
            raise ValueError(f"{path}: {key}: last dim {f} is not M*V*C with V={V}, C={C}"
                             f"{f', M={M}' if M is not None else ''}")
        return C, V, f // (V * C)
    if M is not None:
        M = _pos_int(M, "num_bodies", path)
        if f % (M * C):
            raise ValueError(f"{path}: {key}: last dim {f} is not M*V*C with M={M}, C={C}")
        return C, f // (M * C), M
    if f > 0 and f % (25 * C) == 0:
        return C, 25, f // (25 * C)
    cands = [(f // (m * C), m) for m in (2, 1) if f > 0 and f % (m * C) == 0]
    known = [c for c in cands if c[0] in _BUILTIN_V]
    if len(cands) == 1 or len(known) == 1:
        v, m = cands[0] if len(cands) == 1 else known[0]
        return C, v, m
    ways = " or ".join(f"M={m} x V={v}" for v, m in cands)
    raise ValueError(f"{path}: {key}: last dim {f} = M*V*C (C={C}) is ambiguous ({ways}); pass num_joints= "
                     "or num_bodies= (fastskel CLI: --graph RIG gives num_joints)")


def write_ctrgcn_npz(path: str, train: SkeletonData, test: SkeletonData, num_classes: Optional[int] = None,
                     channels: Optional[str] = None) -> None:
    """Write two splits in the CTR-GCN/MAMP layout (``x (N, T, M·V·C)``, one-hot ``y``) + names,
    ``layout_<split> = [C, V, M]`` (so a 1-body or non-NTU file reads back without guessing) and,
    when given (or in ``train.meta``/``train.channels``), the ``channels`` layout name."""
    k = num_classes or max(train.num_classes, test.num_classes)
    out = {}
    meta = getattr(train, "meta", None) or {}
    channels = channels or meta.get("channels") or getattr(train, "channels", None)
    if channels:
        out["channels"] = np.asarray(str(channels))
    for part, d in (("train", train), ("test", test)):
        n, c, t, v, m = d.x.shape
        out[f"layout_{part}"] = np.asarray([c, v, m], dtype=np.int64)
        out[f"x_{part}"] = d.x.numpy().transpose(0, 2, 4, 3, 1).reshape(n, t, m * v * c)
        out[f"y_{part}"] = np.eye(k, dtype=np.float32)[d.y.numpy()] if n else np.zeros((0, k), np.float32)
        out[f"names_{part}"] = np.asarray(d.names, dtype=str)
    np.savez(path, **out)


# ------------------------------------------------------------------------------------------ st-gcn npy + pkl
def _find_label(path: str) -> str:
    d, base = os.path.split(path)
    stem = base[:-4] if base.endswith(".npy") else base
    m = re.match(r"(.*?)_data(?:_\w+)?$", stem)
    cands = [os.path.join(d, f"{m.group(1)}_label.pkl")] if m else []
    cands.append(os.path.join(d, f"{stem}_label.pkl"))
    for c in cands:
        if os.path.isfile(c):
            return c
    raise ValueError(f"{path}: cannot find its label file (looked for {', '.join(cands)}); pass label_path=")


def _load_pickle(path: str):
    with open(path, "rb") as f:
        try:
            try:
                return pickle.load(f)
            except UnicodeDecodeError:  # python 2 pickles (st-gcn era)
                f.seek(0)
                return pickle.load(f, encoding="latin1")
        except (FileNotFoundError, PermissionError):
            raise
        except DAMAGE_ERRORS as e:
            raise describe_damage(path, "pickle", e) from None
        except ValueError as e:
            raise ValueError(f"{path}: corrupt pickle file ({' '.join(str(e).split())[:200]})") from None


@reader(".npy")
def read_stgcn_npy(path: str, label_path: Optional[str] = None, mmap: bool = False) -> SkeletonData:
    """st-gcn / AimCLR / PSTL data ``(N, C, T, V, M)`` ``.npy`` + ``(names, labels)`` label ``.pkl``."""
    label_path = label_path or _find_label(path)
    x = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    if x.ndim != 5:
        raise ValueError(f"{path}: expected (N, C, T, V, M) data, got shape {x.shape}")
    lab = _load_pickle(label_path)
    if not (isinstance(lab, (tuple, list)) and len(lab) == 2):
        raise ValueError(f"{label_path}: expected a pickled (names, labels) pair, got {type(lab).__name__}"
                         f"{' of length ' + str(len(lab)) if isinstance(lab, (tuple, list)) else ''}")
    names, labels = list(lab[0]), np.asarray(lab[1])
    if len(names) != x.shape[0] or labels.shape[0] != x.shape[0]:
        raise ValueError(f"{label_path}: expected {x.shape[0]} names and labels to match {path}, "
                         f"got {len(names)} names and {labels.shape[0]} labels")
    x = np.ascontiguousarray(x, dtype=np.float32)
    _check_finite(x, path)
    return SkeletonData(x, labels.astype(np.int64), names=[str(s) for s in names],
                        meta={"format": "stgcn_npy", "path": str(path), "label_path": str(label_path)})


# ------------------------------------------------------------------------------------------ PYSKL pkl
def _pyskl_split_name(splits: Dict[str, list], split: str, path: str) -> str:
    if split in splits:
        return split
    suffix = {"train": ("_train", "train"), "test": ("_val", "_test", "val", "test"), "val": ("_val", "val")}.get(split)
    matches = [k for k in splits if suffix and any(k == s or k.endswith(s) for s in suffix)] if suffix else []
    if len(matches) == 1:
        return matches[0]
    raise ValueError(f"{path}: split: expected one of {sorted(splits)}"
                     f"{' (ambiguous: ' + ', '.join(matches) + ')' if len(matches) > 1 else ''}, got {split!r}")


@reader("PYSKL .pkl")
def read_pyskl(path: str, split: str = "train", score: str = "channel", score_threshold: float = 0.0) -> SkeletonData:
    """PYSKL / mmaction2 annotation pickle → the annotations of ``split`` (a split name such as
    ``"xsub_train"``, or "train"/"test" when that resolves to exactly one split).

    2-D files carry ``keypoint`` ``(M, T, V, 2)`` and ``keypoint_score`` ``(M, T, V)``: with
    ``score="channel"`` (default) the score becomes channel 2 (C=3, ``meta["channels"] ==
    "xy+score"``); ``score="weight"`` zeroes the (x, y) of joints with score <= ``score_threshold``
    and keeps C=2 (:func:`fastskel.data.channels.apply_score`); ``score="ignore"`` keeps C=2
    (``"xy"``), an explicit choice, never a default.
    """
    if score not in ("channel", "weight", "ignore"):
        raise ValueError(f"score: expected 'channel', 'weight' or 'ignore', got {score!r}")
    obj = _load_pickle(path)
    if not (isinstance(obj, dict) and "annotations" in obj):
        raise ValueError(f"{path}: expected a PYSKL dict with 'split' and 'annotations', got {type(obj).__name__}")
    anns = obj["annotations"]
    if "split" in obj and split != "all":
        name = _pyskl_split_name(obj["split"], split, path)
        wanted = set(obj["split"][name])
        anns = [a for a in anns if a.get("frame_dir") in wanted]
        missing = len(wanted) - len(anns)
        if missing:
            raise ValueError(f"{path}: split {name!r} lists {missing} frame_dir(s) without an annotation")
    if not anns:
        raise ValueError(f"{path}: split {split!r} has no annotations")
    kps = []
    for i, a in enumerate(anns):
        for key in ("keypoint", "label"):
            if key not in a:
                raise ValueError(f"{path}: annotation {i} ({a.get('frame_dir', '?')}): missing {key!r}")
        kp = np.asarray(a["keypoint"], dtype=np.float32)
        if kp.ndim != 4:
            raise ValueError(f"{path}: annotation {i} ({a.get('frame_dir', '?')}): keypoint expected (M, T, V, C), got shape {kp.shape}")
        if "keypoint_score" in a and score != "ignore":
            sc = np.asarray(a["keypoint_score"], dtype=np.float32)
            if sc.shape != kp.shape[:3]:
                raise ValueError(f"{path}: annotation {i} ({a.get('frame_dir', '?')}): keypoint_score expected "
                                 f"shape {kp.shape[:3]} to match keypoint, got {sc.shape}")
            kp = np.concatenate([kp, sc[..., None]], axis=-1)
        kps.append(kp)
    V, C = kps[0].shape[2], kps[0].shape[3]
    for i, kp in enumerate(kps):
        if kp.shape[2:] != (V, C):
            raise ValueError(f"{path}: annotation {i}: keypoint has (V, C) = {kp.shape[2:]}, expected {(V, C)} like the first")
    M = max(max(kp.shape[0] for kp in kps), 1)
    T = max(kp.shape[1] for kp in kps)
    x = np.zeros((len(kps), C, T, V, M), dtype=np.float32)
    for i, kp in enumerate(kps):
        x[i, :, : kp.shape[1], :, : kp.shape[0]] = kp.transpose(3, 1, 2, 0)
    _check_finite(x, path)
    lengths = np.array([a.get("total_frames", kp.shape[1]) for a, kp in zip(anns, kps)], dtype=np.int64)
    lengths = np.minimum(lengths, [kp.shape[1] for kp in kps])
    channels = _pyskl_channels(anns[0], C, score)
    if score == "weight" and channels == "xy+score":
        import torch

        from .channels import apply_score

        x, channels = apply_score(torch.from_numpy(x), channels, "weight", score_threshold)
    meta = {"format": "pyskl", "path": str(path), "split": split, "channels": channels}
    label_names = obj.get("label_names", obj.get("class_names"))  # written by `fastskel prepare openpose`
    if label_names is not None:
        meta["class_names"] = [str(c) for c in label_names]
    else:
        from .ntu import ntu_class_names

        names = [str(a.get("frame_dir", "")) for a in anns]
        if (cn := ntu_class_names(max(int(a["label"]) for a in anns) + 1, names, path)) is not None:
            meta["class_names"] = cn  # PYSKL's ntu60/ntu120 files: frame_dir is the NTU sample name
    return SkeletonData(x, np.array([int(a["label"]) for a in anns]), lengths,
                        names=[str(a.get("frame_dir", i)) for i, a in enumerate(anns)], meta=meta)


def _pyskl_channels(ann: dict, C: int, score: str) -> str:
    if "keypoint_score" in ann and score != "ignore":
        return "xy+score" if C == 3 else f"{C - 1}d+score"
    return {2: "xy", 3: "xyz"}.get(C, f"{C}d")


# ------------------------------------------------------------------------------------------ PKU-MMD
_FLOAT_RE = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def _ascii_lines(path: str) -> List[str]:
    """The lines of an ASCII text file; ``ValueError`` naming the file on any other byte."""
    with open(path, "r", encoding="ascii", errors="strict") as f:
        try:
            return f.read().split("\n")
        except UnicodeDecodeError as e:
            raise ValueError(f"{path}: non-ASCII content ({e.reason})") from None


def _read_pku_skeleton(path: str, width: int = 150) -> np.ndarray:
    rows = []
    lines = _ascii_lines(path)
    for ln, line in enumerate(lines, 1):
        toks = line.split()
        if not toks:
            continue
        if len(toks) != width:
            raise ValueError(f"{path}:{ln}: expected {width} numbers per frame, got {len(toks)}")
        for i, tok in enumerate(toks):
            if _FLOAT_RE.fullmatch(tok) is None:
                raise ValueError(f"{path}:{ln}: field {i + 1} is not a number: {tok!r}")
        rows.append([float(t) for t in toks])
    if not rows:
        raise ValueError(f"{path}: empty skeleton file")
    return np.asarray(rows, dtype=np.float64)


def _read_pku_labels(path: str) -> List[Tuple[int, int, int, float, int]]:
    out = []
    lines = _ascii_lines(path)
    for ln, line in enumerate(lines, 1):
        if not line.strip():
            continue
        toks = [t.strip() for t in line.split(",")]
        if len(toks) != 4:
            raise ValueError(f"{path}:{ln}: expected 'class,start,end,confidence', got {len(toks)} fields")
        try:
            cls, start, end = int(toks[0]), int(toks[1]), int(toks[2])
            conf = float(toks[3])
        except ValueError:
            raise ValueError(f"{path}:{ln}: expected integers class,start,end and a number confidence, got {line.strip()!r}") from None
        if cls < 1 or start < 0 or end <= start:
            raise ValueError(f"{path}:{ln}: expected class >= 1 and 0 <= start < end, got {cls},{start},{end}")
        out.append((cls, start, end, conf, ln))
    if not out:
        raise ValueError(f"{path}: empty label file")
    return out


@reader("PKU-MMD")
def read_pku_mmd(skeleton: str, labels: str, videos: Optional[Sequence[str]] = None,
                 max_frames: Optional[int] = None) -> SkeletonData:
    """PKU-MMD raw data → one sample per labelled action segment.

    ``skeleton``/``labels``: a skeleton file and its label file, or two directories of ``.txt``
    files matched by file name (every video needs both; a mismatch is an error naming the file).
    ``videos``: restrict to these video ids (file stems, e.g. ``"0002-L"``). Segments are zero-padded
    to the longest (or to ``max_frames``; a longer segment is an error).
    """
    if os.path.isdir(skeleton) != os.path.isdir(labels):
        raise ValueError(f"skeleton, labels: expected two files or two directories, got {skeleton!r}, {labels!r}")
    if os.path.isdir(skeleton):
        sk = {os.path.splitext(f)[0]: os.path.join(skeleton, f) for f in os.listdir(skeleton) if f.endswith(".txt")}
        lb = {os.path.splitext(f)[0]: os.path.join(labels, f) for f in os.listdir(labels) if f.endswith(".txt")}
        if videos is not None:
            videos = list(videos)
            sk = {k: v for k, v in sk.items() if k in set(videos)}
            lb = {k: v for k, v in lb.items() if k in set(videos)}
            for vid in videos:
                if vid not in sk:
                    raise ValueError(f"{skeleton}: video {vid!r} has no skeleton file")
        only_l = sorted(set(lb) - set(sk))
        only_s = sorted(set(sk) - set(lb))
        if only_l:
            raise ValueError(f"{lb[only_l[0]]}: label file without a skeleton file in {skeleton}")
        if only_s:
            raise ValueError(f"{sk[only_s[0]]}: skeleton file without a label file in {labels}")
        pairs = [(k, sk[k], lb[k]) for k in sorted(sk)]
    else:
        pairs = [(os.path.splitext(os.path.basename(skeleton))[0], skeleton, labels)]
    segs, ys, names = [], [], []
    for vid, sp, lp in pairs:
        data = _read_pku_skeleton(sp)
        for cls, start, end, _, ln in _read_pku_labels(lp):
            if end > data.shape[0]:
                raise ValueError(f"{lp}:{ln}: segment {start}:{end} ends after the {data.shape[0]} frames of {sp}")
            segs.append(data[start:end])
            ys.append(cls - 1)
            names.append(f"{vid}_{start}_{end}")
    T = max(s.shape[0] for s in segs)
    if max_frames is not None:
        if T > max_frames:
            i = int(np.argmax([s.shape[0] for s in segs]))
            raise ValueError(f"segment {names[i]} has {segs[i].shape[0]} frames, more than max_frames={max_frames}")
        T = max_frames
    x = np.zeros((len(segs), 3, T, 25, 2), dtype=np.float32)
    for i, s in enumerate(segs):
        x[i, :, : s.shape[0]] = s.reshape(s.shape[0], 2, 25, 3).transpose(3, 0, 2, 1)
    return SkeletonData(x, np.asarray(ys), np.array([s.shape[0] for s in segs]), names,
                        meta={"format": "pku_mmd", "path": str(skeleton)})


def _pku_split_videos(split_file: str, split: str) -> List[str]:
    """PKU-MMD ``cross-subject.txt``/``cross-view.txt``: a 'Training videos:' line followed by a
    comma-separated list, then a 'Validation videos:' line and its list."""
    with open(split_file) as f:
        lines = [ln.strip() for ln in f]
    sections: Dict[str, List[str]] = {}
    current = None
    for ln in lines:
        low = ln.lower()
        if low.startswith("train"):
            current = "train"
        elif low.startswith("valid") or low.startswith("test"):
            current = "test"
        elif ln and current:
            sections.setdefault(current, []).extend(v.strip() for v in ln.split(",") if v.strip())
    key = "test" if split in ("test", "val") else split
    if key not in sections:
        raise ValueError(f"{split_file}: no {split!r} section (expected 'Training videos:' / 'Validation videos:')")
    return sections[key]


# ------------------------------------------------------------------------------------------ detection
def _check_finite(x: np.ndarray, path: str) -> None:
    if not np.isfinite(x).all():
        idx = np.argwhere(~np.isfinite(x))[0]
        raise ValueError(f"{path}: non-finite value at sample {idx[0]} (index {tuple(int(i) for i in idx)})")


def load(path: str, split: str = "train", **kwargs) -> SkeletonData:
    """Load ``split`` of a skeleton dataset, detecting the format from ``path``.

    - ``*.npz`` with ``x_train``/``x_test`` → CTR-GCN/MAMP (``split`` "train" | "test").
    - ``*.npy`` → st-gcn/AimCLR data + label pkl (``label_path=`` to override the lookup; the split is
      the file itself).
    - ``*.pkl`` with ``annotations`` → PYSKL (``split`` a PYSKL split name or "train"/"test").
    - ``*.skeleton`` → one NTU file (N=1). A directory of ``.skeleton`` files → NTU raw;
      ``split`` "all", "train"/"test" (= xsub) or "xsub_train", "xview_test", "xset_train", … .
    - A directory with ``skeleton``-like and ``label``-like sub-directories of ``.txt`` → PKU-MMD
      (``split="all"``, or "train"/"test" with ``split_file=`` the official cross-subject/view list).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"path: no such file or directory: {path!r}")
    if os.path.isdir(path):
        entries = os.listdir(path)
        if any(e.endswith(".skeleton") for e in entries):
            return _load_ntu_dir(path, split, **kwargs)
        subdirs = [e for e in entries if os.path.isdir(os.path.join(path, e))]
        sk = [d for d in subdirs if "skeleton" in d.lower()]
        lb = [d for d in subdirs if "label" in d.lower()]
        if len(sk) == 1 and len(lb) == 1:
            split_file = kwargs.pop("split_file", None)
            videos = None
            if split != "all":
                if split_file is None:
                    raise ValueError(f"{path}: PKU-MMD split {split!r} needs split_file= (cross-subject.txt / cross-view.txt), or use split='all'")
                videos = _pku_split_videos(split_file, split)
            return read_pku_mmd(os.path.join(path, sk[0]), os.path.join(path, lb[0]), videos=videos, **kwargs)
        raise ValueError(f"{path}: cannot detect the format of this directory (no .skeleton files, "
                         "no skeleton/label sub-directories)")
    low = path.lower()
    if low.endswith(".npz"):
        return read_ctrgcn_npz(path, split, **kwargs)
    if low.endswith(".npy"):
        return read_stgcn_npy(path, **kwargs)
    if low.endswith(".pkl") or low.endswith(".pickle"):
        obj_is_pyskl = True
        try:
            return read_pyskl(path, split, **kwargs)
        except ValueError as e:
            if "expected a PYSKL dict" not in str(e):
                raise
            obj_is_pyskl = False
        if not obj_is_pyskl:
            raise ValueError(f"{path}: a .pkl that is not a PYSKL annotation file; for st-gcn labels load the "
                             "data .npy (its label .pkl is found next to it)")
    if low.endswith(".skeleton"):
        from .ntu import parse_ntu_name, read_ntu_skeleton

        arr = read_ntu_skeleton(path, **kwargs)
        try:
            label = parse_ntu_name(path)["label"]
        except ValueError:
            label = -1
        meta = {"format": "ntu_skeleton", "path": path}
        if label >= 0:
            from .ntu import ntu_action_names

            meta["class_names"] = ntu_action_names(60 if label < 60 else 120)
        return SkeletonData(arr[None], np.array([label]), names=[os.path.basename(path)[:-9]], meta=meta)
    raise ValueError(f"{path}: unknown format (expected .npz, .npy, .pkl, .skeleton or a directory)")


def _load_ntu_dir(path: str, split: str = "all", max_frames: Optional[int] = None, **kwargs) -> SkeletonData:
    from .ntu import is_train, parse_ntu_name, read_ntu_skeletons

    files = sorted(f for f in os.listdir(path) if f.endswith(".skeleton"))
    infos = [parse_ntu_name(f) for f in files]
    if split != "all":
        bench, _, part = split.rpartition("_") if "_" in split else ("xsub", "", split)
        if part not in ("train", "test", "val"):
            raise ValueError(f"split: expected 'all', 'train', 'test' or '<xsub|xview|xset>_<train|test>', got {split!r}")
        keep = [i for i, info in enumerate(infos) if is_train(info, bench) == (part == "train")]
        files, infos = [files[i] for i in keep], [infos[i] for i in keep]
    if not files:
        raise ValueError(f"{path}: no .skeleton files in split {split!r}")
    arrays = read_ntu_skeletons([os.path.join(path, f) for f in files], **kwargs)
    T = max(a.shape[1] for a in arrays)
    if max_frames is not None:
        if T > max_frames:
            i = int(np.argmax([a.shape[1] for a in arrays]))
            raise ValueError(f"{os.path.join(path, files[i])}: {arrays[i].shape[1]} frames, more than max_frames={max_frames}")
        T = max_frames
    x = np.zeros((len(arrays), 3, T, arrays[0].shape[2], arrays[0].shape[3]), dtype=np.float32)
    for i, a in enumerate(arrays):
        x[i, :, : a.shape[1]] = a
    from .ntu import ntu_action_names

    meta = {"format": "ntu_raw", "path": path,
            "class_names": ntu_action_names(60 if max(info["label"] for info in infos) < 60 else 120)}
    for k in ("setup", "camera", "subject", "replication"):
        meta[k] = np.array([info[k] for info in infos])
    return SkeletonData(x, np.array([info["label"] for info in infos]), np.array([a.shape[1] for a in arrays]),
                        [f[:-9] for f in files], meta)
