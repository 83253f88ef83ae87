"""graph_conv forward + backward: fastskel._C vs the einsum reference, and the ST-GCN training step.

Op shapes: the st-gcn blocks of the PSTL/ASMa encoder (hidden 16 → 256) on 128 actions × 2 bodies
(N·M = 256 sequences), V = 25, K = 3 (NTU spatial partition), all four gradients:

- ``c3_16_t50``: block 0, C 3 → 16, T = 50
- ``c16_16_t50``: blocks 1–3, 16 → 16, T = 50
- ``c64_64_t13``: block 8, 64 → 64, T = 13 (after the two stride-2 stages)
- ``c64_256_t13``: block 9, 64 → 256, T = 13

Implementations: ``reference`` (``fastskel.ops.reference.graph_conv``: 1×1 channel mix + einsum,
eager autograd), ``reference_compiled`` (the same under ``torch.compile``; not in the CI smoke run),
``fastskel`` (``torch.ops.fastskel.graph_conv`` and its backward op). fp32; bf16 too on CUDA.
Goal: fastskel ≥ 1.5× the reference on CPU, ≥ 2× on an H100.

``stgcn_step``: ``STGCN(hidden_channels=16, out_dim=256)`` forward + backward in train mode on
``(128, 3, 50, 25, 2)``, GraphConv backend "torch" (reference) vs "cpp".

``FASTSKEL_BENCH_SMALL=1`` shrinks every shape for the CI smoke run.
"""
import os

import pytest
import torch

from fastskel import _ext
from fastskel.ops import graph_conv, reference

SMALL = os.environ.get("FASTSKEL_BENCH_SMALL", "0") == "1"
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
HAS_OP = {"graph_conv", "graph_conv_backward"} <= set(_ext.compiled_ops())

# name: (N, C_in, C_out, T)
SHAPES = {
    "c3_16_t50": (256, 3, 16, 50),
    "c16_16_t50": (256, 16, 16, 50),
    "c64_64_t13": (256, 64, 64, 13),
    "c64_256_t13": (256, 64, 256, 13),
}
V, K = 25, 3
DTYPES = [torch.float32] + ([torch.bfloat16] if DEVICE == "cuda" else [])
ROUNDS = 1 if SMALL else 5


def _sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def _shape(name):
    n, ci, co, t = SHAPES[name]
    return (2, ci, co, 3) if SMALL else (n, ci, co, t)


def _step_fn(impl, x, A, w, b, gy):
    if impl == "fastskel":
        fn = lambda *a: graph_conv(*a, backend="cpp")
    elif impl == "reference_compiled":
        fn = torch.compile(reference.graph_conv)
    else:
        fn = reference.graph_conv

    def step():
        for t in (x, A, w, b):
            t.grad = None
        fn(x, A, w, b).backward(gy)
        _sync()

    return step


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).replace("torch.", ""))
@pytest.mark.parametrize("impl", ["reference", "reference_compiled", "fastskel"])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_graph_conv_fwd_bwd(benchmark, shape, impl, dtype):
    if impl == "fastskel" and not HAS_OP:
        pytest.skip(f"fastskel._C graph_conv not built: {_ext.error()}")
    if impl == "reference_compiled" and SMALL:
        pytest.skip("torch.compile is too slow for the CI smoke run")
    n, ci, co, t = _shape(shape)
    g = torch.Generator().manual_seed(0)
    make = lambda *s, scale=1.0: (torch.randn(*s, generator=g) * scale).to(DEVICE, dtype).requires_grad_()
    x, w, b = make(n, ci, t, V), make(K * co, ci, scale=ci ** -0.5), make(K * co)
    A = (torch.rand(K, V, V, generator=g) / V).to(DEVICE, dtype).requires_grad_()
    gy = torch.randn(n, co, t, V, generator=g).to(DEVICE, dtype)
    step = _step_fn(impl, x, A, w, b, gy)
    benchmark.group = f"graph_conv {shape} {str(dtype).replace('torch.', '')} {DEVICE}"
    benchmark.extra_info.update(shape=dict(N=n, C_in=ci, C_out=co, T=t, V=V, K=K), dtype=str(dtype),
                                device=DEVICE, impl=impl, threads=torch.get_num_threads())
    benchmark.pedantic(step, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    assert x.grad is not None and A.grad is not None and w.grad is not None and b.grad is not None


@pytest.mark.parametrize("impl", ["torch", "cpp"])
def test_stgcn_step(benchmark, impl):
    from fastskel.nn import stgcn

    if impl == "cpp" and not HAS_OP:
        pytest.skip(f"fastskel._C graph_conv not built: {_ext.error()}")
    batch, t = (2, 10) if SMALL else (128, 50)
    torch.manual_seed(0)
    model = stgcn.STGCN(hidden_channels=16, out_dim=256, backend=impl).to(DEVICE).train()
    x = torch.randn(batch, 3, t, 25, 2, device=DEVICE)

    def step():
        model.zero_grad(set_to_none=True)
        model(x).square().mean().backward()
        _sync()

    benchmark.group = f"stgcn_step hidden16 {DEVICE}"
    benchmark.extra_info.update(shape=dict(N=batch, C=3, T=t, V=25, M=2), dtype="float32", device=DEVICE,
                                impl=impl, threads=torch.get_num_threads())
    benchmark.pedantic(step, rounds=1 if SMALL else 3, iterations=1, warmup_rounds=1)
    assert model.edge_importance[0].grad is not None
