"""Subcommands ``plot`` and ``report`` of ``fastskel``: figures and tables across run folders.

    fastskel plot runs/amr runs/mamp --out runs/curves.png
    fastskel report runs/amr runs/mamp --out runs/results      # runs/results.md + .csv

This module only parses and wires; the work is in :mod:`fastskel.engine.plot` and
:mod:`fastskel.engine.report`.
"""
from __future__ import annotations

from pathlib import Path

__all__ = ["register"]


def cmd_plot(args) -> int:
    from .plot import plot_runs

    keys = [k.strip() for k in args.keys.split(",")] if args.keys else None
    labels = [k.strip() for k in args.labels.split(",")] if args.labels else None
    if labels and len(labels) != len(args.runs):
        raise ValueError(f"--labels: expected {len(args.runs)} names (one per run), got {len(labels)}")
    out = Path(args.out) if args.out else Path(args.runs[0]) / "curves.png"
    path = plot_runs(args.runs, out, keys=keys, labels=labels)
    print(f"[fastskel] wrote {path}")
    return 0


def cmd_report(args) -> int:
    from .report import format_csv, report_table, write_report

    if args.out:
        md, csvp, text = write_report(args.runs, args.out)
        print(text, end="")
        print(f"[fastskel] wrote {md} and {csvp}")
    else:
        cols, rows = report_table(args.runs)
        from .report import format_markdown

        print(format_csv(cols, rows) if args.csv else format_markdown(cols, rows), end="")
    return 0


def register(sub) -> None:
    from .cli import _guard

    p = sub.add_parser("plot", help="PNG learning curves (loss and its parts, lr, samples/s) of runs, overlaid")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders (holding log.jsonl)")
    p.add_argument("--out", help="PNG path (default: <first run>/curves.png)")
    p.add_argument("--keys", help="comma list of logged quantities to plot (default: all of them)")
    p.add_argument("--labels", help="comma list of legend names, one per run (default: folder names)")
    p.set_defaults(func=_guard(cmd_plot))

    p = sub.add_parser("report", help="one Markdown/CSV table across runs: method, data, epochs, loss, "
                                      "every evaluation's accuracy, wall time, device, versions")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders (holding log.jsonl)")
    p.add_argument("--out", help="write <OUT>.md and <OUT>.csv (default: print Markdown)")
    p.add_argument("--csv", action="store_true", help="print CSV instead of Markdown (without --out)")
    p.set_defaults(func=_guard(cmd_report))
