"""NTU RGB+D / NTU-120 raw ``.skeleton`` files: parsing, body selection, names and benchmark splits.

File grammar (Kinect v2 SDK dump; one item per line, fields separated by spaces or tabs)::

    F                                   frame count
    F times:  B                         body count of the frame
              B times:  id f1 … f9      body info: tracking id (unsigned int) + 9 numbers
                        J               joint count (must be 25)
                        J times: x y z dX dY cX cY oW oX oY oZ state   (12 numbers)

Numbers are plain decimals ``[+-]?(\\d+\\.?\\d*|\\.\\d+)([eE][+-]?\\d+)?`` (no nan/inf/hex); every
line is checked, and any deviation raises :class:`NTUFormatError` naming the file and 1-based line.
Only blank lines may follow the last frame.

Body selection (what :func:`read_ntu_skeleton` returns, identical in C++ and Python):

1. Bodies are tracked by their Kinect tracking id across frames (not by slot order, which changes
   when a body disappears); a repeated id within one frame starts a new track.
2. Activity of a track = ``std_x + std_y + std_z`` of its coordinates over the frames it is present
   in (population std over all its joints and frames) — 2s-AGCN/CTR-GCN's ``get_nonzero_std``
   "energy". Sums are sequential in float64 (frame-major, then joint) in both implementations, so the
   choice is bit-identical.
3. The ``max_bodies`` (2) most active tracks are kept, most active first (ties: earlier first
   appearance); frames in which none of them is present — including frames with no body at all —
   are dropped; a kept body absent from a kept frame is zeros there.

Coordinates are parsed to float64 (correctly rounded) and stored as float32 (a value beyond the
float32 range is an error). This is the simple rule of docs/design.md §6, *not* CTR-GCN's
``get_raw_denoised_data`` (which also drops bodies by spread ratio and length and splits noisy
tracks).
"""
from __future__ import annotations

import math
import os
import re
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

__all__ = [
    "NTUFormatError", "NTU120_XSUB_TRAIN", "NTU60_XSUB_TRAIN", "XVIEW_TRAIN_CAMERAS", "center_like_ctrgcn",
    "is_train", "ntu_action_names", "ntu_class_names", "parse_ntu_name", "read_ntu_skeleton", "read_ntu_skeletons",
    "write_ntu_skeleton",
]

# Cross-subject training subjects: NTU-60 (Shahroudy et al. 2016) and NTU-120 (Liu et al. 2019).
NTU60_XSUB_TRAIN = frozenset({1, 2, 4, 5, 8, 9, 13, 14, 15, 16, 17, 18, 19, 25, 27, 28, 31, 34, 35, 38})
NTU120_XSUB_TRAIN = frozenset(NTU60_XSUB_TRAIN | {
    45, 46, 47, 49, 50, 52, 53, 54, 55, 56, 57, 58, 59, 70, 74, 78, 80, 81, 82, 83, 84, 85, 86, 89, 91,
    92, 93, 94, 95, 97, 98, 100, 103})
XVIEW_TRAIN_CAMERAS = frozenset({2, 3})
BENCHMARKS = ("xsub", "xview", "xset")

_NAME_RE = re.compile(r"S(\d{3})C(\d{3})P(\d{3})R(\d{3})A(\d{3})")
_NUM = r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?"
_WS = r"[ \t]"
_INT_RE = re.compile(rf"{_WS}*(\d+){_WS}*")
_BODY_RE = re.compile(rf"{_WS}*(\d+)(?:{_WS}+{_NUM}){{9}}{_WS}*")
_JOINT_RE = re.compile(rf"{_WS}*({_NUM}){_WS}+({_NUM}){_WS}+({_NUM})(?:{_WS}+{_NUM}){{9}}{_WS}*")
_NUM_FULL = re.compile(_NUM)
_F32_OVERFLOW = 3.4028235677973366e38  # FLT_MAX + half an ulp: doubles from here round to inf in float32
_DIGITS_RE = re.compile(r"\d+")
_SPLIT_RE = re.compile(r"[ \t]+")


class NTUFormatError(ValueError):
    """A malformed NTU ``.skeleton`` file; ``path`` and ``line`` (1-based, 0 = whole file)."""

    def __init__(self, path: str, line: int, message: str):
        self.path, self.line, self.reason = str(path), int(line), message
        where = f"{self.path}:{self.line}" if line > 0 else self.path
        super().__init__(f"{where}: {message}")


