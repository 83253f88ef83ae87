"""One table across runs (``fastskel report RUN…``): the rows a paper's results section is written from.

A run is a folder with ``log.jsonl`` (written by ``fastskel pretrain`` and ``fastskel eval``). Each
row holds: ``run`` (folder), ``method``, ``preset``, ``data``, ``epochs`` (done / configured),
``iterations`` (last logged step), ``final_loss`` (the last ``train`` event's loss), one column per
evaluation ``<protocol> top-1`` (and ``top-5`` where recorded; the last evaluation of each protocol
wins, its data named when it differs from the pretraining data: transfer), ``wall_s``, ``device``
and ``versions``.

A run resumed (``--resume``, perhaps with a larger ``--epochs`` to extend it) has one *segment* per
process: from its ``config`` (fresh start) or ``resume`` event to the last pretraining event before
the next ``resume``. ``epochs`` is the epochs done over the epochs configured by the *latest*
segment (the ``resume`` event records the new length), and ``wall_s`` is the sum of the segments'
durations, so the idle time between an interrupted (or finished) run and its resume is not counted.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

from .plot import read_log, run_dir

__all__ = ["run_summary", "report_table", "format_markdown", "format_csv", "BASE_COLUMNS"]

BASE_COLUMNS = ["run", "method", "preset", "data", "epochs", "iterations", "final_loss"]
TAIL_COLUMNS = ["wall_s", "device", "versions"]


def run_summary(run) -> Dict[str, Any]:
    """The row of one run folder (values ``None`` where the log does not record them)."""
    d = run_dir(run)
    events = read_log(d)
    row: Dict[str, Any] = {k: None for k in BASE_COLUMNS + TAIL_COLUMNS}
    row["run"] = str(d)
    cfg = next((e for e in events if e.get("event") == "config"), None)
    if cfg is not None:
        extra = cfg.get("extra") or {}
        row["method"] = cfg.get("method")
        row["preset"] = extra.get("preset")
        row["data"] = extra.get("data")
        row["device"] = cfg.get("device") or (cfg.get("options") or {}).get("device")
        v = cfg.get("versions") or {}
        row["versions"] = " ".join(f"{k} {x}" for k, x in v.items()) or None
        configured = (cfg.get("config") or {}).get("epochs")
    else:
        configured = None
    for e in events:  # a resume may extend the run: the latest configured length wins
        if e.get("event") == "resume" and e.get("epochs") is not None:
            configured = e["epochs"]
    epochs_done = max((int(e["epoch"]) for e in events if e.get("event") == "epoch"), default=None)
    if epochs_done is not None or configured is not None:
        row["epochs"] = f"{epochs_done or 0}/{configured}" if configured is not None else str(epochs_done)
    steps = [int(e["step"]) for e in events if e.get("event") == "train" and "step" in e]
    row["iterations"] = max(steps) if steps else None
    last_train = next((e for e in reversed(events) if e.get("event") == "train" and "loss" in e), None)
    row["final_loss"] = float(last_train["loss"]) if last_train else None
    row["wall_s"] = _wall_seconds(events)
    if cfg is None:  # an eval-only folder (e.g. a random-init baseline): the data it was evaluated on
        row["data"] = next((e.get("data") for e in events if e.get("event") == "eval"), None)
    evals: Dict[str, Any] = {}
    for e in events:
        if e.get("event") != "eval" or e.get("top1") is None:
            continue
        name = str(e.get("protocol"))
        if e.get("protocol") == "semi" and e.get("fraction") is not None:
            name = f"semi {100 * float(e['fraction']):g}%"
        if e.get("data") and row["data"] and e.get("data") != row["data"]:
            name = f"{name} on {e['data']}"
        evals[f"{name} top-1"] = float(e["top1"])
        if e.get("top5") is not None:
            evals[f"{name} top-5"] = float(e["top5"])
    if row["method"] is None:
        row["method"] = next((e.get("method") for e in events if e.get("event") == "eval"), None)
    row["evals"] = evals
    return row


_TRAIN_EVENTS = ("config", "resume", "train", "epoch", "checkpoint")


def _wall_seconds(events: Sequence[Dict[str, Any]]):
    """Σ over segments (a ``config``/``resume`` event to the last pretraining event before the next
    ``resume``) of last − first time; ``None`` with fewer than two timed pretraining events."""
    segments: List[List[float]] = []
    for e in events:
        if e.get("event") not in _TRAIN_EVENTS or "time" not in e:
            continue
        if e["event"] in ("config", "resume") or not segments:
            segments.append([])
        segments[-1].append(float(e["time"]))
    spans = [max(s) - min(s) for s in segments if len(s) > 1]
    return round(sum(spans), 1) if spans else None


def report_table(runs: Sequence) -> Tuple[List[str], List[Dict[str, Any]]]:
    """``(columns, rows)``: one row per run, an evaluation column for every evaluation any run has."""
    if not runs:
        raise ValueError("runs: expected at least one run folder")
    rows = [run_summary(r) for r in runs]
    eval_cols: List[str] = []
    for r in rows:
        for k in r["evals"]:
            if k not in eval_cols:
                eval_cols.append(k)
    out = []
    for r in rows:
        flat = {k: r[k] for k in BASE_COLUMNS}
        flat.update({k: r["evals"].get(k) for k in eval_cols})
        flat.update({k: r[k] for k in TAIL_COLUMNS})
        out.append(flat)
    return BASE_COLUMNS + eval_cols + TAIL_COLUMNS, out


def _cell(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1 or abs(v) >= 1e4 else f"{v:.2f}"
    return str(v)


def format_markdown(columns: List[str], rows: List[Dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(_cell(r[c]).replace("|", "/") for c in columns) + " |")
    return "\n".join(lines) + "\n"


def format_csv(columns: List[str], rows: List[Dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for r in rows:
        w.writerow(["" if r[c] is None else r[c] for c in columns])
    return buf.getvalue()


def write_report(runs: Sequence, out) -> Tuple[Path, Path, str]:
    """Write ``<out>.md`` and ``<out>.csv`` (``out`` without suffix); ``(md, csv, markdown text)``."""
    cols, rows = report_table(runs)
    base = Path(out)
    if base.suffix in (".md", ".csv"):
        base = base.with_suffix("")
    base.parent.mkdir(parents=True, exist_ok=True)
    md = format_markdown(cols, rows)
    mdp, csvp = base.with_suffix(".md"), base.with_suffix(".csv")
    mdp.write_text(md)
    csvp.write_text(format_csv(cols, rows))
    return mdp, csvp, md
