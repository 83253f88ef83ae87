"""Fair CPU latency of one model in PyTorch, TorchScript and onnxruntime (``fastskel export``'s report).

"Fair" means every engine is timed under the same conditions, all stated in the report:

- the **same intra-op thread count** ``n``: ``torch.set_num_threads(n)`` for PyTorch/TorchScript
  (restored afterwards) and ``SessionOptions.intra_op_num_threads = n`` (``inter_op = 1``,
  sequential execution) for onnxruntime;
- the **same input** (one batch of the same shape, batch 1 by default);
- PyTorch under ``torch.inference_mode()`` (no autograd recording, no version counters);
- ``warmup`` untimed calls first (the first call pays one-off costs: oneDNN primitive creation,
  memory-pool growth, onnxruntime's lazy kernel set-up); the first call is timed separately and
  reported as ``first_call_ms``;
- ``runs`` timed calls → ``median_ms`` and ``p99_ms`` (linear-interpolated 99th percentile; with
  fewer than 100 runs it sits between the two slowest calls), ``mean_ms``, ``min_ms``.
"""
from __future__ import annotations

import contextlib
import time
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import torch

__all__ = ["time_calls", "summarize", "torch_threads", "ort_session_options", "latency_stats"]


def time_calls(fn: Callable[[], Any], runs: int, warmup: int) -> Dict[str, Any]:
    """Wall time (ms) of the first call, then ``warmup − 1`` more untimed calls, then ``runs`` timed ones."""
    if runs < 1 or warmup < 1:
        raise ValueError(f"runs, warmup: expected >= 1, got runs={runs}, warmup={warmup}")
    t = time.perf_counter()
    fn()
    first = (time.perf_counter() - t) * 1e3
    for _ in range(warmup - 1):
        fn()
    ts: List[float] = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t) * 1e3)
    return {"first_call_ms": first, **summarize(ts)}


def summarize(ts_ms: List[float]) -> Dict[str, float]:
    """``median_ms, p99_ms, mean_ms, min_ms, runs`` of a list of call times in ms."""
    a = np.asarray(ts_ms, dtype=np.float64)
    return {"median_ms": float(np.median(a)), "p99_ms": float(np.percentile(a, 99)),
            "mean_ms": float(a.mean()), "min_ms": float(a.min()), "runs": int(a.size)}


@contextlib.contextmanager
def torch_threads(n: int):
    """``torch.set_num_threads(n)`` inside the block, the previous count restored after it."""
    prev = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(prev)


def ort_session_options(threads: int):
    """onnxruntime options with ``threads`` intra-op threads, one inter-op thread, sequential."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = int(threads)
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return so


def latency_stats(fns: Dict[str, Callable[[], Any]], threads: int, runs: int, warmup: int,
                  batch: int, command: Optional[str] = None) -> Dict[str, Any]:
    """Time each ``fns[name]()`` (already bound to its input) with :func:`time_calls` under
    ``threads`` torch threads and inference mode; the onnxruntime callables must come from
    sessions built with :func:`ort_session_options` ``(threads)``."""
    rep: Dict[str, Any] = {"threads": int(threads), "batch": int(batch), "runs": int(runs), "warmup": int(warmup),
                           "pytorch_mode": "torch.inference_mode(), eval()", "command": command, "engines": {}}
    with torch_threads(threads), torch.inference_mode():
        for name, fn in fns.items():
            rep["engines"][name] = time_calls(fn, runs, warmup)
    rep["median_ms"] = {k: v["median_ms"] for k, v in rep["engines"].items()}
    rep["p99_ms"] = {k: v["p99_ms"] for k, v in rep["engines"].items()}
    return rep

