"""SLiM benchmarks (seed 002): one training step with the chunked vs the materialised prototype
heads (time and peak memory), the prototype objectives alone, and RoPE attention fast path vs
reference.

Shapes: the paper model (ViT 8×256, K = 65,536, T = 64 → 205 tokens) with batch 128 actions × 2
bodies on CUDA; on CPU the same model with batch ``FASTSKEL_SLIM_CPU_BATCH`` (default 8: a
batch-128 step with the materialised heads needs ~50 GB and minutes per step on a CPU; at batch 8
the materialised step peaks near 10 GB); ``FASTSKEL_BENCH_SMALL=1``: a tiny model (CI smoke).

Peak memory (after one warm-up step): CUDA ``torch.cuda.max_memory_allocated`` over the step
minus the memory allocated before it; CPU the process's peak RSS during the step (``VmHWM``, reset
through ``/proc/self/clear_refs``) minus the RSS before it, in a fresh subprocess per
implementation with ``MALLOC_MMAP_THRESHOLD_=65536`` so freed buffers leave the RSS at once
(``python benchmarks/bench_slim.py --peak IMPL BATCH SMALL``). On CPU the reference attention's
fp32 ``(L × L)`` probabilities are a large part of both peaks (the Triton attention of the CUDA
path does not store them).
"""
import json
import os
import resource
import subprocess
import sys
import time

import pytest
import torch

from _harness import skip_interpreted

SMALL = os.environ.get("FASTSKEL_BENCH_SMALL", "0") == "1"
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
STEP_BATCH = 128 if DEVICE == "cuda" else int(os.environ.get("FASTSKEL_SLIM_CPU_BATCH", "8"))


def _config(small: bool, impl: str):
    from fastskel.methods.slim import SLiMConfig

    if small:
        return SLiMConfig(dim=32, depth=2, heads=4, mlp_dim=64, num_prototypes=256, head_hidden_dim=64,
                          head_bottleneck_dim=32, frames=16, local_frames=(8,), local_scales=((0.15, 0.4),),
                          freeze_last_layer_epochs=0, head_impl=impl, pretrain_bodies="all")
    # every body of each action (the batch holds 2·B bodies, as the earlier results), SwiGLU encoder
    return SLiMConfig(freeze_last_layer_epochs=0, head_impl=impl, pretrain_bodies="all")


def _batch(n: int, t: int = 64, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.cumsum(torch.randn(n, 3, t, 25, 2, generator=g) * 0.02, 2) + torch.randn(n, 3, 1, 25, 2, generator=g)
    return x.to(DEVICE), torch.full((n,), t, dtype=torch.int64, device=DEVICE)


def _sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def _step(model, x, lengths, seed=0):
    g = torch.Generator(device=DEVICE).manual_seed(seed)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=DEVICE == "cuda"):
        out = model(x, lengths, generator=g)
    out["loss"].backward()
    model.zero_grad(set_to_none=True)
    _sync()
    return out


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _hwm_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("VmHWM not found in /proc/self/status")


def _proto_fn(impl: str, n: int, k: int):
    from fastskel.ops.prototype import (prototype_cross_entropy, prototype_cross_entropy_reference, sinkhorn_knopp,
                                        sinkhorn_reference)

    zs, ws, zt, wt = _proto_inputs(n, k)

    def run():
        if impl == "chunked":
            loss = prototype_cross_entropy(zs, ws, sinkhorn_knopp(zt, wt, 0.07), 0.1).mean()
        else:
            loss = prototype_cross_entropy_reference(zs @ ws.T, sinkhorn_reference(zt @ wt.T, 0.07), 0.1).mean()
        loss.backward()
        zs.grad = ws.grad = None
        _sync()

    return run


