"""``StreamMeta``: what an online model needs to know about its input, read from its checkpoint,
and :func:`preprocess_window`, which turns a window of live frames into the tensor ``fastskel
eval`` would have fed for a clip holding those frames.

The offline evaluation input is the reader's clip ``(C, T, V, M)`` — bodies in the reader's order,
absent bodies and frames zero, the clip centred as the reader centred it, zero-padded to the
dataset's ``T`` frames — with ``lengths`` = its valid frames; each method's ``encode()`` then
resamples / crops / centres inside the model. So a window ``(W, M', V, C)`` becomes, in order:

1. **Bodies** (``preprocess["bodies"]``): more than ``M`` → the ``M`` the reader keeps:
   ``"score"`` per frame the ``M`` highest summed keypoint scores (``fastskel prepare openpose``);
   ``"energy"`` the ``M`` body slots with the largest ``std_x + std_y + std_z`` over their present
   frames of the window (NTU's rule, slots taken as tracks; ties: lower slot; frames are *not*
   dropped); ``"order"`` the first ``M``. Fewer than ``M`` → zero bodies appended.
2. **Centring** (``preprocess["center"]``, or none): subtract body ``b``'s joint ``j`` at the first
   frame of the window where body ``b`` is present from the coordinate channels of every body and
   frame; bodies absent in a frame stay zero (CTR-GCN ``seq_translation``).
3. **Frames**: ``(1, C, max(W, T), V, M)``, zero-padded after the window to ``T`` frames; the
   model takes ``lengths = valid_lengths(x)`` (:func:`fastskel.data.valid_lengths`), as a dataset
   without stored lengths does. A window of exactly a clip's valid frames thus gives the clip's
   offline input bit for bit. Windows longer than ``T`` are fed unpadded (models that resample
   their valid frames accept any length).

Files written before the data record existed (only ``sample_shape``, or nothing) fall back to:
``C, V`` from the method config, ``T`` from ``sample_shape`` or the config's frame count, ``M``
from ``sample_shape`` or 1, channels by ``C`` (3 → xyz, 2 → xy), no centring, bodies "order";
``preprocess["source"]["fallback"]`` then says so.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import numpy as np

__all__ = ["StreamMeta", "meta_from_checkpoint", "preprocess_window", "select_bodies", "CHANNELS"]

CHANNELS = ("xyz", "xy", "xy+score")


@dataclass
class StreamMeta:
    """Input description of an online model (see the module docstring for ``preprocess``)."""

    C: int
    T: int
    V: int
    M: int
    channels: str
    graph: Optional[Dict[str, Any]]
    class_names: Optional[List[str]]
    num_classes: int
    preprocess: Dict[str, Any] = field(default_factory=dict)
    method: Optional[str] = None

    def __post_init__(self):
        for k in ("C", "T", "V", "M", "num_classes"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or int(v) < 1:
                raise ValueError(f"StreamMeta.{k}: expected an int >= 1, got {v!r}")
            setattr(self, k, int(v))
        if self.class_names is not None:
            self.class_names = [str(n) for n in self.class_names]

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, s: str) -> "StreamMeta":
        try:
            d = json.loads(s)
        except json.JSONDecodeError as e:
            raise ValueError(f"StreamMeta.from_json: invalid JSON ({e.msg} at char {e.pos})") from None
        if not isinstance(d, dict):
            raise ValueError(f"StreamMeta.from_json: expected a JSON object, got {type(d).__name__}")
        known = {f for f in cls.__dataclass_fields__}
        missing = sorted({"C", "T", "V", "M", "channels", "num_classes"} - set(d))
        if missing:
            raise ValueError(f"StreamMeta.from_json: missing field(s) {missing}")
        return cls(**{k: v for k, v in d.items() if k in known})

    def class_name(self, k: int) -> str:
        if self.class_names and 0 <= k < len(self.class_names):
            return self.class_names[k]
        return f"class_{k}"

    @property
    def coord_channels(self) -> int:
        """Channels that are coordinates (centred); the rest (a score) are left as they are."""
        return min(self.C, 3 if self.channels == "xyz" else 2)


# ------------------------------------------------------------------------------ from a checkpoint
def _model_note(method: Optional[str], cfg: Dict[str, Any]) -> Dict[str, Any]:
    """What the method's ``encode()`` does to its input (informational; it runs inside the model)."""
    frames = cfg.get("num_frames", cfg.get("frames"))
    out: Dict[str, Any] = {"method": method}
    if frames is not None:
        out["resample_valid_frames_to"] = int(frames)
        out["how"] = "linear, align_corners=False (fastskel.data.transforms.resample)"
    if cfg.get("encode_crop") is not None:
        out["centre_crop"] = float(cfg["encode_crop"])
    if cfg.get("center") is not None and method == "slim":
        out["slim_center"] = bool(cfg["center"])
    return out


