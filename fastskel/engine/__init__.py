"""Training loop, DDP, checkpoints, evaluation protocols, distillation and export (docs/design.md §7).

- :mod:`~fastskel.engine.trainer`: :class:`Trainer` / :class:`TrainOptions`, the one loop for
  every method (warmup + cosine per iteration, bf16 autocast on CUDA, DDP under torchrun, exact
  resume, SIGTERM/SIGINT checkpoints).
- :mod:`~fastskel.engine.checkpoint`: atomic checkpoints, RNG states, clear errors.
- :mod:`~fastskel.engine.evaluate`: linear probe, kNN, fine-tuning, semi-supervised subsets.
- :mod:`~fastskel.engine.export`: ONNX (+ onnxruntime check) and TorchScript export.
- :mod:`~fastskel.engine.profile`, :mod:`~fastskel.engine.bench`: op timings and benchmark tables.
- :mod:`~fastskel.engine.cli`: the ``pretrain``/``eval``/``distill``/``export``/``bench``/``profile``
  subcommands.

Names are imported lazily (``from fastskel.engine import Trainer``) so ``fastskel info`` stays fast.
"""
from __future__ import annotations

import importlib

_LAZY = {
    "Trainer": "trainer", "TrainOptions": "trainer", "TrainResult": "trainer",
    "save_checkpoint": "checkpoint", "load_checkpoint": "checkpoint", "CheckpointError": "checkpoint",
    "extract_features": "evaluate", "linear_probe": "evaluate", "knn_accuracy": "evaluate",
    "finetune": "evaluate", "semi_subset": "evaluate", "load_method": "evaluate", "Classifier": "evaluate",
    "export_classifier": "export", "WarmupCosine": "schedule", "build_optimizer": "schedule",
    "load_dataset": "data",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