# ------------------------------------------------------------------------------------------ names
def parse_ntu_name(name: str) -> Dict[str, int]:
    """``SsssCcccPpppRrrrAaaa`` → setup, camera, subject, replication, action, label (= A − 1)."""
    base = os.path.basename(str(name))
    m = _NAME_RE.search(base)
    if m is None:
        raise ValueError(f"name: expected an NTU sample name like 'S001C002P003R002A013', got {base!r}")
    s, c, p, r, a = (int(g) for g in m.groups())
    return {"setup": s, "camera": c, "subject": p, "replication": r, "action": a, "label": a - 1}


def ntu_action_names(num_classes: int = 120) -> List[str]:
    """The official names of NTU RGB+D actions A001…A060 (``num_classes=60``) or NTU RGB+D 120's
    A001…A120, index = label (action − 1); read from ``fastskel/data/ntu_actions.txt``."""
    if num_classes not in (60, 120):
        raise ValueError(f"num_classes: expected 60 (NTU RGB+D) or 120 (NTU RGB+D 120), got {num_classes!r}")
    path = os.path.join(os.path.dirname(__file__), "ntu_actions.txt")
    with open(path, encoding="utf-8") as f:
        rows = [ln.rstrip("\n").split(" ", 1) for ln in f if ln.strip() and not ln.startswith("#")]
    return [name for _, name in rows[:num_classes]]


def ntu_class_names(num_classes: int, sample_names: Sequence[str] = (), path: str = "") -> Optional[List[str]]:
    """NTU action names for a dataset of ``num_classes`` labels when it is NTU data: every sample
    name is an NTU name (``S001C002P003R002A013``), or the file name says NTU (``NTU60_CS.npz``) and
    there are 60 or 120 classes; else ``None``. 60 names when every label is below 60, else 120."""
    names = list(sample_names)
    is_ntu = bool(names) and all(_NAME_RE.search(os.path.basename(str(n))) for n in names)
    if not is_ntu and not (num_classes in (60, 120) and "ntu" in os.path.basename(str(path)).lower()):
        return None
    if num_classes > 120:
        return None
    return ntu_action_names(60 if num_classes <= 60 else 120)


def is_train(info: Dict[str, int], benchmark: str) -> bool:
    """Whether a sample (``parse_ntu_name`` dict) is in the training set of ``benchmark``.

    - ``xsub``: subject in the NTU-120 training list (which restricted to NTU-60's subjects 1–40 is
      exactly NTU-60's list).
    - ``xview``: camera 2 or 3 (NTU-60's cross-view).
    - ``xset``: even setup id (NTU-120's cross-setup).
    """
    if benchmark == "xsub":
        return info["subject"] in NTU120_XSUB_TRAIN
    if benchmark == "xview":
        return info["camera"] in XVIEW_TRAIN_CAMERAS
    if benchmark == "xset":
        return info["setup"] % 2 == 0
    raise ValueError(f"benchmark: expected one of {BENCHMARKS}, got {benchmark!r}")


# ------------------------------------------------------------------------------------------ Python parser
def _diagnose_numbers(line: str, expected: int, first_int: bool = False) -> str:
    toks = [t for t in _SPLIT_RE.split(line) if t]
    if len(toks) != expected:
        return f"expected {expected} fields, got {len(toks)}"
    for i, tok in enumerate(toks):
        if i == 0 and first_int:
            if _DIGITS_RE.fullmatch(tok) is None:
                return f"field 1 (body id) is not a non-negative integer: '{tok}'"
        elif _NUM_FULL.fullmatch(tok) is None:
            return f"field {i + 1} is not a number: '{tok}'"
    return "malformed line"


