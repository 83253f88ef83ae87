"""``fastskel prepare pku`` and ``fastskel prepare openpose``: raw PKU-MMD and OpenPose output →
files the trainers read directly.

- **PKU-MMD** (``prepare_pku``): a root with a skeleton and a label sub-directory (the PKU-MMD v1
  layout; see :func:`fastskel.data.formats.read_pku_mmd`) → one sample per labelled interval,
  split by the official ``cross-subject.txt`` / ``cross-view.txt`` list, written as a CTR-GCN
  ``.npz`` (``x (N, T, 2·25·3)``, one-hot ``y`` over the 51 classes or ``num_classes``, names
  ``<video>_<start>_<end>``).
- **OpenPose** (``prepare_openpose``): a folder holding one sub-folder per clip of per-frame
  OpenPose JSON files (``{"people": [{"pose_keypoints_2d": [x, y, c, …]}]}``, 18 = COCO or
  25 = BODY_25 keypoints) → a PYSKL ``.pkl`` with ``keypoint (M, T, V, 2)``, ``keypoint_score
  (M, T, V)`` and splits ``train``/``test``. Labels come from a CSV (``clip,label[,split]``) or,
  without one, from class folders (``root/<class>/<clip>/*.json``, classes numbered in sorted
  order; their names are stored as ``label_names``, the reader's ``class_names``). Per frame the
  ``max_people`` people with the highest summed score are kept; frames are in file-name order. Without a ``split`` column the last ``round(test_fraction·n)`` clips of each
  class (in name order) are ``test``.
"""
from __future__ import annotations

import csv
import json
import os
import pickle
from typing import Dict, List, Optional, Tuple

import numpy as np

from .core import SkeletonData
from .formats import _pku_split_videos, read_pku_mmd, write_ctrgcn_npz

__all__ = ["prepare_openpose", "prepare_pku", "read_openpose_clip"]


def prepare_pku(root: str, out: str, split_file: str, max_frames: Optional[int] = None,
                num_classes: Optional[int] = None) -> Tuple[int, int]:
    """PKU-MMD raw → CTR-GCN ``.npz`` at ``out``; returns ``(num_train, num_test)``."""
    subdirs = [d for d in sorted(os.listdir(root)) if os.path.isdir(os.path.join(root, d))]
    sk = [d for d in subdirs if "skeleton" in d.lower()]
    lb = [d for d in subdirs if "label" in d.lower()]
    if len(sk) != 1 or len(lb) != 1:
        raise ValueError(f"{root}: expected one skeleton and one label sub-directory (PKU-MMD layout), got {subdirs}")
    parts = []
    for split in ("train", "test"):
        vids = _pku_split_videos(split_file, split)
        parts.append(read_pku_mmd(os.path.join(root, sk[0]), os.path.join(root, lb[0]), videos=vids,
                                  max_frames=max_frames))
    T = max(p.x.shape[2] for p in parts)
    parts = [_pad_frames(p, T) for p in parts]
    write_ctrgcn_npz(out, parts[0], parts[1], num_classes=num_classes)
    return len(parts[0]), len(parts[1])


def _pad_frames(d: SkeletonData, T: int) -> SkeletonData:
    if d.x.shape[2] == T:
        return d
    x = np.zeros(d.x.shape[:2] + (T,) + d.x.shape[3:], dtype=np.float32)
    x[:, :, : d.x.shape[2]] = d.x.numpy()
    return SkeletonData(x, d.y.numpy(), d.lengths.numpy(), d.names, d.meta)


def read_openpose_clip(clip_dir: str, max_people: int = 2) -> Tuple[np.ndarray, np.ndarray]:
    """One clip's per-frame OpenPose JSON files → ``keypoint (M, T, V, 2)``, ``score (M, T, V)``."""
    files = sorted(f for f in os.listdir(clip_dir) if f.endswith(".json"))
    if not files:
        raise ValueError(f"{clip_dir}: no OpenPose .json frame files")
    frames: List[List[np.ndarray]] = []
    V = None
    for f in files:
        path = os.path.join(clip_dir, f)
        try:
            with open(path, "r", encoding="utf-8") as fh:
                obj = json.load(fh)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None
        except UnicodeDecodeError as e:
            raise ValueError(f"{path}: not a text file ({e.reason})") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("people"), list):
            raise ValueError(f"{path}: expected an OpenPose frame {{'people': [...]}}, got {type(obj).__name__}")
        people = []
        for k, p in enumerate(obj["people"]):
            kp = p.get("pose_keypoints_2d") if isinstance(p, dict) else None
            try:
                arr = np.asarray(kp, dtype=np.float64)
            except (TypeError, ValueError):
                arr = np.zeros(0)
            if arr.ndim != 1 or arr.size % 3 or arr.size // 3 not in (18, 25):
                raise ValueError(f"{path}: people[{k}].pose_keypoints_2d: expected 18 or 25 (x, y, score) "
                                 f"triples, got {None if kp is None else np.size(kp)} numbers")
            if V is not None and arr.size // 3 != V:
                raise ValueError(f"{path}: people[{k}]: {arr.size // 3} keypoints, expected {V} like the clip's first")
            V = arr.size // 3
            if not np.isfinite(arr).all():
                raise ValueError(f"{path}: people[{k}]: non-finite keypoint value")
            people.append(arr.reshape(V, 3))
        people.sort(key=lambda a: -a[:, 2].sum())
        frames.append(people[:max_people])
    if V is None:
        raise ValueError(f"{clip_dir}: no person in any frame")
    M = max(1, max(len(p) for p in frames))
    out = np.zeros((M, len(frames), V, 3), dtype=np.float32)
    for t, people in enumerate(frames):
        for m, a in enumerate(people):
            out[m, t] = a
    return out[..., :2].copy(), out[..., 2].copy()


