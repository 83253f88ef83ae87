"""AMR focal reconstruction: motion_energy_weights (windows 4, 8, 12) and focal_reconstruction_loss
(forward, and forward + backward).

Each op is timed as the reference (eager PyTorch, :mod:`fastskel.ops.reference`), the reference
under ``torch.compile``, and the Triton kernels (:mod:`fastskel.kernels.focal`), at the AMR shapes
(N·M = 256 sequences, C=3, T=120, V=25; 125 target patches × 72 values = 24 frames × 3) and at
N=8192 to read bandwidth, next to a device-to-device copy of the same bytes (the yardstick).
Arguments are validated outside the timed region for every variant.

- Triton runs on CUDA (under ``TRITON_INTERPRET=1`` only in the tiny CI smoke shapes, untimed:
  a timed interpreter run is skipped with the reason).
- On CUDA every timed call runs the op ``REPS`` times, then synchronises once.
  ``extra_info["GB/s"]`` = bytes that must move (inputs read + outputs written, once) / median.
- ``torch.compile`` variants are skipped in the CI smoke (``FASTSKEL_BENCH_SMALL=1``) and, with the
  compiler's error, where it fails.
- The N=8192 batch runs on CUDA, or on CPU with ``FASTSKEL_BENCH_LARGE=1``.

Goals on an H100 (issue #5): ≥ 5× eager and ≥ 1.5× compiled at the AMR shapes; ≥ 60 % of the copy
bandwidth at N=8192.
"""
import pytest
import torch

from _harness import DEVICE, REPS, SMALL, compile_or_skip, run, shape_ok, sync, triton_or_skip  # noqa: F401
from fastskel.ops import reference as R

WINDOWS = (4, 8, 12)
SKELETON = {"amr": (4, 3, 24, 25) if SMALL else (256, 3, 120, 25), "large": (8192, 3, 120, 25)}
PATCHES = {"amr": (4, 25, 72) if SMALL else (256, 125, 72), "large": (8192, 125, 72)}
IMPLS = ["reference", "compiled", "triton"]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("shape_name", ["amr", "large"])
def test_motion_energy_weights(benchmark, shape_name, impl):
    shape_ok(shape_name)
    x = torch.randn(SKELETON[shape_name], generator=torch.Generator().manual_seed(0)).to(DEVICE)
    if impl == "reference":
        fn = lambda: R.motion_energy_weights(x, WINDOWS)
    elif impl == "compiled":
        f = compile_or_skip(R.motion_energy_weights)
        fn = lambda: f(x, WINDOWS)
    else:
        triton_or_skip(benchmark)
        from fastskel.kernels import focal as K

        fn = lambda: K.motion_energy_weights(x, WINDOWS)
    n, c, t, v = x.shape
    run(benchmark, fn, dict(op="motion_energy_weights", impl=impl, shape=list(x.shape), windows=list(WINDOWS),
                             dtype=str(x.dtype)),
         x.numel() * x.element_size() + n * t * v * 4)


def _loss_inputs(shape_name, dtype, per_patch):
    shape_ok(shape_name)
    g = torch.Generator().manual_seed(1)
    shape = PATCHES[shape_name]
    pred = torch.randn(shape, generator=g).to(dtype).to(DEVICE).requires_grad_()
    target = torch.randn(shape, generator=g).to(dtype).to(DEVICE)
    weight = torch.rand(shape[:2] if per_patch else shape, generator=g).to(DEVICE)
    return pred, target, weight


LOSS_CASES = [("amr", torch.float32, False), ("amr", torch.bfloat16, False), ("amr", torch.float32, True),
              ("large", torch.float32, False)]
LOSS_IDS = ["amr-fp32-w_elem", "amr-bf16-w_elem", "amr-fp32-w_patch", "large-fp32-w_elem"]


def _loss_fn(impl, benchmark):
    if impl == "reference":
        return R.focal_reconstruction_loss
    if impl == "compiled":
        return compile_or_skip(R.focal_reconstruction_loss)
    triton_or_skip(benchmark)
    from fastskel.kernels import focal as K

    return K.focal_reconstruction_loss


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("shape_name, dtype, per_patch", LOSS_CASES, ids=LOSS_IDS)
def test_focal_loss_forward(benchmark, shape_name, dtype, per_patch, impl):
    pred, target, weight = _loss_inputs(shape_name, dtype, per_patch)
    f = _loss_fn(impl, benchmark)
    p = pred.detach()
    nbytes = 2 * p.numel() * p.element_size() + weight.numel() * weight.element_size()
    run(benchmark, lambda: f(p, target, weight),
         dict(op="focal_loss_fwd", impl=impl, shape=list(p.shape), dtype=str(dtype),
              weight=list(weight.shape)), nbytes)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("shape_name, dtype, per_patch", LOSS_CASES, ids=LOSS_IDS)
def test_focal_loss_forward_backward(benchmark, shape_name, dtype, per_patch, impl):
    pred, target, weight = _loss_inputs(shape_name, dtype, per_patch)
    f = _loss_fn(impl, benchmark)

    def step():
        pred.grad = None
        f(pred, target, weight).backward()
        return pred.grad

    # the fused backward reads pred, target, weight once more and writes ∂pred
    nbytes = 2 * (2 * pred.numel() * pred.element_size() + weight.numel() * weight.element_size()) \
        + pred.numel() * pred.element_size()
    run(benchmark, step, dict(op="focal_loss_fwd_bwd", impl=impl, shape=list(pred.shape), dtype=str(dtype),
                               weight=list(weight.shape)), nbytes)


@pytest.mark.parametrize("shape_name", ["amr", "large"])
def test_copy_yardstick(benchmark, shape_name):
    """Device-to-device copy of one (N, 125, 72) fp32 tensor (and the skeleton tensor for the
    weights): the bandwidth the fused ops are read against."""
    shape_ok(shape_name)
    src = torch.randn(PATCHES[shape_name], device=DEVICE)
    dst = torch.empty_like(src)
    run(benchmark, lambda: dst.copy_(src), dict(op="copy", impl="copy", shape=list(src.shape), dtype=str(src.dtype)),
         2 * src.numel() * src.element_size())
