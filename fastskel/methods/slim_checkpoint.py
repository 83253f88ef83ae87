"""Load the official SLiM encoder weights (KAIST-VICLab/SLiM, commit 2b8bb41) and write fastskel's
SLiM encoder in the official hub format.

Official formats read by :func:`load_slim_checkpoint`:

- a hub folder: ``config.json`` + ``model.safetensors`` (bare encoder keys, ``slim/hub.py``);
- a ``model.safetensors`` file on its own;
- an ``export_encoder`` ``.pth``: ``{"teacher": {"backbone.<key>": tensor, ...}, "note": ...}``
  (also a full ``teacher_checkpoint.pth``: heads ``dino_head.*`` / ``ibot_head.*`` are ignored);
- an already loaded dict of any of these.

Key mapping, official (DINOv2 ``DinoVisionTransformer``) → fastskel :class:`~fastskel.nn.SkeletonViT`::

    patch_embed.proj.weight (D, C, P_T, P_J)  → patch_embed.weight (D, P_T·P_J·C)  features (frame, joint, channel)
    patch_embed.proj.bias                     → patch_embed.bias
    pos_embed (1, 1 + V/P_J, D)               → cls_pos_embed = [:, :1],  joint_embed = [:, 1:]
    cls_token, register_tokens                → same
    mask_token (1, D)                         → mask_token (1, 1, D)
    blocks.[chunk.]i.{norm1, attn.qkv, attn.proj, norm2}  → blocks.i.*
    blocks.i.mlp.w12 / w3 (SwiGLU)            → blocks.i.mlp.w12 / w3
    blocks.i.mlp.fc1 / fc2 (ffn_layer "mlp")  → blocks.i.mlp.0 / mlp.2
    norm.*                                    → norm.*

The official token layout is the same as fastskel's (Conv2d over (T, V) flattened t-block major, then
joint), RoPE is the same rotate-half over temporal blocks with prefix tokens unrotated, so no token
reordering is needed. A model without ``cls_pos`` can take a checkpoint whose cls slot is zero
(non-strict loads ignore it otherwise). LayerScale (``ls1``/``ls2``, ``init_values > 0``) is not
supported: the released encoder has none.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Tuple, Union

import torch
from torch import nn

from fastskel.nn import SkeletonViT

from ._state_load import require_all, take_matching

__all__ = ["SLiMLoadResult", "official_to_fastskel", "fastskel_to_official", "load_slim_checkpoint",
           "save_slim_hub", "read_official_checkpoint", "official_hub_config", "is_official_slim_checkpoint"]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
_CHUNKED = re.compile(r"^blocks\.\d+\.(\d+)\.(.*)$")
_MLP = {"mlp.fc1.": "mlp.0.", "mlp.fc2.": "mlp.2."}


class SLiMLoadResult(NamedTuple):
    loaded: List[str]          # fastskel encoder keys set from the checkpoint
    missing: List[str]         # fastskel encoder keys the checkpoint did not provide
    ignored: List[str]         # checkpoint keys not used (heads, rope buffers, the cls slot a model lacks, ...)
    config_mismatches: List[str] = []   # config.json entries that contradict the model's config


def _safetensors_load(path: Path) -> Dict[str, torch.Tensor]:
    try:
        from safetensors import safe_open
        from safetensors.torch import load_file
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(f"checkpoint {path}: reading .safetensors needs `pip install safetensors` "
                          "(or `pip install fastskel[slim]`)") from e
    state: Dict[str, Any] = dict(load_file(str(path)))
    with safe_open(str(path), framework="pt") as f:
        meta = (f.metadata() or {}).get("fastskel")
    if meta:
        state["<fastskel-shape>"] = json.loads(meta)
    return state


def file_shape(path: Union[str, os.PathLike]) -> Optional[Dict[str, int]]:
    """The encoder shape fastskel's hub writer recorded in a model.safetensors (None for official files)."""
    p = Path(path)
    p = p / WEIGHTS_NAME if p.is_dir() else p
    if p.suffix != ".safetensors" or not p.is_file():
        return None
    from safetensors import safe_open
    with safe_open(str(p), framework="pt") as f:
        meta = (f.metadata() or {}).get("fastskel")
    return json.loads(meta) if meta else None


