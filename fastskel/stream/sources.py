"""Frame sources of ``fastskel stream --input SRC``: each yields ``(keypoints, timestamp, where,
error)`` per frame — ``keypoints`` an ``(M, V, C)`` array, a nested list or ``None`` (a dropped
frame), ``where`` a location for messages, ``error`` a one-line message for an unreadable frame
(then ``keypoints`` is ``None`` and the caller reports and skips it).

- a **folder of OpenPose JSON** (one ``*.json`` per frame, file-name order, read by
  :func:`fastskel.data.prepare_pose.read_openpose_clip`): keypoints ``(people, V, 3)`` = x, y,
  score (the score dropped for an ``xy`` model; refused for an ``xyz`` model); a frame without
  people is a dropped frame.
- a **.npy / .npz sequence**: ``(T, M, V, C)`` (frames first, the stream's order) or ``(C, T, V,
  M)`` (the dataset layout) — taken as ``(T, M, V, C)`` when its last two axes are the model's
  ``(V, C)``, else as ``(C, T, V, M)`` when its axes 0 and 2 are ``(C, V)``; ``(T, V, C)`` is one
  body. Trailing all-zero frames are a dataset's padding and are not streamed (inner zero frames
  are dropped frames). An ``.npz`` holds the array as ``keypoints`` (or ``x``, or its only array), optional
  timestamps ``t`` (seconds, one per frame) and ``fps``.
- ``-``: **JSON lines on standard input**, one frame per line:
  ``{"t": 0.033, "bodies": [[[x, y, z|score], ...V joints], ...bodies]}`` (``t`` optional;
  ``"bodies": []`` or ``null`` is a dropped frame; blank lines are skipped).
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
from typing import Iterator, Optional, TextIO, Tuple

import numpy as np

from .meta import StreamMeta

__all__ = ["open_source", "jsonl_frames", "array_frames", "openpose_frames", "source_fps"]

Item = Tuple[object, Optional[float], str, Optional[str]]


def jsonl_frames(stream: TextIO) -> Iterator[Item]:
    for n, line in enumerate(stream, 1):
        where = f"line {n}"
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            yield None, None, where, f"invalid JSON ({e.msg} at column {e.colno})"
            continue
        if not isinstance(obj, dict) or "bodies" not in obj:
            yield None, None, where, (f"expected an object {{\"t\": seconds, \"bodies\": [[[x, y, z], ...], ...]}}, "
                                      f"got {type(obj).__name__ if not isinstance(obj, dict) else 'no bodies'}")
            continue
        t = obj.get("t")
        if t is not None and (isinstance(t, bool) or not isinstance(t, (int, float))):
            yield None, None, where, f"t: expected a number (seconds), got {t!r}"
            continue
        bodies = obj["bodies"]
        if bodies is not None and not isinstance(bodies, list):
            yield None, None, where, f"bodies: expected a list of bodies, got {type(bodies).__name__}"
            continue
        yield (bodies if bodies else None), (None if t is None else float(t)), where, None


def _layout(a: np.ndarray, meta: StreamMeta, path: str) -> np.ndarray:
    """``(T, M, V, C)`` of a sequence array (see the module docstring)."""
    if a.ndim == 3 and a.shape[1:] == (meta.V, meta.C):
        return a[:, None]
    if a.ndim == 4:
        if a.shape[2:] == (meta.V, meta.C):
            return a
        if a.shape[0] == meta.C and a.shape[2] == meta.V:
            return a.transpose(1, 3, 2, 0)
    raise ValueError(f"{path}: expected a sequence (T, M, V={meta.V}, C={meta.C}) or (C={meta.C}, T, V={meta.V}, M), "
                     f"got shape {a.shape}")


def _load_array(path: str):
    if path.lower().endswith(".npz"):
        with np.load(path, allow_pickle=False) as z:
            keys = list(z.keys())
            key = next((k for k in ("keypoints", "x") if k in keys), keys[0] if len(keys) == 1 else None)
            if key is None:
                raise ValueError(f"{path}: expected an array named 'keypoints' or 'x', got {keys}")
            t = z["t"] if "t" in keys else (z["timestamps"] if "timestamps" in keys else None)
            fps = float(z["fps"]) if "fps" in keys else None
            return np.asarray(z[key]), t, fps
    return np.load(path, allow_pickle=False), None, None


def array_frames(path: str, meta: StreamMeta) -> Iterator[Item]:
    a, t, _ = _load_array(path)
    a = _layout(a, meta, path)
    if t is not None and len(t) != a.shape[0]:
        raise ValueError(f"{path}: expected {a.shape[0]} timestamps t (one per frame), got {len(t)}")
    valid = np.flatnonzero(a.reshape(a.shape[0], -1).any(1))
    a = a[: int(valid[-1]) + 1 if valid.size else 0]           # trailing all-zero frames are padding
    for i in range(a.shape[0]):
        yield a[i], (None if t is None else float(t[i])), f"{os.path.basename(path)} frame {i}", None


def openpose_frames(folder: str, meta: StreamMeta) -> Iterator[Item]:
    from fastskel.data.prepare_pose import read_openpose_clip

    if meta.channels == "xyz" or meta.C not in (2, 3):
        raise ValueError(f"--input {folder}: OpenPose JSON gives 2-D keypoints (x, y, score); the model expects "
                         f"{meta.channels} ({meta.C} channels)")
    files = sorted(f for f in os.listdir(folder) if f.endswith(".json"))
    if not files:
        raise ValueError(f"--input {folder}: no OpenPose .json frame files")
    with tempfile.TemporaryDirectory() as tmp:
        link = os.path.join(tmp, "frame.json")
        for f in files:
            src = os.path.join(folder, f)
            if os.path.lexists(link):
                os.remove(link)
            os.symlink(os.path.abspath(src), link)
            try:
                kp, sc = read_openpose_clip(tmp, max_people=1 << 16)
            except ValueError as e:
                msg = str(e).replace(link, src)
                if "no person in any frame" in msg:
                    yield None, None, f, None
                else:
                    yield None, None, f, msg.replace(f"{src}: ", "")
                continue
            frame = np.concatenate([kp[:, 0], sc[:, 0, :, None]], -1)          # (people, V, 3)
            yield (frame if meta.channels == "xy+score" else frame[..., :2]), None, f, None


def source_fps(src: str) -> Optional[float]:
    """The frame rate a source records (an ``.npz``'s ``fps``), else ``None``."""
    if src.lower().endswith(".npz") and os.path.isfile(src):
        return _load_array(src)[2]
    return None


def open_source(src: str, meta: StreamMeta, stdin: Optional[TextIO] = None) -> Iterator[Item]:
    """The frames of ``--input SRC`` (see the module docstring)."""
    if src == "-":
        return jsonl_frames(stdin if stdin is not None else sys.stdin)
    if os.path.isdir(src):
        return openpose_frames(src, meta)
    if not os.path.exists(src):
        raise FileNotFoundError(f"--input: no such file or folder: {src}")
    if src.lower().endswith((".npy", ".npz")):
        return array_frames(src, meta)
    raise ValueError(f"--input {src}: expected a folder of OpenPose .json, a .npy/.npz sequence or '-' (JSON lines "
                     f"on stdin)")
