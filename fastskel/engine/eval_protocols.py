"""Named evaluation protocols for frozen features: fastskel's and the official SLiM one.

- ``"fastskel"`` (the default, unchanged): ``method.encode`` as configured (SLiM: cls of the last
  block, averaged over the action's non-empty bodies, full valid length resampled), then
  :func:`~fastskel.engine.evaluate.linear_probe` (standardised features, one lr) or k-NN.
- ``"slim_official"`` (KAIST-VICLab/SLiM 2b8bb41 ``slim/eval/linear.py``, DINOv2's linear
  evaluation): per body, the final-LayerNorm cls tokens of the last 1 or 4 blocks, with or without
  the mean patch token of the last block (``create_linear_input``), summed over the valid bodies;
  test clip = 95 % centre crop with strided frames (``DownstreamAugmentation._test_sampling``).
  One linear classifier per (blocks ∈ {1, 4}) × (mean patch ∈ {no, yes}) × lr, all trained on the
  same batches (``setup_linear_classifiers``): features **not** standardised, weights
  ``N(0, 0.01²)``, bias 0, SGD momentum 0.9, no weight decay, lr = grid value × batch / 256
  (``scale_lr``), ``CosineAnnealingLR`` to 0 over ``epochs × epoch_length`` iterations (10 × 2,000
  at batch 16 per GPU × 4 GPUs = 64, ``scripts/eval_linear.sh``), batches from reshuffled passes;
  the best top-1 on the test split over the grid is reported (the official code selects on the
  split it reports) with the whole grid. k-NN on ``[cls | mean patch]`` of the last block.

Not reproduced: the official probe computes training features online with the downstream
train-time augmentation (random 50–100 % crop, flip, bone scale, rotation, noise) at every
iteration; fastskel extracts the training features once from the un-augmented clips (full valid
length), which keeps the 52-classifier grid cheap. ``standardize=True`` gives fastskel's
standardisation inside the official grid.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict, Optional, Sequence

import torch
from torch import nn

__all__ = ["PROTOCOL_VARIANTS", "DINOV2_LR_GRID", "SLIM_LR_GRID", "official_probe_grid", "slim_official_features",
           "slim_official_linear", "slim_official_knn"]

PROTOCOL_VARIANTS = ("fastskel", "slim_official")
# slim/eval/linear.py get_args_parser defaults (the same as DINOv2's)
SLIM_LR_GRID = DINOV2_LR_GRID = (1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2, 0.1)


def slim_official_features(method: nn.Module, dataset, blocks: int = 4, patch: bool = True,
                           crop: float = 0.95, device="cpu") -> torch.Tensor:
    """``(features (N, (blocks + patch)·dim), labels)`` of a SLiM with the official evaluation input
    (bodies summed, ``crop`` centre crop); the method's config is restored afterwards."""
    from .evaluate import extract_features

    cfg = getattr(method, "config", None)
    if cfg is None or not hasattr(cfg, "encode_layers"):
        raise TypeError(f"method: expected a SLiM (config with encode_layers), got {type(method).__name__}")
    saved = dataclasses.replace(cfg)
    try:
        cfg.encode_layers, cfg.encode_patch, cfg.encode_bodies, cfg.encode_crop = blocks, patch, "sum", crop
        if hasattr(cfg, "encode_sampling"):
            cfg.encode_sampling = "official"
        return extract_features(method, dataset, device=device)
    finally:
        method.config = saved


