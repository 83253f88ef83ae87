"""Classification metrics of an evaluation: top-k accuracy, per-class accuracy, confusion matrix,
and the files they are written to (``<protocol>_metrics.json``, ``<protocol>_per_class.csv``,
``<protocol>_confusion.csv``, and ``<protocol>_confusion.png`` when matplotlib is installed).

Conventions (the ones of st-gcn / PYSKL's ``top_k_accuracy`` and ``confusion_matrix``):

- ``top-k = 100 · mean_i [y_i ∈ the k highest scores of sample i]``; ``k`` is capped at the
  number of classes, so with ≤ 5 classes top-5 is 100 %. Ties are broken by ``torch.topk``.
- ``confusion[t, p]`` counts test samples of true class ``t`` predicted as ``p`` (rows: truth);
  its entries sum to the test-set size.
- per-class accuracy of class ``c`` = ``confusion[c, c] / Σ_p confusion[c, p]`` in percent (NaN
  for a class absent from the test set); *mean class accuracy* averages the classes present.
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch

__all__ = ["topk_accuracy", "confusion_matrix", "per_class_accuracy", "classification_report",
           "write_report", "format_summary", "class_names_of"]


def topk_accuracy(scores: torch.Tensor, labels: torch.Tensor, k: int = 1) -> float:
    """Top-``k`` accuracy in percent of ``scores`` ``(N, K)`` (``k`` capped at ``K``)."""
    if scores.dim() != 2 or scores.shape[0] != labels.shape[0]:
        raise ValueError(f"scores: expected (N, K) with N = {labels.shape[0]} labels, got {tuple(scores.shape)}")
    if labels.numel() == 0:
        return float("nan")
    k = max(1, min(int(k), scores.shape[1]))
    hit = (scores.topk(k, dim=1).indices == labels.view(-1, 1)).any(1)
    return 100.0 * float(hit.float().mean())


def confusion_matrix(pred: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """int64 ``(K, K)``: ``[true, predicted]`` counts."""
    idx = labels.long() * num_classes + pred.long()
    return torch.bincount(idx, minlength=num_classes * num_classes).view(num_classes, num_classes)


def per_class_accuracy(conf: torch.Tensor) -> List[float]:
    """``diag / row sum`` in percent per class (NaN for classes without test samples)."""
    rows = conf.sum(1)
    return [100.0 * float(conf[c, c]) / float(rows[c]) if rows[c] > 0 else float("nan")
            for c in range(conf.shape[0])]


def class_names_of(dataset, num_classes: int) -> List[str]:
    """The dataset's ``class_names`` (or ``meta["class_names"]``) when it has them, else ``class_<i>``."""
    names = getattr(dataset, "class_names", None)
    if names is None:
        names = (getattr(dataset, "meta", None) or {}).get("class_names")
    names = [str(n) for n in names] if names is not None else []
    return [names[i] if i < len(names) else f"class_{i}" for i in range(num_classes)]


def classification_report(scores: torch.Tensor, labels: torch.Tensor, num_classes: Optional[int] = None,
                          class_names: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Top-1, top-5, per-class accuracy and confusion matrix of ``scores`` ``(N, K)`` (JSON-ready)."""
    k = int(num_classes or scores.shape[1])
    if scores.shape[1] != k:
        raise ValueError(f"scores: expected {k} columns (num_classes), got {scores.shape[1]}")
    labels = labels.long().cpu()
    scores = scores.float().cpu()
    pred = scores.argmax(1)
    conf = confusion_matrix(pred, labels, k)
    per = per_class_accuracy(conf)
    names = list(class_names) if class_names is not None else [f"class_{i}" for i in range(k)]
    present = [a for a in per if not math.isnan(a)]
    return {
        "num_samples": int(labels.numel()), "num_classes": k,
        "top1": topk_accuracy(scores, labels, 1), "top5": topk_accuracy(scores, labels, 5),
        "mean_class_accuracy": sum(present) / len(present) if present else float("nan"),
        "class_names": names,
        "per_class": [{"class": c, "name": names[c], "support": int(conf[c].sum()),
                       "correct": int(conf[c, c]), "accuracy": per[c]} for c in range(k)],
        "confusion": conf.tolist(),
    }


def _json_safe(x):
    if isinstance(x, float) and math.isnan(x):
        return None
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_json_safe(v) for v in x]
    return x


def write_report(report: Dict[str, Any], out, prefix: str) -> Dict[str, Path]:
    """Write ``<prefix>_metrics.json``, ``_per_class.csv``, ``_confusion.csv`` (+ ``.png`` with
    matplotlib) into ``out``; the paths by kind."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / f"{prefix}_metrics.json", "per_class": out / f"{prefix}_per_class.csv",
             "confusion": out / f"{prefix}_confusion.csv"}
    paths["json"].write_text(json.dumps(_json_safe(report), indent=1) + "\n")
    with open(paths["per_class"], "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["class", "name", "support", "correct", "accuracy"])
        for r in report["per_class"]:
            acc = "" if math.isnan(r["accuracy"]) else f"{r['accuracy']:.4f}"
            w.writerow([r["class"], r["name"], r["support"], r["correct"], acc])
    names = report["class_names"]
    with open(paths["confusion"], "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["true\\pred"] + names)
        for name, row in zip(names, report["confusion"]):
            w.writerow([name] + row)
    from .plot import plot_confusion

    png = plot_confusion(report, out / f"{prefix}_confusion.png")
    if png is not None:
        paths["png"] = png
    return paths


def format_summary(report: Dict[str, Any], worst: int = 5) -> str:
    """Terminal lines: top-1/top-5/mean class accuracy and the ``worst`` classes."""
    lines = [f"  top-1 {report['top1']:.2f}%  top-5 {report['top5']:.2f}%  mean class accuracy "
             f"{report['mean_class_accuracy']:.2f}%  ({report['num_samples']} test samples, "
             f"{report['num_classes']} classes)"]
    rows = [r for r in report["per_class"] if r["support"] > 0]
    rows.sort(key=lambda r: (r["accuracy"], r["class"]))
    if rows:
        lines.append("  lowest classes: " + ", ".join(
            f"{r['name']} {r['accuracy']:.1f}% ({r['correct']}/{r['support']})" for r in rows[:worst]))
    return "\n".join(lines)