def read_official_checkpoint(checkpoint: Union[str, os.PathLike, Mapping[str, Any]]
                             ) -> Tuple[Dict[str, Any], Optional[Dict[str, Any]]]:
    """``(state_dict, config or None)`` of an official checkpoint path / folder / dict; the state dict
    still has the official key names (``backbone.`` stripped, non-backbone keys of a teacher dict kept
    with their prefix so they can be reported as ignored)."""
    config = None
    if isinstance(checkpoint, (str, os.PathLike)):
        path = Path(checkpoint)
        if path.is_dir():
            cfg, weights = path / CONFIG_NAME, path / WEIGHTS_NAME
            if not weights.is_file():
                raise FileNotFoundError(f"checkpoint: expected {WEIGHTS_NAME} in the hub folder {path}, not found")
            if cfg.is_file():
                config = json.loads(cfg.read_text())
            state: Mapping[str, Any] = _safetensors_load(weights)
        elif not path.is_file():
            raise FileNotFoundError(f"checkpoint: no such file or folder: {path}")
        elif path.suffix == ".safetensors":
            state = _safetensors_load(path)
            cfg = path.parent / CONFIG_NAME
            if cfg.is_file():
                config = json.loads(cfg.read_text())
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    elif isinstance(checkpoint, Mapping):
        state = checkpoint
    else:
        raise TypeError(f"checkpoint: expected a path or a state dict, got {type(checkpoint).__name__}")
    if "teacher" in state and isinstance(state["teacher"], Mapping):
        state = state["teacher"]
    if any(k.startswith("backbone.") for k in state):
        state = {(k[len("backbone."):] if k.startswith("backbone.") else f"<other>.{k}"): v for k, v in state.items()}
    return dict(state), config


def official_to_fastskel(state: Mapping[str, Any]) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """Rename an official encoder state dict to :class:`SkeletonViT` keys → ``(mapped, ignored)``."""
    out: Dict[str, torch.Tensor] = {}
    ignored: List[str] = []
    for k, v in state.items():
        if not isinstance(v, torch.Tensor):
            ignored.append(k)
            continue
        m = _CHUNKED.match(k)
        if m:                                   # block_chunks > 0: blocks.<chunk>.<i>.* → blocks.<i>.*
            k = f"blocks.{m.group(1)}.{m.group(2)}"
        if ".ls1." in k or ".ls2." in k:
            raise ValueError(f"checkpoint[{k!r}]: LayerScale (init_values > 0) is not supported by SkeletonViT")
        if k == "patch_embed.proj.weight":
            d = v.shape[0]
            out["patch_embed.weight"] = v.permute(0, 2, 3, 1).reshape(d, -1)
        elif k == "patch_embed.proj.bias":
            out["patch_embed.bias"] = v
        elif k == "pos_embed":
            out["cls_pos_embed"], out["joint_embed"] = v[:, :1], v[:, 1:]
        elif k == "mask_token":
            out["mask_token"] = v.reshape(1, 1, -1)
        elif k in ("cls_token", "register_tokens") or k.startswith("norm."):
            out[k] = v
        elif k.startswith("blocks.") and not k.endswith("rope.inv_freq"):
            for a, b in _MLP.items():
                k = k.replace(a, b)
            out[k] = v
        else:
            ignored.append(k)
    return out, ignored


