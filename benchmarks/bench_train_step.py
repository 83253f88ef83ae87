"""One pretraining step (forward, backward, AdamW) of AMR vs its MAMP-5 baseline, same batch, one run.

Variants (group ``train_step``):

- ``mamp5-torch``: MAMP-5 as published — 750-token self-attention decoder, materialised attention
  (the reference ops), empty bodies processed. The baseline of AMR's speed claim (seed 004 Table 1:
  AMR 8.1× faster on an L20).
- ``amr-torch``: AMR on the reference ops — the architectural speed-up alone.
- ``amr-auto``: AMR on fastskel's kernels (backend "auto": Triton on CUDA) — the library's step.
- ``mamp5-auto``: MAMP-5 on fastskel's kernels, so the kernel gain is not credited to AMR alone.

Batch: 128 actions × 2 bodies on CUDA (bf16 autocast, as the engine trains), 8 actions on CPU
(fp32), raw length 300 with valid lengths U[64, 300], every body non-empty (so skipping empty
bodies gives AMR no advantage); the step includes the on-device crop-resize, masking, targets and
loss. ``FASTSKEL_BENCH_SMALL=1``: tiny models and 2 actions (the CI smoke run).

``extra_info``: shapes, dtype, device, ``samples_per_s`` (actions/s), ``peak_mem_mib`` (CUDA), and
on the AMR rows ``speedup_vs_mamp5_torch`` / ``speedup_vs_amr_torch`` from the medians of this run.
"""
import os
import time

import pytest
import torch

from _harness import auto_is_reference
from fastskel.methods.amr import AMR, AMRConfig, MAMP, MAMPConfig

SMALL = os.environ.get("FASTSKEL_BENCH_SMALL", "0") == "1"
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
ACTIONS = 2 if SMALL else (128 if DEVICE == "cuda" else 8)
RAW_T = 24 if SMALL else 300
ROUNDS, WARMUP = (1, 0) if SMALL else ((20, 3) if DEVICE == "cuda" else (3, 1))
TINY = dict(num_frames=16, dim=32, depth=1, heads=2, decoder_dim=32, decoder_depth=1, decoder_heads=2,
            crop_min_frames=8)

# (name, method class, config kwargs, backend), timed in this order so the AMR rows can report ratios
VARIANTS = [
    ("mamp5-torch", MAMP, dict(decoder_depth=5), "torch"),
    ("mamp5-auto", MAMP, dict(decoder_depth=5), "auto"),
    ("amr-torch", AMR, dict(), "torch"),
    ("amr-auto", AMR, dict(), "auto"),
]
_MEDIANS = {}


def _batch():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(ACTIONS, 3, RAW_T, 25, 2, generator=g).cumsum(2) * 0.02
    lo = min(64, RAW_T)
    lengths = torch.randint(lo, RAW_T + 1, (ACTIONS,), generator=g)
    x *= (torch.arange(RAW_T)[None, :] < lengths[:, None]).float()[:, None, :, None, None]
    return x.to(DEVICE), lengths.to(DEVICE)


def _sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


@pytest.fixture
def _threads():
    # The smoke run's tiny ops are fastest, and immune to OpenMP stalls on a busy CI host, on one thread.
    n = torch.get_num_threads()
    if SMALL:
        torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("name, cls, kw, backend", VARIANTS, ids=[v[0] for v in VARIANTS])
def test_train_step(benchmark, _threads, name, cls, kw, backend):
    torch.manual_seed(0)
    cfg_cls = AMRConfig if cls is AMR else MAMPConfig
    kw = {**kw, **TINY, **({"r": 2, "windows": (4, 8)} if cls is AMR else {})} if SMALL else kw
    if SMALL:
        kw["decoder_depth"] = 1
    model = cls(cfg_cls(backend=backend, **kw)).to(DEVICE)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.05)
    x, lengths = _batch()
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if DEVICE == "cuda" else torch.autocast("cpu", enabled=False)

    losses = []

    def step():
        with amp:
            loss = model(x, lengths)["loss"]
        losses.append(loss.detach())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        _sync()

    if DEVICE == "cuda":
        step()                                   # allocate optimizer state before measuring the peak
        torch.cuda.reset_peak_memory_stats()
    benchmark.pedantic(step, rounds=ROUNDS, warmup_rounds=WARMUP, iterations=1)

    cfg = model.config
    info = benchmark.extra_info
    # "auto" on a CPU runs the reference ops (AMR/MAMP have no _C kernels): no speedup to claim
    info["reference"] = name.split("-")[0] + "-torch"
    info["fast_path_is_reference"] = backend == "auto" and auto_is_reference(
        "attention", "focal_reconstruction_loss", "motion_energy_weights")
    info.update(variant=name, backend=backend, device=DEVICE, threads=torch.get_num_threads(),
                dtype="bf16 autocast" if DEVICE == "cuda" else "fp32",
                batch=f"{ACTIONS} actions x 2 bodies, raw T={RAW_T}, resized T={cfg.num_frames}",
                tokens=cfg.num_tokens, visible=cfg.num_visible,
                decoder=(f"{cfg.num_queries} queries x {cfg.decoder_depth} cross-attn layers" if cls is AMR
                         else f"{cfg.num_tokens} tokens x {cfg.decoder_depth} self-attn layers"),
                params=sum(p.numel() for p in model.parameters()))
    if DEVICE == "cuda":
        info["peak_mem_mib"] = round(torch.cuda.max_memory_allocated() / 2 ** 20, 1)
    stats = getattr(benchmark, "stats", None)
    median = getattr(getattr(stats, "stats", None), "median", None) if stats is not None else None
    if median is None:                           # --benchmark-disable: time the one smoke step ourselves
        t = time.perf_counter()
        step()
        median = time.perf_counter() - t
    _MEDIANS[name] = median
    info["median_s"] = median
    info["samples_per_s"] = round(ACTIONS / median, 2)
    if cls is AMR:
        for ref in ("mamp5-torch", "amr-torch"):
            if ref in _MEDIANS and ref != name:
                info[f"speedup_vs_{ref.replace('-', '_')}"] = round(_MEDIANS[ref] / median, 2)
    assert all(bool(torch.isfinite(v)) for v in losses)
