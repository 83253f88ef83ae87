"""``OnnxStreamModel``: an ONNX file from ``fastskel export``, run by onnxruntime, as a
:class:`~fastskel.stream.model.StreamModel`.

The file alone is enough: its ``metadata_props["fastskel"]`` holds the model's
:class:`~fastskel.stream.meta.StreamMeta` (class names, C, T, V, M, channels, graph,
preprocessing), written by :func:`fastskel.engine.export.export_classifier`. The exported graph
computes ``lengths = valid_lengths(x)`` itself, so ``logits(x)`` equals
:class:`~fastskel.stream.model.TorchStreamModel`'s ``Classifier.logits(x, valid_lengths(x))``
(checked ≤ 1e-4 in tests/test_stream_onnx.py). A file exported with a fixed T (metadata
``dynamic_T = "false"``) accepts only ``required_T`` frames; a longer window is refused with one
line naming both.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional

import numpy as np

from .meta import StreamMeta

__all__ = ["OnnxStreamModel"]


class OnnxStreamModel:
    """An exported ONNX classifier behind the ``StreamModel`` protocol.

    Args:
        path: the ``.onnx`` file (``fastskel export``).
        threads: onnxruntime intra-op threads (inter-op 1, sequential); default: onnxruntime's.
    """

    def __init__(self, path, threads: Optional[int] = None):
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"model: no such file: {p}")
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise ValueError(f"threads: expected an int >= 1, got {threads!r}")
        try:
            import onnxruntime as ort
        except ImportError:
            raise ImportError(f"model: {p} is an ONNX file; install onnxruntime to run it "
                              f"(pip install onnxruntime)") from None
        so = ort.SessionOptions()
        if threads is not None:
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1
            so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        try:
            self.session = ort.InferenceSession(str(p), so, providers=["CPUExecutionProvider"])
        except Exception as e:
            first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            raise ValueError(f"model: {p} is not a loadable ONNX model ({first})") from None
        self.props: Dict[str, str] = dict(self.session.get_modelmeta().custom_metadata_map)
        if "fastskel" not in self.props:
            raise ValueError(f"model: {p} has no fastskel metadata (metadata_props['fastskel']); "
                             f"export it with `fastskel export --checkpoint CKPT` to stream it")
        self.meta = StreamMeta.from_json(self.props["fastskel"])
        self.path = p
        self.threads = threads
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.dynamic_T = self.props.get("dynamic_T", "true") == "true"
        self.required_T = None if self.dynamic_T else int(self.props.get("required_T", self.meta.T))
        shape = list(inp.shape)
        self.static_batch = shape[0] if isinstance(shape[0], int) else None

    def logits(self, x: np.ndarray) -> np.ndarray:
        """``(B, C, T, V, M)`` float32 (the stream gives B = 1) → ``(B, K)`` float32."""
        a = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
        m = self.meta
        if a.ndim != 5 or a.shape[1] != m.C or a.shape[3] != m.V or a.shape[4] != m.M:
            raise ValueError(f"x: expected (B, C={m.C}, T, V={m.V}, M={m.M}), got shape {a.shape}")
        if self.required_T is not None and a.shape[2] != self.required_T:
            raise ValueError(f"x: {self.path.name} was exported with a fixed T={self.required_T}, got T={a.shape[2]} "
                             f"(a window longer than T needs a dynamic-T export)")
        if self.static_batch is not None and a.shape[0] != self.static_batch:
            raise ValueError(f"x: {self.path.name} was exported with a fixed batch {self.static_batch}, "
                             f"got {a.shape[0]}")
        return self.session.run(None, {self.input_name: a})[0].astype(np.float32, copy=False)

    def __repr__(self) -> str:
        return (f"OnnxStreamModel({str(self.path)!r}, method={self.meta.method!r}, C={self.meta.C}, T={self.meta.T}, "
                f"V={self.meta.V}, M={self.meta.M}, dynamic_T={self.dynamic_T})")
