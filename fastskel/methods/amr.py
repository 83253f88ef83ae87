"""AMR (seed 004, docs/design.md §5.1) and its MAMP baseline: masked skeleton reconstruction, end to end.

Shared front end (MAMP, ICCV'23; AMR App. B.1)
    A raw batch ``(N, C, T, V, M)`` is augmented on its device: a random temporal crop of 50–100 %
    of the valid frames (at least ``crop_min_frames``), linearly resized to ``num_frames`` (MAMP's
    ``valid_crop_resize``: :func:`fastskel.data.transforms.crop_resize`). Bodies become separate sequences ``(N·M, C, T, V)``; all-zero bodies are
    dropped when ``skip_empty_bodies`` (MAMP keeps them: wasted compute on padding). Patchify with
    ``l`` frames per patch: T=120, l=4 → 30 × 25 = 750 tokens of ``l·C = 12`` features.

Motion-aware masking (MAMP §3.2, its ``motion_aware_random_masking``)
    token motion ``m = mean_{12 dims} |patch_t − patch_{t−1}|`` between consecutive patches of a
    joint (the first temporal block copies the second); ``p = softmax(m / (max(m)·τ))``, τ = 0.8;
    the tokens with the largest ``log p + Gumbel`` are masked (Gumbel-top-k: a draw without
    replacement ∝ p), so moving tokens are masked more often. Kept: ``round(L·(1 − ratio))`` = 75
    of 750; ``mamp_keep_truncation`` gives MAMP's ``int(750 · (1 − 0.9))`` = 74.

Encoder (shared)
    ``Linear(l·C → 256)`` patch embedding + separable temporal/joint positional embedding
    (trunc-normal 0.02), 8 pre-norm blocks (256 wide, 8 heads, MLP 1024, qkv bias, LayerNorm eps
    1e-6) on the visible tokens only, final LayerNorm.

AMR decoder and objective (seed 004 §3.2–3.3)
    ``Linear(256 → 256)`` bridge; visible tokens + decoder positional embedding (30 × 25) are the
    keys/values of a :class:`~fastskel.nn.decoder.CrossAttentionDecoder` with 125 learnable
    queries (r = 6: 5 × 25 target patches of ``r·l = 24`` frames × 3 = 72 features), 5 layers,
    head Linear-GELU-Linear-GELU-Linear → 72. Target (``target``): "joint_norm_joint" — each body
    sequence normalised per channel over its frames and joints, ``(x − μ)/(σ + 1e-6)`` (population
    σ); "motion" — MAMP's frame differences normalised per target patch; "raw". Loss: eq. 5 over
    ALL target patches, ``fastskel.ops.focal_reconstruction_loss`` with
    ``fastskel.ops.motion_energy_weights`` of the (augmented) input (windows 4/8/12, k = 0.01)
    broadcast to each patch's (24 frames, 3 channels).

MAMP baseline (the speed claim's reference)
    Same encoder; ``Linear(256 → 256)`` + mask tokens scattered back to all 750 positions +
    decoder positional embedding, 5 (or 3) self-attention blocks over all 750 tokens, final LN,
    ``Linear(256 → 12)``; target = frame motion ``x_{t+1} − x_t`` (last frame 0), normalised per
    patch (``(m − mean)/sqrt(var + 1e-6)``, unbiased var as MAMP); MSE on masked tokens only.
    :func:`load_mamp_checkpoint` reads MAMP's public checkpoints (its key names).

Deliberate differences from the public MAMP code (documented, switchable where it matters):
LayerNorm eps 1e-6 (docs/design.md §5.1; MAMP's ``nn.LayerNorm`` default is 1e-5: set ``ln_eps=1e-5`` to
reproduce a MAMP checkpoint's features exactly); the visible patches are embedded after the
masking gather (same result, 10× fewer patch-embedding FLOPs); MAMP's random rotation
augmentation is not applied (docs/design.md §5.1 lists only the crop-resize). Kept token order is ascending
position (MAMP keeps the shuffled order; attention is permutation-equivariant, so only float
summation order differs).
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Tuple, Union

import torch
from torch import nn

from fastskel.data.channels import resolve_channels
from fastskel.data.transforms import crop_resize
from fastskel.nn.decoder import CrossAttentionDecoder
from fastskel.nn.transformer import SeparablePosEmbed, TransformerEncoder, init_vit_weights
from fastskel.ops import _checks as chk
from fastskel.ops import focal_reconstruction_loss, motion_energy_weights, patchify
from fastskel.ops.reference import gumbel_from_uniform

from ._backend import BackendMixin
from ._state_load import require_all, take_matching

__all__ = [
    "AMR", "AMRConfig", "MAMP", "MAMPConfig", "MAMPLoadResult", "PatchEncoder", "keep_count",
    "load_mamp_checkpoint", "mamp_state_dict_to_fastskel", "motion_aware_masking", "token_motion",
]

TARGETS = ("joint_norm_joint", "motion", "raw")


# ============================================================================ configs
@dataclass
class _MaskedSkeletonConfig:
    """Fields shared by AMR and MAMP: input, encoder, masking, augmentation, engine."""

    # input / patches
    in_channels: int = 3
    # channel layout: "xyz" | "xy" | "xy+score"; "" = from in_channels (3 → xyz, 2 → xy)
    channels: str = ""
    num_frames: int = 120
    num_joints: int = 25
    graph: str = ""  # recorded only (AMR/MAMP need V alone): a built-in name or a graph mapping
    frames_per_patch: int = 4
    # encoder
    dim: int = 256
    depth: int = 8
    heads: int = 8
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    ln_eps: float = 1e-6
    # decoder width/heads/depth (the decoders differ by method)
    decoder_dim: int = 256
    decoder_depth: int = 5
    decoder_heads: int = 8
    # motion-aware masking
    mask_ratio: float = 0.9
    tau: float = 0.8
    mamp_keep_truncation: bool = False
    # on-device augmentation
    crop_interval: Tuple[float, float] = (0.5, 1.0)
    crop_min_frames: int = 64
    skip_empty_bodies: bool = True
    # evaluation pooling over bodies: "valid" (non-empty bodies) or "all" (MAMP's ActionHeadLinprobe)
    encode_bodies: str = "valid"
    # which implementation the ops use (None = fastskel's process default)
    backend: Optional[str] = None
    # engine
    epochs: int = 400
    batch_size: int = 128
    lr: float = 1e-3
    min_lr: float = 5e-4
    warmup_epochs: int = 20
    weight_decay: float = 0.05
    optimizer: str = "adamw"
    betas: Tuple[float, float] = (0.9, 0.95)

    def __post_init__(self) -> None:
        for name in ("in_channels", "num_frames", "num_joints", "frames_per_patch", "dim", "depth", "heads",
                     "decoder_dim", "decoder_depth", "decoder_heads", "crop_min_frames", "epochs", "batch_size"):
            chk.integer(getattr(self, name), name, 1)
        chk.integer(self.warmup_epochs, "warmup_epochs", 0)
        resolve_channels(self.channels, self.in_channels, where="channels")
        if self.num_frames % self.frames_per_patch:
            raise ValueError(f"frames_per_patch: expected a divisor of num_frames={self.num_frames}, "
                             f"got {self.frames_per_patch}")
        if self.dim % self.heads:
            raise ValueError(f"heads: expected a divisor of dim={self.dim}, got {self.heads}")
        if self.decoder_dim % self.decoder_heads:
            raise ValueError(f"decoder_heads: expected a divisor of decoder_dim={self.decoder_dim}, "
                             f"got {self.decoder_heads}")
        if not 0.0 < float(self.mask_ratio) < 1.0:
            raise ValueError(f"mask_ratio: expected a float in (0, 1), got {self.mask_ratio}")
        chk.positive_float(float(self.tau), "tau")
        chk.positive_float(float(self.ln_eps), "ln_eps")
        chk.positive_float(float(self.mlp_ratio), "mlp_ratio")
        lo, hi = (float(v) for v in self.crop_interval)
        if not 0.0 < lo <= hi <= 1.0:
            raise ValueError(f"crop_interval: expected (lo, hi) with 0 < lo <= hi <= 1, got {self.crop_interval}")
        self.crop_interval = (lo, hi)
        chk.choice(self.optimizer, "optimizer", ("adamw", "adam"))
        chk.choice(self.encode_bodies, "encode_bodies", ("valid", "all"))
        if self.backend is not None:
            chk.choice(self.backend, "backend", ("auto", "triton", "cpp", "torch"))
        self.betas = tuple(float(b) for b in self.betas)
        keep = keep_count(self.num_tokens, self.mask_ratio, self.mamp_keep_truncation)
        if not 1 <= keep < self.num_tokens:
            raise ValueError(f"mask_ratio: expected to keep between 1 and {self.num_tokens - 1} of "
                             f"{self.num_tokens} tokens, got {keep}")

    @property
    def t_blocks(self) -> int:
        return self.num_frames // self.frames_per_patch

    @property
    def num_tokens(self) -> int:
        return self.t_blocks * self.num_joints

    @property
    def num_visible(self) -> int:
        return keep_count(self.num_tokens, self.mask_ratio, self.mamp_keep_truncation)


@dataclass
class AMRConfig(_MaskedSkeletonConfig):
    """AMR paper defaults (seed 004; docs/design.md §5.1). ``r``: target patch = r encoder patches in time
    (125 queries at r = 6); ``target`` ∈ {"joint_norm_joint", "motion", "raw"}; ``focal=False``
    is the "w/o FR" ablation (plain MSE over all patches); ``windows``/``k``: eq. 3–4;
    ``head_hidden``: hidden width of the 3-layer head (None = decoder_dim)."""

    r: int = 6
    head_hidden: Optional[int] = None
    target: str = "joint_norm_joint"
    focal: bool = True
    windows: Tuple[int, ...] = (4, 8, 12)
    k: float = 0.01

    def __post_init__(self) -> None:
        super().__post_init__()
        chk.integer(self.r, "r", 1)
        if self.t_blocks % self.r:
            raise ValueError(f"r: expected a divisor of num_frames/frames_per_patch={self.t_blocks}, got {self.r}")
        chk.choice(self.target, "target", TARGETS)
        if isinstance(self.windows, int):
            raise TypeError(f"windows: expected a sequence of ints, got {type(self.windows).__name__}")
        self.windows = tuple(chk.integer(w, "windows", 1) for w in self.windows)
        if not self.windows:
            raise ValueError("windows: expected at least one window size, got ()")
        chk.positive_float(float(self.k), "k")
        if self.head_hidden is not None:
            chk.integer(self.head_hidden, "head_hidden", 1)

    @property
    def num_queries(self) -> int:
        return (self.t_blocks // self.r) * self.num_joints

    @property
    def target_dim(self) -> int:
        return self.r * self.frames_per_patch * self.in_channels


@dataclass
class MAMPConfig(_MaskedSkeletonConfig):
    """MAMP as published (``pretrain_mamp_t120_layer8+5_mask90``): 74 kept tokens
    (``mamp_keep_truncation``), empty bodies processed, 5-layer self-attention decoder
    (``decoder_depth=3`` for MAMP-3), motion target normalised per patch, masked-only loss."""

    mamp_keep_truncation: bool = True
    skip_empty_bodies: bool = False
    norm_target: bool = True
    motion_stride: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        chk.integer(self.motion_stride, "motion_stride", 1, self.num_frames - 1)


def keep_count(num_tokens: int, mask_ratio: float, mamp_truncation: bool = False) -> int:
    """Visible tokens: ``round(L·(1 − ratio))``, or MAMP's float-truncated ``int(L·(1 − ratio))``
    (750 · (1 − 0.9) = 74.999… → 74)."""
    v = num_tokens * (1 - mask_ratio)
    return int(v) if mamp_truncation else int(round(v))


# ============================================================================ masking
def token_motion(patches: torch.Tensor) -> torch.Tensor:
    """MAMP token motion, float32 ``(B, T_blocks·V)`` from patches ``(B, T_blocks, V, F)``:
    ``m[t, v] = mean_F |patch[t, v] − patch[t−1, v]|``, ``m[0, v] = m[1, v]`` (0 if one block)."""
    b, tb, v, _ = patches.shape
    if tb < 2:
        return patches.new_zeros(b, tb * v, dtype=torch.float32)
    d = (patches[:, 1:].float() - patches[:, :-1].float()).abs().mean(-1)   # (B, Tb-1, V)
    return torch.cat([d[:, :1], d], dim=1).reshape(b, tb * v)


def motion_aware_masking(patches: torch.Tensor, keep: int, tau: float = 0.8,
                         generator: Optional[torch.Generator] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """MAMP motion-aware masking of ``patches`` ``(B, T_blocks, V, F)``.

    ``p = softmax(m / (max(m)·τ + 1e-10))`` over the tokens (``m`` = :func:`token_motion`);
    the ``L − keep`` tokens with the largest ``log p + G`` (``G`` Gumbel from ``generator``) are
    masked, i.e. a draw without replacement ∝ p. Returns ``(ids_keep, mask)``: ``ids_keep`` int64
    ``(B, keep)`` in ascending token order, ``mask`` bool ``(B, L)`` True = masked. With a
    ``generator`` the noise is drawn on its device (the same seed masks alike on CPU and CUDA).
    """
    b, tb, v, _ = patches.shape
    n_tok = tb * v
    keep = chk.integer(keep, "keep", 1, n_tok)
    m = token_motion(patches)
    logits = m / (m.amax(dim=1, keepdim=True) * tau + 1e-10)
    gdev = patches.device if generator is None else generator.device
    u = torch.rand(b, n_tok, generator=generator, device=gdev).to(patches.device)
    key = torch.log_softmax(logits, dim=1) + gumbel_from_uniform(u)
    ids_keep = torch.topk(key, keep, dim=1, largest=False, sorted=False).indices.sort(dim=1).values
    mask = torch.ones(b, n_tok, dtype=torch.bool, device=patches.device).scatter_(1, ids_keep, False)
    return ids_keep, mask


# ============================================================================ encoder
class PatchEncoder(TransformerEncoder):
    """The MAMP/AMR encoder: ``patch_embed`` Linear(l·C → dim) + ``pos_embed`` (separable,
    T_blocks × V) + ``blocks`` + ``norm`` (names as MAMP's, see :func:`mamp_state_dict_to_fastskel`)."""

    def __init__(self, cfg: _MaskedSkeletonConfig):
        super().__init__(cfg.dim, cfg.depth, cfg.heads, cfg.mlp_ratio, cfg.qkv_bias, cfg.ln_eps, cfg.backend)
        self.patch_embed = nn.Linear(cfg.frames_per_patch * cfg.in_channels, cfg.dim)
        self.pos_embed = SeparablePosEmbed(cfg.t_blocks, cfg.num_joints, cfg.dim)

    def embed(self, patches: torch.Tensor, ids: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Tokens of ``patches`` ``(B, K, l·C)`` at flat positions ``ids`` ``(B, K)`` (None = all)."""
        pos = self.pos_embed()[None] if ids is None else self.pos_embed.gather(ids)
        return self.patch_embed(patches) + pos


def _as_actions(x: torch.Tensor, cfg: _MaskedSkeletonConfig) -> torch.Tensor:
    chk.tensor(x, "x", shape_hint="(N, C, T, V, M) or (N, C, T, V)")
    if x.dim() == 4:
        x = x[..., None]
    if x.dim() != 5:
        raise ValueError(f"x: expected a 5-D (N, C, T, V, M) or 4-D (N, C, T, V) tensor, got shape {tuple(x.shape)}")
    n, c, t, v, m = x.shape
    if c != cfg.in_channels or v != cfg.num_joints:
        raise ValueError(f"x: expected C={cfg.in_channels} channels and V={cfg.num_joints} joints, "
                         f"got shape {tuple(x.shape)}")
    if min(n, t, m) == 0:
        raise ValueError(f"x: expected a non-empty batch, got shape {tuple(x.shape)}")
    return x


def _bodies(x: torch.Tensor) -> torch.Tensor:
    """``(N, C, T, V, M)`` → ``(N·M, C, T, V)``, body-major within each action."""
    n, c, t, v, m = x.shape
    return x.permute(0, 4, 1, 2, 3).reshape(n * m, c, t, v)


class _MaskedSkeletonModel(BackendMixin, nn.Module):
    """Shared front end: validation, crop-resize, body split, masking, encoder, ``encode()``."""

    config: _MaskedSkeletonConfig

    def __init__(self, config: _MaskedSkeletonConfig):
        super().__init__()
        self.config = dataclasses.replace(config)      # own copy: set_backend() edits it
        self.feature_dim = config.dim
        self.encoder = PatchEncoder(config)

    # -- utilities ------------------------------------------------------------------
    def _prepare(self, x: torch.Tensor, lengths: Optional[torch.Tensor], train: bool,
                 generator: Optional[torch.Generator]) -> Tuple[torch.Tensor, torch.Tensor]:
        """Resize to ``num_frames`` and split bodies → ``(B, C, T, V)`` and the body-valid mask ``(N·M,)``."""
        cfg = self.config
        x = _as_actions(x, cfg)
        L = chk.lengths(lengths, x)                      # None: fastskel.data.valid_lengths(x)
        interval = cfg.crop_interval if train else (1.0,)    # (1.0,): all valid frames, no crop
        x = crop_resize(x, L, cfg.num_frames, interval, cfg.crop_min_frames, generator)
        bodies = _bodies(x)
        valid = bodies.flatten(1).ne(0).any(1)
        return bodies, valid

    def _train_bodies(self, x, lengths, generator) -> torch.Tensor:
        bodies, valid = self._prepare(x, lengths, True, generator)
        if self.config.skip_empty_bodies:
            bodies = bodies[valid]      # the step's one host sync: how many bodies are non-empty is data
            if bodies.shape[0] == 0:
                raise ValueError("x: expected at least one body with non-zero coordinates, got an all-zero batch")
        return bodies

    def _mask_and_encode(self, bodies: torch.Tensor, generator: Optional[torch.Generator]):
        cfg = self.config
        patches = patchify(bodies, cfg.frames_per_patch)                       # (B, L, l·C)
        b, n_tok, f = patches.shape
        ids_keep, mask = motion_aware_masking(patches.view(b, cfg.t_blocks, cfg.num_joints, f),
                                              cfg.num_visible, cfg.tau, generator)
        visible = torch.gather(patches, 1, ids_keep[..., None].expand(-1, -1, f))
        latent = self.encoder(self.encoder.embed(visible, ids_keep))            # (B, K, dim)
        return latent, ids_keep, mask

    # -- evaluation -----------------------------------------------------------------
    def encode(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Features ``(N, dim)``: valid frames resized to ``num_frames`` (no crop), all tokens
        through the encoder (no masking), mean over each body's tokens, then over bodies:

        - ``config.encode_bodies="valid"`` (the default): mean over the action's non-empty bodies
          (an all-empty action: over all). A one-person action then has the same feature whether
          its file pads a second, all-zero body or not, consistent with ``skip_empty_bodies`` in
          pretraining. This is fastskel's choice, not MAMP's.
        - ``"all"``: mean over all ``M`` bodies, an all-zero second body included — exactly MAMP's
          ``ActionHeadLinprobe`` (``feat.mean(dim=[1, 2, 3])`` over ``(N, M, T, V, C)``); use it
          to reproduce MAMP's linear-probe numbers with a MAMP checkpoint."""
        n = x.shape[0] if isinstance(x, torch.Tensor) else 0
        bodies, valid = self._prepare(x, lengths, False, None)
        patches = patchify(bodies, self.config.frames_per_patch)
        feats = self.encoder(self.encoder.embed(patches)).mean(1)               # (N·M, dim)
        w = valid.view(n, -1).to(feats.dtype)
        if self.config.encode_bodies == "all":
            w = torch.ones_like(w)
        w = torch.where(w.sum(1, keepdim=True) > 0, w, torch.ones_like(w))      # all-empty action: plain mean
        return (feats.view(n, -1, feats.shape[-1]) * w[..., None]).sum(1) / w.sum(1, keepdim=True)

    def load_mamp_checkpoint(self, checkpoint, strict: bool = True) -> "MAMPLoadResult":
        """Load a MAMP checkpoint (path or state dict); see :func:`load_mamp_checkpoint`."""
        return load_mamp_checkpoint(self, checkpoint, strict=strict)


# ============================================================================ AMR
class AMR(_MaskedSkeletonModel):
    """Adaptive Masked Reconstruction (seed 004): see the module docstring for the pipeline.

    ``forward(x, lengths=None, generator=None)`` → ``{"loss", "mse", "bodies"}``: ``loss`` the
    focal reconstruction loss (eq. 5) over all target patches, ``mse`` the unweighted mean squared
    error (detached, for logging), ``bodies`` how many body sequences were processed.
    """

    config: AMRConfig

    def __init__(self, config: Optional[AMRConfig] = None):
        config = AMRConfig() if config is None else config
        if not isinstance(config, AMRConfig):
            raise TypeError(f"config: expected an AMRConfig, got {type(config).__name__}")
        super().__init__(config)
        c = config
        self.decoder_embed = nn.Linear(c.dim, c.decoder_dim)
        self.decoder_pos = SeparablePosEmbed(c.t_blocks, c.num_joints, c.decoder_dim)
        self.decoder = CrossAttentionDecoder(c.t_blocks // c.r, c.num_joints, c.decoder_dim, c.decoder_depth,
                                             c.decoder_heads, c.target_dim, c.mlp_ratio, c.head_hidden,
                                             c.qkv_bias, c.ln_eps, c.backend)
        self.apply(init_vit_weights)

    def make_target(self, bodies: torch.Tensor) -> torch.Tensor:
        """Reconstruction target ``(B, P, r·l·C)`` of body sequences ``(B, C, T, V)``."""
        cfg = self.config
        size = cfg.r * cfg.frames_per_patch
        xf = bodies.float()
        if cfg.target == "joint_norm_joint":
            mu = xf.mean(dim=(2, 3), keepdim=True)
            sd = xf.std(dim=(2, 3), keepdim=True, unbiased=False)
            return patchify((xf - mu) / (sd + 1e-6), size)
        if cfg.target == "motion":
            mot = torch.zeros_like(xf)
            mot[:, :, :-1] = xf[:, :, 1:] - xf[:, :, :-1]
            t = patchify(mot, size)
            return (t - t.mean(-1, keepdim=True)) / (t.var(-1, keepdim=True) + 1e-6).sqrt()
        return patchify(xf, size)

    def focal_weights(self, bodies: torch.Tensor) -> torch.Tensor:
        """Eq. 3–4 weights of the input mapped to the target patches ``(B, P, r·l·C)``
        (each patch's (frame, channel) features get their frame's weight)."""
        cfg = self.config
        w = motion_energy_weights(bodies, cfg.windows, cfg.k, backend=cfg.backend)   # (B, T, V)
        b, t, v = w.shape
        return patchify(w[:, None].expand(b, cfg.in_channels, t, v), cfg.r * cfg.frames_per_patch)

    def forward(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None,
                generator: Optional[torch.Generator] = None) -> Dict[str, torch.Tensor]:
        cfg = self.config
        bodies = self._train_bodies(x, lengths, generator)
        latent, ids_keep, _ = self._mask_and_encode(bodies, generator)
        kv = self.decoder_embed(latent) + self.decoder_pos.gather(ids_keep)
        pred = self.decoder(kv)                                                   # (B, P, r·l·C)
        target = self.make_target(bodies)
        if cfg.focal:
            weight = self.focal_weights(bodies)
        else:
            weight = torch.ones(pred.shape[:2], device=pred.device)
        loss = focal_reconstruction_loss(pred, target, weight, backend=cfg.backend)
        mse = (pred.detach().float() - target).pow(2).mean()
        return {"loss": loss, "mse": mse, "bodies": torch.full((), float(bodies.shape[0]), device=loss.device)}


# ============================================================================ MAMP
class MAMP(_MaskedSkeletonModel):
    """MAMP (Mao et al., ICCV 2023), the baseline of AMR's speed claim; see the module docstring.

    ``forward(x, lengths=None, generator=None)`` → ``{"loss", "bodies"}``.
    """

    config: MAMPConfig

    def __init__(self, config: Optional[MAMPConfig] = None):
        config = MAMPConfig() if config is None else config
        if not isinstance(config, MAMPConfig):
            raise TypeError(f"config: expected a MAMPConfig, got {type(config).__name__}")
        super().__init__(config)
        c = config
        self.decoder_embed = nn.Linear(c.dim, c.decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, c.decoder_dim))
        self.decoder_pos = SeparablePosEmbed(c.t_blocks, c.num_joints, c.decoder_dim)
        self.decoder = TransformerEncoder(c.decoder_dim, c.decoder_depth, c.decoder_heads, c.mlp_ratio,
                                          c.qkv_bias, c.ln_eps, c.backend)
        self.decoder_pred = nn.Linear(c.decoder_dim, c.frames_per_patch * c.in_channels)
        self.apply(init_vit_weights)
        nn.init.trunc_normal_(self.mask_token, std=0.02)

    def make_target(self, bodies: torch.Tensor) -> torch.Tensor:
        """MAMP's motion target ``(B, L, l·C)``: ``x_{t+s} − x_t`` (0 on the last s frames), per-patch normalised."""
        cfg = self.config
        s = cfg.motion_stride
        xf = bodies.float()
        mot = torch.zeros_like(xf)
        mot[:, :, :-s] = xf[:, :, s:] - xf[:, :, :-s]
        t = patchify(mot, cfg.frames_per_patch)
        if cfg.norm_target:
            t = (t - t.mean(-1, keepdim=True)) / (t.var(-1, keepdim=True) + 1e-6).sqrt()
        return t

    def forward(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None,
                generator: Optional[torch.Generator] = None) -> Dict[str, torch.Tensor]:
        bodies = self._train_bodies(x, lengths, generator)
        latent, ids_keep, mask = self._mask_and_encode(bodies, generator)
        vis = self.decoder_embed(latent)                                          # (B, K, Dd)
        b, k, d = vis.shape
        full = self.mask_token.to(vis.dtype).expand(b, self.config.num_tokens, d)
        full = full.scatter(1, ids_keep[..., None].expand(-1, -1, d), vis)
        h = self.decoder(full + self.decoder_pos()[None])
        pred = self.decoder_pred(h)                                               # (B, L, l·C)
        target = self.make_target(bodies)
        per_token = (pred.float() - target).pow(2).mean(-1)
        m = mask.to(per_token.dtype)
        loss = (per_token * m).sum() / m.sum()
        return {"loss": loss, "bodies": torch.full((), float(bodies.shape[0]), device=loss.device)}


# ============================================================================ MAMP checkpoints
_MAMP_RENAMES = (   # MAMP prefix → fastskel prefix (model_mamp/transformer.py names)
    ("blocks.", "encoder.blocks."),
    ("norm.", "encoder.norm."),
    ("decoder_blocks.", "decoder.blocks."),
    ("decoder_norm.", "decoder.norm."),
    ("decoder_embed.", "decoder_embed."),
    ("decoder_pred.", "decoder_pred."),
)


class MAMPLoadResult(NamedTuple):
    loaded: List[str]        # fastskel keys set from the checkpoint
    missing: List[str]       # fastskel keys of the model that the checkpoint did not provide
    ignored: List[str]       # checkpoint keys not used (classifier heads, decoder for AMR, ...)


def mamp_state_dict_to_fastskel(state_dict: Mapping[str, Any]) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """Rename a MAMP state dict (``model_mamp`` / ``model`` ``transformer.py``) to fastskel's names.

    Accepts the raw dict, ``{"model": ...}`` / ``{"state_dict": ...}`` wrappers and DDP's
    ``module.`` prefix. Mapping (shapes adapted): ``joints_embed.proj`` (Conv2d ``(D, C, l, 1)``)
    → ``encoder.patch_embed`` (Linear ``(D, l·C)``, features (frame, channel));
    ``temp_embed`` ``(1, T_b, 1, D)`` / ``pos_embed`` ``(1, 1, V, D)`` →
    ``encoder.pos_embed.temporal`` / ``.joint``; ``blocks.*``, ``norm.*`` → ``encoder.*``;
    ``decoder_temp_embed`` / ``decoder_pos_embed`` → ``decoder_pos.temporal`` / ``.joint``;
    ``decoder_blocks.*`` / ``decoder_norm.*`` → ``decoder.*``; ``mask_token``,
    ``decoder_embed.*``, ``decoder_pred.*`` unchanged. Returns ``(mapped, unmapped_keys)``.
    """
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"state_dict: expected a mapping of tensors, got {type(state_dict).__name__}")
    for wrapper in ("model", "state_dict"):
        if wrapper in state_dict and isinstance(state_dict[wrapper], Mapping):
            state_dict = state_dict[wrapper]
            break
    out: Dict[str, torch.Tensor] = {}
    unmapped: List[str] = []
    for key, val in state_dict.items():
        k = key[len("module."):] if key.startswith("module.") else key
        if k == "joints_embed.proj.weight":
            if val.dim() != 4 or val.shape[3] != 1:
                raise ValueError(f"{key}: expected a Conv2d weight (D, C, l, 1) (MAMP patch_size 1), got {tuple(val.shape)}")
            out["encoder.patch_embed.weight"] = val[..., 0].permute(0, 2, 1).reshape(val.shape[0], -1)
        elif k == "joints_embed.proj.bias":
            out["encoder.patch_embed.bias"] = val
        elif k in ("temp_embed", "decoder_temp_embed"):
            out[("encoder.pos_embed" if k == "temp_embed" else "decoder_pos") + ".temporal"] = val.reshape(-1, val.shape[-1])
        elif k in ("pos_embed", "decoder_pos_embed"):
            out[("encoder.pos_embed" if k == "pos_embed" else "decoder_pos") + ".joint"] = val.reshape(-1, val.shape[-1])
        elif k == "mask_token":
            out["mask_token"] = val
        else:
            for old, new in _MAMP_RENAMES:
                if k.startswith(old):
                    out[new + k[len(old):]] = val
                    break
            else:
                unmapped.append(key)
    return out, unmapped


