"""``fastskel stream``: run a trained or exported model over a keypoint stream, one prediction per
stride (JSON lines or CSV). Inputs: see :mod:`fastskel.stream.sources`; rules: see
:mod:`fastskel.stream.action_stream`.

A frame that cannot be read or is rejected (malformed JSON, wrong V/C, NaN, decreasing time) is
reported as one line ``fastskel stream: <where>: <why>`` on standard error and skipped; the stream
goes on. ``--realtime`` replays the input at its frame rate (timestamps, or ``--fps``) and
reports whether processing keeps up: frames late (processed after the next frame was due), mean
and p99 processing time per frame and per prediction.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from typing import List

import numpy as np

__all__ = ["register", "cmd_stream", "run_stream"]

FIELDS = ("start", "end", "t_start", "t_end", "class", "name", "probability")

HELP = """Examples:
  fastskel stream --model runs/asma/linear.pt --input clip.npy
  fastskel stream --model model.onnx --input openpose_frames/ --window 48 --stride 8 --format csv
  my_pose_estimator | fastskel stream --model linear.pt --input - --smoothing 0.5

--input: a folder of per-frame OpenPose JSON, a .npy/.npz sequence (T, M, V, C) or (C, T, V, M),
or '-' for JSON lines on stdin, one frame per line: {"t": 0.033, "bodies": [[[x, y, z], ...], ...]}.
"""


def register(sub) -> None:
    p = sub.add_parser("stream", help="online recognition over a keypoint stream (OpenPose JSON, .npy/.npz, stdin)",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, metavar="FILE",
                   help="classifier file (fastskel eval linear|finetune --out), student.pt, supervised checkpoint, or .onnx")
    p.add_argument("--input", required=True, metavar="SRC", help="OpenPose JSON folder, .npy/.npz, or - (stdin)")
    p.add_argument("--window", type=int, help="frames per prediction (default: the model's clip length T)")
    p.add_argument("--stride", type=int, help="frames between predictions (default: window // 4)")
    p.add_argument("--missing", choices=("hold", "interpolate", "zero"), default="hold",
                   help="dropped frames: hold the last, interpolate, or zeros (default: hold)")
    p.add_argument("--max-gap", type=int, default=10, help="longest gap hold/interpolate fill (default: 10)")
    p.add_argument("--smoothing", type=float, help="EMA factor α of the probabilities (default: none)")
    p.add_argument("--fps", type=float, help="nominal frame rate (default: the input's, else 30); with "
                                              "timestamps frames are resampled to it")
    p.add_argument("--format", choices=("jsonl", "csv"), default="jsonl", help="output format (default: jsonl)")
    p.add_argument("--output", metavar="FILE", help="write predictions here (default: stdout)")
    p.add_argument("--realtime", action="store_true", help="replay at the recording's frame rate, report keeping up")
    p.add_argument("--device", default="cpu", help="PyTorch device (default: cpu)")
    p.add_argument("--threads", type=int, help="intra-op threads (torch / onnxruntime)")
    p.set_defaults(func=cmd_stream)


def _err(msg: str) -> None:
    print(f"fastskel stream: {msg}", file=sys.stderr, flush=True)


def _pct(a: List[float], q: float) -> float:
    return float(np.percentile(np.asarray(a) * 1e3, q)) if a else float("nan")


def run_stream(args, stdin=None, out=None) -> dict:
    """The work of ``fastskel stream`` (``args`` as parsed); returns the summary dict."""
    from .action_stream import ActionStream
    from .model import load_stream_model
    from .sources import open_source, source_fps

    kw = {"threads": args.threads} if args.threads is not None else {}
    if not str(args.model).lower().endswith(".onnx"):
        kw["device"] = args.device
    model = load_stream_model(args.model, **kw)
    meta = model.meta
    window = args.window or meta.T
    stride = args.stride or max(1, window // 4)
    if window > meta.T:
        _err(f"note: --window {window} > the model's clip length T={meta.T}: windows are fed unpadded (exact for "
             f"methods that resample their valid frames)")
    fps = args.fps or source_fps(args.input)
    stream = ActionStream(model, window, stride, missing=args.missing, max_gap=args.max_gap,
                          smoothing=args.smoothing, fps=fps)
    frames = open_source(args.input, meta, stdin)
    fh = open(args.output, "w", newline="") if args.output else (out or sys.stdout)
    writer = csv.DictWriter(fh, FIELDS) if args.format == "csv" else None
    if writer is not None:
        writer.writeheader()
    nominal = fps or 30.0
    stats = {"frames": 0, "predictions": 0, "skipped": 0, "late": 0}
    push_s: List[float] = []
    pred_s: List[float] = []
    t_wall0, t_rec0 = None, None

    def emit(p) -> None:
        stats["predictions"] += 1
        pred_s.append(p.seconds)
        d = p.to_dict()
        if writer is not None:
            writer.writerow(d)
        else:
            fh.write(json.dumps(d) + "\n")
        fh.flush()

    try:
        for i, (kp, t, where, error) in enumerate(frames):
            if error is not None:
                stats["skipped"] += 1
                _err(f"{where}: {error}")
                continue
            due = None
            if args.realtime:
                rec = t if t is not None else stats["frames"] / nominal
                if t_wall0 is None:
                    t_wall0, t_rec0 = time.perf_counter(), rec
                due = t_wall0 + (rec - t_rec0)
                wait = due - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
            t0 = time.perf_counter()
            try:
                p = stream.push(kp, t)
            except (ValueError, TypeError) as e:
                stats["skipped"] += 1
                _err(f"{where}: {e}")
                continue
            done = time.perf_counter()
            push_s.append(done - t0)
            stats["frames"] += 1
            if due is not None and done > due + 1.0 / nominal:
                stats["late"] += 1
            if p is not None:
                emit(p)
        for p in stream.flush():
            emit(p)
    finally:
        if args.output:
            fh.close()
    stats.update(push_ms_mean=float(np.mean(push_s) * 1e3) if push_s else float("nan"), push_ms_p99=_pct(push_s, 99),
                 window_ms_mean=float(np.mean(pred_s) * 1e3) if pred_s else float("nan"),
                 window_ms_p99=_pct(pred_s, 99), fps=nominal, window=window, stride=stride)
    line = (f"[fastskel] stream: {stats['frames']} frames, {stats['predictions']} predictions "
            f"(window {window}, stride {stride}), {stats['skipped']} skipped; per frame {stats['push_ms_mean']:.2f} ms "
            f"mean / {stats['push_ms_p99']:.2f} ms p99, per window {stats['window_ms_mean']:.2f} ms mean / "
            f"{stats['window_ms_p99']:.2f} ms p99")
    if args.realtime:
        stats["keeps_up"] = stats["late"] == 0
        line += (f"; realtime at {nominal:g} fps: {stats['late']} frames late -> "
                 f"{'keeps up' if stats['keeps_up'] else 'does NOT keep up'}")
    print(line, file=sys.stderr, flush=True)
    return stats


def cmd_stream(args) -> int:
    from fastskel.engine.checkpoint import CheckpointError

    try:
        run_stream(args)
    except (ValueError, TypeError, FileNotFoundError, ImportError, CheckpointError, OSError) as e:
        _err(f"error: {e}")
        return 2
    return 0
