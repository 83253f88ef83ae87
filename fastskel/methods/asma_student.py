"""ASMa-Distill's student and objective (seed 001 §3.5, eq. 13–14): a small ST-GCN + linear head,
the temperature-scaled KL loss, the stream ensemble ("3s") and the inference cost report. The
training loop is :func:`fastskel.engine.distill.distill`.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from fastskel.graph import SkeletonGraph
from fastskel.nn.stgcn import STGCN
from fastskel.ops import _checks as chk

from .asma import STREAMS, ASMa, prepare_input
from .asma_aligner import ASMaAligner

__all__ = ["ASMaStudent", "build_student", "distillation_loss", "ensemble_logits", "model_cost"]


# ============================================================================ distillation
class _StudentEncoder(nn.Module):
    """The student's ST-GCN behind the method interface (``encode``, ``feature_dim``)."""

    def __init__(self, stgcn: STGCN, num_frames: int, stream: str, graph: SkeletonGraph, channels: str = ""):
        super().__init__()
        self.stgcn = stgcn
        self.num_frames, self.stream, self.graph, self.channels = num_frames, stream, graph, channels
        self.feature_dim = stgcn.out_dim

    def encode(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
        x = prepare_input(x, lengths, self.num_frames, self.stream, self.graph, self.stgcn.in_channels,
                          self.channels or None)
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
                 in_channels: int = 3, dropout: float = 0.0, backend: Optional[str] = None, channels: str = ""):
        super().__init__()
        g = SkeletonGraph.get(graph)
        chk.choice(stream, "stream", STREAMS)
        self.hparams = dict(num_classes=num_classes, depth=depth, hidden_channels=hidden_channels, out_dim=out_dim,
                            num_frames=num_frames, stream=stream, in_channels=in_channels, dropout=dropout,
                            channels=channels)
        stgcn = STGCN(in_channels, hidden_channels, out_dim, depth, graph=g, dropout=dropout, backend=backend)
        self.encoder = _StudentEncoder(stgcn, num_frames, stream, g, channels)
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
              "stream": c.stream, "graph": asma.graph, "in_channels": c.in_channels, "channels": c.channels, **kw}
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
