"""``fastskel prepare ntu``: raw NTU ``.skeleton`` files → a CTR-GCN/MAMP ``.npz``, with bounded memory.

Files are parsed in chunks (C++ parser, all cores) and written straight into two memory-mapped
``.npy`` scratch files next to the output; the ``.npz`` (an uncompressed zip, as ``np.savez``) is then
streamed from them, so peak memory is one chunk of files, not the dataset (CTR-GCN's
preprocessing keeps everything in RAM and dies on NTU-120).

Output keys: ``x_train``, ``x_test`` float32 ``(N, max_frames, 150)`` (per frame: body 0's 25 joints
× xyz, then body 1's), ``y_train``, ``y_test`` one-hot float32 ``(N, K)`` (K = 60, or 120 when an
action id > 60 occurs), and ``names_train``, ``names_test`` (file stems). Samples are in file-name
order. By default each sequence is translated like CTR-GCN's ``seq_translation``
(:func:`~fastskel.data.ntu.center_like_ctrgcn`); ``center=False`` keeps camera coordinates.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field
from typing import Callable, List, Optional

import numpy as np

from .ntu import NTUFormatError, center_like_ctrgcn, is_train, parse_ntu_name, read_ntu_skeletons

__all__ = ["PrepareReport", "prepare_ntu"]


@dataclass
class PrepareReport:
    out: str
    benchmark: str
    num_train: int = 0
    num_test: int = 0
    num_classes: int = 0
    bad: List[NTUFormatError] = field(default_factory=list)


def _write_npy_member(zf: zipfile.ZipFile, name: str, src: np.ndarray, rows: int, chunk_rows: int = 512) -> None:
    """Stream the first ``rows`` rows of ``src`` into ``zf`` as ``name.npy``."""
    shape = (rows,) + tuple(src.shape[1:])
    header = {"descr": np.lib.format.dtype_to_descr(src.dtype), "fortran_order": False, "shape": shape}
    with zf.open(name + ".npy", "w", force_zip64=True) as f:
        np.lib.format.write_array_header_1_0(f, header)
        for r in range(0, rows, chunk_rows):
            f.write(np.ascontiguousarray(src[r: min(rows, r + chunk_rows)]).tobytes())


def _write_small(zf: zipfile.ZipFile, name: str, arr: np.ndarray) -> None:
    with zf.open(name + ".npy", "w", force_zip64=True) as f:
        np.lib.format.write_array(f, np.asarray(arr), allow_pickle=False)


def prepare_ntu(raw_dir: str, out: str, benchmark: str = "xsub", skip_bad: bool = False, max_frames: int = 300,
                center: bool = True, num_classes: Optional[int] = None, chunk: int = 256,
                num_threads: Optional[int] = None, backend: str = "auto", progress: bool = True,
                on_bad: Optional[Callable[[NTUFormatError], None]] = None) -> PrepareReport:
    """Convert the ``.skeleton`` files of ``raw_dir`` into the ``.npz`` at ``out`` (see module doc).

    A malformed file (or one longer than ``max_frames``, or with a non-NTU name) raises
    :class:`NTUFormatError` naming it, unless ``skip_bad``: then it is reported through ``on_bad``,
    left out, and listed in the returned report's ``bad``. Nothing else is dropped.
    """
    from tqdm.auto import tqdm

    if benchmark not in ("xsub", "xview", "xset"):
        raise ValueError(f"benchmark: expected 'xsub', 'xview' or 'xset', got {benchmark!r}")
    if not os.path.isdir(raw_dir):
        raise ValueError(f"raw: not a directory: {raw_dir!r}")
    files = sorted(f for f in os.listdir(raw_dir) if f.endswith(".skeleton"))
    if not files:
        raise ValueError(f"raw: no .skeleton files in {raw_dir!r}")
    report = PrepareReport(out=out, benchmark=benchmark)

    def bad(err: NTUFormatError) -> None:
        if not skip_bad:
            raise err
        report.bad.append(err)
        if on_bad is not None:
            on_bad(err)

    items = []  # (path, stem, info)
    for f in files:
        p = os.path.join(raw_dir, f)
        try:
            items.append((p, f[:-9], parse_ntu_name(f)))
        except ValueError:
            bad(NTUFormatError(p, 0, "file name is not an NTU sample name SsssCcccPpppRrrrAaaa"))
    actions = [info["action"] for _, _, info in items]
    K = num_classes or (120 if actions and max(actions) > 60 else 60)
    if actions and max(actions) > K:
        raise ValueError(f"num_classes: {K} is less than the largest action id {max(actions)}")
    report.num_classes = K
    train_items = [it for it in items if is_train(it[2], benchmark)]
    test_items = [it for it in items if not is_train(it[2], benchmark)]

    out_dir = os.path.dirname(os.path.abspath(out)) or "."
    os.makedirs(out_dir, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".fastskel-prepare-", dir=out_dir)
    try:
        row_width = 2 * 25 * 3
        parts = {}
        for part, its in (("train", train_items), ("test", test_items)):
            mm = np.lib.format.open_memmap(os.path.join(tmp, f"x_{part}.npy"), mode="w+", dtype=np.float32,
                                           shape=(max(len(its), 1), max_frames, row_width))
            parts[part] = {"items": its, "x": mm, "rows": 0, "y": [], "names": []}
        bar = tqdm(total=len(items), desc=f"prepare ntu {benchmark}", unit="file", disable=not progress)
        for part in ("train", "test"):
            st = parts[part]
            its = st["items"]
            for c0 in range(0, len(its), chunk):
                batch = its[c0: c0 + chunk]
                arrays, errors = read_ntu_skeletons([p for p, _, _ in batch], backend=backend,
                                                    num_threads=num_threads, skip_bad=True)
                err_of = {e.path: e for e in errors}
                for (p, stem, info), arr in zip(batch, arrays):
                    if arr is None:
                        bad(err_of[p])
                        continue
                    if arr.shape[1] > max_frames:
                        bad(NTUFormatError(p, 0, f"{arr.shape[1]} frames, more than max_frames={max_frames}"))
                        continue
                    if center:
                        arr = center_like_ctrgcn(arr)
                    r = st["rows"]
                    st["x"][r, : arr.shape[1]] = arr.transpose(1, 3, 2, 0).reshape(arr.shape[1], row_width)
                    st["rows"] = r + 1
                    st["y"].append(info["label"])
                    st["names"].append(stem)
                bar.update(len(batch))
        bar.close()
        for st in parts.values():
            st["x"].flush()
        tmp_out = os.path.join(tmp, "out.npz")
        eye = np.eye(K, dtype=np.float32)
        with zipfile.ZipFile(tmp_out, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            for part in ("train", "test"):
                st = parts[part]
                _write_npy_member(zf, f"x_{part}", st["x"], st["rows"])
                y = eye[np.asarray(st["y"], dtype=np.int64)] if st["rows"] else np.zeros((0, K), np.float32)
                _write_small(zf, f"y_{part}", y)
                _write_small(zf, f"names_{part}", np.asarray(st["names"], dtype=str).reshape(-1))
        for st in parts.values():
            del st["x"]
        os.replace(tmp_out, out)
        report.num_train, report.num_test = parts["train"]["rows"], parts["test"]["rows"]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return report