def official_probe_grid(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                        columns: torch.Tensor, lrs: Sequence[float], iters: int, batch_size: int = 64,
                        num_classes: Optional[int] = None, standardize: bool = False, seed: int = 0,
                        return_params: bool = False):
    """Top-1 (%) of G linear classifiers trained jointly as the official grid (module docstring):
    classifier ``g`` reads the feature columns ``columns[g]`` (``(G, D)`` bool) at lr ``lrs[g]``
    (already scaled); all see the same batches of ``batch_size`` drawn from reshuffled passes.

    Per iteration ``t`` of ``iters``: ``lr_t = lr·(1 + cos(π·t/iters))/2``; gradients of the mean
    cross-entropy; SGD momentum 0.9 (``buf ← 0.9·buf + ∇``, ``W ← W − lr_t·buf``). Seeded init
    ``W ~ N(0, 0.01²)`` (then the batch order) from ``torch.Generator().manual_seed(seed)``.
    Returns top-1 ``(G,)`` (and the trained ``W (G, D, K)``, ``b (G, K)`` when ``return_params``)."""
    if iters < 1:
        raise ValueError(f"iters: expected >= 1 training iterations, got {iters}")
    x, xt = train_x.float(), test_x.float()
    if standardize:
        mean, std = x.mean(0), x.std(0, unbiased=False).clamp_min(1e-6)
        x, xt = (x - mean) / std, (xt - mean) / std
    k = num_classes or int(max(int(train_y.max()), int(test_y.max())) + 1)
    m = columns.to(torch.float32)
    g_, d = m.shape
    lr = torch.as_tensor([float(v) for v in lrs], dtype=torch.float32)
    if lr.shape != (g_,):
        raise ValueError(f"lrs: expected {g_} learning rates (one per classifier), got {lr.shape[0]}")
    dev = x.device                                  # draws on the CPU (same seed, same run anywhere)
    gen = torch.Generator().manual_seed(seed)
    m, lr = m.to(dev), lr.to(dev)
    w = (torch.randn(g_, d, k, generator=gen) * 0.01).to(dev) * m[..., None]
    b = torch.zeros(g_, k, device=dev)
    bw, bb = torch.zeros_like(w), torch.zeros_like(b)
    n = x.shape[0]
    bs = min(int(batch_size), n)
    order = torch.empty(0, dtype=torch.int64)
    onehot = torch.nn.functional.one_hot(train_y.long().to(dev), k).float()
    for t in range(iters):
        if order.numel() < bs:
            order = torch.cat([order, torch.randperm(n, generator=gen)])
        idx, order = order[:bs], order[bs:]
        idx = idx.to(dev)
        xb = x[idx]
        logits = torch.einsum("bd,gdk->gbk", xb, w) + b[:, None]
        grad = (torch.softmax(logits, -1) - onehot[idx][None]) / bs               # d mean CE / d logits
        gw = torch.einsum("bd,gbk->gdk", xb, grad) * m[..., None]
        bw.mul_(0.9).add_(gw)
        bb.mul_(0.9).add_(grad.sum(1))
        lr_t = (lr * 0.5 * (1.0 + math.cos(math.pi * t / iters)))
        w -= lr_t[:, None, None] * bw
        b -= lr_t[:, None] * bb
    pred = (torch.einsum("nd,gdk->gnk", xt, w) + b[:, None]).argmax(-1)
    top1 = ((pred == test_y.long().to(dev)[None]).float().mean(1) * 100.0).cpu()
    return (top1, w, b) if return_params else top1


def slim_official_linear(method: nn.Module, train_ds, test_ds, lrs: Sequence[float] = SLIM_LR_GRID,
                         epochs: int = 10, epoch_length: int = 2000, batch_size: int = 64, scale_lr: bool = True,
                         standardize: bool = False, seed: int = 0, device="cpu") -> Dict[str, Any]:
    """Best top-1 over the official grid (last 1 | 4 blocks) × (± mean patch) × ``lrs`` and the grid
    itself (keys ``"blocks=B patch=P lr=LR"``, LR the unscaled grid value; ``lr_scale`` =
    ``batch_size / 256`` when ``scale_lr``)."""
    dim = method.config.dim
    n4 = min(4, method.config.depth)
    ftr, ytr = slim_official_features(method, train_ds, n4, True, 1.0, device)    # training clips uncropped
    fte, yte = slim_official_features(method, test_ds, n4, True, 0.95, device)
    names, cols, lr_list = [], [], []
    scale = batch_size / 256.0 if scale_lr else 1.0
    for blocks in sorted({1, n4}):
        for patch in (False, True):
            c = torch.zeros(ftr.shape[1], dtype=torch.bool)
            c[(n4 - blocks) * dim:n4 * dim] = True
            if patch:
                c[n4 * dim:] = True
            for lr in lrs:
                names.append(f"blocks={blocks} patch={int(patch)} lr={lr:g}")
                cols.append(c)
                lr_list.append(float(lr) * scale)
    dev = torch.device(device)
    top1 = official_probe_grid(ftr.to(dev), ytr, fte.to(dev), yte, torch.stack(cols), lr_list, epochs * epoch_length,
                               batch_size, standardize=standardize, seed=seed)
    grid = {k: float(v) for k, v in zip(names, top1)}
    best = max(grid, key=grid.get)
    return {"top1": grid[best], "best": best, "grid": grid, "lr_scale": scale}


def slim_official_knn(method: nn.Module, train_ds, test_ds, k: int = 1, device="cpu") -> float:
    """k-NN top-1 on ``[cls | mean patch]`` of the last block, bodies summed, 95 % test crop."""
    from .evaluate import knn_accuracy

    ftr, ytr = slim_official_features(method, train_ds, 1, True, 1.0, device)
    fte, yte = slim_official_features(method, test_ds, 1, True, 0.95, device)
    return knn_accuracy(ftr, ytr, fte, yte, k=k)
