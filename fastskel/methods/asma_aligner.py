"""ASMa's evaluation head: bi-directional cross-attention feature alignment + linear classifier
(seed 001 §3.4, eq. 10–12). The loop that trains it is :func:`fastskel.engine.align.fit_aligner`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from fastskel.nn.attention import MultiheadCrossAttention
from fastskel.ops import _checks as chk

from .asma import ASMa

__all__ = ["AlignerConfig", "ASMaAligner"]


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
