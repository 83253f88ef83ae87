"""Barlow Twins loss, forward + backward: the materialised reference (eager and ``torch.compile``)
against the Gram-form paths (PyTorch op on any device; Triton on CUDA or under TRITON_INTERPRET=1).

Shapes (issue #6): B=128, D=6144 (ASMa's projector, batch 128) and B=256 / 1024, D=8192; fp32,
"batchnorm". Timed Triton on a CPU (``TRITON_INTERPRET=1``) is skipped: it would time the
interpreter for many minutes. ``benchmark.extra_info`` holds shape, dtype, device, implementation and the peak
memory of one forward + backward above the inputs (``peak_mem_bytes``):

- CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``.
- CPU: a fresh subprocess (this file run as a script) with ``MALLOC_MMAP_THRESHOLD_=65536`` (every
  block ≥ 64 KiB is mmapped and returned to the OS on free, so the resident set tracks live
  tensors); after one warm-up step (and compilation) the peak RSS is reset through
  ``/proc/self/clear_refs`` and ``VmHWM − VmRSS`` around one more step is reported. Skipped with
  ``FASTSKEL_BENCH_SMALL=1``.

``FASTSKEL_BENCH_SMALL=1``: tiny shapes, and no ``torch.compile`` variant (its CPU compile alone
takes tens of seconds, beyond the CI smoke budget).
"""
import os
import re
import subprocess
import sys

import pytest
import torch

from _harness import skip_interpreted

SMALL = os.environ.get("FASTSKEL_BENCH_SMALL", "0") == "1"
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
SHAPES = [(8, 64), (12, 40)] if SMALL else [(128, 6144), (256, 8192), (1024, 8192)]
IMPLS = ["reference", "reference_compiled", "gram", "triton"]
NORMALIZE = "batchnorm"
LAMBD = 2e-4
_compiled = {}


def _loss_fn(impl):
    from fastskel.ops import barlow_twins_loss, reference

    if impl == "reference":
        return lambda a, b: reference.barlow_twins_loss(a, b, LAMBD, NORMALIZE)
    if impl == "reference_compiled":
        if "ref" not in _compiled:
            _compiled["ref"] = torch.compile(lambda a, b: reference.barlow_twins_loss(a, b, LAMBD, NORMALIZE))
        return _compiled["ref"]
    if impl == "gram":
        return lambda a, b: torch.ops.fastskel.barlow_twins_gram(a, b, LAMBD, NORMALIZE == "cosine")[0]
    return lambda a, b: barlow_twins_loss(a, b, LAMBD, NORMALIZE, backend="triton")


def _inputs(b, d, device):
    g = torch.Generator().manual_seed(0)
    z1 = torch.randn(b, d, generator=g)
    z2 = 0.8 * z1 + 0.6 * torch.randn(b, d, generator=g)
    return z1.to(device).requires_grad_(), z2.to(device).requires_grad_()


def _step(fn, z1, z2):
    loss = fn(z1, z2)
    grads = torch.autograd.grad(loss, (z1, z2))
    if z1.device.type == "cuda":
        torch.cuda.synchronize()
    return grads


def _status(key):
    return int(re.search(rf"{key}:\s+(\d+) kB", open("/proc/self/status").read()).group(1)) * 1024


def _peak_cpu_bytes(impl, b, d):
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", PYTHONPATH=os.pathsep.join(sys.path))
    out = subprocess.run([sys.executable, __file__, impl, str(b), str(d)], env=env, capture_output=True,
                         text=True, timeout=900)
    m = re.search(r"PEAK_BYTES=(\d+)", out.stdout)
    return int(m.group(1)) if m else None


def _peak_cuda_bytes(fn, z1, z2):
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    _step(fn, z1, z2)
    return torch.cuda.max_memory_allocated() - base


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("b, d", SHAPES)
def test_barlow_twins_fwd_bwd(benchmark, b, d, impl):
    from fastskel.backend import triton_status

    if impl == "triton" and not triton_status(DEVICE)[0]:
        pytest.skip(f"Triton cannot run on {DEVICE}: {triton_status(DEVICE)[1]}")
    if impl == "triton":
        skip_interpreted(benchmark)
    if impl == "reference_compiled" and SMALL:
        pytest.skip("torch.compile variant skipped in the FASTSKEL_BENCH_SMALL smoke run (compile time)")
    z1, z2 = _inputs(b, d, DEVICE)
    fn = _loss_fn(impl)
    _step(fn, z1, z2)  # warm-up: compilation, Triton JIT
    peak = None
    if DEVICE == "cuda":
        peak = _peak_cuda_bytes(fn, z1, z2)
    elif not SMALL:
        peak = _peak_cpu_bytes(impl, b, d)
    benchmark.extra_info.update(dict(op="barlow_twins_loss fwd+bwd", impl=impl, B=b, D=d, dtype="float32",
                                     normalize=NORMALIZE, device=DEVICE, peak_mem_bytes=peak,
                                     torch=torch.__version__, threads=torch.get_num_threads()))
    rounds = 3 if SMALL else (30 if DEVICE == "cuda" else 5)
    grads = benchmark.pedantic(_step, args=(fn, z1, z2), rounds=rounds, warmup_rounds=0 if SMALL else 1)
    assert grads[0].shape == (b, d) and bool(torch.isfinite(grads[0]).all())


if __name__ == "__main__":  # one peak-memory measurement: bench_barlow.py IMPL B D
    _impl, _b, _d = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    _fn = _loss_fn(_impl)
    _z1, _z2 = _inputs(_b, _d, "cpu")
    _step(_fn, _z1, _z2)
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # reset VmHWM to the current resident set
    _base = _status("VmRSS")
    _step(_fn, _z1, _z2)
    print(f"PEAK_BYTES={_status('VmHWM') - _base}")
