"""``Supervised``: a plain supervised skeleton classifier — the simplest method the engine trains.

It exists to exercise the engine end to end (pretraining loop, checkpoints, resume, DDP, the
evaluation protocols, export) before and beside the self-supervised methods, and as the
supervised baseline. Objective: cross-entropy of ``classifier(encode(x))`` against the labels.

Backbones (``backbone``):

- ``"stgcn"``: :class:`fastskel.nn.stgcn.STGCN` (st-gcn: spatial partition, edge importance,
  ``depth`` blocks from ``hidden`` to ``out_dim`` channels, temporal kernel ``kernel``,
  ``dropout``), per body, features averaged over time, joints and the non-empty bodies;
- ``"tiny"``: a small graph-free net on each body centred at its mean position: ``depth`` temporal
  ``Conv2d((kernel, 1))`` layers of width ``hidden`` with ReLU, a learnable ``V×V`` joint mixing
  after each, then a mean over the valid frames, joints and non-empty bodies
  (``feature_dim = hidden``). It has no BatchNorm and no
  dropout, so its loss is a plain mean over samples: DDP on K ranks reproduces a single process on
  the same global batch exactly (the engine's test).
- ``"auto"`` (default): ``"stgcn"`` if importable, else ``"tiny"``; the resolved name is written
  back into ``method.config`` (so checkpoints rebuild the same network).

Contract extension: ``Supervised.uses_labels = True`` tells the engine to call
``forward(x, lengths, labels=y)``. ``encode`` gives the pooled features (``feature_dim``);
``classify`` the logits.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import torch
from torch import nn
import torch.nn.functional as F

from fastskel.data.channels import resolve_channels

__all__ = ["Supervised", "SupervisedConfig"]

BACKBONES = ("auto", "stgcn", "tiny")


def _stgcn_class():
    try:
        from fastskel.nn.stgcn import STGCN
    except ImportError:
        return None
    return STGCN


@dataclass
class SupervisedConfig:
    """Defaults: the PSTL/ASMa-width ST-GCN (hidden 16, 10 blocks, 256-d) trained as a classifier
    with a CPU-friendly schedule (not a paper recipe).

    ``hidden``/``depth``/``kernel``: first-stage width, number of blocks/layers and temporal kernel of
    either backbone; ``out_dim``/``dropout``: ST-GCN only; ``jitter``: std of Gaussian noise added to
    the valid coordinates in training (augmentation, drawn from torch's global RNG; 0 = off).
    """

    num_classes: int = 60
    in_channels: int = 3
    # channel layout: "xyz" | "xy" | "xy+score"; "" = from in_channels (3 → xyz, 2 → xy)
    channels: str = ""
    num_joints: int = 25
    graph: str = ""  # "" = the built-in graph with num_joints joints; else a name, file or graph mapping
    backbone: str = "auto"
    hidden: int = 16
    depth: int = 10
    kernel: int = 9
    out_dim: int = 256
    dropout: float = 0.0
    label_smoothing: float = 0.0
    jitter: float = 0.0
    # engine
    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    min_lr: float = 1e-5
    warmup_epochs: int = 2
    weight_decay: float = 1e-4
    optimizer: str = "adamw"
    betas: Tuple[float, float] = (0.9, 0.999)

    def __post_init__(self) -> None:
        for name in ("num_classes", "in_channels", "num_joints", "hidden", "depth", "kernel", "out_dim", "epochs",
                     "batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}: expected an int >= 1, got {v!r}")
        resolve_channels(self.channels, self.in_channels, where="channels")
        if self.num_classes < 2:
            raise ValueError(f"num_classes: expected >= 2, got {self.num_classes}")
        if self.kernel % 2 == 0:
            raise ValueError(f"kernel: expected an odd temporal kernel size, got {self.kernel}")
        if self.backbone not in BACKBONES:
            raise ValueError(f"backbone: expected one of {BACKBONES}, got {self.backbone!r}")
        if self.optimizer not in ("adamw", "adam"):
            raise ValueError(f"optimizer: expected 'adamw' or 'adam', got {self.optimizer!r}")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ValueError(f"dropout: expected a float in [0, 1), got {self.dropout}")
        if not float(self.jitter) >= 0.0:
            raise ValueError(f"jitter: expected a float >= 0, got {self.jitter}")
        if not 0.0 <= float(self.label_smoothing) < 1.0:
            raise ValueError(f"label_smoothing: expected a float in [0, 1), got {self.label_smoothing}")
        self.betas = tuple(float(b) for b in self.betas)


class _TinyBackbone(nn.Module):
    """Temporal convs + learnable joint mixing, no normalisation layers: ``(B, C, T, V) → (B, H, T, V)``."""

    def __init__(self, cfg: SupervisedConfig):
        super().__init__()
        v, h = cfg.num_joints, cfg.hidden
        self.convs = nn.ModuleList()
        self.mix = nn.ParameterList()
        c = cfg.in_channels
        for _ in range(cfg.depth):
            self.convs.append(nn.Conv2d(c, h, (cfg.kernel, 1), padding=(cfg.kernel // 2, 0)))
            self.mix.append(nn.Parameter(torch.eye(v) + 0.01 * torch.randn(v, v)))
            c = h
        self.out_channels = h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv, mix in zip(self.convs, self.mix):
            x = F.relu(torch.einsum("bctv,vw->bctw", conv(x), mix))
        return x


class Supervised(nn.Module):
    """Supervised classifier on ``(N, C, T, V, M)`` skeletons (see the module docstring)."""

    uses_labels = True

    def __init__(self, config: Optional[SupervisedConfig] = None):
        super().__init__()
        cfg = config if config is not None else SupervisedConfig()
        if not isinstance(cfg, SupervisedConfig):
            raise TypeError(f"config: expected a SupervisedConfig, got {type(cfg).__name__}")
        backbone = cfg.backbone
        stgcn = _stgcn_class()
        if backbone == "auto":
            backbone = "stgcn" if stgcn is not None else "tiny"
        if backbone == "stgcn" and stgcn is None:
            raise ValueError("backbone: 'stgcn' needs fastskel.nn.STGCN, which is not available in this "
                             "build; use backbone 'tiny'")
        self.config = dataclasses.replace(cfg, backbone=backbone)
        if backbone == "stgcn":
            from fastskel.graph import SkeletonGraph

            c = self.config
            self.backbone = stgcn(c.in_channels, c.hidden, c.out_dim, c.depth,
                                  graph=SkeletonGraph.get(c.graph) if c.graph else SkeletonGraph.for_joints(c.num_joints),
                                  dropout=c.dropout,
                                  temporal_kernel=c.kernel)
            self.feature_dim = int(self.backbone.out_dim)
        else:
            self.backbone = _TinyBackbone(self.config)
            self.feature_dim = self.backbone.out_channels
        self.classifier = nn.Linear(self.feature_dim, self.config.num_classes)

    # ------------------------------------------------------------------ contract
    def _features(self, x: torch.Tensor, lengths: Optional[torch.Tensor]) -> torch.Tensor:
        if x.dim() == 4:
            x = x.unsqueeze(-1)
        if x.dim() != 5:
            raise ValueError(f"x: expected (N, C, T, V, M) or (N, C, T, V), got shape {tuple(x.shape)}")
        n, c, t, v, m = x.shape
        if c != self.config.in_channels or v != self.config.num_joints:
            raise ValueError(f"x: expected C={self.config.in_channels}, V={self.config.num_joints}, "
                             f"got shape {tuple(x.shape)}")
        bodies = x.permute(0, 4, 1, 2, 3).reshape(n * m, c, t, v)
        present = bodies.detach().abs().flatten(1).amax(1).gt(0).reshape(n, m)
        present[:, 0] = True                                   # an all-zero action still has a body
        if self.config.backbone == "stgcn":
            f = self.backbone(bodies)                          # (B, out_dim), mean over time and joints
        else:
            has = (bodies != 0).any(1, keepdim=True).to(bodies.dtype)           # (B, 1, T, V) joint present
            center = (bodies * has).sum((2, 3), keepdim=True) / has.sum((2, 3), keepdim=True).clamp_min(1)
            h = self.backbone((bodies - center) * has)          # (B, H, T, V), each body centred
            if lengths is not None:
                L = lengths.to(h.device).clamp(min=1).repeat_interleave(m)
                keep = (torch.arange(t, device=h.device)[None, :] < L[:, None]).to(h.dtype)
                f = (h.mean(3) * keep[:, None, :]).sum(2) / L[:, None].to(h.dtype)
            else:
                f = h.mean(dim=(2, 3))
        f = f.reshape(n, m, -1)
        w = present.to(f.dtype)[..., None]
        return (f * w).sum(1) / w.sum(1)

    def encode(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Pooled features ``(N, feature_dim)`` (mean over valid frames, joints, non-empty bodies)."""
        return self._features(x, lengths)

    def classify(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Logits ``(N, num_classes)``."""
        return self.classifier(self._features(x, lengths))

    def forward(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None,
                labels: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        if labels is None:
            raise ValueError("labels: Supervised is trained with labels (the engine passes them since "
                             "Supervised.uses_labels is True), got None")
        if self.training and self.config.jitter > 0:
            noise = torch.randn_like(x) * self.config.jitter * (x != 0).to(x.dtype)
            if self.config.channels == "xy+score":  # jitter the coordinates, not the confidence
                noise[:, 2:] = 0
            x = x + noise
        logits = self.classify(x, lengths)
        loss = F.cross_entropy(logits.float(), labels, label_smoothing=float(self.config.label_smoothing))
        acc = (logits.detach().argmax(1) == labels).float().mean()
        return {"loss": loss, "acc": acc}
