"""ASMa masking ops: frame_motion, motion_frame_mask (HMTM/LMTM) and degree_joint_mask (HDSM/LDSM).

Each op is timed as the reference (eager PyTorch, :mod:`fastskel.ops.reference`), the reference
under ``torch.compile``, and the fused Triton kernel (:mod:`fastskel.kernels`), at the ASMa shape
(N·M = 256 sequences, C=3, T=50, V=25, k=10 frames, n=9 joints) and at N=8192 to read bandwidth,
next to a device-to-device copy of the same tensor (the bandwidth yardstick). Argument validation
(whose NaN / length checks synchronise) is outside the timed region for every variant: the
reference and kernel functions are called with validated arguments.

- Triton runs on CUDA (under ``TRITON_INTERPRET=1`` only in the tiny CI smoke shapes, untimed:
  a timed interpreter run is skipped with the reason).
- On CUDA every timed call runs the op ``REPS`` times, then synchronises once; compare medians
  of one file run. ``extra_info["GB/s"]`` = bytes that must move (inputs read + outputs written,
  once) / median; for the copy it is 2 × the tensor bytes.
- ``torch.compile`` variants are skipped in the CI smoke (``FASTSKEL_BENCH_SMALL=1``); if the
  compiler fails on this machine they are skipped with its error.
- The N=8192 batch runs on CUDA, or on CPU with ``FASTSKEL_BENCH_LARGE=1``.

Goals on an H100 (issue #5): ≥ 5× eager and ≥ 1.5× compiled at the ASMa shape; ≥ 60 % of the
copy bandwidth at N=8192.
"""
import pytest
import torch

from _harness import DEVICE, REPS, SMALL, compile_or_skip, run, shape_ok, sync, triton_or_skip  # noqa: F401
from fastskel.ops import reference as R

SHAPES = {"asma": (4, 3, 12, 25) if SMALL else (256, 3, 50, 25),
          "large": (8192, 3, 50, 25)}
K_FRAMES = 3 if SMALL else 10
N_JOINTS = 3 if SMALL else 9


def _skeleton(shape_name):
    shape_ok(shape_name)
    g = torch.Generator().manual_seed(0)
    return torch.randn(SHAPES[shape_name], generator=g).to(DEVICE)


IMPLS = ["reference", "compiled", "triton"]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("shape_name", ["asma", "large"])
def test_frame_motion(benchmark, shape_name, impl):
    x = _skeleton(shape_name)
    if impl == "reference":
        fn = lambda: R.frame_motion(x)
    elif impl == "compiled":
        f = compile_or_skip(R.frame_motion)
        fn = lambda: f(x)
    else:
        triton_or_skip(benchmark)
        from fastskel.kernels import motion as K

        fn = lambda: K.frame_motion(x)
    n, c, t, v = x.shape
    run(benchmark, fn, dict(op="frame_motion", impl=impl, shape=list(x.shape), dtype=str(x.dtype)),
         x.numel() * x.element_size() + n * t * 4)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("shape_name", ["asma", "large"])
def test_motion_frame_mask(benchmark, shape_name, impl):
    x = _skeleton(shape_name)
    k = K_FRAMES
    if impl == "reference":
        fn = lambda: R.motion_frame_mask(x, k, True)
    elif impl == "compiled":
        f = compile_or_skip(R.motion_frame_mask)
        fn = lambda: f(x, k, True)
    else:
        triton_or_skip(benchmark)
        from fastskel.kernels import motion as K

        fn = lambda: K.motion_frame_mask(x, k, True)
    n, c, t, v = x.shape
    run(benchmark, fn, dict(op="motion_frame_mask", impl=impl, shape=list(x.shape), k=k, largest=True,
                             dtype=str(x.dtype)),
         2 * x.numel() * x.element_size() + n * t)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("shape_name", ["asma", "large"])
def test_degree_joint_mask(benchmark, shape_name, impl):
    """Includes drawing the (N, V) uniforms in every variant (part of the op)."""
    x = _skeleton(shape_name)
    n_, c, t, v = x.shape
    nsel = N_JOINTS
    from fastskel.graph import SkeletonGraph

    log_p = R.degree_log_probs(torch.tensor(SkeletonGraph.ntu25().degrees, device=DEVICE), True)
    noise = lambda: torch.rand(n_, v, device=DEVICE)
    if impl == "reference":
        fn = lambda: R.degree_joint_mask(x, nsel, log_p, noise())
    elif impl == "compiled":
        f = compile_or_skip(lambda x: R.degree_joint_mask(x, nsel, log_p, torch.rand(n_, v, device=x.device)))
        fn = lambda: f(x)
    else:
        triton_or_skip(benchmark)
        from fastskel.kernels import joint_mask as K

        fn = lambda: K.degree_joint_mask(x, nsel, log_p, noise())
    run(benchmark, fn, dict(op="degree_joint_mask", impl=impl, shape=list(x.shape), n=nsel, high=True,
                             dtype=str(x.dtype)),
         2 * x.numel() * x.element_size() + n_ * v * 5)


@pytest.mark.parametrize("shape_name", ["asma", "large"])
def test_copy_yardstick(benchmark, shape_name):
    """Device-to-device copy of the same skeleton tensor: the bandwidth every fused op is read against."""
    x = _skeleton(shape_name)
    dst = torch.empty_like(x)
    run(benchmark, lambda: dst.copy_(x), dict(op="copy", impl="copy", shape=list(x.shape), dtype=str(x.dtype)),
         2 * x.numel() * x.element_size())
