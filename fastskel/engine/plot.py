"""PNG figures: learning curves of runs (``fastskel plot RUN…``) and an evaluation's confusion matrix.

matplotlib is optional (``pip install fastskel[plot]``): :func:`plot_confusion` returns ``None``
without it and :func:`plot_runs` raises ``ImportError`` saying how to install it.

Learning curves come from each run's ``log.jsonl`` ``"train"`` events (one every ``log_every``
iterations): one panel per logged quantity — ``loss`` and its parts (every other scalar the method
returns), ``lr`` and ``samples_per_s`` — with iterations on the x axis and one line per run, so
several runs are overlaid.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

__all__ = ["read_log", "run_dir", "plot_runs", "plot_confusion", "have_matplotlib"]

_SKIP = {"event", "time", "step", "epoch"}


def have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def run_dir(run) -> Path:
    """A run folder (holding ``log.jsonl``) from the folder itself or a file inside it."""
    p = Path(run)
    d = p if p.is_dir() else p.parent
    if not (d / "log.jsonl").exists():
        raise FileNotFoundError(f"run: no log.jsonl in {d} (give a run folder written by fastskel pretrain/eval)")
    return d


def read_log(run) -> List[Dict[str, Any]]:
    """The events of ``<run>/log.jsonl`` (a truncated last line, from a killed run, is skipped)."""
    path = run_dir(run) / "log.jsonl"
    out = []
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                continue
            raise ValueError(f"run: {path} line {i + 1} is not JSON: {line[:80]!r}") from None
    return out


def plot_runs(runs: Sequence, out, keys: Optional[Sequence[str]] = None, labels: Optional[Sequence[str]] = None) -> Path:
    """Learning curves of ``runs`` overlaid, one panel per key, written to the PNG ``out``."""
    if not have_matplotlib():
        raise ImportError("plot: matplotlib is not installed (pip install 'fastskel[plot]')")
    series: List[Dict[str, List]] = []
    names = list(labels) if labels else []
    for i, r in enumerate(runs):
        d = run_dir(r)
        pts: Dict[str, List] = {}
        for ev in read_log(d):
            if ev.get("event") != "train" or "step" not in ev:
                continue
            for k, v in ev.items():
                if k not in _SKIP and isinstance(v, (int, float)) and not isinstance(v, bool):
                    pts.setdefault(k, []).append((ev["step"], float(v)))
        if not pts:
            raise ValueError(f"run: {d / 'log.jsonl'} holds no 'train' events to plot")
        series.append(pts)
        if len(names) <= i:
            names.append(d.name if d.name else str(d))
    found = sorted({k for s in series for k in s}, key=lambda k: (k != "loss", k in ("lr", "samples_per_s"), k))
    keys = list(keys) if keys else found
    missing = [k for k in keys if k not in found]
    if missing:
        raise ValueError(f"keys: {missing} not logged by these runs; logged: {found}")
    plt = _pyplot()
    ncol = min(3, len(keys))
    nrow = (len(keys) + ncol - 1) // ncol
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.5 * ncol, 3.2 * nrow), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        for name, s in zip(names, series):
            if key in s:
                xs, ys = zip(*s[key])
                ax.plot(xs, ys, label=name, linewidth=1.4)
        ax.set_title(key)
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
        if key == "lr":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def plot_confusion(report: Dict[str, Any], out) -> Optional[Path]:
    """Row-normalised confusion matrix (true class rows) as a PNG; ``None`` without matplotlib."""
    if not have_matplotlib():
        return None
    import numpy as np

    plt = _pyplot()
    conf = np.asarray(report["confusion"], dtype=float)
    rows = conf.sum(1, keepdims=True)
    norm = np.divide(conf, rows, out=np.zeros_like(conf), where=rows > 0)
    k = conf.shape[0]
    size = min(16.0, 2.5 + 0.3 * k)
    fig, ax = plt.subplots(figsize=(size, size))
    im = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    if k <= 40:
        names = report.get("class_names") or [str(i) for i in range(k)]
        ax.set_xticks(range(k), names, rotation=90, fontsize=7)
        ax.set_yticks(range(k), names, fontsize=7)
    if k <= 15:
        for t in range(k):
            for p in range(k):
                ax.text(p, t, str(int(conf[t, p])), ha="center", va="center", fontsize=7,
                        color="white" if norm[t, p] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"top-1 {report['top1']:.2f}%  ({report['num_samples']} samples)")
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
