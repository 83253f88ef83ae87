"""AMR focal reconstruction: motion_energy_weights (windows 4, 8, 12) and focal_reconstruction_loss
(forward, and forward + backward).

Each op is timed as the reference (eager PyTorch, :mod:`fastskel.ops.reference`), the reference
under ``torch.compile``, and the Triton kernels (:mod:`fastskel.kernels.focal`), at the AMR shapes
(N·M = 256 sequences, C=3, T=120, V=25; 125 target patches × 72 values = 24 frames × 3) and at
N=8192 to read bandwidth, next to a device-to-device copy of the same bytes (the yardstick).
Arguments are validated outside the timed region for every variant.

- Triton runs on CUDA (under ``TRITON_INTERPRET=1`` only in the tiny CI smoke shapes).
- On CUDA every timed call runs the op ``REPS`` times, then synchronises once.
  ``extra_info["GB/s"]`` = bytes that must move (inputs read + outputs written, once) / median.
- ``torch.compile`` variants are skipped in the CI smoke (``FASTSKEL_BENCH_SMALL=1``) and, with the
  compiler's error, where it fails.
- The N=8192 batch runs on CUDA, or on CPU with ``FASTSKEL_BENCH_LARGE=1``.

Goals on an H100 (issue #5): ≥ 5× eager and ≥ 1.5× compiled at the AMR shapes; ≥ 60 % of the copy
bandwidth at N=8192.
"""
import os

import pytest
import torch

from fastskel.ops import reference as R

SMALL = os.environ.get("FASTSKEL_BENCH_SMALL", "0") == "1"
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
LARGE = DEVICE == "cuda" or os.environ.get("FASTSKEL_BENCH_LARGE", "0") == "1"
REPS = 20 if DEVICE == "cuda" else 1

WINDOWS = (4, 8, 12)
SKELETON = {"amr": (4, 3, 24, 25) if SMALL else (256, 3, 120, 25), "large": (8192, 3, 120, 25)}
PATCHES = {"amr": (4, 25, 72) if SMALL else (256, 125, 72), "large": (8192, 125, 72)}
IMPLS = ["reference", "compiled", "triton"]


def _sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def _triton_or_skip():
    from fastskel.backend import triton_status

    ok, why = triton_status(DEVICE)
    if not ok:
        pytest.skip(why)
    if DEVICE != "cuda" and not SMALL:
        pytest.skip("Triton timings are only meaningful on CUDA (interpreter runs only in the CI smoke)")


def _compile_or_skip(fn):
    if SMALL:
        pytest.skip("torch.compile variants are not part of the CI smoke")
    return torch.compile(fn)


def _run(benchmark, fn, info, nbytes):
    def body():
        for _ in range(REPS):
            out = fn()
        _sync()
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


def _shape_ok(shape_name):
    if shape_name == "large" and not LARGE:
        pytest.skip("N=8192 runs on CUDA, or on CPU with FASTSKEL_BENCH_LARGE=1")
    if shape_name == "large" and SMALL:
        pytest.skip("not part of the CI smoke")


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("shape_name", ["amr", "large"])
def test_motion_energy_weights(benchmark, shape_name, impl):
    _shape_ok(shape_name)
    x = torch.randn(SKELETON[shape_name], generator=torch.Generator().manual_seed(0)).to(DEVICE)
    if impl == "reference":
        fn = lambda: R.motion_energy_weights(x, WINDOWS)
    elif impl == "compiled":
        f = _compile_or_skip(R.motion_energy_weights)
        fn = lambda: f(x, WINDOWS)
    else:
        _triton_or_skip()
        from fastskel.kernels import focal as K

        fn = lambda: K.motion_energy_weights(x, WINDOWS)
    n, c, t, v = x.shape
    _run(benchmark, fn, dict(op="motion_energy_weights", impl=impl, shape=list(x.shape), windows=list(WINDOWS),
                             dtype=str(x.dtype)),
         x.numel() * x.element_size() + n * t * v * 4)


def _loss_inputs(shape_name, dtype, per_patch):
    _shape_ok(shape_name)
    g = torch.Generator().manual_seed(1)
    shape = PATCHES[shape_name]
    pred = torch.randn(shape, generator=g).to(dtype).to(DEVICE).requires_grad_()
    target = torch.randn(shape, generator=g).to(dtype).to(DEVICE)
    weight = torch.rand(shape[:2] if per_patch else shape, generator=g).to(DEVICE)
    return pred, target, weight


LOSS_CASES = [("amr", torch.float32, False), ("amr", torch.bfloat16, False), ("amr", torch.float32, True),
              ("large", torch.float32, False)]
LOSS_IDS = ["amr-fp32-w_elem", "amr-bf16-w_elem", "amr-fp32-w_patch", "large-fp32-w_elem"]


def _loss_fn(impl):
    if impl == "reference":
        return R.focal_reconstruction_loss
    if impl == "compiled":
        return _compile_or_skip(R.focal_reconstruction_loss)
    _triton_or_skip()
    from fastskel.kernels import focal as K

    return K.focal_reconstruction_loss


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("shape_name, dtype, per_patch", LOSS_CASES, ids=LOSS_IDS)
def test_focal_loss_forward(benchmark, shape_name, dtype, per_patch, impl):
    pred, target, weight = _loss_inputs(shape_name, dtype, per_patch)
    f = _loss_fn(impl)
    p = pred.detach()
    nbytes = 2 * p.numel() * p.element_size() + weight.numel() * weight.element_size()
    _run(benchmark, lambda: f(p, target, weight),
         dict(op="focal_loss_fwd", impl=impl, shape=list(p.shape), dtype=str(dtype),
              weight=list(weight.shape)), nbytes)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("shape_name, dtype, per_patch", LOSS_CASES, ids=LOSS_IDS)
def test_focal_loss_forward_backward(benchmark, shape_name, dtype, per_patch, impl):
    pred, target, weight = _loss_inputs(shape_name, dtype, per_patch)
    f = _loss_fn(impl)

    def step():
        pred.grad = None
        f(pred, target, weight).backward()
        return pred.grad

    # the fused backward reads pred, target, weight once more and writes ∂pred
    nbytes = 2 * (2 * pred.numel() * pred.element_size() + weight.numel() * weight.element_size()) \
        + pred.numel() * pred.element_size()
    _run(benchmark, step, dict(op="focal_loss_fwd_bwd", impl=impl, shape=list(pred.shape), dtype=str(dtype),
                               weight=list(weight.shape)), nbytes)


@pytest.mark.parametrize("shape_name", ["amr", "large"])
def test_copy_yardstick(benchmark, shape_name):
    """Device-to-device copy of one (N, 125, 72) fp32 tensor (and the skeleton tensor for the
    weights): the bandwidth the fused ops are read against."""
    _shape_ok(shape_name)
    src = torch.randn(PATCHES[shape_name], device=DEVICE)
    dst = torch.empty_like(src)
    _run(benchmark, lambda: dst.copy_(src), dict(op="copy", impl="copy", shape=list(src.shape), dtype=str(src.dtype)),
         2 * src.numel() * src.element_size())
