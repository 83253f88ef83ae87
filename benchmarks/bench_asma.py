"""ASMa end to end: one pretraining step (both encoders × 3 streams, projector 6144, Barlow Twins,
forward + backward) with fastskel's fast paths vs the reference ops, and teacher vs distilled
student inference latency at batch 1.

- reference: backend "torch" (einsum graph conv, materialised D×D Barlow Twins, eager masks,
  st-gcn's ``Dropout → + → ReLU`` modules), six sequential stream forwards (PSTL's structure) and
  torch's default (``foreach``) Adam;
- fast: backend "auto" (``_C``/Triton graph conv, Gram-form / Triton Barlow Twins, Triton masks on
  CUDA, the fused ``_C`` dropout-add-ReLU block tail on CPU), the three streams of an encoder
  batched into one forward, and the engine's optimiser (:func:`fastskel.engine.schedule.build_optimizer`:
  fused Adam). Both use the engine's parameter groups (no decay on 1-D parameters).

Paper shape: B=128 actions × 2 bodies, T=50, V=25, D=6144. On CPU the batch is
``FASTSKEL_ASMA_CPU_BATCH`` (default 16: batch 128 takes minutes per step on a small CPU);
``FASTSKEL_BENCH_SMALL=1`` uses tiny shapes (CI smoke run).
"""
import os

import pytest
import torch

from fastskel.engine.schedule import build_optimizer, param_groups
from fastskel.methods.asma import ASMa, ASMaAligner, ASMaConfig, build_student

SMALL = os.environ.get("FASTSKEL_BENCH_SMALL") == "1"
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _config():
    if SMALL:
        return ASMaConfig(hidden_channels=4, out_dim=16, projector_dims=(32, 32, 32), num_frames=16,
                          frame_mask_k=4, joint_mask_n=5)
    return ASMaConfig()


def _batch(device):
    if SMALL:
        return 4
    return 128 if device == "cuda" else int(os.environ.get("FASTSKEL_ASMA_CPU_BATCH", "16"))


def _sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("path", ["reference", "fast"])
def test_asma_pretrain_step(benchmark, device, path):
    torch.manual_seed(0)
    cfg = _config()
    cfg.batched_streams = path == "fast"
    model = ASMa(cfg).to(device)
    model.set_backend("torch" if path == "reference" else "auto")
    b, t = _batch(device), cfg.num_frames
    x = torch.randn(b, 3, t, 25, 2, device=device).cumsum(2) * 0.05
    x[b // 2:, ..., 1] = 0                       # half the actions have one body
    lengths = torch.full((b,), t, device=device)
    if path == "fast":
        opt = build_optimizer(model, "adam", 1e-4, cfg.weight_decay)
    else:
        opt = torch.optim.Adam(param_groups(model, cfg.weight_decay), lr=1e-4, foreach=True)
    g = torch.Generator(device=device).manual_seed(0)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = model(x, lengths, generator=g)["loss"]
        loss.backward()
        opt.step()
        _sync(device)
        return loss

    benchmark.extra_info.update(op="asma_pretrain_step", path=path, device=device, batch=b, bodies=2, T=t, V=25,
                                projector=list(cfg.projector_dims), dtype="float32",
                                batched_streams=cfg.batched_streams, backend=model.backend,
                                optimizer="fused" if opt.defaults.get("fused") else "foreach",
                                threads=torch.get_num_threads())
    loss = benchmark.pedantic(step, rounds=3 if not SMALL else 1, iterations=1, warmup_rounds=1 if not SMALL else 0)
    assert torch.isfinite(loss)


@pytest.mark.parametrize("model_kind", ["teacher", "student"])
def test_asma_inference_latency_cpu(benchmark, model_kind):
    """CPU latency at batch 1 (one action, 2 bodies, T=50): ASMa teacher (2 encoders + aligner) vs
    the 5-block student, eager PyTorch with backend "torch" (what an exported graph runs)."""
    torch.manual_seed(0)
    cfg = _config()
    teacher = ASMaAligner(ASMa(cfg), 60).eval()
    model = teacher if model_kind == "teacher" else build_student(teacher, 60).eval()
    for mod in model.modules():
        if hasattr(mod, "backend") and not isinstance(getattr(type(mod), "backend", None), property):
            mod.backend = "torch"
    x = torch.randn(1, 3, cfg.num_frames, 25, 2)
    params = sum(p.numel() for n, p in model.named_parameters() if "projector" not in n.split("."))
    benchmark.extra_info.update(op="asma_inference", model=model_kind, device="cpu", batch=1, T=cfg.num_frames,
                                params=params, threads=torch.get_num_threads(), dtype="float32")

    def run():
        with torch.no_grad():
            return model.logits(x)

    out = benchmark(run)
    assert out.shape == (1, 60)
