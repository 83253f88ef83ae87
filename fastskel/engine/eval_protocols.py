"""Named evaluation protocols for frozen features: fastskel's and the official SLiM one.

- ``"fastskel"`` (the default, unchanged): ``method.encode`` as configured (SLiM: cls of the last
  block, averaged over the action's non-empty bodies, full valid length resampled), then
  :func:`~fastskel.engine.evaluate.linear_probe` (standardised features, one lr) or k-NN.
- ``"slim_official"`` (KAIST-VICLab/SLiM 2b8bb41, DINOv2's linear evaluation): per body, the
  final-LayerNorm cls tokens of the last 1 or 4 blocks, with or without the mean patch token of
  the last block (``create_linear_input``), summed over the valid bodies, test clip = 95 % centre
  crop; a linear classifier per (blocks, mean patch, lr) over a learning-rate grid, the best top-1
  reported with the whole grid. k-NN on ``[cls | mean patch]`` of the last block.

The lr grid defaults to DINOv2's ``linear.py`` grid; SLiM's own ``slim/eval/linear.py`` grid was not
read. fastskel's probe standardises features and trains with SGD + cosine for ``epochs``; DINOv2's
does not standardise (a deliberate difference, so every grid point shares fastskel's probe).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, Optional, Sequence

import torch
from torch import nn

__all__ = ["PROTOCOL_VARIANTS", "DINOV2_LR_GRID", "slim_official_features", "slim_official_linear",
           "slim_official_knn"]

PROTOCOL_VARIANTS = ("fastskel", "slim_official")
DINOV2_LR_GRID = (1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2, 0.1)


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
        return extract_features(method, dataset, device=device)
    finally:
        method.config = saved


def slim_official_linear(method: nn.Module, train_ds, test_ds, lrs: Sequence[float] = DINOV2_LR_GRID,
                         epochs: int = 100, seed: int = 0, device="cpu") -> Dict[str, Any]:
    """Best top-1 over the grid (last 1 | 4 blocks) × (± mean patch) × ``lrs`` and the grid itself."""
    from .evaluate import linear_probe

    dim = method.config.dim
    n4 = min(4, method.config.depth)
    ftr, ytr = slim_official_features(method, train_ds, n4, True, 1.0, device)    # training clips uncropped
    fte, yte = slim_official_features(method, test_ds, n4, True, 0.95, device)
    grid = {}
    for blocks in sorted({1, n4}):
        for patch in (False, True):
            cols = list(range((n4 - blocks) * dim, n4 * dim)) + (list(range(n4 * dim, (n4 + 1) * dim)) if patch else [])
            idx = torch.tensor(cols)
            for lr in lrs:
                res = linear_probe(ftr[:, idx], ytr, fte[:, idx], yte, epochs=epochs, lr=float(lr), seed=seed)
                grid[f"blocks={blocks} patch={int(patch)} lr={lr:g}"] = res.top1
    best = max(grid, key=grid.get)
    return {"top1": grid[best], "best": best, "grid": grid}


def slim_official_knn(method: nn.Module, train_ds, test_ds, k: int = 1, device="cpu") -> float:
    """k-NN top-1 on ``[cls | mean patch]`` of the last block, bodies summed, 95 % test crop."""
    from .evaluate import knn_accuracy

    ftr, ytr = slim_official_features(method, train_ds, 1, True, 1.0, device)
    fte, yte = slim_official_features(method, test_ds, 1, True, 0.95, device)
    return knn_accuracy(ftr, ytr, fte, yte, k=k)