def fastskel_to_official(encoder: SkeletonViT) -> Dict[str, torch.Tensor]:
    """The inverse of :func:`official_to_fastskel` for ``encoder`` (a missing cls slot is written as
    zeros, which is exactly what the model computes)."""
    if not isinstance(encoder, SkeletonViT):
        raise TypeError(f"encoder: expected a SkeletonViT, got {type(encoder).__name__}")
    own = {k: v.detach().cpu() for k, v in encoder.state_dict().items()}
    d, pt, pj, c = encoder.dim, encoder.frames_per_patch, encoder.joints_per_patch, encoder.in_channels
    cls_pos = own.pop("cls_pos_embed", torch.zeros(1, 1, d, dtype=own["joint_embed"].dtype))
    out = {"patch_embed.proj.weight": own.pop("patch_embed.weight").reshape(d, pt, pj, c).permute(0, 3, 1, 2),
           "patch_embed.proj.bias": own.pop("patch_embed.bias"),
           "pos_embed": torch.cat([cls_pos, own.pop("joint_embed")], 1),
           "mask_token": own.pop("mask_token").reshape(1, d)}
    for k, v in own.items():
        for b, a in _MLP.items():
            k = k.replace(a, b)
        out[k] = v
    return {k: v.contiguous() for k, v in out.items()}


def official_hub_config(encoder: SkeletonViT) -> Dict[str, Any]:
    """``config.json`` of the official hub format for ``encoder``: only ``slim/hub.py``'s
    DEFAULT_CONFIG keys (its reader passes every key to ``vit_tiny``, which fixes width 256, depth 8,
    heads 8, mlp_ratio 4, so other keys would break it; fastskel records those in the safetensors
    metadata instead, see :func:`encoder_shape`)."""
    qkv = encoder.blocks[0].attn.qkv.bias is not None if len(encoder.blocks) else True
    return {"arch": "vit_tiny", "img_size": [64, encoder.num_joints],
            "patch_size": [encoder.frames_per_patch, encoder.joints_per_patch], "in_chans": encoder.in_channels,
            "num_register_tokens": encoder.num_registers,
            "ffn_layer": "swiglufused" if encoder.ffn == "swiglu" else "mlp", "block_chunks": 0,
            "qkv_bias": qkv, "proj_bias": True, "ffn_bias": True, "init_values": 0.0}


def encoder_shape(encoder: SkeletonViT) -> Dict[str, int]:
    """Width, depth, heads, nominal MLP width (vit_tiny: 256, 8, 8, 1024)."""
    heads = encoder.blocks[0].attn.heads if len(encoder.blocks) else 0
    return {"dim": encoder.dim, "depth": len(encoder.blocks), "heads": heads, "mlp_dim": encoder.mlp_dim}


VIT_TINY = {"dim": 256, "depth": 8, "heads": 8, "mlp_dim": 1024}


def _config_mismatches(config: Mapping[str, Any], encoder: SkeletonViT,
                       shape: Optional[Mapping[str, int]] = None) -> List[str]:
    """Names of ``config.json`` entries that contradict ``encoder`` (absent entries pass). ``shape``:
    the width/depth/heads/mlp of the file (fastskel metadata), else vit_tiny's when arch is vit_tiny."""
    own = official_hub_config(encoder)
    bad = []
    for key, want in own.items():
        if key not in config or key in ("img_size", "block_chunks", "arch"):
            continue
        got = config[key]
        if key == "ffn_layer":
            got = "swiglufused" if got in ("swiglu", "swiglufused") else got
        if key == "init_values":
            got, want = float(got or 0.0), 0.0
        if (list(got) != list(want)) if isinstance(want, list) else (got != want):
            bad.append(f"{key} (config.json {config[key]!r}, model {want!r})")
    if "img_size" in config and list(config["img_size"])[1:] != [encoder.num_joints]:
        bad.append(f"img_size (config.json {config['img_size']!r}, model joints {encoder.num_joints})")
    if shape is None and config.get("arch", "vit_tiny") == "vit_tiny":
        shape = VIT_TINY
    for k, v in (shape or {}).items():
        if encoder_shape(encoder).get(k) != int(v):
            bad.append(f"{k} (config.json {config.get('arch', 'vit_tiny')!r}: {v}, model {encoder_shape(encoder)[k]})")
    return bad


