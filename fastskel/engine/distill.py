"""The ASMa-Distill training loop (seed 001 §3.5; moved from ``fastskel.methods.asma``): a frozen
teacher's logits supervise a small ST-GCN student through
:func:`fastskel.methods.asma_student.distillation_loss` (``KL(softmax(t/τ) ‖ softmax(s/τ))·τ²``).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
from torch import nn

from fastskel.methods.asma import ASMa
from fastskel.methods.asma_aligner import ASMaAligner
from fastskel.methods.asma_student import ASMaStudent, build_student, distillation_loss, model_cost
from fastskel.ops import _checks as chk

from .align import accuracy, batch_loader, fit_aligner

__all__ = ["distill"]


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
        fit_aligner(teacher, train, teacher_epochs, batch_size, teacher_lr, dev, seed)
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
    loader = batch_loader(train, batch_size, True, seed)
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
        rep["top1"] = accuracy(student, test, batch_size, dev)
        rep["teacher_top1"] = accuracy(teacher, test, batch_size, dev)
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