def _clips_and_labels(root: str, labels_csv: Optional[str]) -> List[Tuple[str, str, int, Optional[str]]]:
    """``[(name, clip_dir, label, split or None)]`` in name order."""
    rows = []
    if labels_csv is not None:
        with open(labels_csv, newline="", encoding="utf-8") as f:
            for ln, rec in enumerate(csv.reader(f), 1):
                if not rec or not "".join(rec).strip() or (ln == 1 and rec[0].strip().lower() in ("clip", "name")):
                    continue
                if len(rec) not in (2, 3):
                    raise ValueError(f"{labels_csv}:{ln}: expected 'clip,label[,split]', got {len(rec)} fields")
                name, lab = rec[0].strip(), rec[1].strip()
                split = rec[2].strip() if len(rec) == 3 else None
                if not lab.lstrip("-").isdigit() or int(lab) < 0:
                    raise ValueError(f"{labels_csv}:{ln}: label expected a non-negative integer, got {lab!r}")
                if split not in (None, "train", "test"):
                    raise ValueError(f"{labels_csv}:{ln}: split expected 'train' or 'test', got {split!r}")
                d = os.path.join(root, name)
                if not os.path.isdir(d):
                    raise ValueError(f"{labels_csv}:{ln}: no clip folder {d}")
                rows.append((name, d, int(lab), split))
    else:
        classes = sorted(c for c in os.listdir(root) if os.path.isdir(os.path.join(root, c)))
        for k, c in enumerate(classes):
            for clip in sorted(os.listdir(os.path.join(root, c))):
                d = os.path.join(root, c, clip)
                if os.path.isdir(d):
                    rows.append((f"{c}/{clip}", d, k, None))
    if not rows:
        raise ValueError(f"{root}: no clips found (expected clip folders of OpenPose .json files)")
    return sorted(rows)


def prepare_openpose(root: str, out: str, labels_csv: Optional[str] = None, max_people: int = 2,
                     test_fraction: float = 0.2) -> Dict[str, int]:
    """OpenPose clips → a PYSKL ``.pkl`` at ``out``; returns ``{"train": n, "test": n}``."""
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction: expected a value in [0, 1), got {test_fraction}")
    rows = _clips_and_labels(root, labels_csv)
    split_of: Dict[str, str] = {}
    by_class: Dict[int, List[str]] = {}
    for name, _, lab, split in rows:
        if split is not None:
            split_of[name] = split
        else:
            by_class.setdefault(lab, []).append(name)
    for names in by_class.values():
        n_test = int(round(test_fraction * len(names)))
        for i, name in enumerate(names):
            split_of[name] = "test" if i >= len(names) - n_test else "train"
    anns, V = [], None
    for name, d, lab, _ in rows:
        kp, sc = read_openpose_clip(d, max_people)
        if V is not None and kp.shape[2] != V:
            raise ValueError(f"{d}: {kp.shape[2]} keypoints, expected {V} like the other clips")
        V = kp.shape[2]
        anns.append({"frame_dir": name, "label": lab, "total_frames": kp.shape[1], "keypoint": kp,
                     "keypoint_score": sc, "graph": "openpose18" if V == 18 else "openpose25"})
    split = {s: [a["frame_dir"] for a in anns if split_of[a["frame_dir"]] == s] for s in ("train", "test")}
    obj = {"split": split, "annotations": anns}
    if labels_csv is None:  # class folders: their names, in label order (the CSV carries only numbers)
        obj["label_names"] = sorted(c for c in os.listdir(root) if os.path.isdir(os.path.join(root, c)))
    with open(out, "wb") as f:
        pickle.dump(obj, f, protocol=4)
    return {k: len(v) for k, v in split.items()}
