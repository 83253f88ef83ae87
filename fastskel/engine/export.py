"""Export an encoder + linear classifier to ONNX (checked in onnxruntime) and TorchScript.

``export_classifier`` traces ``logits = head((encode(x) − μ)/σ)`` for one action ``x`` of shape
``(B, C, T, V, M)``; ``lengths`` is not an input of the exported graph but computed inside it as
``fastskel.data.valid_lengths(x)`` (trailing all-zero frames are padding), the lengths ``fastskel
eval`` and ``fastskel.stream`` pass, so the file computes what they compute (methods whose
length checks cannot be traced — AMR/MAMP — are exported with ``lengths=None``, under which they
compute ``valid_lengths(x)`` themselves; the report's ``onnx_lengths`` says which). Tracing runs with fastskel's backend forced to
``"torch"`` so the graph holds standard ATen ops only (no Triton or ``fastskel._C`` custom ops,
which ONNX runtimes do not know). The ONNX model is run in onnxruntime on the same random inputs
as PyTorch and the max abs difference is asserted ≤ ``atol + rtol·max|logits|``.

**What a deployment needs is in the file.** ``model.onnx``'s ``metadata_props`` hold
``"fastskel"`` = the model's :class:`fastskel.stream.meta.StreamMeta` as JSON (class names, C, T,
V, M, channel layout, graph, evaluation preprocessing: what ``fastskel.stream`` needs to run the
file with nothing else) and readable keys ``class_names`` (JSON list), ``input_layout``
``"(B, C, T, V, M)"``, ``C``, ``T``, ``V``, ``M``, ``graph``, ``channels``, ``dynamic_T``,
``required_T`` (when T is fixed), ``fastskel_version``, ``method``. The report JSON holds the same
under ``"metadata"``.

**Time axis.** Batch and T are exported dynamic when the exporter manages it. A dynamic T is only
kept when onnxruntime matches PyTorch at two other lengths (``T//2 + 1`` and ``T + T//2 + 3``,
one batch of each padded with trailing zero frames); otherwise the graph is re-exported with
the example's T and ``required_T`` is stated. With lengths given, every method resamples the
valid frames to its own ``num_frames`` inside ``encode`` whatever the input's T, so the fastskel
methods export with a dynamic T; a model whose graph is tied to the input's T (e.g. a position
embedding per input frame) keeps the example's T. ``fastskel.stream`` feeds the metadata's T
(longer windows unpadded, which a dynamic T accepts).

**Latency, measured fairly** (:mod:`fastskel.engine.latency`): same intra-op thread count for
PyTorch and onnxruntime (``threads``, stated), same batch-1 input, PyTorch in
``torch.inference_mode()``, ``warmup`` untimed calls, then median and p99 over ``runs``; the first
call is reported apart. PyTorch is timed with the backend the model runs with by default
(``pytorch``: ``fastskel._C`` kernels on CPU) and with the exported graph's ATen ops
(``pytorch_torch_backend``).

**The old "PyTorch batch-1 199 ms vs onnxruntime 3.95 ms" gap** (issue 18) was an unfair
measurement, not a PyTorch property. Reproduced on this shared 2-core CPU with the ASMa ``small``
classifier at T=24 (old code: 121 ms vs 1.28 ms): (1) threads — PyTorch ran with its default
2 OpenMP threads on 2 cores that other processes also load, so its threads were descheduled at
every parallel region (55 ms at 2 threads vs 13 ms at 1 thread in the same process), while
onnxruntime's own pool was left at its default; (2) the PyTorch number was eager dispatch of
~1,200 ATen calls per action for a model whose arithmetic is tiny (the einsum of the reference
graph convolution lowers to 16 small batched matmuls, half of the 11 ms), whereas onnxruntime runs
a constant-folded graph (adjacency × edge importance precomputed, BatchNorm folded into the
convolutions, fused element-wise ops) with no Python; (3) ``no_grad`` instead of
``inference_mode`` and only 3 warm-up calls (the first PyTorch call is several times slower).
With the same threads and inference mode the gap that remains is (2), a real per-call overhead
of eager PyTorch at tiny models; it shrinks as the model grows (see ``benchmarks/bench_stream.py``).

Limitations: methods whose ``encode`` uses data-dependent Python control flow trace to the
example's branch; TorchScript is traced at the example's shape.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import statistics
import time
import warnings
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

import torch
from torch import nn

from .latency import latency_stats, ort_session_options

__all__ = ["ExportModule", "export_classifier", "cpu_latency", "onnx_metadata", "read_onnx_metadata",
           "INPUT_LAYOUT"]

INPUT_LAYOUT = "(B, C, T, V, M)"


class ExportModule(nn.Module):
    """``x (B, C, T, V, M) → logits (B, K)`` of a :class:`~fastskel.engine.evaluate.Classifier`.

    ``lengths="valid"`` (default): ``clf.logits(x, valid_lengths(x))``, the call of ``fastskel
    eval`` and ``fastskel.stream`` (trailing all-zero frames are padding; the valid frames are
    resampled to the model's T). ``lengths="none"``: ``clf.logits(x, None)``, the method's own
    default, for methods whose length checks cannot be traced (AMR/MAMP's ``crop_resize`` reads the
    lengths' range back to Python); those methods compute ``valid_lengths(x)`` themselves then."""

    def __init__(self, clf: nn.Module, lengths: str = "valid"):
        super().__init__()
        if lengths not in ("valid", "none"):
            raise ValueError(f"lengths: expected 'valid' or 'none', got {lengths!r}")
        self.clf = clf
        self.lengths = lengths

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from fastskel.data.core import valid_lengths

        return self.clf.logits(x, valid_lengths(x) if self.lengths == "valid" else None)


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
    """Median wall time (ms) of ``fn()`` over ``runs`` after ``warmup`` calls (no thread control;
    :func:`fastskel.engine.latency.latency_stats` is the fair measurement)."""
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


def _meta_dict(meta: Any) -> Optional[Dict[str, Any]]:
    if meta is None:
        return None
    if hasattr(meta, "to_json"):
        meta = meta.to_json()
    if isinstance(meta, (str, bytes)):
        meta = json.loads(meta)
    if not isinstance(meta, dict):
        raise TypeError(f"meta: expected a StreamMeta, its JSON or a dict, got {type(meta).__name__}")
    return meta


def _graph_name(g: Any) -> str:
    if isinstance(g, dict):
        return str(g.get("name") or json.dumps(g, sort_keys=True))
    return "" if g is None else str(g)


def onnx_metadata(meta: Any, sample_shape: Sequence[int], method: Optional[str], dynamic_T: bool,
                  num_classes: int) -> Dict[str, str]:
    """The ``metadata_props`` of an exported file (all values strings; see the module docstring)."""
    import fastskel

    d = _meta_dict(meta) or {}
    c, t, v, m = (int(s) for s in sample_shape)
    names = d.get("class_names") or [f"class_{i}" for i in range(num_classes)]
    props = {
        "input_layout": INPUT_LAYOUT, "C": str(c), "T": str(int(d.get("T", t))), "V": str(v), "M": str(m),
        "graph": _graph_name(d.get("graph")), "channels": str(d.get("channels") or ""),
        "class_names": json.dumps(list(names)), "num_classes": str(int(num_classes)),
        "dynamic_T": "true" if dynamic_T else "false",
        "fastskel_version": fastskel.__version__, "method": str(method or ""),
        "output": "logits (B, num_classes)",
    }
    if not dynamic_T:
        props["required_T"] = str(t)
    if d:
        props["fastskel"] = json.dumps(d, sort_keys=True)
    return props


def read_onnx_metadata(path: str | Path) -> Dict[str, str]:
    """``metadata_props`` of an ONNX file as a dict (no graph is loaded into a runtime)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}


def _write_metadata(path: Path, props: Dict[str, str]) -> None:
    import onnx

    model = onnx.load(str(path))
    del model.metadata_props[:]
    for k, v in props.items():
        e = model.metadata_props.add()
        e.key, e.value = k, v
    onnx.save(model, str(path))


def export_classifier(clf: nn.Module, sample_shape: Sequence[int], out: str | Path,
                      formats: Sequence[str] = ("onnx", "torchscript"), name: str = "model",
                      batch: int = 2, atol: float = 1e-4, rtol: float = 1e-4, runs: int = 50,
                      opset: Optional[int] = None, seed: int = 0, meta: Any = None,
                      method: Optional[str] = None, threads: Optional[int] = None, warmup: int = 10,
                      dynamic_time: bool = True, command: Optional[str] = None) -> Dict[str, Any]:
    """Write ``<out>/<name>.onnx`` / ``<name>.ts.pt``; return (and write ``<out>/<name>.json``) the report.

    Args:
        clf: a :class:`~fastskel.engine.evaluate.Classifier` (anything with ``logits(x, lengths)``).
        sample_shape: one action's ``(C, T, V, M)``.
        batch: batch size of the check inputs (latency is measured at batch 1).
        atol, rtol: the ONNX-vs-PyTorch tolerance asserted (``AssertionError`` if exceeded).
        meta: the model's ``StreamMeta`` (or its JSON / dict), stored in the ONNX metadata.
        method: the method's name (metadata and report).
        threads: intra-op threads for every engine's latency (default: torch's current count).
        warmup, runs: untimed then timed calls per engine.
        dynamic_time: try a dynamic T axis (kept only when checked at two other lengths).
        command: the command line that produced the export (written in the report).
    """
    formats = tuple(formats)
    bad = [f for f in formats if f not in ("onnx", "torchscript")]
    if bad or not formats:
        raise ValueError(f"formats: expected a non-empty subset of ('onnx', 'torchscript'), got {formats}")
    if len(sample_shape) != 4:
        raise ValueError(f"sample_shape: expected (C, T, V, M), got {tuple(sample_shape)}")
    sample_shape = tuple(int(s) for s in sample_shape)
    md = _meta_dict(meta)
    if md:
        want = tuple(int(md[k]) for k in ("C", "V", "M") if k in md)
        got = (sample_shape[0], sample_shape[2], sample_shape[3])[: len(want)]
        if len(want) == 3 and want != got:
            raise ValueError(f"sample_shape: expected (C, ·, V, M) = {want} as in meta, got {sample_shape}")
    threads = int(threads) if threads is not None else torch.get_num_threads()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model = ExportModule(clf).eval().cpu()
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, *sample_shape, generator=g)
    x1 = x[:1].contiguous()
    if batch >= 2:                                          # the checks also see a padded action
        t = sample_shape[1]
        x[-1, :, t - max(1, t // 4):] = 0
    k = int(clf.head.out_features)
    report: Dict[str, Any] = {
        "method": method, "sample_shape": list(sample_shape), "input_layout": INPUT_LAYOUT,
        "parameters": int(sum(p.numel() for p in clf.parameters())),      # replaced by the ONNX graph's count
        "method_parameters": int(sum(p.numel() for p in clf.encoder.parameters())),
        "num_classes": k, "files": {}, "command": command,
    }
    fns = {"pytorch": lambda: model(x1)}
    with torch_backend(), torch.no_grad():
        ref = model(x)
        try:
            from fastskel.utils import count_flops

            report["flops_paper"] = int(count_flops(clf.encoder, (x1,), method="encode"))
        except Exception as e:  # optional: absent module or a model it cannot count
            report["flops_paper"] = None
            report["flops_note"] = f"not counted: {type(e).__name__}: {e}"[:200]
        if "onnx" in formats:
            rep, run = _export_onnx(clf, x, ref, out / f"{name}.onnx", atol, rtol, opset, threads, dynamic_time)
            report.update(rep)
            if run is not None:
                fns["onnxruntime"] = lambda: run(x1)
        if "torchscript" in formats:
            rep, loaded = _export_torchscript(model, x, ref, out / f"{name}.ts.pt", atol, rtol)
            report.update(rep)
            if loaded is not None:
                fns["torchscript"] = lambda: loaded(x1)
    files = {f: report.pop(f"_file_{f}") for f in ("onnx", "torchscript") if f"_file_{f}" in report}
    report["files"] = files
    dyn = bool(report.get("onnx_dynamic_time", False))
    props = onnx_metadata(md, sample_shape, method, dyn, k)
    if md and not dyn and int(md.get("T", sample_shape[1])) != sample_shape[1]:
        raise ValueError(f"sample_shape: the exported graph needs T={sample_shape[1]} but meta says "
                         f"T={md.get('T')}; export with --data-shape matching the model's T")
    if "onnx" in files:
        _write_metadata(Path(files["onnx"]["path"]), props)
        files["onnx"]["bytes"] = _size(Path(files["onnx"]["path"]))
    report["metadata"] = props
    report["dynamic_T"] = dyn
    report["required_T"] = None if dyn else sample_shape[1]

    with torch_backend():
        lat = latency_stats({"pytorch_torch_backend": fns["pytorch"],
                             **{n: f for n, f in fns.items() if n != "pytorch"}}, threads, runs, warmup, 1, command)
    default = latency_stats({"pytorch": fns["pytorch"]}, threads, runs, warmup, 1, command)  # default backend
    lat["engines"] = {**default["engines"], **lat["engines"]}
    lat["median_ms"] = {n: e["median_ms"] for n, e in lat["engines"].items()}
    lat["p99_ms"] = {n: e["p99_ms"] for n, e in lat["engines"].items()}
    report["latency"] = lat
    report["latency_ms_batch1"] = dict(lat["median_ms"])
    (out / f"{name}.json").write_text(json.dumps(report, indent=2))
    return report


def _quiet_export(model, x, path: Path, dyn: Dict[int, Any], opset):
    kw = dict(input_names=["x"], output_names=["logits"], dynamo=True, external_data=False,
              opset_version=opset, verbose=False)
    log = logging.getLogger("torch.onnx")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            if dyn:
                return torch.onnx.export(model, (x,), str(path), dynamic_shapes={"x": dyn}, **kw)
            return torch.onnx.export(model, (x,), str(path), **kw)
    finally:
        log.setLevel(level)


def _symbolic_dims(path: Path) -> Tuple[bool, bool]:
    """Whether the ONNX input's batch (0) and time (2) dimensions are symbolic."""
    import onnx

    dims = onnx.load(str(path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim
    return tuple(bool(d.dim_param) or not d.HasField("dim_value") for d in (dims[0], dims[2]))


def _time_check_inputs(x: torch.Tensor, seed: int = 1):
    """Inputs at two other lengths ``T//2 + 1`` and ``T + T//2 + 3`` (the example's batch): one
    batch of random frames, one whose actions end in all-zero (padding) frames."""
    t = x.shape[2]
    g = torch.Generator().manual_seed(seed)
    outs = []
    for tt in (t // 2 + 1, t + t // 2 + 3):
        xi = torch.randn(x.shape[0], x.shape[1], tt, *x.shape[3:], generator=g)
        xp = xi.clone()
        xp[:, :, tt - max(1, tt // 4):] = 0
        outs += [xi, xp]
    return outs


def _export_onnx(clf, x, ref, path: Path, atol, rtol, opset, threads, dynamic_time):
    import onnxruntime as ort

    rep: Dict[str, Any] = {}
    batch = torch.export.Dim("batch", min=1, max=4096)
    tries = ([{0: batch, 2: torch.export.Dim("time", min=2, max=100000)}] if dynamic_time else []) + [{0: batch}, {}]
    reference = ExportModule(clf, "valid").eval()
    prog, err, done = None, None, False
    for variant in ("valid", "none"):
        model = ExportModule(clf, variant).eval()
        for dyn in tries:
            try:
                prog = _quiet_export(model, x, path, dyn, opset)
            except Exception as e:  # the next, more static, attempt (or variant)
                err = e
                if "data-dependent" in str(e):
                    break
                continue
            dyn_b, dyn_t = _symbolic_dims(path)
            sess = ort.InferenceSession(str(path), ort_session_options(threads), providers=["CPUExecutionProvider"])
            got = torch.from_numpy(sess.run(None, {"x": x.numpy()})[0])
            diff = float((got - ref).abs().max())
            tol = atol + rtol * float(ref.abs().max())
            if not diff <= tol:
                err = AssertionError(f"onnx: onnxruntime output differs from PyTorch by {diff:.3g} > tolerance "
                                     f"{tol:.3g} ({path})")
                continue
            if dyn_t:
                checks = []
                for xi in _time_check_inputs(x):
                    r = reference(xi)
                    d = float((torch.from_numpy(sess.run(None, {"x": xi.numpy()})[0]) - r).abs().max())
                    checks.append({"T": int(xi.shape[2]), "padded": bool((xi[:, :, -1] == 0).all()),
                                   "max_abs_diff": d, "ok": d <= atol + rtol * float(r.abs().max())})
                rep["onnx_time_checks"] = checks
                if not all(c["ok"] for c in checks):
                    continue                # dynamic T does not reproduce PyTorch: export a fixed T
            done = True
            break
        if done:
            break
    if not done:
        if isinstance(err, AssertionError):
            raise err
        raise RuntimeError(f"onnx: export failed ({path}): {type(err).__name__}: {str(err).splitlines()[0][:300]}")
    rep["onnx_lengths"] = ("valid_lengths(x) computed in the graph" if variant == "valid"
                           else "lengths=None: the method computes valid_lengths(x) itself")
    ep = getattr(prog, "exported_program", None)
    if ep is not None:  # parameters the exported graph really uses (not a teacher, decoder, ...)
        try:
            used = {node.name for node in ep.graph.nodes if node.op == "placeholder" and len(node.users) > 0}
            names = {p for inp, p in ep.graph_signature.inputs_to_parameters.items() if inp in used}
            rep["parameters"] = int(sum(ep.state_dict[n].numel() for n in names if n in ep.state_dict))
        except Exception:  # an exporter without these attributes: keep the module's count
            pass
    rep["_file_onnx"] = {"path": str(path), "bytes": _size(path)}
    rep["onnx_dynamic_batch"] = dyn_b
    rep["onnx_dynamic_time"] = dyn_t
    rep["onnx_max_abs_diff"] = diff
    rep["onnx_tolerance"] = tol
    if not dyn_b:
        rep["onnxruntime_latency_note"] = f"static batch {x.shape[0]}: batch-1 latency not measured"
        return rep, None

    def run(xi, _s=sess):
        return _s.run(None, {"x": xi.numpy()})
    return rep, run


def _export_torchscript(model, x, ref, path: Path, atol, rtol):
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
        return rep, None
    diff = float((got - ref).abs().max())
    tol = atol + rtol * float(ref.abs().max())
    if not diff <= tol:
        raise AssertionError(f"torchscript: output differs from eager PyTorch by {diff:.3g} > {tol:.3g} ({path})")
    rep["torchscript_max_abs_diff"] = diff
    rep["_file_torchscript"] = {"path": str(path), "bytes": _size(path)}
    return rep, loaded