def load_mamp_checkpoint(model: nn.Module, checkpoint: Union[str, os.PathLike, Mapping[str, Any]],
                         strict: bool = True) -> MAMPLoadResult:
    """Load MAMP's public checkpoint into an :class:`AMR` (encoder only) or :class:`MAMP` (encoder,
    and decoder when present), in place.

    ``checkpoint``: a path to MAMP's ``checkpoint-*.pth`` (``{"model": state_dict, ...}``) or an
    already loaded dict. ``strict``: every encoder parameter must come from the checkpoint with a
    matching shape (else ``ValueError`` naming the key); decoder parameters are optional (MAMP's
    linear-probe checkpoints hold only the encoder + ``head``). Note MAMP's LayerNorm eps is 1e-5:
    build the model with ``ln_eps=1e-5`` to reproduce its features exactly.
    """
    if not isinstance(model, _MaskedSkeletonModel):
        raise TypeError(f"model: expected an AMR or MAMP model, got {type(model).__name__}")
    if isinstance(checkpoint, (str, os.PathLike)):
        checkpoint = torch.load(checkpoint, map_location="cpu", weights_only=True)
    mapped, ignored = mamp_state_dict_to_fastskel(checkpoint)
    own = model.state_dict()
    target_ok = lambda k: k in own and (k.startswith("encoder.") or isinstance(model, MAMP))  # noqa: E731
    use, rejected = take_matching(mapped, own, target_ok)
    ignored.extend(rejected)
    missing = [k for k in own if k not in use]
    if strict:
        require_all([k for k in missing if k.startswith("encoder.")])
    model.load_state_dict(use, strict=False)
    return MAMPLoadResult(sorted(use), missing, ignored)
