"""Online recognition latency on CPU at batch 1: per-window latency (p50, p99) and frames per
second of the ASMa teacher and distilled student, AMR and SLiM encoders with their linear probes,
PyTorch and onnxruntime side by side at 1 and 2 intra-op threads, plus the overhead of
:class:`fastskel.stream.ActionStream` (``push`` total vs the model's bare forward).

Models (the papers' sizes, **untrained weights**: latency does not depend on the values; 60 NTU
classes, 2 bodies, 25 joints, x y z; T = the method's default frame count, window = T):

- ``asma_teacher``: ASMa's two ST-GCN encoders (10 blocks, hidden 16, out 256) + the bi-directional
  cross-attention aligner + linear classifier (seed 001 §3.4, the distillation teacher), T = 50;
- ``asma_student``: the distilled 5-block ST-GCN student (``build_student``: hidden 16, out 64), T = 50;
- ``amr``: AMR's ViT encoder (dim 256, depth 8, patches of 4 frames) + linear probe, T = 120;
- ``slim``: SLiM's encoder (dim 256, depth 8, patches of 8 frames) + linear probe, T = 64.

Each engine runs what ``fastskel.stream`` runs: PyTorch = ``TorchStreamModel.logits`` (the
classifier's ``logits(x, valid_lengths(x))`` under ``torch.inference_mode()``, default backend:
``fastskel._C`` kernels on CPU); onnxruntime = :class:`fastskel.stream.onnx_model.OnnxStreamModel`
on the file of ``fastskel export`` (metadata included), ``intra_op_num_threads`` = torch's thread
count. Per engine and thread count: ``warmup`` untimed calls, then ``runs`` timed ones; p99 is the
linear-interpolated 99th percentile (with 50 runs it lies between the two slowest calls).
``fps`` = frames per second the stream keeps up with at stride 1 (one window per frame:
``1000 / push_p50``); at stride ``s`` it is ``s`` times that. Stream overhead = ``push_p50 /
forward_p50 − 1`` (preprocessing, buffering, softmax, the prediction record).

Run (writes ``<out>/stream-cpu-<date>.{json,md}``)::

    nice python benchmarks/bench_stream.py --threads 1,2 --runs 50 --out benchmarks/results

pytest-benchmark (``fastskel bench -k stream``; ``FASTSKEL_BENCH_SMALL=1``: tiny models) times
``push`` and the bare forward of every model × engine at the current thread count.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import pytest
import torch

SMALL = os.environ.get("FASTSKEL_BENCH_SMALL", "0") == "1"
PAPER_STUDENT_MS = 21.38          # ASMa-Distill student per clip on a Raspberry Pi 4 (seed 001)
K = 60


def _configs(small: bool) -> Dict[str, Dict[str, Any]]:
    if small:
        return {"asma": dict(hidden_channels=4, out_dim=16, depth=2, num_frames=16, projector_dims=(16,)),
                "amr": dict(num_frames=16, frames_per_patch=4, dim=16, depth=1, heads=2, decoder_dim=16,
                            decoder_depth=1, decoder_heads=2, crop_min_frames=8, r=1, windows=[4]),
                "slim": dict(frames=16, local_frames=(8,), local_scales=((0.15, 0.4),), local_crops=1, dim=16,
                             depth=1, heads=2, mlp_dim=32, num_registers=1, num_prototypes=16, head_hidden_dim=16,
                             head_bottleneck_dim=8, frames_per_patch=4)}
    return {"asma": {}, "amr": {}, "slim": {}}                  # the papers' defaults


def build_models(small: bool = SMALL) -> Dict[str, Dict[str, Any]]:
    """``name → {"net": model with encoder/head/logits, "T": frames, "method": name}`` in eval mode."""
    from fastskel.engine.evaluate import Classifier
    from fastskel.methods.amr import AMR, AMRConfig
    from fastskel.methods.asma import ASMa, ASMaAligner, ASMaConfig, build_student
    from fastskel.methods.slim import SLiM, SLiMConfig

    cf = _configs(small)
    torch.manual_seed(0)
    asma = ASMa(ASMaConfig(**cf["asma"]))
    aligner = ASMaAligner(asma, num_classes=K)
    out = {
        "asma_teacher": dict(net=Classifier(aligner, K, head=aligner.classifier), T=asma.config.num_frames,
                             method="asma"),
        "asma_student": dict(net=build_student(asma, K), T=asma.config.num_frames, method="asma_student"),
        "amr": dict(net=Classifier(AMR(AMRConfig(**cf["amr"])), K), T=AMRConfig(**cf["amr"]).num_frames, method="amr"),
        "slim": dict(net=Classifier(SLiM(SLiMConfig(**cf["slim"])), K), T=SLiMConfig(**cf["slim"]).frames,
                     method="slim"),
    }
    for v in out.values():
        v["net"].eval()
        v["params"] = used_parameters(v["net"], v["T"])
    return out


def used_parameters(net, T: int) -> int:
    """Parameters the exported graph of ``logits`` uses (``torch.export``, as ``fastskel export``
    counts them): not SLiM's teacher and prototype heads, AMR's decoder or ASMa's projector."""
    from fastskel.engine.export import ExportModule, torch_backend

    with torch_backend(), torch.no_grad():
        ep = torch.export.export(ExportModule(net, "none").eval(), (torch.randn(1, 3, T, 25, 2),), strict=False)
    used = {n.name for n in ep.graph.nodes if n.op == "placeholder" and len(n.users) > 0}
    names = {p for inp, p in ep.graph_signature.inputs_to_parameters.items() if inp in used}
    return int(sum(ep.state_dict[n].numel() for n in names if n in ep.state_dict))


