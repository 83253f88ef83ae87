"""Loops that train and score ASMa's evaluation head (moved from ``fastskel.methods.asma``):
:func:`fit_aligner` — Adam + cosine over every iteration, cross-entropy on the labels
(``ASMaAligner.forward(x, lengths, labels)``); :func:`accuracy` — top-1 (%) of ``model.logits``.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from fastskel.methods.asma_aligner import ASMaAligner

__all__ = ["accuracy", "batch_loader", "fit_aligner"]


def batch_loader(ds, batch_size: int, shuffle: bool, seed: int):
    from fastskel.data import make_loader

    return make_loader(ds, batch_size, shuffle=shuffle, seed=seed)


@torch.no_grad()
def accuracy(model: nn.Module, ds, batch_size: int, device) -> float:
    was = model.training
    model.eval()
    hit = tot = 0
    for x, L, y in batch_loader(ds, batch_size, False, 0):
        pred = model.logits(x.to(device), L.to(device)).argmax(1).cpu()
        hit += int((pred == y).sum())
        tot += int(y.numel())
    model.train(was)
    return 100.0 * hit / max(tot, 1)


def fit_aligner(aligner: "ASMaAligner", ds, epochs: int, batch_size: int, lr: float, device, seed: int) -> None:
    params = [p for p in aligner.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    total = max(1, epochs * math.ceil(len(ds) / batch_size))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, total)
    aligner.train()
    batches = batch_loader(ds, batch_size, True, seed)
    for ep in range(epochs):
        if hasattr(batches, "sampler") and hasattr(batches.sampler, "set_epoch"):
            batches.sampler.set_epoch(ep)
        for x, L, y in batches:
            loss = aligner(x.to(device), L.to(device), labels=y.to(device))["loss"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()