def measure_peak(impl: str, batch: int, small: bool, what: str = "step") -> dict:
    """Peak memory of one SLiM step (``what="step"``, ``batch`` actions) or of the prototype
    objectives alone (``"proto"``, ``batch`` tokens, K = PROTO_K) beyond what was allocated before
    it (this process), after a warm-up call; see the module docstring."""
    if what == "step":
        from fastskel.methods.slim import SLiM

        torch.manual_seed(0)
        model = SLiM(_config(small, impl)).to(DEVICE)
        x, lengths = _batch(batch)
        fn = lambda: _step(model, x, lengths)  # noqa: E731
    else:
        fn = _proto_fn(impl, batch, PROTO_K)
    if not small:
        fn()                                                         # warm-up (allocator, lazy init)
    if DEVICE == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        return {"peak_bytes": torch.cuda.max_memory_allocated() - base, "seconds": dt, "method": "cuda.max_memory_allocated"}
    base = _rss_bytes()
    try:                                                             # reset the peak-RSS counter (Linux)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        method = "VmHWM (reset via clear_refs) - RSS before the step; MALLOC_MMAP_THRESHOLD_=65536"
    except OSError:
        method = "ru_maxrss - RSS before the step (peak not reset: upper bound)"
    t0 = time.perf_counter()
    fn()
    dt = time.perf_counter() - t0
    peak = _hwm_bytes() if method.startswith("VmHWM") else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"peak_bytes": peak - base, "seconds": dt, "method": method}


def _peak_in_subprocess(impl: str, batch: int, what: str = "step") -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.pathsep + env.get("PYTHONPATH", "")
    env["MALLOC_MMAP_THRESHOLD_"] = "65536"      # big buffers via mmap: freed memory leaves the RSS at once
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--peak", impl, str(batch), str(int(SMALL)), what],
                         capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- one training step
@pytest.mark.parametrize("impl", ["chunked", "reference"])
def test_slim_step(benchmark, impl):
    from fastskel.methods.slim import SLiM

    torch.manual_seed(0)
    model = SLiM(_config(SMALL, impl)).to(DEVICE)
    x, lengths = _batch(STEP_BATCH)
    cfg = model.config
    benchmark.extra_info.update(dict(
        impl=impl, batch=STEP_BATCH, bodies=2 * STEP_BATCH, tokens=cfg.num_tokens, K=cfg.num_prototypes, dim=cfg.dim,
        depth=cfg.depth, dtype="bf16 autocast" if DEVICE == "cuda" else "fp32", device=DEVICE, small=SMALL))
    benchmark.pedantic(_step, args=(model, x, lengths), rounds=1 if SMALL or DEVICE == "cpu" else 5,
                       iterations=1, warmup_rounds=0 if SMALL else 1)


def test_slim_step_peak_memory(benchmark):
    """Peak memory of the chunked step vs the materialised one (each in a fresh process)."""
    res = {}

    def run():
        for impl in ("chunked", "reference"):    # SMALL (CI smoke): in-process, the numbers mean nothing
            res[impl] = measure_peak(impl, STEP_BATCH, True) if SMALL else _peak_in_subprocess(impl, STEP_BATCH)

    benchmark.pedantic(run, rounds=1, iterations=1)
    ratio = res["chunked"]["peak_bytes"] / max(res["reference"]["peak_bytes"], 1)
    benchmark.extra_info.update(dict(
        batch=STEP_BATCH, device=DEVICE, small=SMALL, method=res["chunked"]["method"],
        chunked_peak_MiB=res["chunked"]["peak_bytes"] / 2**20, reference_peak_MiB=res["reference"]["peak_bytes"] / 2**20,
        peak_ratio=ratio, chunked_step_s=res["chunked"]["seconds"], reference_step_s=res["reference"]["seconds"]))
    # the criterion (≤ 50 %) is stated for the batch-128 step; on a CPU it holds from batch 8
    # (at batch 2 the heads' share is smaller: 0.52 measured)
    if not SMALL and (DEVICE == "cuda" or STEP_BATCH >= 8):
        assert ratio <= 0.5, res


