"""SLiM — decoder-free masked modeling + global-local contrastive learning (seed 002; docs/design.md §5.3).

Pipeline of one pretraining step (``SLiM.forward``), batched on the input's device:

1. **Bodies.** The action is centred (``center``: minus the root joint of body 0 at frame 0, the
   CTR-GCN/MAMP preprocessing of NTU), then ``(N, C, T, V, M)`` → ``(N·M, C, T, V)``; all-zero
   bodies are dropped (``skip_empty_bodies``). Every body uses the action's valid length ``L``.
2. **Hierarchical temporal sampling** (App. B, :func:`fastskel.data.transforms.hierarchical_views`;
   ``views="official"``: :func:`fastskel.data.slim_official.official_crop`, see the table).
   Two global intervals of ``U[0.5, 1.0]·L`` frames at a random start, each linearly resampled to
   ``frames`` = 64; from each global interval (G1's, and G2's for the symmetrised objective) two
   crops each of ``U[0.35, 0.7]``, ``U[0.15, 0.4]``, ``U[0.05, 0.2]`` of the interval, resampled to
   32, 16, 8 frames (``F.interpolate(mode="linear", align_corners=False)`` semantics: strided when
   the interval is longer, linear upsampling when shorter).
3. **Skeleton-aware augmentations** (App. D, ``fastskel.data.transforms``: ``slim_rotate``,
   ``slim_mirror``, ``bone_scale``; ``augment="official"``:
   :func:`fastskel.data.slim_official.official_augment`), each with p = 0.5, per view and sample:
   rotation ``R = Rz·Ry·Rx`` (Y ±180°, X/Z ±30°), mirroring (negate x + swap L/R joints),
   bone-aware scaling (one factor U[0.85, 1.15] per body part on the bone vectors, rebuilt from the
   root).
4. **Semantic tube masking** (App. C, :mod:`fastskel.methods.slim_masking`): always on the global
   views, with p = 0.5 on each local view; masked patch embeddings are replaced by the mask token.
5. **Teacher** (EMA, no gradient) encodes the unmasked global views; **student** encodes the
   masked global views and the local views (one encoder call per view length).
6. **Objectives.** Prototype heads h_CL (cls) and h_MAE (patches) of K prototypes; teacher targets
   by Sinkhorn-Knopp (3 iterations, over all teacher cls rows / all masked teacher patch rows,
   reduced across ranks under DDP) at temperature τ_t (0.04 → 0.07), student softmax at τ_s = 0.1::

     L_MFM  = mean_{anchor a, sequence} mean_{masked i} CE(q^t_{a,i}, p^s_{a,i})      (eq. 4, iBOT)
     L_GLCL = mean over (anchor a, student view k ∈ {other global view, 6 local views of a}) and
              sequences of CE(q^t_{a,cls}, p^s_{k,cls})                             (eq. 6)
     L_KoLeo = Σ_{global views} KoLeo(student cls of the view)    (DINOv2, on the backbone cls)
     loss   = w_MFM·L_MFM + λ·L_GLCL + 0.1·L_KoLeo,   λ = 1                          (eq. 7)

   Symmetrised (§3.2): each global view is the anchor once. With ``head_impl="chunked"`` the
   prototype losses run through :mod:`fastskel.ops.prototype` (never the full ``(tokens × K)``
   logits); ``"reference"`` materialises them (:func:`~fastskel.ops.prototype.sinkhorn_reference`,
   single-process).
7. ``after_step(step, total_steps)`` (the engine calls it with the number of completed steps):
   EMA ``φ ← m·φ + (1 − m)·θ`` with ``m = 1 − (1 − 0.994)·(1 + cos(π·(step−1)/total))/2``, and
   the teacher temperature for the next step (linear warmup 0.04 → 0.07 over
   ``warmup_teacher_temp_epochs``).

``encode(x, lengths)``: the valid frames of each body resampled to 64, unmasked, through the
teacher encoder (``encode_with``), the final-LayerNorm cls token, averaged over the action's
non-empty bodies → ``(N, 256)``.

Decisions where the paper is silent (DINOv2/iBOT defaults, see also the config docstring): the
student's masked global views also serve GLCL (STM's dual role, §3.3); losses are means over terms
(Eq. 4/6 are written as sums); the prototypes' norms are frozen at 1 and the last layer gets zero
gradient for the first ``freeze_last_layer_epochs`` (DINO); the teacher evaluates. Limitations:
the tube-mask loop is one small kernel batch per tube (~20 tubes per 64-frame view on average;
no host synchronisation: a fixed ``mask_iters`` = 64, then the exact fill); the materialised
``"reference"`` heads are single-process.

Paper, official code (KAIST-VICLab/SLiM 2b8bb41), ``SLiMConfig()`` and ``SLiMConfig.official()``
(``--preset official``). "=" means the same as the column to its left; "(differs)" marks where
``official()`` does not do what the code does, and the reason is below the table.

======================  =========================  ===============================  =====================  ====================
item                    paper (seed 002)           official code                    fastskel default       fastskel official()
======================  =========================  ===============================  =====================  ====================
FFN                     silent ("MLP")             SwiGLU 688 (w12 | w3)            SwiGLU (code)          =
cls positional slot     silent                     pos_embed[:, 0] on cls           yes (code)             =
centring                silent                     joint 1 (SpineMid), frame 0      joint 1 (code)         =
pretraining bodies      silent                     one random valid body per clip   one (code)             =
clip buffer             silent                     valid frames, ping-pong to 150   frames [0, L)          ping-pong (a)
global crop             U[0.5, 1]·L                U[0.5, 1]·L, min 16 frames       round(p·L) >= 1        code
frame sampling          resample to 64/32/16/8     sorted random frames (c < 2T),   linear resampling      code
                                                   one per segment (c >= 2T);
                                                   interpolate only to upsample
local crops / global    2 × (32, 16, 8)            1×32, 2×16, 1×8 (8 in all),      paper                  code
                                                   min max(8, min(16, T))
flip / rotation         p 0.5 / yaw ±180°,         p 0.5 / ±0.3 rad on X, Y, Z      paper                  code
                        tilt ±30°, p 0.5           (one p 0.5)
bone scaling            5 parts, U[0.85, 1.15]     3 factors (torso/arms/legs),     5 parts, exact         3 factors, exact
                                                   index-order rebuild (bug)                               (differs, b)
order                   rotate, mirror, scale      flip → scale → rotate            paper                  code
noise / axis drop       none                       G1 σ .01; G2 σ .05 p .1 + drop   none                   code
                                                   p .2; locals σ .01 p .5
global views masked     all (STM on globals)       50 % of 2B (exact count)         all (paper)            50 % exact count
local views masked      p = 0.5                    all                              p = 0.5 (paper)        all
mask A_min / A_max      8 / 0.5·N                  T_b (8/4/2/1) / 100 tokens       paper                  code
mask ratios             U[0.5, 0.9]                U[0.5, 0.9] stratified over B    independent (paper)    stratified
mask retries            exact count (Alg. 1)       ≤ 10 tries, may fall short       exact count            exact (differs, c)
cls loss pairs          local vs its anchor        locals vs both globals (DINO)    own anchor (paper)     both, mean of 18B
patch loss normaliser   per masked view            ÷ all 2B globals                 ÷ 2B (as the code)     =
epoch                   silent                     1,250 iterations                 one dataset pass       1,250 (iters_per_epoch)
lr                      2e-4                       2e-4·sqrt(batch/1024)            2e-4 (paper)           1.73e-4 at 768
tokens weight decay     silent                     decayed                          exempt (timm)          decayed
weight decay            silent                     cosine 0.04 → 0.2                0.04 constant          cosine 0.04 → 0.2
patch-embed lr          silent                     × 0.2                            × 1                    × 0.2
grad clip               silent                     3.0                              3.0                    =
prototype gain g        silent                     trained, decayed (DINOv2 head)   frozen at 1 (DINO)     trained
last-layer freeze       silent                     1 epoch, lr 0 (Adam moments      1 epoch, zero grad     = (differs, d)
                                                   still accumulate)
test clip               silent                     95 % centre, strided frames      full length, linear    code (encode_sampling)
linear probe            cls, last block            grid: last 1/4 cls ± mean        cls mean over bodies,  bodies summed; grid:
                                                   patch × 13 lr, SGD, raw feats,   standardised, 1 lr     eval --eval-protocol
                                                   online train aug, best on test                          slim_official (e)
======================  =========================  ===============================  =====================  ====================

(a) fastskel reads the valid frames as ``[0, L)``; the official buffer drops every all-zero frame,
also one inside a clip (rare in NTU), before the ping-pong extension.
(b) The official ``random_scale`` rebuilds joints in index order, so joints 2, 4, 8 (children of
joint 20) read an unset parent (with s = 1 it moves 14 joints by up to 0.38 m). fastskel's rebuild
follows the tree (:func:`fastskel.data.slim_official.official_bone_scale`, from joint 0 as the
official root); the paper config keeps its 5-part exact one (from the graph's root).
(c) The official generator retries a tube up to 10 times and may mask fewer tokens than the drawn
ratio; fastskel fills the exact count (Alg. 1), sync-free.
(d) The engine freezes by a zero gradient (method-side, DDP-safe), the official schedule by lr 0.
(e) :mod:`fastskel.engine.eval_protocols`: the official grid, lr scaling, SGD schedule and raw
features; the training features are extracted once from un-augmented clips (the official probe
augments every iteration), so 52 classifiers train in one pass on a CPU.

Official weights: :func:`load_slim_checkpoint` (hub folder, ``model.safetensors``,
``export_encoder`` ``.pth``), :func:`save_slim_hub`.
"""
from __future__ import annotations

