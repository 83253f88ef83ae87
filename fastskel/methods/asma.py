"""ASMa: Asymmetric Spatio-temporal Masking (seeds 000, 001; docs/design.md §5.2), end to end.

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

    Masking treats every body as its own sequence (``(N·M, C, T, V)``, docs/design.md §2). After the resize
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
    summed, mean over T', linear classifier (eq. 12) (:mod:`.asma_aligner`; its training loop is
    :func:`fastskel.engine.align.fit_aligner`). ``mode="linear"``: encoders frozen (eval
    mode, no gradient); ``mode="finetune"``: end to end.

Distillation (:func:`fastskel.engine.distill.distill`; student and loss in :mod:`.asma_student`)
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
import importlib
from dataclasses import dataclass
from typing import Any, ClassVar, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from fastskel.data.channels import resolve_channels
from fastskel.data.transforms import pstl_augment, resample, to_bone, to_motion
from fastskel.graph import SkeletonGraph
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


def to_stream(x: torch.Tensor, stream: str, graph: Optional[SkeletonGraph] = None,
              channels: Optional[str] = None) -> torch.Tensor:
    """Joint / bone / motion stream of ``x`` ``(N, C, T, V[, M])``.

    bone: ``x[..., v, :] − x[..., parent(v), :]`` (:func:`fastskel.data.transforms.to_bone`; 0 at
    the centre); motion: ``x[:, :, t+1] − x[:, :, t]``, last frame 0
    (:func:`fastskel.data.transforms.to_motion` with every frame valid). ``channels="xy+score"``:
    the score channel is averaged over the two joints / frames instead (PYSKL).
    """
    chk.choice(stream, "stream", STREAMS)
    if stream == "joint":
        return x
    if stream == "motion":
        full = torch.full((x.shape[0],), x.shape[2], dtype=torch.int64, device=x.device)
        return to_motion(x, full, channels=channels)
    return to_bone(x, _graph(graph, x.shape[3]), channels=channels)


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
                  graph: SkeletonGraph, in_channels: int = 3, channels: Optional[str] = None) -> torch.Tensor:
    """Validate, resize the valid frames to ``num_frames`` and build the stream → ``(N, C, T, V, M)``.

    ``lengths=None`` and ``T == num_frames``: the input is taken as already resized (exportable)."""
    x = _as_actions(x, in_channels, graph.V)
    L = chk.lengths(lengths, x)
    if L is not None or x.shape[2] != num_frames:
        if L is None:
            L = _valid_lengths(x)
        x = resample(x, torch.zeros_like(L), L, num_frames)
    return to_stream(x, stream, graph, channels)


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
        return prepare_input(x, lengths, cfg.num_frames, cfg.stream, self.graph, cfg.in_channels,
                             cfg.channels or None)

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


# ============================================================================ the rest of ASMa
# The aligner (evaluation head) and the distillation student live in their own modules; the loops
# that train them in fastskel.engine (align.fit_aligner, distill.distill). Their names stay
# importable from here, resolved on first access (PEP 562) so importing this module never imports
# the engine.
_MOVED = {
    "AlignerConfig": "fastskel.methods.asma_aligner", "ASMaAligner": "fastskel.methods.asma_aligner",
    "ASMaStudent": "fastskel.methods.asma_student", "build_student": "fastskel.methods.asma_student",
    "distillation_loss": "fastskel.methods.asma_student", "ensemble_logits": "fastskel.methods.asma_student",
    "model_cost": "fastskel.methods.asma_student",
    "distill": "fastskel.engine.distill",
}


def __getattr__(name: str):
    if name in _MOVED:
        value = getattr(importlib.import_module(_MOVED[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_MOVED))
