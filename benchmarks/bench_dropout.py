"""st-gcn's block tail ``ReLU(Dropout(x) + residual)``, forward + backward: the fused ``_C`` op
(:func:`fastskel.ops.dropout_add_relu`, mask regenerated from a seed) vs st-gcn's modules
(``torch.nn.functional.dropout`` + add + ReLU, the mask stored) and vs the readable reference
(the same counter-based mask in PyTorch integer ops).

Shape: the first ST-GCN stage of ASMa's fast step, 3 streams × 128 actions × 2 bodies = 768
sequences × 16 channels × 50 frames × 25 joints, fp32, p = 0.5. ``FASTSKEL_BENCH_SMALL=1``: tiny.
"""
import os

import pytest
import torch
import torch.nn.functional as F

from fastskel import _ext, ops

SMALL = os.environ.get("FASTSKEL_BENCH_SMALL", "0") == "1"
SHAPE = (8, 16, 10, 25) if SMALL else (768, 16, 50, 25)
HAS_OP = {"dropout_add_relu", "dropout_add_relu_backward"} <= set(_ext.compiled_ops())


def _modules(x, r):
    return torch.relu(F.dropout(x, 0.5, True) + r)


IMPLS = {
    "fastskel": lambda x, r: ops.dropout_add_relu(x, r, 0.5, backend="cpp"),
    "torch_modules": _modules,
    "reference": lambda x, r: ops.dropout_add_relu(x, r, 0.5, backend="torch"),
}


@pytest.mark.parametrize("impl", list(IMPLS))
def test_dropout_add_relu_fwd_bwd(benchmark, impl):
    if impl == "fastskel" and not HAS_OP:
        pytest.skip("fastskel._C without dropout_add_relu")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(SHAPE, generator=g).requires_grad_()
    r = torch.randn(SHAPE, generator=g).requires_grad_()
    gy = torch.randn(SHAPE, generator=g)
    fn = IMPLS[impl]

    def run():
        return torch.autograd.grad(fn(x, r), (x, r), gy)

    benchmark.extra_info.update(op="dropout_add_relu", impl=impl, shape=list(SHAPE), dtype="float32", device="cpu",
                                p=0.5, threads=torch.get_num_threads())
    gx, gr = benchmark.pedantic(run, rounds=1 if SMALL else 7, iterations=1, warmup_rounds=0 if SMALL else 1)
    assert gx.shape == x.shape and gr.shape == r.shape