def _meta(T: int, method: str):
    from fastskel.graph import SkeletonGraph
    from fastskel.stream import StreamMeta

    pre = {"center": {"joint": 1, "body": 0, "frame": "first_present", "channels": 3},
           "bodies": {"max": 2, "select": "energy", "absent": "zeros"}}
    return StreamMeta(C=3, T=T, V=25, M=2, channels="xyz", graph=SkeletonGraph.get("ntu25").to_dict(),
                      class_names=[f"A{i + 1:03d}" for i in range(K)], num_classes=K, preprocess=pre, method=method)


def torch_stream_model(net, meta):
    """A :class:`fastskel.stream.TorchStreamModel` around an in-memory classifier (its own ``logits``)."""
    from fastskel.stream import TorchStreamModel

    tm = TorchStreamModel.__new__(TorchStreamModel)
    tm.net, tm.meta, tm.device, tm.path = net, meta, torch.device("cpu"), None
    return tm


def onnx_stream_model(net, meta, folder: Path, threads: int):
    from fastskel.engine.export import export_classifier
    from fastskel.stream.onnx_model import OnnxStreamModel

    p = folder / f"{meta.method}.onnx"
    if not p.exists():
        export_classifier(net, (meta.C, meta.T, meta.V, meta.M), folder, formats=("onnx",), name=meta.method,
                          runs=1, warmup=1, meta=meta, method=meta.method, threads=1)
    return OnnxStreamModel(p, threads=threads)


def _frames(n: int, seed: int = 0) -> np.ndarray:
    """``n`` frames ``(M=2, V=25, C=3)``: a random walk (a moving skeleton, never all zero)."""
    g = np.random.default_rng(seed)
    return (np.cumsum(g.normal(0, 0.02, (n, 2, 25, 3)), 0) + g.normal(0, 0.3, (1, 2, 25, 3))).astype(np.float32)


def measure(model, runs: int, warmup: int) -> Dict[str, Any]:
    """Bare forward and ``ActionStream.push`` (window = T, stride 1) timings of one StreamModel."""
    from fastskel.engine.latency import summarize
    from fastskel.stream import ActionStream, preprocess_window

    T = model.meta.T
    frames = _frames(T + warmup + runs)
    stream = ActionStream(model, window=T, stride=1, missing="zero")
    for f in frames[:T - 1]:
        stream.push(f)
    x = preprocess_window(frames[:T], model.meta)
    fwd, push = [], []
    for i in range(warmup + runs):             # interleaved: both see the same machine load
        t0 = time.perf_counter()
        model.logits(x)
        t1 = time.perf_counter()
        pred = stream.push(frames[T - 1 + i])
        t2 = time.perf_counter()
        if pred is None:
            raise RuntimeError("ActionStream gave no prediction at stride 1")
        if i >= warmup:
            fwd.append((t1 - t0) * 1e3)
            push.append((t2 - t1) * 1e3)
    f, p = summarize(fwd), summarize(push)
    paired = float(np.median(np.asarray(push) - np.asarray(fwd)))
    own = stream_own_ms(model.meta, frames, runs, warmup)
    return {"forward": f, "push": p, "fps_stride1": 1000.0 / p["median_ms"],
            "stream_overhead": p["median_ms"] / f["median_ms"] - 1.0,
            "stream_overhead_ms_paired": paired, "stream_overhead_paired": paired / f["median_ms"],
            "stream_own_ms": own, "stream_own_overhead": own / f["median_ms"],
            "forward_ms_all": fwd, "push_ms_all": push}