def _graph_of(cfg: Dict[str, Any], V: int) -> Optional[Dict[str, Any]]:
    from fastskel.graph import SkeletonGraph

    try:
        g = cfg.get("graph")
        return SkeletonGraph.get(g).to_dict() if g else SkeletonGraph.for_joints(V).to_dict()
    except (ValueError, TypeError):
        return None


def meta_from_state(st: Dict[str, Any], where: str = "checkpoint") -> StreamMeta:
    """:class:`StreamMeta` of a loaded classifier / supervised / student state dict."""
    data = dict(st.get("data") or {})
    data.update((st.get("extra") or {}).get("stream_data") or {})      # supervised pretraining checkpoints
    if st.get("kind") == "asma_student":
        hp = dict(st.get("hparams") or {})
        cfg = {"in_channels": hp.get("in_channels", 3), "num_frames": hp.get("num_frames"),
               "graph": st.get("graph")}
        V = int(st["model"]["encoder.stgcn.A"].shape[-1]) if "encoder.stgcn.A" in st.get("model", {}) else None
        cfg["num_joints"] = V
        method, k = "asma_student", int(hp.get("num_classes", 0))
    else:
        cfg = dict(st.get("config") or {})
        method = st.get("method")
        k = int(st.get("num_classes") or cfg.get("num_classes") or 0)
    shape = data.get("sample_shape")
    fallback = []
    if shape:
        C, T, V, M = (int(s) for s in shape)
    else:
        C, V = int(cfg.get("in_channels") or 3), cfg.get("num_joints")
        if V is None:
            raise ValueError(f"{where}: records neither the input shape nor num_joints; cannot stream it")
        V = int(V)
        T = int(cfg.get("num_frames") or cfg.get("frames") or 64)
        M = 1
        fallback.append("sample_shape not recorded: C, V from the config, T = the model's frame count, M = 1")
    channels = data.get("channels")
    if not channels:
        channels = {3: "xyz", 2: "xy"}.get(C, f"{C}d")
        fallback.append(f"channels not recorded: {channels!r} by C")
    pre = dict(data.get("preprocess") or {})
    if not pre:
        pre = {"version": 0, "center": None,
               "frames": {"pad_to": T, "lengths": "valid_frames", "resample": "inside the model (method encode)"},
               "bodies": {"max": M, "select": "order", "absent": "zeros"}, "source": {}}
        fallback.append("preprocessing not recorded (a file older than the data record): no centring, "
                        "bodies in the given order; centre the input as the training data was")
    pre = json.loads(json.dumps(pre))                       # plain data, tuples → lists
    pre.setdefault("source", {})
    if fallback:
        pre["source"]["fallback"] = "; ".join(fallback)
    pre["model"] = _model_note(method, cfg)
    graph = data.get("graph") or st.get("graph") or _graph_of(cfg, V)
    graph = json.loads(json.dumps(graph)) if graph else None
    if k < 1:
        raise ValueError(f"{where}: records no number of classes")
    return StreamMeta(C=C, T=T, V=V, M=M, channels=str(channels), graph=graph,
                      class_names=data.get("class_names"), num_classes=k, preprocess=pre, method=method)


def meta_from_checkpoint(path_or_state: Union[str, Path, Dict[str, Any]]) -> StreamMeta:
    """:class:`StreamMeta` of a classifier file (``fastskel eval linear|finetune --out``), a
    supervised checkpoint with its own classifier, a distilled ``student.pt`` or their state dict."""
    if isinstance(path_or_state, dict):
        return meta_from_state(path_or_state, "state")
    import torch

    p = Path(path_or_state)
    if not p.is_file():
        raise FileNotFoundError(f"model: no such file: {p}")
    try:
        st = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"model: {p} is not a fastskel checkpoint ({type(e).__name__})") from None
    if not isinstance(st, dict):
        raise ValueError(f"model: {p} is not a fastskel checkpoint (holds a {type(st).__name__})")
    check_streamable(st, p)
    return meta_from_state(st, str(p))