def _parse_python(path: str, num_joints: int = 25) -> Tuple[List[List[Tuple[str, np.ndarray]]], int]:
    """Frames as lists of ``(body id, (J, 3) float64)``, and the number of lines read."""
    with open(path, "rb") as f:
        raw = f.read()
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise NTUFormatError(path, line, f"non-ASCII byte 0x{raw[e.start]:02x}") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    lines = [ln[:-1] if ln.endswith("\r") else ln for ln in lines]
    n = len(lines)
    if n == 0:
        raise NTUFormatError(path, 0, "empty file")
    pos = 0

    def need(what: str) -> str:
        if pos >= n:
            raise NTUFormatError(path, n + 1, f"unexpected end of file: expected {what}")
        return lines[pos]

    def read_int(what: str) -> int:
        nonlocal pos
        s = need(what)
        m = _INT_RE.fullmatch(s)
        if m is None:
            raise NTUFormatError(path, pos + 1, f"expected {what} (a non-negative integer), got '{s.strip(' ' + chr(9))}'")
        digits = m.group(1)
        if len(digits.lstrip("0")) > 7 or int(digits) > 1_000_000:
            raise NTUFormatError(path, pos + 1, f"{what}: value too large: '{digits}'")
        pos += 1
        return int(digits)

    num_frames = read_int("the frame count")
    frames: List[List[Tuple[str, np.ndarray]]] = []
    for fi in range(num_frames):
        num_bodies = read_int(f"the body count of frame {fi + 1}/{num_frames}")
        bodies = []
        for bi in range(num_bodies):
            s = need(f"the info line of body {bi + 1} in frame {fi + 1}")
            m = _BODY_RE.fullmatch(s)
            if m is None:
                raise NTUFormatError(path, pos + 1, f"body info line: {_diagnose_numbers(s, 10, True)}")
            body_id = m.group(1)
            pos += 1
            nj = read_int(f"the joint count of body {bi + 1} in frame {fi + 1}")
            if nj != num_joints:
                raise NTUFormatError(path, pos, f"expected {num_joints} joints, got {nj}")
            xyz = np.empty((num_joints, 3), dtype=np.float64)
            for j in range(num_joints):
                s = need(f"joint {j + 1}/{num_joints} of body {bi + 1} in frame {fi + 1}")
                m = _JOINT_RE.fullmatch(s)
                if m is None:
                    raise NTUFormatError(path, pos + 1, f"joint line: {_diagnose_numbers(s, 12)}")
                for c in range(3):
                    v = float(m.group(c + 1))
                    if not abs(v) < _F32_OVERFLOW:
                        raise NTUFormatError(path, pos + 1, f"joint line: field {c + 1} is out of the float32 range: '{m.group(c + 1)}'")
                    xyz[j, c] = v
                pos += 1
            bodies.append((body_id, xyz))
        frames.append(bodies)
    while pos < n:
        if lines[pos].strip(" \t"):
            raise NTUFormatError(path, pos + 1, f"unexpected data after the last of {num_frames} frames")
        pos += 1
    return frames, num_frames


def _sequential_std(v: np.ndarray) -> float:
    """Population std with left-to-right float64 sums (bit-identical to the C++ loop)."""
    s = np.cumsum(v)[-1]
    mean = s / v.size
    d = v - mean
    var = np.cumsum(d * d)[-1] / v.size
    return math.sqrt(var)


def _select_bodies(frames: List[List[Tuple[str, np.ndarray]]], max_bodies: int, num_joints: int) -> np.ndarray:
    tracks: Dict[Tuple[str, int], List[Tuple[int, np.ndarray]]] = {}
    for fi, bodies in enumerate(frames):
        seen: Dict[str, int] = {}
        for body_id, xyz in bodies:
            k = seen.get(body_id, 0)
            seen[body_id] = k + 1
            tracks.setdefault((body_id, k), []).append((fi, xyz))
    keys = list(tracks)  # insertion order = order of first appearance
    energy = []
    for key in keys:
        data = np.stack([xyz for _, xyz in tracks[key]])  # (F_k, J, 3)
        e = 0.0
        for c in range(3):
            e = e + _sequential_std(data[:, :, c].reshape(-1))
        energy.append(e)
    order = sorted(range(len(keys)), key=lambda i: (-energy[i], i))[:max_bodies]
    present = np.zeros(len(frames), dtype=bool)
    for k in order:
        for fi, _ in tracks[keys[k]]:
            present[fi] = True
    keep = np.flatnonzero(present)
    index = np.full(len(frames), -1, dtype=np.int64)
    index[keep] = np.arange(keep.size)
    out = np.zeros((3, keep.size, num_joints, max_bodies), dtype=np.float32)
    for m, k in enumerate(order):
        for fi, xyz in tracks[keys[k]]:
            out[:, index[fi], :, m] = xyz.T.astype(np.float32)
    return out


def _read_python(path: str, max_bodies: int = 2, num_joints: int = 25) -> np.ndarray:
    frames, _ = _parse_python(path, num_joints)
    if not any(frames):
        raise NTUFormatError(path, 0, f"no body in any of the {len(frames)} frames")
    return _select_bodies(frames, max_bodies, num_joints)


# ------------------------------------------------------------------------------------------ public API
def _cpp():
    from .. import _ext

    mod = _ext.load()
    return mod if mod is not None and hasattr(mod, "read_ntu_skeletons") else None


