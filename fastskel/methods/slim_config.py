"""SLiM's configuration: :class:`SLiMConfig` with the paper's defaults, its presets, and
:meth:`SLiMConfig.official` (the official code's recipe). The item-by-item table of paper, official
code, ``SLiMConfig()`` and ``official()`` is in :mod:`fastskel.methods.slim`'s docstring.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Dict, Optional, Tuple

from fastskel.data.channels import resolve_channels
from fastskel.ops import _checks as chk

__all__ = ["HEAD_IMPLS", "SLiMConfig"]

HEAD_IMPLS = ("chunked", "reference")


# ============================================================================ config
@dataclass
class SLiMConfig:
    """SLiM paper defaults (seed 002 §4.2, App. A–D); DINOv2/iBOT defaults where it is silent.

    Input / views: ``center`` (translate every action so that the root joint of its first body
    at frame 0 is the origin, absent frames and bodies stay zero: the CTR-GCN/MAMP NTU
    preprocessing, which the paper's data already carries; makes raw readers and the synthetic
    data behave alike and makes the rotation turn the body about itself), ``frames`` (global view T = 64), ``local_frames`` (32, 16, 8) with
    ``local_scales`` (fractions of the anchor interval) and ``local_crops`` (2) per scale,
    ``global_scale`` (fraction of the valid sequence), ``symmetrize`` (both global views as anchor).
    SAA: ``aug_prob`` (each of rotation/mirror/scaling), ``rotate_vertical_deg``/``rotate_tilt_deg``,
    ``bone_scale_range``. STM: ``mask_ratio``, ``mask_min_area`` (A_min), ``mask_max_area``
    (A_max / N), ``local_mask_prob``. Encoder: ``frames_per_patch`` P_T, ``dim``, ``depth``,
    ``heads``, ``mlp_dim``, ``num_registers``, ``rope_base``. Heads: ``num_prototypes`` K,
    ``head_hidden_dim``, ``head_bottleneck_dim``. Loss: ``student_temp``, ``teacher_temp`` and its
    warmup, ``sinkhorn_iters``, ``mfm_weight``, ``glcl_weight`` (λ), ``koleo_weight``;
    ``head_impl`` "chunked" | "reference", ``chunk_size`` (prototypes per block, None = auto).
    Teacher: ``momentum_teacher`` (0.994 → 1 cosine), ``freeze_last_layer_epochs``,
    ``encode_with`` ("teacher" | "student").

    Official-code fields (see the module table; ``SLiMConfig.official()`` sets them): ``ffn``,
    ``cls_pos``, ``center_joint`` (None = the graph's root), ``pretrain_bodies`` ("one" random valid
    body per clip | "all"), ``views`` / ``augment`` ("paper" | "official"), ``local_counts`` (crops
    per global view at each local length; None = ``local_crops`` each), ``norm_last_layer``
    (False: the prototypes' gain is trained), ``iters_per_epoch`` (None = one pass over the data),
    ``encode_sampling`` ("linear" | "official" strided test frames), ``global_mask_prob`` (exact fraction of the 2B globals masked),
    ``local_pairs`` ("own" anchor | "both" teacher globals), ``mask_rule`` ("paper" | "official"),
    ``mask_iters`` (tube iterations, no host sync), ``token_weight_decay``, ``weight_decay_end``
    (cosine), ``patch_embed_lr_mult``, ``encode_layers`` / ``encode_patch`` / ``encode_bodies`` /
    ``encode_crop`` (evaluation features).

    Engine fields (paper §4.2): AdamW, lr 2e-4 (the paper's "base" lr, used as is for the total
    batch of 768), 20 warmup epochs, cosine to 1e-6, 150 epochs. Not in the paper, DINOv2
    defaults: betas (0.9, 0.999), weight decay 0.04 (DINOv2 ramps 0.04 → 0.2; the engine keeps it
    constant), teacher-temperature warmup 30 epochs, last-layer freeze 1 epoch, gradient clipping
    3.0 (``clip_grad``, for the engine's option).
    """

    # input / views
    in_channels: int = 3
    # channel layout: "xyz" | "xy" | "xy+score"; "" = from in_channels (3 → xyz, 2 → xy)
    channels: str = ""
    num_joints: int = 25
    graph: str = "ntu25"
    frames: int = 64
    global_scale: Tuple[float, float] = (0.5, 1.0)
    local_frames: Tuple[int, ...] = (32, 16, 8)
    local_scales: Tuple[Tuple[float, float], ...] = ((0.35, 0.7), (0.15, 0.4), (0.05, 0.2))
    local_crops: int = 2
    local_counts: Optional[Tuple[int, ...]] = None
    views: str = "paper"
    symmetrize: bool = True
    skip_empty_bodies: bool = True
    center: bool = True
    center_joint: Optional[int] = 1
    pretrain_bodies: str = "one"
    # skeleton-aware augmentations
    aug_prob: float = 0.5
    rotate_vertical_deg: float = 180.0
    rotate_tilt_deg: float = 30.0
    bone_scale_range: Tuple[float, float] = (0.85, 1.15)
    augment: str = "paper"
    # semantic tube masking
    mask_ratio: Tuple[float, float] = (0.5, 0.9)
    mask_min_area: float = 8.0
    mask_max_area: float = 0.5
    local_mask_prob: float = 0.5
    global_mask_prob: float = 1.0
    mask_rule: str = "paper"
    mask_iters: int = 64
    local_pairs: str = "own"
    # encoder
    frames_per_patch: int = 8
    dim: int = 256
    depth: int = 8
    heads: int = 8
    mlp_dim: int = 1024
    ffn: str = "swiglu"
    cls_pos: bool = True
    num_registers: int = 4
    qkv_bias: bool = True
    rope_base: float = 10000.0
    # heads
    num_prototypes: int = 65536
    head_hidden_dim: int = 2048
    head_bottleneck_dim: int = 256
    norm_last_layer: bool = True
    # objective
    student_temp: float = 0.1
    teacher_temp: float = 0.07
    warmup_teacher_temp: float = 0.04
    warmup_teacher_temp_epochs: int = 30
    sinkhorn_iters: int = 3
    mfm_weight: float = 1.0
    glcl_weight: float = 1.0
    koleo_weight: float = 0.1
    head_impl: str = "chunked"
    chunk_size: Optional[int] = None
    # teacher
    momentum_teacher: float = 0.994
    freeze_last_layer_epochs: int = 1
    encode_with: str = "teacher"
    encode_layers: int = 1
    encode_patch: bool = False
    encode_bodies: str = "mean"
    encode_crop: float = 1.0
    encode_sampling: str = "linear"
    # which implementation the ops use (None = fastskel's process default)
    backend: Optional[str] = None
    # engine
    epochs: int = 150
    batch_size: int = 768
    lr: float = 2e-4
    min_lr: float = 1e-6
    warmup_epochs: int = 20
    weight_decay: float = 0.04
    optimizer: str = "adamw"
    betas: Tuple[float, float] = (0.9, 0.999)
    clip_grad: Optional[float] = 3.0
    token_weight_decay: bool = False
    weight_decay_end: Optional[float] = None
    patch_embed_lr_mult: float = 1.0
    iters_per_epoch: Optional[int] = None

    # ``fastskel pretrain slim --preset small``: a CPU demo size (not a paper recipe)
    PRESETS: ClassVar[Dict[str, Dict[str, Any]]] = {
        "small": dict(frames=32, local_frames=(16, 8), local_scales=((0.35, 0.7), (0.15, 0.4)), dim=64, depth=2,
                      heads=4, mlp_dim=128, num_registers=2, num_prototypes=1024, head_hidden_dim=256,
                      head_bottleneck_dim=64, epochs=15, batch_size=32, lr=1e-3, min_lr=1e-5, warmup_epochs=2,
                      warmup_teacher_temp_epochs=3, momentum_teacher=0.99),
        # the official code's choices (see the module docstring's table)
        "official": dict(ffn="swiglu", cls_pos=True, center_joint=1, pretrain_bodies="one", local_mask_prob=1.0,
                         global_mask_prob=0.5, local_pairs="both", mask_rule="official",
                         mask_ratio=(0.5, 0.9), lr=2e-4 * math.sqrt(768 / 1024), token_weight_decay=True,
                         clip_grad=3.0, freeze_last_layer_epochs=1, batch_size=768, epochs=150,
                         weight_decay_end=0.2, patch_embed_lr_mult=0.2, encode_bodies="sum", encode_crop=0.95,
                         encode_sampling="official", views="official", local_frames=(32, 16, 8),
                         local_scales=((0.35, 0.7), (0.15, 0.4), (0.05, 0.2)), local_counts=(1, 2, 1),
                         augment="official", rotate_vertical_deg=math.degrees(0.3),
                         rotate_tilt_deg=math.degrees(0.3), bone_scale_range=(0.85, 1.15), aug_prob=0.5,
                         iters_per_epoch=1250, norm_last_layer=False),
    }

    @classmethod
    def official(cls, **overrides: Any) -> "SLiMConfig":
        """The official code's recipe (KAIST-VICLab/SLiM 2b8bb41, ``slim_ntu60_xsub.yaml``) as far as
        fastskel implements it; see the table in the module docstring for what differs and why.
        Overriding ``local_frames`` without ``local_counts`` takes ``local_crops`` crops per length."""
        preset = dict(cls.PRESETS["official"])
        if "local_frames" in overrides and "local_counts" not in overrides:
            preset["local_counts"] = None
        return cls(**{**preset, **overrides})

    def __post_init__(self) -> None:
        for name in ("in_channels", "num_joints", "frames", "local_crops", "frames_per_patch", "dim", "depth",
                     "heads", "mlp_dim", "num_prototypes", "head_hidden_dim", "head_bottleneck_dim",
                     "sinkhorn_iters", "epochs", "batch_size"):
            chk.integer(getattr(self, name), name, 1)
        for name in ("num_registers", "warmup_teacher_temp_epochs", "freeze_last_layer_epochs", "warmup_epochs"):
            chk.integer(getattr(self, name), name, 0)
        resolve_channels(self.channels, self.in_channels, where="channels")
        self.local_frames = tuple(chk.integer(t, "local_frames", 1) for t in self.local_frames)
        self.local_scales = tuple(_interval(s, "local_scales") for s in self.local_scales)
        if len(self.local_scales) != len(self.local_frames):
            raise ValueError(f"local_scales: expected {len(self.local_frames)} (lo, hi) pairs like local_frames, "
                             f"got {len(self.local_scales)}")
        for t in (self.frames,) + self.local_frames:
            if t % self.frames_per_patch:
                raise ValueError(f"frames_per_patch: expected a divisor of every view length "
                                 f"{(self.frames,) + self.local_frames}, got {self.frames_per_patch}")
        self.global_scale = _interval(self.global_scale, "global_scale")
        self.mask_ratio = _interval(self.mask_ratio, "mask_ratio")
        lo, hi = self.bone_scale_range
        if not 0 < lo <= hi:
            raise ValueError(f"bone_scale_range: expected 0 < lo <= hi, got {self.bone_scale_range}")
        self.bone_scale_range = (float(lo), float(hi))
        chk.choice(self.local_pairs, "local_pairs", ("own", "both"))
        chk.choice(self.views, "views", ("paper", "official"))
        chk.choice(self.augment, "augment", ("paper", "official"))
        chk.choice(self.encode_sampling, "encode_sampling", ("linear", "official"))
        if self.local_counts is not None:
            self.local_counts = tuple(chk.integer(k, "local_counts", 1) for k in self.local_counts)
            if len(self.local_counts) != len(self.local_frames):
                raise ValueError(f"local_counts: expected {len(self.local_frames)} counts like local_frames, "
                                 f"got {len(self.local_counts)}")
        if self.iters_per_epoch is not None:
            chk.integer(self.iters_per_epoch, "iters_per_epoch", 1)
        chk.choice(self.mask_rule, "mask_rule", ("paper", "official"))
        chk.choice(self.encode_bodies, "encode_bodies", ("mean", "sum"))
        if isinstance(self.encode_layers, bool) or not isinstance(self.encode_layers, int) \
                or not 1 <= self.encode_layers <= self.depth:
            raise ValueError(f"encode_layers: expected an int in [1, depth={self.depth}], got {self.encode_layers!r}")
        if not 0.0 < float(self.encode_crop) <= 1.0:
            raise ValueError(f"encode_crop: expected a fraction in (0, 1], got {self.encode_crop}")
        chk.integer(self.mask_iters, "mask_iters", 1)
        for name in ("aug_prob", "local_mask_prob", "global_mask_prob", "mask_max_area"):
            v = getattr(self, name)
            if not 0.0 <= float(v) <= 1.0:
                raise ValueError(f"{name}: expected a probability/fraction in [0, 1], got {v}")
        for name in ("student_temp", "teacher_temp", "warmup_teacher_temp", "lr", "patch_embed_lr_mult"):
            chk.positive_float(float(getattr(self, name)), name)
        for name in ("mfm_weight", "glcl_weight", "koleo_weight", "min_lr", "weight_decay", "mask_min_area",
                     "rotate_vertical_deg", "rotate_tilt_deg"):
            chk.positive_float(float(getattr(self, name)), name, allow_zero=True)
        if not 0.0 <= self.momentum_teacher <= 1.0:
            raise ValueError(f"momentum_teacher: expected a value in [0, 1], got {self.momentum_teacher}")
        chk.choice(self.head_impl, "head_impl", HEAD_IMPLS)
        chk.choice(self.encode_with, "encode_with", ("teacher", "student"))
        chk.choice(self.ffn, "ffn", ("mlp", "swiglu"))
        chk.choice(self.pretrain_bodies, "pretrain_bodies", ("one", "all"))
        if self.center_joint is not None:
            chk.integer(self.center_joint, "center_joint", 0)
            if self.center_joint >= self.num_joints:
                raise ValueError(f"center_joint: expected a joint in [0, {self.num_joints}), got {self.center_joint}")
        chk.choice(self.optimizer, "optimizer", ("adamw", "adam", "sgd"))
        if self.chunk_size is not None:
            chk.integer(self.chunk_size, "chunk_size", 1)
        if self.dim % self.heads or (self.dim // self.heads) % 2:
            raise ValueError(f"heads: expected a divisor of dim={self.dim} with an even head dim (RoPE), got {self.heads}")
        self.betas = tuple(float(b) for b in self.betas)

    @property
    def crops_per_scale(self) -> Tuple[int, ...]:
        """Local crops per global view at each of ``local_frames`` (``local_counts`` or ``local_crops`` each)."""
        return self.local_counts if self.local_counts is not None else (self.local_crops,) * len(self.local_frames)

    @property
    def time_blocks(self) -> int:
        return self.frames // self.frames_per_patch

    @property
    def num_tokens(self) -> int:
        """Encoder tokens of a global view: cls + registers + (T/P_T)·V patches (205 at the defaults)."""
        return 1 + self.num_registers + self.time_blocks * self.num_joints


def _interval(v, name: str) -> Tuple[float, float]:
    try:
        lo, hi = (float(x) for x in v)
    except (TypeError, ValueError):
        raise TypeError(f"{name}: expected a (lo, hi) pair of floats, got {v!r}") from None
    if not 0.0 < hi or not 0.0 <= lo <= hi <= 1.0:
        raise ValueError(f"{name}: expected (lo, hi) with 0 <= lo <= hi <= 1 and hi > 0, got {v!r}")
    return lo, hi
