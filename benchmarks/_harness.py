"""Shared timing harness of the op micro-benchmarks (bench_masking.py, bench_focal.py).

``SMALL`` (``FASTSKEL_BENCH_SMALL=1``): tiny shapes, one round each (the CI smoke). ``DEVICE``:
CUDA when available. ``LARGE``: the N=8192 bandwidth batch (CUDA, or ``FASTSKEL_BENCH_LARGE=1``).
On CUDA every timed call runs the op ``REPS`` times, then synchronises once; ``extra_info["GB/s"]``
= bytes that must move × REPS / median.

Timed Triton benchmarks on a CPU under ``TRITON_INTERPRET=1`` are skipped (:func:`skip_interpreted`):
they would time NumPy emulating the kernel, for many minutes. ``--benchmark-disable`` (the CI
smoke) still runs each one once. Rows whose "fast path" runs the reference ops on this device set
``extra_info["fast_path_is_reference"]`` (:func:`auto_is_reference`), and the tables say so.
"""
import os

import pytest
import torch

SMALL = os.environ.get("FASTSKEL_BENCH_SMALL", "0") == "1"
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
LARGE = DEVICE == "cuda" or os.environ.get("FASTSKEL_BENCH_LARGE", "0") == "1"
REPS = 20 if DEVICE == "cuda" else 1
INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
INTERPRETER_SKIP = ("timed Triton under TRITON_INTERPRET=1 would time the interpreter (NumPy emulating the "
                    "kernel), not a kernel: time it on CUDA; --benchmark-disable runs it once as a smoke test")


def sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def skip_interpreted(benchmark):
    """Skip a timed Triton benchmark that would run in the interpreter (CPU, ``TRITON_INTERPRET=1``)."""
    if DEVICE != "cuda" and INTERPRET and not getattr(benchmark, "disabled", False):
        pytest.skip(INTERPRETER_SKIP)


def auto_is_reference(*ops: str) -> bool:
    """Whether backend "auto" runs the reference for every one of ``ops`` on this device."""
    from fastskel.engine.profile import resolved_backend

    return all(resolved_backend(op, torch.device(DEVICE)) == "torch" for op in ops)


def triton_or_skip(benchmark=None):
    from fastskel.backend import triton_status

    ok, why = triton_status(DEVICE)
    if not ok:
        pytest.skip(why)
    if benchmark is not None:
        skip_interpreted(benchmark)
    if DEVICE != "cuda" and not SMALL:
        pytest.skip("Triton timings are only meaningful on CUDA (interpreter runs only in the CI smoke)")


def compile_or_skip(fn):
    if SMALL:
        pytest.skip("torch.compile variants are not part of the CI smoke")
    return torch.compile(fn)


def run(benchmark, fn, info, nbytes):
    def body():
        for _ in range(REPS):
            out = fn()
        sync()
        return out

    try:
        body()                                          # warm-up (and compilation)
    except Exception as exc:                            # noqa: BLE001 — report why a variant cannot run here
        if info["impl"] == "compiled":
            pytest.skip(f"torch.compile failed here: {type(exc).__name__}: {str(exc)[:200]}")
        raise
    info.update(device=torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu",
                reps_per_round=REPS, bytes=nbytes)
    benchmark.extra_info.update(info)
    benchmark(body)
    stats = getattr(benchmark, "stats", None)
    if stats is not None and getattr(stats, "stats", None) is not None and stats.stats.median > 0:
        benchmark.extra_info["GB/s"] = nbytes * REPS / stats.stats.median / 1e9


def shape_ok(shape_name):
    if shape_name == "large" and not LARGE:
        pytest.skip("N=8192 runs on CUDA, or on CPU with FASTSKEL_BENCH_LARGE=1")
    if shape_name == "large" and SMALL:
        pytest.skip("not part of the CI smoke")