class _NullModel:
    """A StreamModel whose forward costs nothing: ``push`` then times the stream's own work alone."""

    def __init__(self, meta):
        self.meta = meta
        self._z = np.zeros((1, meta.num_classes), np.float32)

    def logits(self, x: np.ndarray) -> np.ndarray:
        return self._z


def stream_own_ms(meta, frames, runs: int, warmup: int) -> float:
    """Median ``ActionStream.push`` time (ms) with a null model: frame checks, buffering,
    preprocessing, softmax and the prediction record — what the stream adds to any model's forward."""
    from fastskel.stream import ActionStream

    T = meta.T
    stream = ActionStream(_NullModel(meta), window=T, stride=1, missing="zero")
    for fr in frames[:T - 1]:
        stream.push(fr)
    ts = []
    for i in range(warmup + runs):
        t0 = time.perf_counter()
        stream.push(frames[T - 1 + i])
        if i >= warmup:
            ts.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(ts))


def run_all(threads: List[int], runs: int, warmup: int, small: bool = SMALL,
            only: Optional[List[str]] = None) -> Dict[str, Any]:
    from fastskel.engine.latency import torch_threads

    models = {k: v for k, v in build_models(small).items() if not only or k in only}
    res: Dict[str, Any] = {"rows": []}
    with tempfile.TemporaryDirectory() as d:
        for name, m in models.items():
            meta = _meta(m["T"], name)
            for th in threads:
                with torch_threads(th):
                    for engine in ("pytorch", "onnxruntime"):
                        model = (torch_stream_model(m["net"], meta) if engine == "pytorch"
                                 else onnx_stream_model(m["net"], meta, Path(d), th))
                        r = measure(model, runs, warmup)
                        row = {"model": name, "engine": engine, "threads": th, "T": m["T"], "window": m["T"],
                               "params": m["params"], **r}
                        res["rows"].append(row)
                        print(f"{name:<13} {engine:<11} threads {th}: forward p50 {r['forward']['median_ms']:.3g} "
                              f"p99 {r['forward']['p99_ms']:.3g} ms, push p50 {r['push']['median_ms']:.3g} "
                              f"p99 {r['push']['p99_ms']:.3g} ms, {r['fps_stride1']:.3g} fps, overhead "
                              f"{100 * r['stream_overhead']:+.1f}% (paired {100 * r['stream_overhead_paired']:+.1f}%; stream's own "
                              f"work {r['stream_own_ms']:.3g} ms = {100 * r['stream_own_overhead']:.1f}% of the forward)",
                              flush=True)
    return res