def check_streamable(st: Dict[str, Any], path) -> None:
    """``ValueError`` unless ``st`` holds a classifier (classifier file, student, supervised)."""
    if st.get("kind") not in ("classifier", "asma_student"):
        if st.get("method") != "supervised" or "model" not in st:
            raise ValueError(f"model: {path} is a pretraining checkpoint without a classifier; stream the "
                             f"classifier file of `fastskel eval linear|finetune --out DIR` instead")


# ------------------------------------------------------------------------------ preprocessing
def _energy(b: np.ndarray) -> float:
    """NTU activity of one body track ``(W, V, C)``: ``std_x + std_y + std_z`` over present frames."""
    present = (b != 0).any(axis=(1, 2))
    if not present.any():
        return -1.0
    v = b[present][..., :3].reshape(-1, min(3, b.shape[-1])).astype(np.float64)
    return float(v.std(axis=0).sum())


def select_bodies(frames: np.ndarray, M: int, rule: str, channels: str) -> np.ndarray:
    """``(W, M', V, C)`` → ``(W, M, V, C)`` by ``rule`` (see the module docstring)."""
    W, Mp, V, C = frames.shape
    if Mp > M:
        if rule == "score" and "score" in channels:
            s = frames[..., C - 1].sum(-1)                          # (W, M')
            order = np.argsort(-s, axis=1, kind="stable")[:, :M]    # ties: earlier body first
            frames = np.take_along_axis(frames, order[:, :, None, None], axis=1)
        elif rule == "energy":
            e = np.array([_energy(frames[:, m]) for m in range(Mp)])
            keep = np.argsort(-e, kind="stable")[:M]
            frames = frames[:, keep]
        else:
            frames = frames[:, :M]
    if frames.shape[1] < M:
        pad = np.zeros((W, M - frames.shape[1], V, C), dtype=frames.dtype)
        frames = np.concatenate([frames, pad], axis=1)
    return frames


def preprocess_window(frames: np.ndarray, meta: StreamMeta) -> np.ndarray:
    """A window ``(W, M', V, C)`` float32 → the model input ``(1, C, max(W, T), V, M)`` float32."""
    if not isinstance(frames, np.ndarray):
        raise TypeError(f"frames: expected a numpy array (W, M, V, C), got {type(frames).__name__}")
    if frames.ndim != 4 or frames.shape[2] != meta.V or frames.shape[3] != meta.C or frames.shape[0] < 1:
        raise ValueError(f"frames: expected (W, M, V={meta.V}, C={meta.C}) with W >= 1, got shape {frames.shape}")
    f = np.asarray(frames, dtype=np.float32)
    if not np.isfinite(f).all():
        raise ValueError("frames: expected finite values, got NaN or inf")
    return _preprocess(f, meta)


def _preprocess(f: np.ndarray, meta: StreamMeta) -> np.ndarray:
    """:func:`preprocess_window` of an already checked float32 window (``ActionStream`` checks
    every frame on ``push``, so its windows skip the second pass over the values)."""
    pre = meta.preprocess or {}
    bodies = pre.get("bodies") or {}
    f = select_bodies(f, meta.M, str(bodies.get("select", "order")), meta.channels)
    W = f.shape[0]
    out = np.zeros((1, meta.C, max(W, meta.T), meta.V, meta.M), np.float32)   # never the caller's array
    c = pre.get("center")
    if c:
        b, j, k = int(c.get("body", 0)), int(c["joint"]), int(c.get("channels", meta.coord_channels))
        present = f.reshape(W, meta.M, -1).any(axis=2)                  # (W, M): the body has a non-zero value
        idx = np.flatnonzero(present[:, b])
        if idx.size:
            origin = np.zeros(meta.C, np.float32)
            origin[:k] = f[idx[0], b, j, :k]
            f = np.where(present[:, :, None, None], f - origin, np.float32(0))
    out[0, :, :W] = f.transpose(3, 0, 2, 1)
    return out
