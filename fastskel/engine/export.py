"""Export an encoder + linear classifier to ONNX (checked in onnxruntime) and TorchScript.

``export_classifier`` traces ``logits = head((encode(x) − μ)/σ)`` for one action ``x`` of shape
``(B, C, T, V, M)`` (all frames valid: ``lengths`` is not an input of the exported graph; pad or
crop/resize to T before calling it). Tracing runs with fastskel's backend forced to ``"torch"`` so
the graph holds standard ATen ops only (no Triton or ``fastskel._C`` custom ops, which ONNX
runtimes do not know). The ONNX model is run in onnxruntime on the same random inputs as PyTorch
and the max abs difference is asserted ≤ ``atol + rtol·max|logits|``. The report gives parameters
(those the exported graph uses; ``method_parameters`` counts the whole method, e.g. a teacher),
file sizes, CPU latency (median over runs, batch 1) of eager PyTorch, TorchScript and onnxruntime,
and FLOPs (papers' convention, ``fastskel.utils.count_flops``) when that module is present.

Limitations: the batch dimension is exported dynamic where the exporter manages it, else fixed at
the example's batch (the report says which); methods whose ``encode`` uses data-dependent Python
control flow (e.g. skipping empty bodies by count) trace to the example's branch.
"""
from __future__ import annotations

import contextlib
import io
import json
import statistics
import time
import warnings
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import torch
from torch import nn

__all__ = ["ExportModule", "export_classifier", "cpu_latency"]


class ExportModule(nn.Module):
    """``x (B, C, T, V, M) → logits (B, K)`` of a :class:`~fastskel.engine.evaluate.Classifier`."""

    def __init__(self, clf: nn.Module):
        super().__init__()
        self.clf = clf

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.clf.logits(x, None)


@contextlib.contextmanager
def torch_backend():
    import fastskel.backend as B
    from fastskel.backend import set_backend

    prev = B._default
    set_backend("torch")
    try:
        yield
    finally:
        B._default = prev