# --------------------------------------------------------------------------- prototype objectives alone
def _proto_inputs(n: int, k: int, d: int = 256, seed: int = 0):
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(seed)
    zs = F.normalize(torch.randn(n, d, generator=g), dim=-1).to(DEVICE).requires_grad_()
    ws = F.normalize(torch.randn(k, d, generator=g), dim=-1).to(DEVICE).requires_grad_()
    zt = F.normalize(torch.randn(n, d, generator=g), dim=-1).to(DEVICE)
    wt = F.normalize(torch.randn(k, d, generator=g), dim=-1).to(DEVICE)
    return zs, ws, zt, wt


PROTO_N = 64 if SMALL else (36_000 if DEVICE == "cuda" else 2048)
PROTO_K = 512 if SMALL else 65_536


@pytest.mark.parametrize("impl", ["chunked", "reference"])
def test_prototype_loss(benchmark, impl):
    run = _proto_fn(impl, PROTO_N, PROTO_K)
    benchmark.extra_info.update(dict(impl=impl, tokens=PROTO_N, K=PROTO_K, D=256, dtype="fp32", device=DEVICE,
                                     what="sinkhorn (3 it) + CE fwd+bwd"))
    benchmark.pedantic(run, rounds=1 if SMALL else 3, iterations=1, warmup_rounds=0 if SMALL else 1)


def test_prototype_loss_peak_memory(benchmark):
    """Peak memory of the prototype objectives alone, chunked vs materialised (fresh processes)."""
    res = {}

    def run():
        for impl in ("chunked", "reference"):
            res[impl] = (measure_peak(impl, PROTO_N, True, "proto") if SMALL
                         else _peak_in_subprocess(impl, PROTO_N, "proto"))

    benchmark.pedantic(run, rounds=1, iterations=1)
    ratio = res["chunked"]["peak_bytes"] / max(res["reference"]["peak_bytes"], 1)
    benchmark.extra_info.update(dict(
        tokens=PROTO_N, K=PROTO_K, device=DEVICE, small=SMALL, method=res["chunked"]["method"],
        chunked_peak_MiB=res["chunked"]["peak_bytes"] / 2**20, reference_peak_MiB=res["reference"]["peak_bytes"] / 2**20,
        peak_ratio=ratio))
    if not SMALL:
        assert ratio <= 0.5, res


# --------------------------------------------------------------------------- RoPE attention
# batch 128 actions × 2 bodies on CUDA; SMALL: 1 × 2 heads × (5 + 2·8) tokens (the interpreter is slow)
ATT_B, ATT_H, ATT_TB, ATT_V = (1, 2, 2, 8) if SMALL else ((256 if DEVICE == "cuda" else 32), 8, 8, 25)


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_rope_attention(benchmark, backend):
    from fastskel.backend import BackendUnavailableError
    from fastskel.ops import Rope, attention

    h, L, d = ATT_H, 5 + ATT_TB * ATT_V, 32
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(ATT_B, h, L, d, generator=g).to(DEVICE).requires_grad_() for _ in range(3))
    pos = torch.cat([torch.full((5,), -1.0), torch.arange(float(ATT_TB)).repeat_interleave(ATT_V)]).to(DEVICE)
    rope = Rope(pos, pos)
    try:
        attention(q[:1, :, :8], k[:1, :, :8], v[:1, :, :8], rope=Rope(pos[:8], pos[:8]), backend=backend)
    except BackendUnavailableError as e:
        pytest.skip(f"{backend} attention unavailable here: {e}")
    if backend == "triton":
        skip_interpreted(benchmark)

    def run():
        out = attention(q, k, v, rope=rope, backend=backend)
        out.sum().backward()
        q.grad = k.grad = v.grad = None
        _sync()

    benchmark.extra_info.update(dict(backend=backend, B=ATT_B, H=h, L=L, d=d, dtype="fp32", device=DEVICE,
                                     what="attention with temporal RoPE (cls+4 registers unrotated), fwd+bwd"))
    benchmark.pedantic(run, rounds=1 if SMALL else 5, iterations=1, warmup_rounds=0 if SMALL else 1)


if __name__ == "__main__" and len(sys.argv) == 6 and sys.argv[1] == "--peak":
    print(json.dumps(measure_peak(sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1", sys.argv[5])))
