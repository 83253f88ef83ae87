"""Attention forward + backward: fastskel's fused Triton kernel vs PyTorch SDPA and the reference.

Shapes (bf16, no padding mask), one benchmark group each:

- ``amr_decoder``: AMR decoder cross-attention, 256 sequences (128 actions × 2 bodies) × 8 heads,
  125 queries → 75 visible tokens, d = 32 (layers 2–5: per-sample queries).
- ``amr_decoder_shared_q``: the same with the 125 learnable queries shared (Bq = 1, layer 1); SDPA
  gets ``q.expand(B, ...)``.
- ``asma_align``: ASMa feature alignment, 256 sequences × 4 heads, 13 × 13 frames (T = 50 after the
  ST-GCN's two temporal strides), d = 64 (256-d features); one direction of the bi-directional pair.
- ``slim_encoder``: SLiM encoder self-attention, 256 sequences (128 actions × 2 global views) ×
  8 heads, 205 tokens (cls + 4 registers unrotated, 200 patch tokens at temporal positions 0–7),
  d = 32, temporal RoPE. SDPA and the compiled reference rotate q, k with torch ops first.

Implementations: ``fastskel`` (the Triton kernel; CUDA, or the interpreter with TRITON_INTERPRET=1
untimed — a timed interpreter run is skipped),
``sdpa`` (default dispatch), ``sdpa_flash`` / ``sdpa_efficient`` / ``sdpa_cudnn`` (one SDPA backend
forced; CUDA only, skipped where the backend rejects the shape), ``reference`` (explicit fp32
softmax, eager) and ``reference_compiled`` (``torch.compile``; skipped in the CI smoke run).
Goal on an H100: fastskel ≥ 1.5× the best SDPA backend at amr_* and asma_align, ≥ 1× at slim_encoder.

``FASTSKEL_BENCH_SMALL=1`` shrinks every shape for the CI smoke run.
"""
import os

import pytest
import torch
import torch.nn.functional as F

from _harness import skip_interpreted
from fastskel.backend import triton_status
from fastskel.ops import Rope, attention, reference

SMALL = os.environ.get("FASTSKEL_BENCH_SMALL", "0") == "1"
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DTYPE = torch.bfloat16

# name: (Bq, B, H, Lq, Lk, d, rope)
SHAPES = {
    "amr_decoder": (256, 256, 8, 125, 75, 32, False),
    "amr_decoder_shared_q": (1, 256, 8, 125, 75, 32, False),
    "asma_align": (256, 256, 4, 13, 13, 64, False),
    "slim_encoder": (256, 256, 8, 205, 205, 32, True),
}
if SMALL:
    SHAPES = {
        "amr_decoder": (2, 2, 2, 17, 11, 32, False),
        "amr_decoder_shared_q": (1, 2, 2, 17, 11, 32, False),
        "asma_align": (2, 2, 1, 13, 13, 64, False),
        "slim_encoder": (2, 2, 1, 21, 21, 32, True),
    }
IMPLS = ["fastskel", "sdpa", "sdpa_flash", "sdpa_efficient", "sdpa_cudnn", "reference", "reference_compiled"]


def _sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def _slim_positions(n_tokens: int) -> torch.Tensor:
    """cls + 4 registers unrotated (−1), then patch tokens t-block major over 25 joints."""
    extra = min(5, n_tokens)
    patches = torch.arange(n_tokens - extra) // 25
    return torch.cat([torch.full((extra,), -1), patches]).float()


def _sdpa_fn(impl):
    if impl == "sdpa":
        return F.scaled_dot_product_attention
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backend = {"sdpa_flash": SDPBackend.FLASH_ATTENTION, "sdpa_efficient": SDPBackend.EFFICIENT_ATTENTION,
               "sdpa_cudnn": SDPBackend.CUDNN_ATTENTION}[impl]

    def fn(q, k, v):
        with sdpa_kernel([backend]):
            return F.scaled_dot_product_attention(q, k, v)
    return fn


def _make(impl, bq, b, rope):
    """``f(q, k, v) -> out`` for ``impl``, with q of batch ``bq`` and k, v of batch ``b``."""
    if impl == "fastskel":
        return lambda q, k, v: attention(q, k, v, rope=rope, backend="triton")
    if impl in ("reference", "reference_compiled"):
        fn = lambda q, k, v: reference.attention(q, k, v, rope=rope)  # noqa: E731
        return torch.compile(fn) if impl == "reference_compiled" else fn
    sdpa = _sdpa_fn(impl)

    def f(q, k, v):
        if rope is not None:
            q = reference.apply_rope(q, rope.q_pos, rope.base).to(v.dtype)
            k = reference.apply_rope(k, rope.k_pos, rope.base).to(v.dtype)
        return sdpa(q.expand(b, -1, -1, -1) if bq != b else q, k, v)
    return f


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("shape", list(SHAPES))
def test_attention_fwd_bwd(benchmark, shape, impl):
    bq, b, h, lq, lk, d, use_rope = SHAPES[shape]
    if impl == "fastskel" and not triton_status(DEVICE)[0]:
        pytest.skip(f"Triton cannot run here: {triton_status(DEVICE)[1]}")
    if impl == "fastskel":
        skip_interpreted(benchmark)
    if impl.startswith("sdpa_") and DEVICE != "cuda":
        pytest.skip("SDPA backend selection is benchmarked on CUDA only")
    if impl == "reference_compiled" and SMALL:
        pytest.skip("torch.compile is too slow for the CI smoke run")
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(bq, h, lq, d, generator=gen).to(DEVICE, DTYPE).requires_grad_()
    k = torch.randn(b, h, lk, d, generator=gen).to(DEVICE, DTYPE).requires_grad_()
    v = torch.randn(b, h, lk, d, generator=gen).to(DEVICE, DTYPE).requires_grad_()
    rope = None
    if use_rope:
        pos = _slim_positions(lq).to(DEVICE)
        rope = Rope(pos, pos)
    fn = _make(impl, bq, b, rope)
    g = torch.randn(b, h, lq, d, generator=gen).to(DEVICE, DTYPE)

    def step():
        out = fn(q, k, v)
        grads = torch.autograd.grad(out, (q, k, v), g)
        _sync()
        return grads

    try:
        step()                       # warm-up: autotuning, compilation, SDPA backend checks
    except RuntimeError as exc:      # an SDPA backend that does not take this shape
        if impl.startswith("sdpa_"):
            pytest.skip(f"{impl} rejects this shape: {str(exc).splitlines()[0][:200]}")
        raise
    benchmark.group = f"attention fwd+bwd {shape}"
    benchmark.extra_info.update(dict(
        shape=dict(Bq=bq, B=b, H=h, Lq=lq, Lk=lk, d=d), rope=use_rope, dtype=str(DTYPE), device=DEVICE,
        impl=impl, gpu=torch.cuda.get_device_name() if DEVICE == "cuda" else None))
    rounds = 3 if DEVICE == "cpu" and not SMALL else 30
    grads = benchmark.pedantic(step, rounds=rounds, warmup_rounds=1 if DEVICE == "cuda" else 0, iterations=1)
    assert all(torch.isfinite(t).all() for t in grads)
