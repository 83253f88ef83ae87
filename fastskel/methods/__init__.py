"""The methods (docs/design.md §5): AMR with its MAMP baseline, ASMa, SLiM; each an ``nn.Module`` + ``Config``.

The contract the engine relies on (every method follows it):

- ``Method(config)``; ``method.config`` is a dataclass with at least ``epochs``, ``batch_size``,
  ``lr``, ``min_lr``, ``warmup_epochs``, ``weight_decay``, ``optimizer`` ("adamw" | "adam"),
  ``betas``; the paper defaults are the dataclass defaults.
- ``forward(x, lengths=None) -> dict``: one pretraining step's objective on a raw batch ``x``
  ``(N, C, T, V, M)`` (or ``(N, C, T, V)``) with valid ``lengths`` ``(N,)``; the method applies its
  own batched, on-device augmentation/resizing; key ``"loss"`` (scalar tensor) plus parts to log.
- ``encode(x, lengths=None) -> (N, D)``: deterministic features of each action (bodies pooled) for
  evaluation; ``method.feature_dim == D``.
- optional ``after_step(step, total_steps)``: called after each optimiser step (EMA teachers,
  temperature schedules).
- optional ``prepare_finetune()``: called on the copy that end-to-end fine-tuning trains; it sets
  ``requires_grad`` on exactly the parameters ``encode`` uses (e.g. SLiM's EMA teacher, frozen in
  pretraining). Without it every parameter is trained.
- optional ``uses_labels = True``: the engine then calls ``forward(x, lengths, labels=y)``
  (supervised training, fine-tuning).
- optional ``no_weight_decay() -> set[str]``: parameter names kept out of weight decay (1-D
  parameters and biases are always excluded).
- optional config field ``clip_grad`` (max gradient norm) and class attribute
  ``Config.PRESETS = {"small": {...}}`` (named overrides, e.g. the CPU main job's model).

``get_method(name)`` returns ``(MethodClass, ConfigClass)`` by name, importing lazily; the classes
are also attributes of this package, imported on first access (``from fastskel.methods import AMR,
AMRConfig, MAMP, ASMa, SLiM, Supervised, ...``), so importing the package stays cheap.
"""
from __future__ import annotations

import importlib
from typing import Tuple

METHODS = {
    "amr": ("fastskel.methods.amr", "AMR", "AMRConfig"),
    "mamp": ("fastskel.methods.amr", "MAMP", "MAMPConfig"),
    "asma": ("fastskel.methods.asma", "ASMa", "ASMaConfig"),
    "slim": ("fastskel.methods.slim", "SLiM", "SLiMConfig"),
    "supervised": ("fastskel.methods.supervised", "Supervised", "SupervisedConfig"),
}


# public name -> submodule, resolved on first access by the module ``__getattr__`` (PEP 562)
_LAZY = {
    "AMR": "amr", "AMRConfig": "amr", "MAMP": "amr", "MAMPConfig": "amr",
    "load_mamp_checkpoint": "amr", "motion_aware_masking": "amr",
    "ASMa": "asma", "ASMaConfig": "asma", "ASMaAligner": "asma", "AlignerConfig": "asma",
    "ASMaStudent": "asma", "distill": "asma",
    "SLiM": "slim", "SLiMConfig": "slim",
    "Supervised": "supervised", "SupervisedConfig": "supervised",
}

__all__ = ["METHODS", "get_method", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


def get_method(name: str) -> Tuple[type, type]:
    """``(MethodClass, ConfigClass)`` for ``name`` in :data:`METHODS`."""
    if name not in METHODS:
        raise ValueError(f"method: expected one of {sorted(METHODS)}, got {name!r}")
    module, cls, cfg = METHODS[name]
    mod = importlib.import_module(module)
    return getattr(mod, cls), getattr(mod, cfg)
