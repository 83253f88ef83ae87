"""Models an :class:`~fastskel.stream.ActionStream` runs: the ``StreamModel`` protocol, the PyTorch
implementation and :func:`load_stream_model` (``*.onnx`` → onnxruntime, anything else → PyTorch).

``logits(x)`` takes the output of :func:`~fastskel.stream.meta.preprocess_window`, ``(1, C, T,
V, M)`` float32, and returns ``(1, K)`` float32 class scores. The PyTorch model calls exactly what
``fastskel eval`` calls: ``Classifier.logits(x, lengths)`` (``head((encode(x, L) − mean) / std)``)
of :func:`fastskel.engine.evaluate.load_classifier` in eval mode with ``lengths =
valid_lengths(x)``; a distilled student's ``logits(x, lengths)``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Protocol, runtime_checkable

import numpy as np

from .meta import StreamMeta, check_streamable, meta_from_state

__all__ = ["StreamModel", "TorchStreamModel", "load_stream_model", "load_student"]


@runtime_checkable
class StreamModel(Protocol):
    meta: StreamMeta

    def logits(self, x: np.ndarray) -> np.ndarray:  # (1, C, T, V, M) float32 -> (1, K)
        ...


def load_student(st: dict):
    """An :class:`~fastskel.methods.asma.ASMaStudent` from a ``student.pt`` state (its graph: the
    recorded one, else the built-in graph with the weights' joint count)."""
    from fastskel.graph import SkeletonGraph
    from fastskel.methods.asma import ASMaStudent

    hp = dict(st.get("hparams") or {})
    model = st.get("model") or {}
    g = st.get("graph")
    if not g:
        if "encoder.stgcn.A" not in model:
            raise ValueError("student: the file records no graph and no adjacency")
        g = SkeletonGraph.for_joints(int(model["encoder.stgcn.A"].shape[-1]))
    stu = ASMaStudent(graph=g, **hp)
    stu.load_state_dict(model)
    return stu


class TorchStreamModel:
    """A fastskel classifier file, supervised checkpoint or distilled student, run by PyTorch.

    Args:
        checkpoint_path: the file.
        device: torch device (default CPU).
        threads: ``torch.set_num_threads(threads)`` when given (process-wide, stated in benchmarks).
    """

    def __init__(self, checkpoint_path, device: str = "cpu", threads: Optional[int] = None):
        import torch

        from fastskel.engine.checkpoint import load_checkpoint

        if threads is not None:
            if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
                raise ValueError(f"threads: expected an int >= 1, got {threads!r}")
            torch.set_num_threads(threads)
        p = Path(checkpoint_path)
        if not p.is_file():
            raise FileNotFoundError(f"model: no such file: {p}")
        self.device = torch.device(device)
        try:
            raw = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as e:
            load_checkpoint(p)                              # raises its clear message for a damaged file
            raise ValueError(f"model: {p} is not a fastskel checkpoint ({type(e).__name__})") from None
        if not isinstance(raw, dict):
            raise ValueError(f"model: {p} is not a fastskel checkpoint (holds a {type(raw).__name__})")
        check_streamable(raw, p)
        if raw.get("kind") == "asma_student":
            self.net = load_student(raw)
            st = raw
        else:
            from fastskel.engine.evaluate import load_classifier

            self.net, st = load_classifier(p)
        self.net.eval().to(self.device)
        self.meta = meta_from_state(st, str(p))
        self.path = p

    def logits(self, x: np.ndarray) -> np.ndarray:
        import torch

        from fastskel.data import valid_lengths

        t = torch.as_tensor(np.asarray(x, dtype=np.float32)).to(self.device)
        with torch.inference_mode():
            out = self.net.logits(t, valid_lengths(t))
        return out.float().cpu().numpy()


def load_stream_model(path, **kw: Any) -> StreamModel:
    """``*.onnx`` → :class:`fastskel.stream.onnx_model.OnnxStreamModel`; else :class:`TorchStreamModel`."""
    if str(path).lower().endswith(".onnx"):
        try:
            from .onnx_model import OnnxStreamModel
        except ImportError as e:
            raise ImportError(f"model: {path} is an ONNX file but fastskel.stream.onnx_model is not available "
                              f"in this build ({e})") from None
        return OnnxStreamModel(path, **kw)
    return TorchStreamModel(path, **kw)