def cpu_latency(fn, runs: int = 20, warmup: int = 3) -> float:
    """Median wall time (ms) of ``fn()`` over ``runs`` after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t) * 1e3)
    return statistics.median(ts)


def _size(p: Path) -> int:
    total = p.stat().st_size
    data = p.with_name(p.name + ".data")  # external weights, if the exporter wrote them
    return total + (data.stat().st_size if data.exists() else 0)


def export_classifier(clf: nn.Module, sample_shape: Sequence[int], out: str | Path,
                      formats: Sequence[str] = ("onnx", "torchscript"), name: str = "model",
                      batch: int = 2, atol: float = 1e-4, rtol: float = 1e-4, runs: int = 20,
                      opset: Optional[int] = None, seed: int = 0) -> Dict[str, Any]:
    """Write ``<out>/<name>.onnx`` / ``<name>.ts.pt``; return (and write ``<out>/<name>.json``) the report.

    Args:
        clf: a :class:`~fastskel.engine.evaluate.Classifier` (anything with ``logits(x, lengths)``).
        sample_shape: one action's ``(C, T, V, M)``.
        batch: batch size of the check inputs (latency is measured at batch 1).
        atol, rtol: the ONNX-vs-PyTorch tolerance asserted (``AssertionError`` if exceeded).
    """
    formats = tuple(formats)
    bad = [f for f in formats if f not in ("onnx", "torchscript")]
    if bad or not formats:
        raise ValueError(f"formats: expected a non-empty subset of ('onnx', 'torchscript'), got {formats}")
    if len(sample_shape) != 4:
        raise ValueError(f"sample_shape: expected (C, T, V, M), got {tuple(sample_shape)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model = ExportModule(clf).eval().cpu()
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, *sample_shape, generator=g)
    x1 = x[:1].contiguous()
    report: Dict[str, Any] = {
        "sample_shape": list(sample_shape),
        "parameters": int(sum(p.numel() for p in clf.parameters())),      # replaced by the ONNX graph's count
        "method_parameters": int(sum(p.numel() for p in clf.encoder.parameters())),
        "num_classes": int(clf.head.out_features),
        "files": {}, "latency_ms_batch1": {},
    }
    with torch_backend(), torch.no_grad():
        ref = model(x)
        report["latency_ms_batch1"]["pytorch"] = cpu_latency(lambda: model(x1), runs)
        try:
            from fastskel.utils import count_flops

            report["flops_paper"] = int(count_flops(clf.encoder, (x1,), method="encode"))
        except Exception as e:  # optional: absent module or a model it cannot count
            report["flops_paper"] = None
            report["flops_note"] = f"not counted: {type(e).__name__}: {e}"[:200]

        parts = []
        if "onnx" in formats:
            parts.append(_export_onnx(model, x, ref, out / f"{name}.onnx", atol, rtol, runs, opset))
        if "torchscript" in formats:
            parts.append(_export_torchscript(model, x, ref, out / f"{name}.ts.pt", atol, rtol, runs))
        for rep in parts:
            report["files"].update(rep.pop("files", {}))
            report["latency_ms_batch1"].update(rep.pop("latency", {}))
            report.update(rep)
    (out / f"{name}.json").write_text(json.dumps(report, indent=2))
    return report


def _export_onnx(model, x, ref, path: Path, atol, rtol, runs, opset) -> Dict[str, Any]:
    import onnxruntime as ort

    import logging

    rep: Dict[str, Any] = {}
    dynamic = True
    log = logging.getLogger("torch.onnx")
    level = log.level
    log.setLevel(logging.ERROR)
    kw = dict(input_names=["x"], output_names=["logits"], dynamo=True, external_data=False,
              opset_version=opset, verbose=False)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            try:
                batch = torch.export.Dim("batch", min=1, max=4096)
                prog = torch.onnx.export(model, (x,), str(path), dynamic_shapes={"x": {0: batch}}, **kw)
            except Exception:
                dynamic = False
                prog = torch.onnx.export(model, (x,), str(path), **kw)
    finally:
        log.setLevel(level)
    ep = getattr(prog, "exported_program", None)
    if ep is not None:  # parameters the exported graph really uses (not a teacher, decoder, ...)
        try:
            used = {node.name for node in ep.graph.nodes if node.op == "placeholder" and len(node.users) > 0}
            names = {p for inp, p in ep.graph_signature.inputs_to_parameters.items() if inp in used}
            rep["parameters"] = int(sum(ep.state_dict[n].numel() for n in names if n in ep.state_dict))
        except Exception:  # an exporter without these attributes: keep the module's count
            pass
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = torch.from_numpy(sess.run(None, {"x": x.numpy()})[0])
    diff = float((got - ref).abs().max())
    tol = atol + rtol * float(ref.abs().max())
    rep["files"] = {"onnx": {"path": str(path), "bytes": _size(path)}}
    rep["onnx_dynamic_batch"] = dynamic
    rep["onnx_max_abs_diff"] = diff
    rep["onnx_tolerance"] = tol
    if not diff <= tol:
        raise AssertionError(f"onnx: onnxruntime output differs from PyTorch by {diff:.3g} > tolerance {tol:.3g} "
                             f"({path})")
    if dynamic:
        x1 = x[:1].numpy()
        rep["latency"] = {"onnxruntime": cpu_latency(lambda: sess.run(None, {"x": x1}), runs)}
    else:
        rep["onnxruntime_latency_note"] = f"static batch {x.shape[0]}: batch-1 latency not measured"
    return rep


def _export_torchscript(model, x, ref, path: Path, atol, rtol, runs) -> Dict[str, Any]:
    rep: Dict[str, Any] = {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ts = torch.jit.trace(model, (x,), check_trace=False)
            torch.jit.save(ts, str(path))
            loaded = torch.jit.load(str(path))
            got = loaded(x)
    except Exception as e:
        rep["torchscript_error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
        return rep
    diff = float((got - ref).abs().max())
    tol = atol + rtol * float(ref.abs().max())
    if not diff <= tol:
        raise AssertionError(f"torchscript: output differs from eager PyTorch by {diff:.3g} > {tol:.3g} ({path})")
    rep["torchscript_max_abs_diff"] = diff
    rep["files"] = {"torchscript": {"path": str(path), "bytes": _size(path)}}
    rep["latency"] = {"torchscript": cpu_latency(lambda: loaded(x[:1]), runs)}
    return rep