import copy
import dataclasses
import math
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from fastskel.data.channels import resolve_channels
from fastskel.data.slim_official import official_augment, official_crop, official_test_crop
from fastskel.data.transforms import bone_scale, hierarchical_views, resample, slim_mirror, slim_rotate
from fastskel.graph import SkeletonGraph
from fastskel.nn.dino_head import DINOHead
from fastskel.nn.vit import SkeletonViT
from fastskel.ops import _checks as chk
from fastskel.ops.prototype import (prototype_cross_entropy, prototype_cross_entropy_reference, sinkhorn_knopp,
                                    sinkhorn_reference)

from ._backend import BackendMixin
from .slim_config import HEAD_IMPLS, SLiMConfig  # noqa: F401  (re-exported)
from .slim_checkpoint import SLiMLoadResult, load_slim_checkpoint, save_slim_hub
from .slim_masking import TubeTable, semantic_tube_mask

__all__ = ["SLiM", "SLiMConfig", "SLiMLoadResult", "koleo_loss", "load_slim_checkpoint", "save_slim_hub"]

# ============================================================================ randomness
def _rand(n: int, generator, device) -> torch.Tensor:
    """``U[0, 1)`` draws on the generator's device (the device's default RNG without one), moved to ``device``."""
    gdev = generator.device if generator is not None else device
    return torch.rand(n, generator=generator, device=gdev).to(device)