def _check_backend(backend: str):
    if backend not in ("auto", "cpp", "python"):
        raise ValueError(f"backend: expected 'auto', 'cpp' or 'python', got {backend!r}")
    mod = _cpp() if backend in ("auto", "cpp") else None
    if backend == "cpp" and mod is None:
        from .. import _ext

        raise RuntimeError(f"backend='cpp': fastskel._C has no read_ntu_skeletons ({_ext.error() or 'rebuild the extension'})")
    return mod


def read_ntu_skeletons(paths: Sequence[str], backend: str = "auto", num_threads: Optional[int] = None,
                       max_bodies: int = 2, num_joints: int = 25, skip_bad: bool = False):
    """Read many ``.skeleton`` files; ``[(3, T_i, 25, max_bodies) float32]`` in order.

    ``backend``: "cpp" (``fastskel._C.read_ntu_skeletons``: files parsed in parallel on
    ``num_threads`` threads, default all cores, GIL released), "python" (the fallback, threads do not
    help it), or "auto" (C++ when built). The first bad file raises :class:`NTUFormatError`; with
    ``skip_bad=True`` returns ``(arrays_or_None, errors)`` instead, ``errors`` the list of
    :class:`NTUFormatError` (``None`` in ``arrays`` where a file failed).
    """
    paths = [os.fspath(p) for p in paths]
    if max_bodies < 1 or num_joints < 1:
        raise ValueError(f"max_bodies, num_joints: expected >= 1, got {max_bodies}, {num_joints}")
    mod = _check_backend(backend)
    arrays: List[Optional[np.ndarray]] = []
    errors: List[NTUFormatError] = []
    if mod is not None:
        threads = int(num_threads) if num_threads else (os.cpu_count() or 1)
        for path, (ok, arr, msg, line) in zip(paths, mod.read_ntu_skeletons(paths, threads, max_bodies, num_joints)):
            if ok:
                arrays.append(arr)
            else:
                err = NTUFormatError(path, line, msg)
                if not skip_bad:
                    raise err
                arrays.append(None)
                errors.append(err)
    else:
        for path in paths:
            try:
                arrays.append(_read_python(path, max_bodies, num_joints))
            except NTUFormatError as err:
                if not skip_bad:
                    raise
                arrays.append(None)
                errors.append(err)
            except OSError as e:
                err = NTUFormatError(path, 0, f"cannot read: {e.strerror or e}")
                if not skip_bad:
                    raise err from None
                arrays.append(None)
                errors.append(err)
    return (arrays, errors) if skip_bad else arrays


def read_ntu_skeleton(path: str, backend: str = "auto", max_bodies: int = 2, num_joints: int = 25) -> np.ndarray:
    """One NTU ``.skeleton`` file → float32 ``(3, T, 25, 2)`` (see the module docstring for the
    body selection: two most active bodies, frames without them dropped, zeros where absent)."""
    return read_ntu_skeletons([path], backend, 1, max_bodies, num_joints)[0]


def center_like_ctrgcn(x: np.ndarray) -> np.ndarray:
    """CTR-GCN ``seq_translation``: subtract body 0's SpineMid (joint 1) at its first non-zero frame
    from every joint of every body, then re-zero frames where a body is absent. ``x`` ``(3, T, V, M)``."""
    x = np.array(x, dtype=np.float32, copy=True)
    body0 = x[..., 0]
    nz = np.flatnonzero((body0 != 0).any(axis=(0, 2)))
    if nz.size == 0:
        return x
    origin = body0[:, nz[0], 1].copy()
    absent = ~(x != 0).any(axis=(0, 2))  # (T, M)
    x -= origin[:, None, None, None]
    x[np.broadcast_to(absent[None, :, None, :], x.shape)] = 0.0
    return x


# ------------------------------------------------------------------------------------------ writer (fixtures, tests)
def write_ntu_skeleton(path: str, frames: Sequence[Sequence[Tuple[int, np.ndarray]]], fmt: str = "%.7g") -> None:
    """Write frames ``[[(body_id, (25, 3) xyz), …], …]`` as an NTU ``.skeleton`` file (other fields
    filled with plausible constants). Used to build fixtures and benchmark inputs."""
    out = [str(len(frames))]
    for bodies in frames:
        out.append(str(len(bodies)))
        for body_id, xyz in bodies:
            xyz = np.asarray(xyz, dtype=np.float64)
            out.append(f"{int(body_id)} 0 1 1 1 1 0 0.1 -0.2 2")
            out.append(str(xyz.shape[0]))
            for j in range(xyz.shape[0]):
                x, y, z = (fmt % float(v) for v in xyz[j])
                out.append(f"{x} {y} {z} 250.5 200.25 960.5 540.75 0.1 0.2 0.3 0.9 2")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")
