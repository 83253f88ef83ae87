"""ASMa: Asymmetric Spatio-temporal Masking (seeds 000, 001; SPEC §5), end to end.

Pretraining (:class:`ASMa`, Algorithm 1 of seed 001, base = PSTL)
    A raw batch ``(N, C, T, V, M)`` is resized on its device to ``num_frames`` (=50) frames: the
    valid frames ``[0, L)`` of each action, linearly resampled (PSTL's preprocessing), then turned
    into the configured ``stream`` (joint / bone / motion, :func:`to_stream`). Each encoder
    ``k ∈ {θ, φ}`` sees three streams, each from its own random augmentation
    (:func:`augment` = :func:`fastskel.data.transforms.pstl_augment`: reflect pad-crop in time,
    shear, rotation, left/right flip; one batched call for all six views):

    - anchor ``x``;
    - joint-masked ``x_j``: θ — HDSM, φ — LDSM (:func:`fastskel.ops.degree_joint_mask`, n = 9);
    - frame-masked ``x_m``: θ — LMTM, φ — HMTM (:func:`fastskel.ops.motion_frame_mask`, k = 10).

    Masking treats every body as its own sequence (``(N·M, C, T, V)``, SPEC §2). After the resize
    all ``num_frames`` frames of a body are "valid" (``lengths=None``): an absent (all-zero) body
    has zero motion everywhere and its masked frames/joints are zero anyway, so no body needs a
    special case (this is the documented choice for empty bodies).

    Encoders: two :class:`~fastskel.nn.stgcn.STGCN` (hidden 16, 10 blocks, 256-d, spatial graph,
    edge importance). Projector (shared by both encoders, PSTL / official Barlow Twins):
    ``Linear(256→6144, no bias)-BN-ReLU-Linear(6144→6144, no bias)-BN-ReLU-Linear(6144→6144, no bias)``.
    Loss: ``L = Σ_k BT(Z^k, Z_j^k) + BT(Z^k, Z_m^k)`` with
    :class:`~fastskel.nn.losses.BarlowTwinsLoss` (λ = 2e-4, "batchnorm" normalisation as PSTL;
    DDP-aware). Optimiser (engine): Adam lr 5e-3, wd 1e-5, warmup 10, cosine, 150 epochs, batch 128.

    ``batched_streams=True`` (default) runs the three streams of an encoder as one STGCN forward on
    the concatenated ``3N`` batch and the projector once on all ``6N`` embeddings. In train mode
    BatchNorm statistics are then those of the union of the streams instead of each stream's own
    (PSTL runs the streams separately); in eval mode both give the same numbers (tested).
    ``batched_streams=False`` reproduces the six sequential forwards.

Evaluation
    :meth:`ASMa.encode` = the concatenation of both encoders' pooled features, ``(N, 512)``
    (deterministic: valid frames resized, no augmentation/masking) — a simple, aligner-free feature
    for the engine's linear probe / kNN. The paper's evaluation head is :class:`ASMaAligner`:
    per-frame features ``h^θ, h^φ`` ``(N, T', 256)`` (before temporal pooling, bodies averaged),
    bi-directional 4-head cross-attention (``h^θ`` attends to ``h^φ`` and vice versa, eq. 10–11),
    summed, mean over T', linear classifier (eq. 12). ``mode="linear"``: encoders frozen (eval
    mode, no gradient); ``mode="finetune"``: end to end.

Distillation (:func:`distill`)
    A frozen teacher (an :class:`ASMaAligner`, anything with ``logits(x, lengths)``, or a bare
    :class:`ASMa` — then a linear-probed aligner is trained first on the labels, which is the
    paper's recommended LP teacher) supervises a 5-block ST-GCN student (:class:`ASMaStudent`)
    with ``KL(softmax(t/τ) ‖ softmax(s/τ))·τ²`` (eq. 13–14, τ = 8); the student itself uses no
    labels. Streams joint / bone / motion are trained separately (``stream=``) and combined by
    :func:`ensemble_logits` ("3s").

Limitations / decisions (no public ASMa code): augmentations are PSTL's (parameters drawn per
action, PSTL draws one set per batch); the bone stream uses the graph's BFS parents (2s-AGCN
pairs for NTU-25) and the motion stream is the frame difference (last frame 0), both computed
after the resize to ``num_frames``. With
``lengths=None`` and ``T == num_frames`` the input is taken as already resized (no valid-length
detection; this keeps the exported student graph free of data-dependent indexing).
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from fastskel.data.channels import resolve_channels
from fastskel.data.transforms import pstl_augment, resample, to_bone, to_motion
from fastskel.graph import SkeletonGraph
from fastskel.nn.attention import MultiheadCrossAttention
from fastskel.nn.losses import BarlowTwinsLoss
from fastskel.nn.stgcn import STGCN
from fastskel.ops import _checks as chk
from fastskel.ops import degree_joint_mask, motion_frame_mask

from ._backend import BackendMixin

__all__ = [
    "ASMa", "ASMaConfig", "ASMaAligner", "AlignerConfig", "ASMaStudent", "STREAMS", "augment",
    "build_projector", "build_student", "distill", "distillation_loss", "ensemble_logits", "to_stream",
    "model_cost",
]

STREAMS = ("joint", "bone", "motion")


# ============================================================================ config
@dataclass
class ASMaConfig:
    """ASMa pretraining (paper defaults). ``backend`` selects the ops backend of every op.

    ``lambd`` (Barlow Twins' redundancy weight) belongs to the projector width: the paper's 2e-4 at
    D = 6144 is λ·D ≈ 1.2. A narrow projector needs a proportionally larger λ — with λ = 2e-4 at
    D = 64 the redundancy term is ~1 % of the loss and the invariance term alone is minimised by a
    collapsed representation (the loss settles at the fully collapsed value 4·λ·D(D−1)).
    """

    # input
    in_channels: int = 3
    # channel layout: "xyz" | "xy" | "xy+score"; "" = from in_channels (3 → xyz, 2 → xy)
    channels: str = ""
    num_joints: int = 25
    graph: str = "ntu25"
    num_frames: int = 50
    stream: str = "joint"
    # encoders (PSTL ST-GCN)
    hidden_channels: int = 16
    depth: int = 10
    out_dim: int = 256
    dropout: float = 0.5
    edge_importance: bool = True
    # projector / loss
    projector_dims: Tuple[int, ...] = (6144, 6144, 6144)
    lambd: float = 2e-4
    normalize: str = "batchnorm"
    # masking (Algorithm 1); joint_mask_n None = round(9·V/25), at least 1 (the paper's 9 of NTU's
    # 25 joints, scaled to the rig's V)
    joint_mask_n: Optional[int] = None
    frame_mask_k: int = 10
    # augmentation (PSTL)
    padding_ratio: int = 6
    shear: float = 0.5
    flip_prob: float = 0.5
    batched_streams: bool = True
    backend: Optional[str] = None
    # engine (paper: Adam 5e-3, wd 1e-5, warmup 10, cosine, 150 epochs, batch 128)
    epochs: int = 150
    batch_size: int = 128
    lr: float = 5e-3
    min_lr: float = 0.0
    warmup_epochs: int = 10
    weight_decay: float = 1e-5
    optimizer: str = "adam"
    betas: Tuple[float, float] = (0.9, 0.999)

    # ``fastskel pretrain asma --preset small``: a CPU demo size (not a paper recipe): two 4-block
    # ST-GCN encoders (hidden 8, 32-d), projector 64-64-64 with λ scaled to it (λ·D ≈ 1.3), 32 frames.
    PRESETS: ClassVar[Dict[str, Dict[str, Any]]] = {
        "small": dict(hidden_channels=8, out_dim=32, depth=4, dropout=0.0, projector_dims=(64, 64, 64), lambd=2e-2,
                      num_frames=32, joint_mask_n=5, frame_mask_k=6, epochs=20, batch_size=32, lr=5e-3,
                      warmup_epochs=2),
    }

    def __post_init__(self) -> None:
        self.projector_dims = tuple(int(d) for d in self.projector_dims)
        self.betas = tuple(self.betas)
        chk.choice(self.stream, "stream", STREAMS)
        chk.choice(self.normalize, "normalize", ("batchnorm", "cosine"))
        for name in ("in_channels", "num_joints", "num_frames", "hidden_channels", "depth", "out_dim"):
            chk.integer(getattr(self, name), name, 1)
        resolve_channels(self.channels, self.in_channels, where="channels")
        if not self.projector_dims or min(self.projector_dims) < 1:
            raise ValueError(f"projector_dims: expected a non-empty tuple of ints >= 1, got {self.projector_dims}")
        if self.joint_mask_n is None:
            self.joint_mask_n = max(1, round(9 * self.num_joints / 25))
        chk.integer(self.joint_mask_n, "joint_mask_n", 0, self.num_joints,
                    what=f"(at most num_joints={self.num_joints})")
        chk.integer(self.frame_mask_k, "frame_mask_k", 0, self.num_frames - 1,
                    what=f"(below num_frames={self.num_frames})")
        chk.integer(self.padding_ratio, "padding_ratio", 1)
        if not 0.0 <= self.flip_prob <= 1.0:
            raise ValueError(f"flip_prob: expected a value in [0, 1], got {self.flip_prob}")


# ============================================================================ streams & augmentation
def _graph(name_or_graph, v: int) -> SkeletonGraph:
    g = SkeletonGraph.get(name_or_graph) if name_or_graph is not None else SkeletonGraph.for_joints(v)
    g.check_num_joints(v)
    return g


def to_stream(x: torch.Tensor, stream: str, graph: Optional[SkeletonGraph] = None) -> torch.Tensor:
    """Joint / bone / motion stream of ``x`` ``(N, C, T, V[, M])``.

    bone: ``x[..., v, :] − x[..., parent(v), :]`` (:func:`fastskel.data.transforms.to_bone`; 0 at
    the centre); motion: ``x[:, :, t+1] − x[:, :, t]``, last frame 0
    (:func:`fastskel.data.transforms.to_motion` with every frame valid).
    """
    chk.choice(stream, "stream", STREAMS)
    if stream == "joint":
        return x
    if stream == "motion":
        full = torch.full((x.shape[0],), x.shape[2], dtype=torch.int64, device=x.device)
        return to_motion(x, full)
    return to_bone(x, _graph(graph, x.shape[3]))


def augment(x: torch.Tensor, graph: SkeletonGraph, padding_ratio: int = 6, shear: float = 0.5,
            flip_prob: float = 0.5, generator: Optional[torch.Generator] = None,
            channels: Optional[str] = None) -> torch.Tensor:
    """PSTL's view augmentation of prepared actions ``(N, C, T, V, M)`` (all T frames valid):
    :func:`fastskel.data.transforms.pstl_augment` — reflect pad-crop (``T // padding_ratio`` frames),
    shear (``U(−shear, shear)``), PSTL's random rotation, left/right flip; drawn per action,
    bodies share the draw, zero bodies stay zero. Shear and rotation act on the spatial channels of
    ``channels`` (``None``: from C): 3-D for xyz, in the image plane for xy / xy+score (the score
    passes through)."""
    n, t = x.shape[0], x.shape[2]
    full = torch.full((n,), t, dtype=torch.int64, device=x.device)
    return pstl_augment(x, full, shear, padding_ratio, flip_prob, graph, generator=generator, channels=channels)


def _as_actions(x: torch.Tensor, in_channels: int, num_joints: int) -> torch.Tensor:
    chk.tensor(x, "x", shape_hint="(N, C, T, V, M) or (N, C, T, V)")
    if x.dim() == 4:
        x = x[..., None]
    if x.dim() != 5:
        raise ValueError(f"x: expected a 5-D (N, C, T, V, M) or 4-D (N, C, T, V) tensor, got shape {tuple(x.shape)}")
    n, c, t, v, m = x.shape
    if c != in_channels or v != num_joints:
        raise ValueError(f"x: expected C={in_channels} channels and V={num_joints} joints, got shape {tuple(x.shape)}")
    if min(n, t, m) == 0:
        raise ValueError(f"x: expected a non-empty batch, got shape {tuple(x.shape)}")
    return x


def _valid_lengths(x: torch.Tensor) -> torch.Tensor:
    n, _, t = x.shape[:3]
    nz = (x != 0).transpose(1, 2).reshape(n, t, -1).any(-1)
    return (nz.long() * torch.arange(1, t + 1, device=x.device)).amax(1)


def prepare_input(x: torch.Tensor, lengths: Optional[torch.Tensor], num_frames: int, stream: str,
                  graph: SkeletonGraph, in_channels: int = 3) -> torch.Tensor:
    """Validate, resize the valid frames to ``num_frames`` and build the stream → ``(N, C, T, V, M)``.

    ``lengths=None`` and ``T == num_frames``: the input is taken as already resized (exportable)."""
    x = _as_actions(x, in_channels, graph.V)
    L = chk.lengths(lengths, x)
    if L is not None or x.shape[2] != num_frames:
        if L is None:
            L = _valid_lengths(x)
        x = resample(x, torch.zeros_like(L), L, num_frames)
    return to_stream(x, stream, graph)


def _bodies(x: torch.Tensor) -> torch.Tensor:
    n, c, t, v, m = x.shape
    return x.permute(0, 4, 1, 2, 3).reshape(n * m, c, t, v)


def _actions(b: torch.Tensor, m: int) -> torch.Tensor:
    nm, c, t, v = b.shape
    return b.view(nm // m, m, c, t, v).permute(0, 2, 3, 4, 1)


def build_projector(in_dim: int, dims: Sequence[int]) -> nn.Sequential:
    """PSTL / Barlow Twins projector: ``[Linear(no bias)-BN-ReLU]×(len−1)``, last ``Linear(no bias)``."""
    sizes = [in_dim] + list(dims)
    layers: List[nn.Module] = []
    for i in range(len(sizes) - 2):
        layers += [nn.Linear(sizes[i], sizes[i + 1], bias=False), nn.BatchNorm1d(sizes[i + 1]), nn.ReLU(inplace=True)]
    layers.append(nn.Linear(sizes[-2], sizes[-1], bias=False))
    return nn.Sequential(*layers)


# ============================================================================ ASMa
class ASMa(BackendMixin, nn.Module):
    """ASMa pretraining model (see the module docstring). ``ASMa(ASMaConfig(...))``.

    ``forward(x, lengths=None, generator=None)`` → ``{"loss", "loss_theta_joint", "loss_theta_frame",
    "loss_phi_joint", "loss_phi_frame"}``; ``encode(x, lengths)`` → ``(N, 2·out_dim)``;
    ``sequence_features(x, lengths)`` → ``(h^θ, h^φ)`` each ``(N, T', out_dim)``.
    """

    ENCODERS = ("theta", "phi")
    # (joint mask high-degree?, frame mask largest-motion?) per encoder: Algorithm 1.
    MASKS = {"theta": (True, False), "phi": (False, True)}

    def __init__(self, config: Optional[ASMaConfig] = None):
        super().__init__()
        cfg = dataclasses.replace(config) if config is not None else ASMaConfig()
        self.config = cfg
        self.graph = _graph(cfg.graph, cfg.num_joints)
        kw = dict(in_channels=cfg.in_channels, hidden_channels=cfg.hidden_channels, out_dim=cfg.out_dim,
                  depth=cfg.depth, graph=self.graph, edge_importance=cfg.edge_importance, dropout=cfg.dropout,
                  backend=cfg.backend)
        self.encoder_theta = STGCN(**kw)
        self.encoder_phi = STGCN(**kw)
        self.projector = build_projector(cfg.out_dim, cfg.projector_dims)
        self.criterion = BarlowTwinsLoss(cfg.lambd, cfg.normalize, backend=cfg.backend)
        self.feature_dim = 2 * cfg.out_dim

    # -- utilities ------------------------------------------------------------------
    def encoder(self, name: str) -> STGCN:
        return self.encoder_theta if name == "theta" else self.encoder_phi

    def prepare(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
        cfg = self.config
        return prepare_input(x, lengths, cfg.num_frames, cfg.stream, self.graph, cfg.in_channels)

    def streams(self, x: torch.Tensor, generator: Optional[torch.Generator] = None
                ) -> Dict[str, Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Per encoder ``(anchor, x_j, x_m, joint_mask (N·M, V), frame_mask (N·M, T))`` of prepared
        actions ``x``: six independent augmentations (one batched call), then the encoder's masks."""
        cfg = self.config
        n, m = x.shape[0], x.shape[4]
        views = augment(x.repeat(6, 1, 1, 1, 1), self.graph, cfg.padding_ratio, cfg.shear, cfg.flip_prob,
                        generator, channels=cfg.channels or None).split(n)
        out = {}
        for i, name in enumerate(self.ENCODERS):
            high, largest = self.MASKS[name]
            anchor, vj, vm = views[3 * i], views[3 * i + 1], views[3 * i + 2]
            bj, jmask = degree_joint_mask(_bodies(vj), cfg.joint_mask_n, high=high, graph=self.graph,
                                          generator=generator, backend=cfg.backend)
            bm, fmask = motion_frame_mask(_bodies(vm), cfg.frame_mask_k, largest=largest, backend=cfg.backend)
            out[name] = (anchor, _actions(bj, m), _actions(bm, m), jmask, fmask)
        return out

    # -- pretraining -----------------------------------------------------------------
    def forward(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None,
                generator: Optional[torch.Generator] = None) -> Dict[str, torch.Tensor]:
        cfg = self.config
        x = self.prepare(x, lengths)
        n = x.shape[0]
        if n < 2:
            raise ValueError(f"x: expected a batch of at least 2 actions (Barlow Twins normalises over it), got {n}")
        streams = self.streams(x, generator)
        if cfg.batched_streams:
            feats = [self.encoder(k)(torch.cat(streams[k][:3])) for k in self.ENCODERS]   # 2 × (3N, D)
            z = self.projector(torch.cat(feats)).split(n)                                     # 6 × (N, P)
        else:
            z = [self.projector(self.encoder(k)(v)) for k in self.ENCODERS for v in streams[k][:3]]
        out: Dict[str, torch.Tensor] = {}
        total = 0.0
        for i, name in enumerate(self.ENCODERS):
            za, zj, zm = z[3 * i], z[3 * i + 1], z[3 * i + 2]
            lj, lm = self.criterion(za, zj), self.criterion(za, zm)
            out[f"loss_{name}_joint"], out[f"loss_{name}_frame"] = lj.detach(), lm.detach()
            total = total + lj + lm
        out["loss"] = total
        return out

    # -- evaluation ------------------------------------------------------------------
    def sequence_features(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None
                          ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Per-frame features before temporal pooling, ``(h^θ, h^φ)`` each ``(N, T', out_dim)``."""
        x = self.prepare(x, lengths)
        return (self.encoder_theta(x, return_sequence=True), self.encoder_phi(x, return_sequence=True))

    def encode(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``[pool(h^θ), pool(h^φ)]`` ``(N, 2·out_dim)`` (mean over frames, joints and bodies)."""
        x = self.prepare(x, lengths)
        return torch.cat([self.encoder_theta(x), self.encoder_phi(x)], dim=1)


# ============================================================================ aligner
def _feature_frames(asma: "ASMa") -> int:
    """T' of ``sequence_features``: ``num_frames`` through the encoder's temporal strides
    (odd kernel, 'same' padding: ``T → ⌊(T − 1)/s⌋ + 1`` per block)."""
    t = asma.config.num_frames
    for s in asma.encoder_theta.strides:
        t = (t - 1) // s + 1
    return t


@dataclass
class AlignerConfig:
    """Feature alignment training (paper: linear 150 epochs lr 1e-3; fine-tune lr 5e-3)."""

    num_classes: int = 60
    heads: int = 4
    mode: str = "linear"
    epochs: int = 150
    batch_size: int = 128
    lr: float = 1e-3
    min_lr: float = 0.0
    warmup_epochs: int = 0
    weight_decay: float = 0.0
    optimizer: str = "adam"
    betas: Tuple[float, float] = (0.9, 0.999)
    label_smoothing: float = 0.0
    feature_norm: bool = True

    def __post_init__(self) -> None:
        chk.choice(self.mode, "mode", ("linear", "finetune"))
        chk.integer(self.num_classes, "num_classes", 1)
        chk.integer(self.heads, "heads", 1)


class ASMaAligner(nn.Module):
    """Bi-directional cross-attention feature alignment + linear classifier (seed 001 §3.4, eq. 10–12).

    ``a^θ = MHA(Q=h^θ, K=V=h^φ)``, ``a^φ = MHA(Q=h^φ, K=V=h^θ)`` (4 heads, :class:`MultiheadCrossAttention`),
    ``h = mean_{T'}(a^θ + a^φ)``, ``logits = W·h + b``.

    ``feature_norm=True`` (default) standardises the encoders' per-frame features before the
    attention, per (frame position, channel) over the training samples:
    ``BatchNorm1d(T'·D, affine=False)`` on ``h^k`` flattened to ``(N, T'·D)``. In ``mode="linear"``
    the encoders are frozen, so these features are fixed and the statistics are cumulative
    (``momentum=None``): at evaluation they are the exact training-set mean/variance. In
    ``"finetune"`` the features move and the statistics are an exponential average (momentum 0.1).
    Why before the attention, per position: the frozen encoders' features can have a tiny
    between-sample variance next to a large shared offset and a per-frame-position pattern (a
    randomly initialised ST-GCN in eval mode shrinks its input by ~1/√3 per conv, so its output
    is ≈ the bias path: relative spread ~1e-4), and a normalisation *after* the trainable
    attention tracks a distribution that drifts during training — cumulative statistics of it are
    stale at evaluation and sent every sample to one class (the bug this layout fixes).
    ``feature_norm=False`` gives eq. 10–12 exactly. ``mode="linear"`` freezes both encoders
    (kept in eval mode, features computed without gradient); ``"finetune"`` trains everything.
    ``forward(x, lengths, labels)`` → ``{"loss", "acc"}`` (the engine's supervised contract,
    ``uses_labels = True``); without labels → logits. ``encode`` gives the pooled aligned feature.
    """

    uses_labels = True

    def __init__(self, asma: ASMa, num_classes: Optional[int] = None, mode: Optional[str] = None,
                 config: Optional[AlignerConfig] = None):
        super().__init__()
        if not isinstance(asma, ASMa):
            raise TypeError(f"asma: expected an ASMa model, got {type(asma).__name__}")
        cfg = dataclasses.replace(config) if config is not None else AlignerConfig()
        if num_classes is not None:
            cfg.num_classes = chk.integer(num_classes, "num_classes", 1)
        if mode is not None:
            cfg.mode = chk.choice(mode, "mode", ("linear", "finetune"))
        self.config = cfg
        self.asma = asma
        d = asma.config.out_dim
        self.frames = _feature_frames(asma)
        self.attn_theta = MultiheadCrossAttention(d, cfg.heads, backend=asma.config.backend)
        self.attn_phi = MultiheadCrossAttention(d, cfg.heads, backend=asma.config.backend)
        if cfg.feature_norm:
            momentum = None if cfg.mode == "linear" else 0.1
            self.norm_theta = nn.BatchNorm1d(self.frames * d, affine=False, momentum=momentum)
            self.norm_phi = nn.BatchNorm1d(self.frames * d, affine=False, momentum=momentum)
        else:
            self.norm_theta, self.norm_phi = nn.Identity(), nn.Identity()
        self.classifier = nn.Linear(d, cfg.num_classes)
        self.feature_dim = d
        self._apply_mode()

    def _apply_mode(self) -> None:
        frozen = self.config.mode == "linear"
        for p in self.asma.parameters():
            p.requires_grad_(not frozen)
        if frozen:
            self.asma.eval()

    def train(self, mode: bool = True) -> "ASMaAligner":
        super().train(mode)
        if self.config.mode == "linear":
            self.asma.eval()
        return self

    def encode(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.config.mode == "finetune"):
            ht, hp = self.asma.sequence_features(x, lengths)
        ht, hp = self.normalize(ht, hp)
        return (self.attn_theta(ht, hp) + self.attn_phi(hp, ht)).mean(dim=1)

    def normalize(self, ht: torch.Tensor, hp: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """The ``feature_norm`` standardisation of ``(h^θ, h^φ)`` ``(N, T', D)`` (identity when off)."""
        if not self.config.feature_norm:
            return ht, hp
        if ht.shape[1] != self.frames:
            raise ValueError(f"h: expected {self.frames} feature frames (num_frames={self.asma.config.num_frames}), "
                             f"got {ht.shape[1]}")
        n = ht.shape[0]
        return (self.norm_theta(ht.reshape(n, -1)).view_as(ht), self.norm_phi(hp.reshape(n, -1)).view_as(hp))

    def logits(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.classifier(self.encode(x, lengths))

    def forward(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None,
                labels: Optional[torch.Tensor] = None):
        logits = self.logits(x, lengths)
        if labels is None:
            return logits
        loss = F.cross_entropy(logits.float(), labels, label_smoothing=self.config.label_smoothing)
        return {"loss": loss, "acc": (logits.detach().argmax(1) == labels).float().mean()}


# ============================================================================ distillation
class _StudentEncoder(nn.Module):
    """The student's ST-GCN behind the method interface (``encode``, ``feature_dim``)."""

    def __init__(self, stgcn: STGCN, num_frames: int, stream: str, graph: SkeletonGraph):
        super().__init__()
        self.stgcn = stgcn
        self.num_frames, self.stream, self.graph = num_frames, stream, graph
        self.feature_dim = stgcn.out_dim

    def encode(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
        x = prepare_input(x, lengths, self.num_frames, self.stream, self.graph, self.stgcn.in_channels)
        return self.stgcn(x)

    forward = encode


class ASMaStudent(nn.Module):
    """ASMa-Distill student: a ``depth``-block ST-GCN (hidden 16) + linear classifier.

    Width: the 5-block sample of the ST-GCN schedule, ``16, 16, 32, 64, out_dim`` with
    ``out_dim = 4·hidden = 64`` by default (a 256-d last block alone would hold 590 k of the
    student's parameters): 126 k parameters per stream with 60 classes (0.38 M for three streams;
    the paper reports 0.54 M without giving the widths) vs 2.18 M for the teacher (2 encoders +
    aligner; the projector is pretraining-only), −94 %.

    ``logits(x, lengths=None)`` → ``(N, num_classes)``; same input handling as the teacher
    (:func:`prepare_input`). Has ``encoder`` / ``head`` like the engine's Classifier, so
    :func:`fastskel.engine.export.export_classifier` exports it as is.
    """

    def __init__(self, num_classes: int, depth: int = 5, hidden_channels: int = 16, out_dim: int = 64,
                 num_frames: int = 50, stream: str = "joint", graph: str | SkeletonGraph = "ntu25",
                 in_channels: int = 3, dropout: float = 0.0, backend: Optional[str] = None):
        super().__init__()
        g = SkeletonGraph.get(graph)
        chk.choice(stream, "stream", STREAMS)
        self.hparams = dict(num_classes=num_classes, depth=depth, hidden_channels=hidden_channels, out_dim=out_dim,
                            num_frames=num_frames, stream=stream, in_channels=in_channels, dropout=dropout)
        stgcn = STGCN(in_channels, hidden_channels, out_dim, depth, graph=g, dropout=dropout, backend=backend)
        self.encoder = _StudentEncoder(stgcn, num_frames, stream, g)
        self.head = nn.Linear(stgcn.out_dim, num_classes)

    def logits(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.head(self.encoder.encode(x, lengths))

    def forward(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.logits(x, lengths)


def build_student(teacher: nn.Module, num_classes: int, depth: int = 5, **kw) -> ASMaStudent:
    """A student matching the teacher's input (frames, stream, graph, hidden width)."""
    asma = teacher.asma if isinstance(teacher, ASMaAligner) else teacher
    if isinstance(asma, ASMa):
        c = asma.config
        kw = {"hidden_channels": c.hidden_channels, "out_dim": 4 * c.hidden_channels, "num_frames": c.num_frames,
              "stream": c.stream, "graph": asma.graph, "in_channels": c.in_channels, **kw}
    return ASMaStudent(num_classes, depth=depth, **kw)


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                      temperature: float = 8.0) -> torch.Tensor:
    """``KL(softmax(t/τ) ‖ softmax(s/τ))·τ²`` averaged over the batch (seed 001 eq. 13–14)."""
    tau = chk.positive_float(temperature, "temperature")
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student_logits: expected shape {tuple(teacher_logits.shape)} like teacher_logits, "
                         f"got {tuple(student_logits.shape)}")
    log_s = F.log_softmax(student_logits.float() / tau, dim=1)
    log_t = F.log_softmax(teacher_logits.float() / tau, dim=1)
    return F.kl_div(log_s, log_t, reduction="batchmean", log_target=True) * tau * tau


def ensemble_logits(logits: Sequence[torch.Tensor], weights: Optional[Sequence[float]] = None) -> torch.Tensor:
    """Score ensemble of per-stream logits ("3s": joint + bone + motion): ``Σ_s w_s·logits_s``."""
    if not logits:
        raise ValueError("logits: expected at least one stream's logits, got none")
    w = [1.0] * len(logits) if weights is None else list(weights)
    if len(w) != len(logits):
        raise ValueError(f"weights: expected {len(logits)} values (one per stream), got {len(w)}")
    return sum(wi * li.float() for wi, li in zip(w, logits))


def model_cost(model: nn.Module, sample: torch.Tensor) -> Dict[str, int]:
    """Inference parameters and FLOPs (papers' convention: 2 × MACs of Linear/Conv) of
    ``model.logits(sample)``; the pretraining projector (unused at inference) is not counted."""
    from fastskel.utils import count_flops

    params = int(sum(p.numel() for n, p in model.named_parameters() if "projector" not in n.split(".")))
    was = model.training
    model.eval()
    try:
        flops = int(count_flops(model, (sample,), method="logits"))
    finally:
        model.train(was)
    return {"params": params, "flops": flops}


def _loader(ds, batch_size: int, shuffle: bool, seed: int):
    from fastskel.data import make_loader

    return make_loader(ds, batch_size, shuffle=shuffle, seed=seed)


@torch.no_grad()
def _accuracy(model: nn.Module, ds, batch_size: int, device) -> float:
    was = model.training
    model.eval()
    hit = tot = 0
    for x, L, y in _loader(ds, batch_size, False, 0):
        pred = model.logits(x.to(device), L.to(device)).argmax(1).cpu()
        hit += int((pred == y).sum())
        tot += int(y.numel())
    model.train(was)
    return 100.0 * hit / max(tot, 1)


def _fit_aligner(aligner: ASMaAligner, ds, epochs: int, batch_size: int, lr: float, device, seed: int) -> None:
    params = [p for p in aligner.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    total = max(1, epochs * math.ceil(len(ds) / batch_size))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, total)
    aligner.train()
    loader = _loader(ds, batch_size, True, seed)
    for ep in range(epochs):
        if hasattr(loader, "sampler") and hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(ep)
        for x, L, y in loader:
            loss = aligner(x.to(device), L.to(device), labels=y.to(device))["loss"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()


def _device(device) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def distill(teacher: nn.Module, train, test=None, epochs: int = 150, batch_size: int = 128,
            temperature: float = 8.0, student_blocks: int = 5, lr: float = 5e-3, weight_decay: float = 1e-5,
            device: Any = "auto", out: Optional[str] = None, seed: int = 0, progress: bool = False,
            num_classes: Optional[int] = None, teacher_epochs: int = 30, teacher_lr: float = 1e-3,
            student: Optional[ASMaStudent] = None, **unused: Any) -> Dict[str, Any]:
    """Train a ``student_blocks``-block ST-GCN student from a frozen ASMa teacher (ASMa-Distill).

    Args:
        teacher: an :class:`ASMaAligner` (or any module with ``logits(x, lengths)``), or a bare
            :class:`ASMa` — then a linear-probed aligner (the paper's LP teacher) is trained first
            on ``train``'s labels for ``teacher_epochs`` (Adam ``teacher_lr``, cosine).
        train, test: datasets yielding ``(x, lengths, y)`` (labels of ``train`` are used only for
            that LP teacher; the distillation objective uses none).
        temperature: τ of ``KL(softmax(t/τ) ‖ softmax(s/τ))·τ²`` (8).
        lr, weight_decay, epochs, batch_size: Adam + cosine schedule of the student.
        out: directory where ``student.pt`` (``{"kind": "asma_student", "hparams", "model"}``) and
            ``distill.json`` (the report) are written.

    Returns a report dict: ``top1`` (student, on ``test``), ``teacher_top1``, ``kl_first_epoch``,
    ``kl_last_epoch``, params/FLOPs of teacher and student (one action, ``(1, C, T, V, M)``) and
    ``param_reduction`` (%), ``student`` (the trained module).
    """
    import json

    dev = _device(device)
    chk.integer(student_blocks, "student_blocks", 1)
    torch.manual_seed(seed)
    teacher = teacher.to(dev)
    if num_classes is None:
        num_classes = int(train.y.max()) + 1 if hasattr(train, "y") else None
    if isinstance(teacher, ASMa):
        if num_classes is None:
            raise ValueError("num_classes: expected an int when the teacher is a bare ASMa and train has no .y")
        teacher = ASMaAligner(teacher, num_classes, mode="linear").to(dev)
        _fit_aligner(teacher, train, teacher_epochs, batch_size, teacher_lr, dev, seed)
    if not hasattr(teacher, "logits"):
        raise TypeError(f"teacher: expected an ASMa, an ASMaAligner or a module with logits(x, lengths), "
                        f"got {type(teacher).__name__}")
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    if student is None:
        if num_classes is None:
            raise ValueError("num_classes: expected an int (the teacher's classes)")
        student = build_student(teacher, num_classes, depth=student_blocks)
    student = student.to(dev)

    opt = torch.optim.Adam(student.parameters(), lr=lr, weight_decay=weight_decay)
    loader = _loader(train, batch_size, True, seed)
    total = max(1, epochs * len(loader))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, total)
    history: List[float] = []
    t0 = time.perf_counter()
    for ep in range(epochs):
        if hasattr(loader, "sampler") and hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(ep)
        student.train()
        acc, cnt = 0.0, 0
        for x, L, _ in loader:
            x, L = x.to(dev), L.to(dev)
            with torch.no_grad():
                t_logits = teacher.logits(x, L)
            loss = distillation_loss(student.logits(x, L), t_logits, temperature)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            acc += float(loss.detach()) * x.shape[0]
            cnt += x.shape[0]
        history.append(acc / max(cnt, 1))
        if progress:
            print(f"[fastskel] distill epoch {ep + 1}/{epochs} kl {history[-1]:.4f}", flush=True)

    sample = train[0][0][None].to(dev)
    student.eval()
    rep: Dict[str, Any] = {"temperature": float(temperature), "student_blocks": int(student_blocks),
                           "epochs": int(epochs), "train_seconds": time.perf_counter() - t0,
                           "kl_history": history,
                           "kl_first_epoch": history[0] if history else None,
                           "kl_last_epoch": history[-1] if history else None}
    tc, sc = model_cost(teacher, sample), model_cost(student, sample)
    rep.update(teacher_params=tc["params"], teacher_flops=tc["flops"], student_params=sc["params"],
               student_flops=sc["flops"], param_reduction=100.0 * (1 - sc["params"] / tc["params"]))
    if test is not None and hasattr(test, "y"):
        rep["top1"] = _accuracy(student, test, batch_size, dev)
        rep["teacher_top1"] = _accuracy(teacher, test, batch_size, dev)
    if out is not None:
        o = Path(out)
        o.mkdir(parents=True, exist_ok=True)
        torch.save({"kind": "asma_student", "hparams": student.hparams,
                    "model": {k: v.cpu() for k, v in student.state_dict().items()}}, o / "student.pt")
        (o / "distill.json").write_text(json.dumps({k: v for k, v in rep.items()}, indent=2))
        rep["path"] = str(o / "student.pt")
    rep["student"] = student
    rep["teacher"] = teacher
    return rep
