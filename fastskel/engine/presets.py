"""Named config presets (``--preset NAME``): config-field overrides applied before ``--config``/``--set``.

A method's config class may define its own presets as a class attribute
``PRESETS: ClassVar[Dict[str, Dict[str, Any]]]``; those win over the fallbacks here. ``"small"``
is the CPU demo size: the README's main job (pretrain on the synthetic default, then a linear
probe) finishes in minutes on a laptop CPU. It is a smoke-scale model, not a paper recipe.
"""
from __future__ import annotations

from typing import Any, Dict, List

__all__ = ["PRESETS", "get_preset", "preset_names"]

_SMALL_MASKED = dict(num_frames=48, frames_per_patch=4, dim=64, depth=2, heads=4, decoder_dim=64,
                     decoder_depth=1, decoder_heads=4, crop_min_frames=24,
                     epochs=20, batch_size=32, lr=2e-3, min_lr=1e-4, warmup_epochs=2)

PRESETS: Dict[str, Dict[str, Dict[str, Any]]] = {
    "amr": {"small": dict(_SMALL_MASKED, r=3)},
    "mamp": {"small": dict(_SMALL_MASKED)},
    "supervised": {"small": dict(backbone="stgcn", hidden=16, depth=4, out_dim=64, epochs=10, batch_size=32,
                                 lr=2e-3, warmup_epochs=1)},
}


def _class_presets(cfg_cls) -> Dict[str, Dict[str, Any]]:
    p = getattr(cfg_cls, "PRESETS", None)
    return dict(p) if isinstance(p, dict) else {}


def preset_names(method: str, cfg_cls=None) -> List[str]:
    return sorted(set(PRESETS.get(method, {})) | set(_class_presets(cfg_cls)))


def get_preset(method: str, name: str, cfg_cls=None) -> Dict[str, Any]:
    """The overrides of preset ``name`` for ``method`` (``ValueError`` listing the known ones)."""
    own = _class_presets(cfg_cls)
    if name in own:
        return dict(own[name])
    if name in PRESETS.get(method, {}):
        return dict(PRESETS[method][name])
    raise ValueError(f"preset: {method} has no preset {name!r}; available: {preset_names(method, cfg_cls) or 'none'}")