def _encoders(model: nn.Module) -> List[SkeletonViT]:
    if isinstance(model, SkeletonViT):
        return [model]
    student, teacher = getattr(model, "student", None), getattr(model, "teacher", None)
    if isinstance(student, nn.ModuleDict) and isinstance(teacher, nn.ModuleDict) \
            and isinstance(student["encoder"], SkeletonViT):
        return [student["encoder"], teacher["encoder"]]
    raise TypeError(f"model: expected a SLiM or a SkeletonViT, got {type(model).__name__}")


def load_slim_checkpoint(model: nn.Module, checkpoint: Union[str, os.PathLike, Mapping[str, Any]],
                         strict: bool = True) -> SLiMLoadResult:
    """Load official SLiM encoder weights into ``model`` in place (a :class:`SLiM`: the student's
    and the teacher's encoder; or a :class:`SkeletonViT`).

    ``strict``: every encoder parameter must come from the checkpoint and ``config.json`` (when
    there is one) must agree with the model, else ``ValueError`` naming the keys. A shape mismatch
    is always a ``ValueError`` naming the key. Build the model with ``SLiMConfig.official()`` (or
    ``SkeletonViT(ffn="swiglu", cls_pos=True)``) to take the released weights strictly.
    """
    encoders = _encoders(model)
    state, config = read_official_checkpoint(checkpoint)
    shape = state.pop("<fastskel-shape>", None)
    mapped, ignored = official_to_fastskel(state)
    own = encoders[0].state_dict()
    mismatches = _config_mismatches(config, encoders[0], shape) if config else []
    if strict and mismatches:
        raise ValueError(f"checkpoint config.json: contradicts the model's config: {', '.join(mismatches)}")
    for k in [k for k in mapped if k not in own]:
        if k == "cls_pos_embed" and not torch.count_nonzero(mapped[k]):
            continue                              # a zero cls slot is exactly a model without one
        if strict:
            raise ValueError(f"checkpoint[{k!r}]: the model has no such parameter "
                             f"(build it with cls_pos=True / the matching ffn), expected keys like {sorted(own)[:3]}")
        ignored.append(k)
    use, _ = take_matching(mapped, own, lambda k: k in own)
    missing = [k for k in own if k not in use]
    if strict:
        require_all(missing)
    for enc in encoders:
        enc.load_state_dict(use, strict=False)
    return SLiMLoadResult(sorted(use), missing, sorted(ignored), mismatches)


def save_slim_hub(model: nn.Module, directory: Union[str, os.PathLike], which: str = "teacher") -> Path:
    """Write ``model``'s encoder (a SLiM's ``which`` = "teacher" | "student" encoder, or a
    SkeletonViT) as an official hub folder: ``config.json`` + ``model.safetensors``."""
    if which not in ("teacher", "student"):
        raise ValueError(f"which: expected 'teacher' or 'student', got {which!r}")
    encs = _encoders(model)
    enc = encs[0] if len(encs) == 1 or which == "student" else encs[1]
    try:
        from safetensors.torch import save_file
    except ImportError as e:  # pragma: no cover
        raise ImportError("save_slim_hub needs `pip install safetensors` (or `pip install fastskel[slim]`)") from e
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    (out / CONFIG_NAME).write_text(json.dumps(official_hub_config(enc), indent=2))
    save_file(fastskel_to_official(enc), str(out / WEIGHTS_NAME), metadata={"fastskel": json.dumps(encoder_shape(enc))})
    return out


def is_official_slim_checkpoint(path: Union[str, os.PathLike]) -> bool:
    """Whether ``path`` is an official SLiM file (hub folder, .safetensors, export_encoder .pth)."""
    p = Path(path)
    if p.is_dir():
        return (p / WEIGHTS_NAME).is_file()
    if p.suffix == ".safetensors":
        return True
    if not p.is_file():
        return False
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception:
        return False
    return isinstance(obj, Mapping) and isinstance(obj.get("teacher"), Mapping) and \
        any(str(k).startswith("backbone.") for k in obj["teacher"])
