"""What a classifier file records about its data, so that a deployed model sees its inputs exactly
as ``fastskel eval`` fed them (read back by :mod:`fastskel.stream.meta`).

The evaluation input of every method is the reader's clip ``x (C, T, V, M)`` (zero-padded to the
dataset's ``T`` frames and ``M`` bodies) with ``lengths = valid frames``; each method's
``encode()`` then does its own temporal resampling / cropping / centring inside the model. What
happens *before* the model — in the data reader — is recorded here:

- ``sample_shape`` ``(C, T, V, M)``: the padded clip shape (an online window is zero-padded to ``T``
  frames, as the reader pads a shorter clip; trailing zero frames are not valid frames).
- ``channels``: ``"xyz"``, ``"xy"`` or ``"xy+score"`` — the dataset's own attribute (synthetic,
  ``meta["channels"]`` of PYSKL files) when it has one, else inferred from the values (``C = 2``:
  xy; ``C = 3`` with a third channel in [0, 1] on every present joint: xy+score; else xyz).
- ``preprocess["center"]``: *detected from the training clips*: the joint ``j`` such that body 0's
  joint ``j`` at its first present frame is the origin (``|x| < 1e-5`` on the coordinate channels)
  in ≥ 99 % of the clips (at most 512, evenly spaced) — CTR-GCN's ``seq_translation`` (NTU ``.npz``, ``fastskel prepare ntu``,
  the synthetic set: joint 1). ``None`` when the clips are not centred that way (e.g. PYSKL 2-D
  files: raw image coordinates).
- ``preprocess["bodies"]``: how the reader picks ``M`` bodies when more are detected: ``"score"``
  (highest summed keypoint score per frame: ``fastskel prepare openpose``), ``"energy"`` (NTU's
  most active tracks, ``std_x + std_y + std_z``), or ``"order"`` (the first ``M`` as given).
- ``graph`` (plain dict) and ``class_names``.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

import torch

__all__ = ["add_data_record", "data_record", "detect_center", "infer_channels", "PREPROCESS_VERSION"]

PREPROCESS_VERSION = 1


def _sample(x: torch.Tensor, n: int = 512) -> torch.Tensor:
    """At most ``n`` clips, evenly spaced (the checks below need not read a whole NTU-120)."""
    if x.shape[0] <= n:
        return x
    return x[torch.linspace(0, x.shape[0] - 1, n).long()]


def infer_channels(ds) -> tuple:
    """``(channels, source)`` of a dataset (see the module docstring)."""
    ch = getattr(ds, "channels", None) or (getattr(ds, "meta", None) or {}).get("channels")
    if ch:
        return str(ch), "dataset"
    x = _sample(ds.x)
    c = int(x.shape[1])
    if c == 2:
        return "xy", "inferred from C=2"
    if c == 3:
        present = (x != 0).any(1)                          # (N, T, V, M)
        third = x[:, 2][present]
        if third.numel() and bool(((third >= 0) & (third <= 1)).all()) and bool((third > 0).any()):
            return "xy+score", "inferred: channel 2 in [0, 1] on every present joint"
        return "xyz", "inferred from C=3"
    return f"{c}d", f"inferred from C={c}"


def detect_center(x: torch.Tensor, coords: int, tol: float = 1e-5, share: float = 0.99) -> Optional[int]:
    """The joint that is the origin of body 0 at its first present frame in ≥ ``share`` of the
    clips ``x (N, C, T, V, M)`` (coordinate channels ``:coords``), else ``None``."""
    body0 = x[..., 0].float()                               # (N, C, T, V)
    present = (body0 != 0).any(1).any(-1)                   # (N, T)
    has = present.any(1)
    if not bool(has.any()):
        return None
    first = present.float().argmax(1)                       # first present frame (0 when none)
    idx = first.view(-1, 1, 1, 1).expand(-1, body0.shape[1], 1, body0.shape[3])
    f0 = body0.gather(2, idx)[:, :coords, 0]                # (N, coords, V)
    at_origin = (f0.abs() < tol).all(1)[has]                # (N', V)
    frac = at_origin.float().mean(0)
    # a joint at the origin must not just be an all-zero (undetected) joint of everyone
    nonzero_elsewhere = (body0[:, :coords] != 0).any(1).any(1)[has].float().mean(0) > 0.5
    ok = [v for v in range(frac.numel()) if float(frac[v]) >= share and bool(nonzero_elsewhere[v])]
    return ok[0] if ok else None


def _bodies_rule(spec: Optional[str], channels: str, V: int) -> str:
    if "score" in channels:
        return "score"
    s = str(spec or "").lower()
    if s.startswith("synthetic"):
        return "order"
    if V == 25 and channels == "xyz":
        return "energy"
    return "order"


def _graph_dict(method_config: Any, ds, V: int) -> Optional[Dict[str, Any]]:
    from fastskel.graph import SkeletonGraph

    g = (method_config.get("graph") if isinstance(method_config, dict)
         else getattr(method_config, "graph", None))
    try:
        if g:
            return SkeletonGraph.get(g).to_dict()
        dg = getattr(ds, "graph", None)
        if isinstance(dg, SkeletonGraph):
            return dg.to_dict()
        return SkeletonGraph.for_joints(V).to_dict()
    except (ValueError, TypeError):
        return None


def data_record(ds, spec: Optional[str] = None, method_config: Any = None) -> Dict[str, Any]:
    """The ``"data"`` dict of a classifier file for training dataset ``ds`` (``--data spec``);
    ``method_config``: the encoder's config (dataclass or dict; its ``graph`` wins)."""
    C, T, V, M = (int(s) for s in ds.x.shape[1:])
    channels, ch_source = infer_channels(ds)
    coords = 3 if channels == "xyz" else 2
    joint = detect_center(_sample(ds.x), min(coords, C))
    names = getattr(ds, "class_names", None) or (getattr(ds, "meta", None) or {}).get("class_names")
    class_names: Optional[List[str]] = [str(n) for n in names] if names else None
    pre = {
        "version": PREPROCESS_VERSION,
        "center": None if joint is None else {"joint": int(joint), "body": 0, "frame": "first_present",
                                               "channels": int(min(coords, C))},
        "frames": {"pad_to": T, "lengths": "valid_frames", "resample": "inside the model (method encode)"},
        "bodies": {"max": M, "select": _bodies_rule(spec, channels, V), "absent": "zeros"},
        "source": {"center": "detected from the training clips", "channels": ch_source,
                   "data": str(spec) if spec is not None else None},
    }
    return {"sample_shape": (C, T, V, M), "channels": channels, "graph": _graph_dict(method_config, ds, V),
            "class_names": class_names, "preprocess": pre}


def add_data_record(path, ds, spec: Optional[str] = None, student=None) -> None:
    """Add ``data`` (and the student's ``graph``) to a distilled-student file ``student.pt``
    (``{"kind": "asma_student", "hparams", "model"}``), which ``fastskel distill`` writes without them."""
    st = torch.load(path, map_location="cpu", weights_only=True)
    g = getattr(getattr(student, "encoder", None), "graph", None)
    st["data"] = data_record(ds, spec, {"graph": g.to_dict()} if g is not None else None)
    if g is not None:
        st["graph"] = g.to_dict()
    torch.save(st, path)