def to_markdown(rep: Dict[str, Any]) -> str:
    lines = [f"# Stream latency on CPU ({rep['date']})", "",
             f"Command: `{rep['command']}`", "",
             f"CPU: {rep['cpu']} ({rep['cores']} cores, **shared with other jobs while measured**, run under "
             f"`nice`); torch {rep['torch']}, onnxruntime {rep['onnxruntime']}. Batch 1, window = T, stride 1, "
             f"{rep['warmup']} warm-up + {rep['runs']} timed calls per row, untrained weights at the papers' sizes, "
             f"60 classes, 2 bodies × 25 joints × xyz.", "",
             "| model | params | T | engine | threads | forward p50 (ms) | forward p99 (ms) | push p50 (ms) | "
             "push p99 (ms) | fps (stride 1) | stream overhead (p50 ratio) | stream overhead (paired) | "
             "stream's own work (null model) |",
             "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rep["rows"]:
        lines.append(f"| {r['model']} | {r['params'] / 1e6:.2f} M | {r['T']} | {r['engine']} | {r['threads']} | "
                     f"{r['forward']['median_ms']:.2f} | {r['forward']['p99_ms']:.2f} | {r['push']['median_ms']:.2f} | "
                     f"{r['push']['p99_ms']:.2f} | {r['fps_stride1']:.0f} | {100 * r['stream_overhead']:+.1f}% | "
                     f"{100 * r['stream_overhead_paired']:+.1f}% ({r['stream_overhead_ms_paired']:.2f} ms) | "
                     f"{r['stream_own_ms']:.3f} ms = {100 * r['stream_own_overhead']:.1f}% |")
    lines += ["", "Stream overhead: `push` (preprocess_window + buffering + model + softmax + prediction) vs the "
              "bare `logits` on the same window; *p50 ratio* = push p50 / forward p50 − 1, *paired* = median over "
              "calls of (push − forward) / forward p50 (the two are timed back to back, so the paired value is "
              "the less noisy one on a loaded machine); *own work* = `push` with a model whose forward costs "
              "nothing, over the real forward's p50 — the stream's cost itself, free of the cache and scheduling "
              "effects that the two differences above pick up.", "", rep["student_vs_paper"], ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", default="1,2", help="comma list of thread counts (default 1,2)")
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--small", action="store_true", help="tiny models (smoke run)")
    ap.add_argument("--models", help="comma list (default: all of asma_teacher, asma_student, amr, slim)")
    a = ap.parse_args(argv)
    import onnxruntime

    threads = [int(t) for t in a.threads.split(",") if t.strip()]
    only = [m.strip() for m in a.models.split(",")] if a.models else None
    rep = run_all(threads, a.runs, a.warmup, a.small or SMALL, only)
    date = _dt.date.today().isoformat()
    rep.update(date=date, command="nice python benchmarks/bench_stream.py " + " ".join(sys.argv[1:] if argv is None
                                                                                      else argv),
               cpu=platform.processor() or platform.machine(), cores=os.cpu_count(), torch=torch.__version__,
               onnxruntime=onnxruntime.__version__, runs=a.runs, warmup=a.warmup, small=bool(a.small or SMALL),
               weights="untrained (random init): latency only", shared_machine=True)
    stu = [r for r in rep["rows"] if r["model"] == "asma_student"]
    best = min(stu, key=lambda r: r["push"]["p99_ms"]) if stu else None
    rep["student_vs_paper"] = "" if best is None else (f"ASMa student p99 per window (push, best of engines/threads): "
                               f"{best['push']['p99_ms']:.2f} ms ({best['engine']}, {best['threads']} thread(s)) vs "
                               f"the paper's {PAPER_STUDENT_MS} ms on a Raspberry Pi 4 (different hardware: a "
                               f"comparison of magnitude, not of the same machine).")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"stream-cpu-{date}{'-small' if rep['small'] else ''}"
    stem.with_suffix(".json").write_text(json.dumps(rep, indent=2))
    stem.with_suffix(".md").write_text(to_markdown(rep))
    print(rep["student_vs_paper"])
    print(f"wrote {stem}.json and {stem}.md")
    return 0


# ------------------------------------------------------------------------------ pytest-benchmark
@pytest.fixture(scope="module")
def _models():
    return build_models(SMALL)


@pytest.fixture(scope="module")
def _onnx_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("stream_onnx")


def _stream_model(models, onnx_dir, name, engine):
    if engine == "onnxruntime":
        pytest.importorskip("onnxruntime")
    m = models[name]
    meta = _meta(m["T"], name)
    if engine == "pytorch":
        return torch_stream_model(m["net"], meta)
    return onnx_stream_model(m["net"], meta, onnx_dir, torch.get_num_threads())


@pytest.mark.parametrize("engine", ["pytorch", "onnxruntime"])
@pytest.mark.parametrize("name", ["asma_teacher", "asma_student", "amr", "slim"])
def test_stream_push(benchmark, _models, _onnx_dir, name, engine):
    from fastskel.stream import ActionStream

    model = _stream_model(_models, _onnx_dir, name, engine)
    T = model.meta.T
    frames = _frames(T + 1)
    stream = ActionStream(model, window=T, stride=1, missing="zero")
    for f in frames[:T]:
        stream.push(f)
    benchmark.extra_info.update(model=name, engine=engine, threads=torch.get_num_threads(), T=T, batch=1)
    assert benchmark(stream.push, frames[T]) is not None


@pytest.mark.parametrize("engine", ["pytorch", "onnxruntime"])
@pytest.mark.parametrize("name", ["asma_teacher", "asma_student", "amr", "slim"])
def test_model_forward(benchmark, _models, _onnx_dir, name, engine):
    from fastskel.stream import preprocess_window

    model = _stream_model(_models, _onnx_dir, name, engine)
    x = preprocess_window(_frames(model.meta.T), model.meta)
    model.logits(x)
    benchmark.extra_info.update(model=name, engine=engine, threads=torch.get_num_threads(), T=model.meta.T, batch=1)
    assert benchmark(model.logits, x).shape == (1, K)


if __name__ == "__main__":
    sys.exit(main())