def _bernoulli(n: int, p: float, generator, device) -> torch.Tensor:
    return _rand(n, generator, device) < p


# ============================================================================ losses
def koleo_loss(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """KoLeo (Sablayrolles et al.; DINOv2 ``KoLeoLoss``): ``−mean_i log ‖x̂_i − x̂_{nn(i)}‖``,
    ``x̂`` the L2-normalised rows, ``nn(i)`` the nearest other row by inner product."""
    x = F.normalize(x.float(), p=2, dim=-1, eps=eps)
    with torch.no_grad():
        dots = x @ x.T
        dots.fill_diagonal_(-1)
        nn_idx = dots.argmax(1)
    d = F.pairwise_distance(x, x[nn_idx], p=2, eps=eps)
    return -torch.log(d + eps).mean()


def _bodies(x: torch.Tensor) -> torch.Tensor:
    n, c, t, v, m = x.shape
    return x.permute(0, 4, 1, 2, 3).reshape(n * m, c, t, v)


# ============================================================================ the method
class SLiM(BackendMixin, nn.Module):
    """SLiM (seed 002): see the module docstring. ``SLiM(SLiMConfig(...))``.

    ``forward(x, lengths=None, generator=None)`` → ``{"loss", "mfm", "glcl", "koleo",
    "teacher_temp", "bodies"}``; ``encode(x, lengths=None)`` → ``(N, dim)``;
    ``after_step(step, total_steps)``; ``update_teacher(momentum)``.
    """

    def __init__(self, config: Optional[SLiMConfig] = None):
        super().__init__()
        config = SLiMConfig() if config is None else dataclasses.replace(config)
        self.config = config
        self.graph = SkeletonGraph.get(config.graph)
        self.graph.check_num_joints(config.num_joints, "config.num_joints")
        self.feature_dim = config.dim * (config.encode_layers + int(config.encode_patch))
        encoder = SkeletonViT(config.in_channels, config.num_joints, config.frames_per_patch, 1, config.dim,
                              config.depth, config.heads, config.mlp_dim, config.num_registers, config.qkv_bias,
                              1e-6, config.rope_base, config.backend, ffn=config.ffn, cls_pos=config.cls_pos)
        head = lambda: DINOHead(config.dim, config.num_prototypes, config.head_hidden_dim,  # noqa: E731
                                config.head_bottleneck_dim, norm_last_layer=config.norm_last_layer)
        self.student = nn.ModuleDict({"encoder": encoder, "cl_head": head(), "mae_head": head()})
        self.teacher = copy.deepcopy(self.student)
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self._tubes = TubeTable(self.graph)
        self._tube_cache: Dict[torch.device, TubeTable] = {}
        self.register_buffer("step", torch.zeros((), dtype=torch.int64))
        self.register_buffer("total_steps", torch.zeros((), dtype=torch.int64))

    # -- utilities ------------------------------------------------------------------
    def no_weight_decay(self) -> List[str]:
        """Parameters without weight decay (timm convention), read by the engine's param groups."""
        if self.config.token_weight_decay:          # official SLiM / DINOv2: tokens are decayed
            return []
        return ["joint_embed", "cls_token", "register_tokens", "mask_token", "cls_pos_embed"]

    def lr_scales(self) -> Dict[str, float]:
        """Per-parameter lr multipliers (name prefix → scale), read by the engine's param groups:
        the official code trains the patch embedding at ``patch_embed_lr_mult`` (0.2) × lr."""
        m = float(self.config.patch_embed_lr_mult)
        return {} if m == 1.0 else {"student.encoder.patch_embed.": m}

    def train(self, mode: bool = True) -> "SLiM":
        super().train(mode)
        self.teacher.eval()
        return self

    @property
    def teacher_temperature(self) -> float:
        """τ_t of the next step: linear 0.04 → 0.07 over the warmup iterations, then 0.07."""
        cfg = self.config
        step, total = self._host_steps()
        warm = round(total * cfg.warmup_teacher_temp_epochs / cfg.epochs) if total else 0
        if total == 0 and cfg.warmup_teacher_temp_epochs > 0:
            return cfg.warmup_teacher_temp
        if step >= warm:
            return cfg.teacher_temp
        return cfg.warmup_teacher_temp + (cfg.teacher_temp - cfg.warmup_teacher_temp) * step / warm

    def momentum(self, step: int, total_steps: int) -> float:
        """EMA momentum after completed step ``step`` (1-based) of ``total_steps``: cosine 0.994 → 1."""
        m0 = self.config.momentum_teacher
        it = max(step - 1, 0)
        return 1.0 - (1.0 - m0) * (1.0 + math.cos(math.pi * it / max(total_steps, 1))) / 2.0

    def _last_layer_frozen(self) -> bool:
        cfg = self.config
        if cfg.freeze_last_layer_epochs <= 0:
            return False
        step, total = self._host_steps()
        return total == 0 or step < total * cfg.freeze_last_layer_epochs / cfg.epochs

    def _host_steps(self) -> Tuple[int, int]:
        """``(step, total_steps)`` as Python ints without a device read in the training loop: cached
        with the buffers' version counters (``after_step`` refreshes it; a ``load_state_dict`` or
        ``.to()`` changes the counters/tensors, and the next call reads the buffers once)."""
        try:
            key = (id(self.step), self.step._version, id(self.total_steps), self.total_steps._version)
        except RuntimeError:                        # inference tensors keep no version counter
            return int(self.step), int(self.total_steps)
        cached = self.__dict__.get("_steps_cache")
        if cached is None or cached[0] != key:
            cached = (key, (int(self.step), int(self.total_steps)))
            self.__dict__["_steps_cache"] = cached
        return cached[1]

    @torch.no_grad()
    def update_teacher(self, momentum: float) -> None:
        """``φ ← m·φ + (1 − m)·θ`` over the encoder and both heads (parameters; buffers copied)."""
        t = [p for p in self.teacher.parameters()]
        s = [p.detach() for p in self.student.parameters()]
        torch._foreach_mul_(t, momentum)
        torch._foreach_add_(t, s, alpha=1.0 - momentum)
        for bt, bs in zip(self.teacher.buffers(), self.student.buffers()):
            bt.copy_(bs)

    def after_step(self, step: int, total_steps: int) -> None:
        """Engine hook after optimiser step ``step`` (completed steps, 1-based) of ``total_steps``:
        EMA update of the teacher, then the schedules (teacher temperature, last-layer freeze)."""
        step, total_steps = int(step), int(total_steps)
        self.update_teacher(self.momentum(step, total_steps))
        self.step.fill_(step)
        self.total_steps.fill_(total_steps)
        try:
            key = (id(self.step), self.step._version, id(self.total_steps), self.total_steps._version)
            self.__dict__["_steps_cache"] = (key, (step, total_steps))
        except RuntimeError:
            pass

    # -- input ------------------------------------------------------------------------
    def _actions(self, x: torch.Tensor, lengths: Optional[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(bodies (N·M, C, T, V), body lengths (N·M,), body valid (N·M,))``."""
        cfg = self.config
        chk.tensor(x, "x", shape_hint="(N, C, T, V, M) or (N, C, T, V)")
        if x.dim() == 4:
            x = x.unsqueeze(-1)
        if x.dim() != 5:
            raise ValueError(f"x: expected (N, C, T, V, M) or (N, C, T, V), got shape {tuple(x.shape)}")
        n, c, t, v, m = x.shape
        if c != cfg.in_channels:
            raise ValueError(f"x: expected C={cfg.in_channels} channels, got shape {tuple(x.shape)}")
        self.graph.check_num_joints(v)
        if n == 0 or t == 0:
            raise ValueError(f"x: expected a non-empty batch, got shape {tuple(x.shape)}")
        L = chk.lengths(lengths, x[..., 0])
        if L is None:
            nz = x.ne(0).any(1).any(-1).any(-1)                             # (N, T)
            L = (nz.long() * torch.arange(1, t + 1, device=x.device)).amax(1)
        if cfg.center:
            root = self.graph.center if cfg.center_joint is None else cfg.center_joint
            present = x.ne(0).any(1, keepdim=True).any(3, keepdim=True)        # (N, 1, T, 1, M)
            origin = x[:, :, :1, root:root + 1, :1]
            if cfg.channels == "xy+score":  # centre (x, y) only; the score is not a coordinate
                origin = torch.cat([origin[:, :2], torch.zeros_like(origin[:, 2:])], 1)
            x = (x - origin) * present.to(x.dtype)
        bodies = _bodies(x)
        valid = bodies.flatten(1).ne(0).any(1)
        return bodies, L.repeat_interleave(m), valid

    # -- views ------------------------------------------------------------------------
    def _augment(self, x: torch.Tensor, generator, kind: str = "local") -> torch.Tensor:
        """Skeleton-aware augmentations, each with ``aug_prob`` per sample: the paper's
        (``fastskel.data.transforms``) or, ``augment="official"``, the official chain of view
        ``kind`` ("global1" | "global2" | "local", :func:`fastskel.data.slim_official.official_augment`)."""
        cfg = self.config
        p = cfg.aug_prob
        ch = cfg.channels or None  # None: from C (3 → xyz, 2 → xy); spatial channels only
        if cfg.augment == "official":
            if resolve_channels(ch, x.shape[1]) != "xyz":
                raise ValueError(f"augment='official' is the official 3-D (xyz) chain; got channels "
                                 f"{resolve_channels(ch, x.shape[1])!r}: use augment='paper' for 2-D keypoints")
            root = 0 if self.graph.name == "ntu25" else self.graph.center    # the official rebuild keeps joint 0
            return official_augment(x, kind, self.graph, p, cfg.bone_scale_range, math.radians(cfg.rotate_tilt_deg),
                                    math.radians(cfg.rotate_vertical_deg), root=root, generator=generator)
        if ch or cfg.in_channels in (2, 3):
            x = slim_rotate(x, p, cfg.rotate_vertical_deg, cfg.rotate_tilt_deg, generator=generator, channels=ch)
        x = slim_mirror(x, p, self.graph, generator=generator, channels=ch)
        return bone_scale(x, cfg.bone_scale_range[0], cfg.bone_scale_range[1], p, self.graph, generator=generator,
                          channels=ch)

    def _views(self, bodies: torch.Tensor, L: torch.Tensor, generator):
        """Augmented global views ``(2B, C, frames, V)`` (G1 rows then G2 rows) and, per local
        length, local views ``(A·crops·B, C, T_l, V)`` with the anchor (0 = G1, 1 = G2) of each row.

        One :func:`fastskel.data.transforms.hierarchical_views` call per global view (one global
        interval and its local crops), so G2's local crops lie in G2's interval for the
        symmetrised objective.
        """
        cfg = self.config
        b, dev = bodies.shape[0], bodies.device
        counts = cfg.crops_per_scale
        n_anchor = 2 if cfg.symmetrize else 1
        locals_ = []
        if cfg.views == "official":             # slim/data/augmentations.py: crops of the buffer, sorted random frames
            glob, ranges = [], []
            for a in range(2):
                v, rng = official_crop(bodies, L, cfg.frames, cfg.global_scale, generator=generator)
                glob.append(self._augment(v, generator, "global1" if a == 0 else "global2"))
                ranges.append(rng)
            for t_l, scale, count in zip(cfg.local_frames, cfg.local_scales, counts):
                crops = [official_crop(bodies, L, t_l, scale, within=ranges[a], generator=generator)[0]
                         for a in range(n_anchor) for _ in range(count)]
                anchor_ids = torch.arange(n_anchor, device=dev).repeat_interleave(count * b)
                locals_.append((self._augment(torch.cat(crops), generator, "local"), anchor_ids))
            return torch.cat(glob), locals_
        local = tuple(zip(cfg.local_frames, cfg.local_scales))
        glob, per_anchor = [], []
        for a in range(2):
            use_local = a == 0 or cfg.symmetrize
            v = hierarchical_views(bodies, L, cfg.frames, cfg.global_scale, local if use_local else (),
                                   num_global=1, num_local=max(counts), generator=generator)
            glob.append(self._augment(v.globals[0], generator, f"global{a + 1}"))
            if use_local:
                per_anchor.append(v.locals)
        for t_l, count in zip(cfg.local_frames, counts):
            views = torch.cat([crop for loc in per_anchor for crop in loc[t_l][:count]])
            anchor_ids = torch.arange(len(per_anchor), device=dev).repeat_interleave(count * b)
            locals_.append((self._augment(views, generator), anchor_ids))
        return torch.cat(glob), locals_

    def _mask(self, batch: int, frames: int, prob: float, generator, device) -> Optional[torch.Tensor]:
        cfg = self.config
        apply = None if prob >= 1.0 else _bernoulli(batch, prob, generator, device)
        return self._tube_mask(batch, frames // cfg.frames_per_patch, apply, generator, device)

    def _tube_mask(self, batch: int, time_blocks: int, apply, generator, device) -> torch.Tensor:
        """Semantic tube masks of ``batch`` views; ``mask_rule`` "paper": A_min = ``mask_min_area``,
        A_max = ``mask_max_area``·N, independent ratios; "official": A_min = T_b (8/4/2/1 tokens at
        64/32/16/8 frames), A_max = 100 tokens, ratios stratified over the batch. No host sync
        (``sync=False``: a fixed ``mask_iters`` tube iterations, then the exact single-token fill)."""
        cfg = self.config
        table = self._tube_cache.get(device)
        if table is None:
            table = self._tube_cache.setdefault(device, self._tubes.to(device))
        if cfg.mask_rule == "official":
            n = time_blocks * cfg.num_joints
            lo_area, hi_area, strat = float(time_blocks), min(1.0, 100.0 / n), True
        else:
            lo_area, hi_area, strat = cfg.mask_min_area, cfg.mask_max_area, False
        return semantic_tube_mask(batch, time_blocks, table, cfg.mask_ratio, lo_area, hi_area, apply=apply,
                                  generator=generator, device=device, stratified=strat, sync=False,
                                  max_iters=cfg.mask_iters)

    # -- prototype objectives ------------------------------------------------------------------
    def _prototype_loss(self, zs: torch.Tensor, ws: torch.Tensor, zt: torch.Tensor, wt: torch.Tensor,
                        index: Optional[torch.Tensor], temp_t: float) -> torch.Tensor:
        """Per-row CE ``(n_s,)`` of student rows against Sinkhorn targets of all teacher rows."""
        cfg = self.config
        if cfg.head_impl == "reference":
            q = sinkhorn_reference(zt @ wt.T, temp_t, cfg.sinkhorn_iters)
            if index is not None:
                q = q[index]
            return prototype_cross_entropy_reference(zs @ ws.T, q, cfg.student_temp)
        # one dtype per side: the embeddings' (bf16 under autocast, as DINOv2's heads), fp32 otherwise
        targets = sinkhorn_knopp(zt, wt.to(zt.dtype), temp_t, cfg.sinkhorn_iters, cfg.chunk_size, backend=cfg.backend)
        return prototype_cross_entropy(zs, ws.to(zs.dtype), targets, cfg.student_temp, index=index,
                                       chunk_size=cfg.chunk_size, backend=cfg.backend)

    def _student_prototypes(self, head: DINOHead) -> torch.Tensor:
        w = head.prototypes()
        if self._last_layer_frozen():
            w = w.detach() + w * 0.0    # zero gradient, parameters still used (DDP-safe)
        return w

    # -- pretraining step -----------------------------------------------------------------
    def forward(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None,
                generator: Optional[torch.Generator] = None) -> Dict[str, torch.Tensor]:
        cfg = self.config
        bodies, L, valid = self._actions(x, lengths)
        if cfg.pretrain_bodies == "one":            # one random non-empty body per clip (official), on device
            n = x.shape[0]
            score = torch.where(valid.view(n, -1), _rand(valid.view(n, -1).shape, generator, bodies.device), -1.0)
            pick = score.argmax(1) + torch.arange(n, device=bodies.device) * score.shape[1]
            bodies, L, valid = bodies[pick], L[pick], valid[pick]
            if cfg.center:                          # each chosen body on its own root at frame 0
                root = self.graph.center if cfg.center_joint is None else cfg.center_joint
                present = bodies.ne(0).any(1, keepdim=True).any(3, keepdim=True)
                bodies = (bodies - bodies[:, :, :1, root:root + 1]) * present.to(bodies.dtype)
        if cfg.skip_empty_bodies:
            keep = valid.nonzero().squeeze(1)       # one host sync: the count of non-empty bodies is data
            bodies, L = bodies[keep], L[keep]
            if bodies.shape[0] == 0:
                raise ValueError("x: expected at least one body with non-zero coordinates, got an all-zero batch")
        b, dev = bodies.shape[0], bodies.device
        glob, locals_ = self._views(bodies, L, generator)
        anchors = (0, 1) if cfg.symmetrize else (0,)
        n_a = len(anchors)
        temp_t = self.teacher_temperature
        pre = 1 + cfg.num_registers

        # teacher: unmasked anchors
        with torch.no_grad():
            t_out = self.teacher["encoder"](glob[: n_a * b])                        # (A·B, 1+R+N, D)
        # student: masked global views, then the local views
        if cfg.global_mask_prob >= 1.0:
            g_mask = self._mask(2 * b, cfg.frames, 1.0, generator, dev)            # (2B, N)
        else:                                   # exactly round(p·2B) ≥ 1 random globals masked (DINOv2 collate)
            k = max(1, int(round(cfg.global_mask_prob * 2 * b)))
            chosen = _rand(2 * b, generator, dev).argsort().argsort() < k
            g_mask = self._tube_mask(2 * b, cfg.time_blocks, chosen, generator, dev)
        s_glob = self.student["encoder"](glob, g_mask)
        s_cls = [s_glob[:, 0]]
        s_anchor = [torch.arange(2, device=dev).repeat_interleave(b)]               # anchor whose teacher it matches
        s_anchor[0] = 1 - s_anchor[0]
        s_seq = [torch.arange(b, device=dev).repeat(2)]
        for views, anchor_ids in locals_:
            m = self._mask(views.shape[0], views.shape[2], cfg.local_mask_prob, generator, dev)
            cls_l = self.student["encoder"](views, m)[:, 0]
            seq_l = torch.arange(b, device=dev).repeat(views.shape[0] // b)
            if cfg.local_pairs == "both" and n_a == 2:     # every local vs both teacher globals (DINOLoss)
                cls_l, seq_l = torch.cat([cls_l, cls_l]), torch.cat([seq_l, seq_l])
                anchor_ids = torch.arange(2, device=dev).repeat_interleave(views.shape[0])
            s_cls.append(cls_l)
            s_anchor.append(anchor_ids)
            s_seq.append(seq_l)
        s_cls_all, s_anchor_all, s_seq_all = torch.cat(s_cls), torch.cat(s_anchor), torch.cat(s_seq)
        keep = s_anchor_all < n_a                                                  # without symmetrize: anchor G1 only
        if n_a < 2:                                                                 # keep.all() iff symmetrize
            s_cls_all, s_anchor_all, s_seq_all = s_cls_all[keep], s_anchor_all[keep], s_seq_all[keep]

        # L_GLCL: teacher cls of each anchor vs the student's other views
        tcl, scl = self.teacher["cl_head"], self.student["cl_head"]
        with torch.no_grad():
            zt_cls = tcl.embed(t_out[:, 0])
            wt_cls = tcl.prototypes()
        zs_cls = scl.embed(s_cls_all)
        ce_cls = self._prototype_loss(zs_cls, self._student_prototypes(scl), zt_cls, wt_cls,
                                      s_anchor_all * b + s_seq_all, temp_t)
        glcl = ce_cls.mean()

        # L_MFM: masked patch tokens of each anchor, student (masked input) vs teacher (full input)
        tmae, smae = self.teacher["mae_head"], self.student["mae_head"]
        m_anchor = g_mask[: n_a * b]                                                 # (A·B, N)
        n_tok = m_anchor.shape[1]
        flat = m_anchor.flatten().nonzero().squeeze(1)   # one host sync: the masked-token count is data
        row_seq, col = flat // n_tok, flat % n_tok + pre  # (view, token) of each masked token, row-major
        with torch.no_grad():
            zt_p = tmae.embed(t_out[row_seq, col])
            wt_p = tmae.prototypes()
        zs_p = smae.embed(s_glob[row_seq, col])
        ce_p = self._prototype_loss(zs_p, self._student_prototypes(smae), zt_p, wt_p, None, temp_t)
        n_masked = m_anchor.sum(1)                                                   # ≥ ⌈0.5·N⌉ > 0
        mfm = (ce_p / n_masked[row_seq].float()).sum() / (n_a * b)

        koleo = s_glob.new_zeros((), dtype=torch.float32)
        if cfg.koleo_weight > 0 and b > 1:
            koleo = sum(koleo_loss(c) for c in s_glob[:, 0].chunk(2))
        loss = cfg.mfm_weight * mfm + cfg.glcl_weight * glcl + cfg.koleo_weight * koleo
        return {"loss": loss, "mfm": mfm.detach(), "glcl": glcl.detach(), "koleo": koleo.detach(),
                "teacher_temp": torch.full((), temp_t, device=dev), "bodies": torch.full((), float(b), device=dev)}

    # -- evaluation -----------------------------------------------------------------
    def prepare_finetune(self) -> None:
        """Fine-tuning trains the encoder that :meth:`encode` reads (``encode_with``; the teacher,
        frozen by EMA during pretraining, by default) and freezes everything else."""
        for p in self.parameters():
            p.requires_grad_(False)
        enc = self.teacher["encoder"] if self.config.encode_with == "teacher" else self.student["encoder"]
        for p in enc.parameters():
            p.requires_grad_(True)

    def encode(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Features ``(N, dim)``: each body's valid frames resampled to ``frames``, unmasked, through
        the ``encode_with`` encoder; the cls token averaged over the action's non-empty bodies."""
        cfg = self.config
        bodies, L, valid = self._actions(x, lengths)
        n = x.shape[0]
        if cfg.encode_sampling == "official":     # DownstreamAugmentation._test_sampling: strided frames
            views = official_test_crop(bodies, L, cfg.frames, cfg.encode_crop, thres=cfg.frames)
        elif cfg.encode_crop < 1.0:                 # centre crop of the valid frames (official test: 95 %)
            keep = torch.clamp(torch.round(L.float() * cfg.encode_crop), min=1).long()
            views = resample(bodies, (L - keep) // 2, keep, cfg.frames)
        else:
            views = resample(bodies, torch.zeros_like(L), L, cfg.frames)
        enc = self.teacher["encoder"] if cfg.encode_with == "teacher" else self.student["encoder"]
        if cfg.encode_layers == 1 and not cfg.encode_patch:
            feats = enc(views)[:, 0]                                                # (N·M, dim)
        else:                                       # DINOv2 linear input: cls of the last n blocks [| mean patch]
            outs = enc.forward_layers(views, cfg.encode_layers)
            parts = [o[:, 0] for o in outs]
            if cfg.encode_patch:
                parts.append(outs[-1][:, enc.num_prefix_tokens:].mean(1))
            feats = torch.cat(parts, -1)
        w = valid.view(n, -1).to(feats.dtype)
        w = torch.where(w.sum(1, keepdim=True) > 0, w, torch.ones_like(w))
        summed = (feats.view(n, -1, feats.shape[-1]) * w[..., None]).sum(1)
        return summed if cfg.encode_bodies == "sum" else summed / w.sum(1, keepdim=True)
