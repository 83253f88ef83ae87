"""``fastskel prepare``: the data subcommand (wired into ``fastskel.cli`` via ``register``)."""
from __future__ import annotations

import argparse
import sys


def register(subparsers) -> None:
    p = subparsers.add_parser("prepare", help="convert raw datasets into training files",
                              description="Convert raw skeleton data into a training file.")
    p.add_argument("dataset", choices=["ntu", "pku", "openpose"],
                   help="raw dataset kind: ntu (NTU RGB+D .skeleton files), pku (PKU-MMD skeleton + label .txt), "
                        "openpose (a folder of clip folders of OpenPose per-frame .json)")
    p.add_argument("--raw", required=True, help="directory of the raw data")
    p.add_argument("--out", required=True, help="output file: .npz (ntu, pku; CTR-GCN layout) or .pkl (openpose; PYSKL)")
    p.add_argument("--benchmark", choices=["xsub", "xview", "xset"], help="ntu: train/test split (required)")
    p.add_argument("--split-file", help="pku: the official cross-subject.txt / cross-view.txt (required)")
    p.add_argument("--labels", help="openpose: CSV of clip,label[,split] (default: class folders <raw>/<class>/<clip>)")
    p.add_argument("--max-people", type=int, default=2, help="openpose: people kept per frame (default 2)")
    p.add_argument("--test-fraction", type=float, default=0.2,
                   help="openpose: per-class test fraction when the CSV has no split column (default 0.2)")
    p.add_argument("--skip-bad", action="store_true",
                   help="report and skip malformed files (listed at the end) instead of stopping at the first")
    p.add_argument("--max-frames", type=int, default=300, help="padded frame count T (default 300)")
    p.add_argument("--no-center", action="store_true", help="keep camera coordinates (default: CTR-GCN centring)")
    p.add_argument("--num-classes", type=int, default=None, help="one-hot width (default 60, or 120 if A>60 occurs)")
    p.add_argument("--threads", type=int, default=None, help="parser threads (default: all cores)")
    p.add_argument("--chunk", type=int, default=256, help="files parsed per chunk (bounds memory)")
    p.add_argument("--backend", choices=["auto", "cpp", "python"], default="auto", help="NTU parser")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_prepare)


def cmd_prepare(args: argparse.Namespace) -> int:
    from .ntu import NTUFormatError
    from .prepare import prepare_ntu

    def on_bad(err):
        print(f"skipping bad file: {err}", file=sys.stderr)

    try:
        if args.dataset == "pku":
            from .prepare_pose import prepare_pku

            if not args.split_file:
                raise ValueError("--split-file: pku needs the official cross-subject.txt or cross-view.txt")
            mf = args.max_frames if args.max_frames != 300 else None
            n_tr, n_te = prepare_pku(args.raw, args.out, args.split_file, max_frames=mf, num_classes=args.num_classes)
            print(f"wrote {args.out}: {n_tr} train / {n_te} test samples (one per labelled interval)")
            return 0
        if args.dataset == "openpose":
            from .prepare_pose import prepare_openpose

            n = prepare_openpose(args.raw, args.out, args.labels, args.max_people, args.test_fraction)
            print(f"wrote {args.out}: {n['train']} train / {n['test']} test clips (PYSKL keypoint + keypoint_score)")
            return 0
        if not args.benchmark:
            raise ValueError("--benchmark: ntu needs xsub, xview or xset")
        rep = prepare_ntu(args.raw, args.out, args.benchmark, skip_bad=args.skip_bad, max_frames=args.max_frames,
                          center=not args.no_center, num_classes=args.num_classes, chunk=args.chunk,
                          num_threads=args.threads, backend=args.backend, progress=not args.quiet, on_bad=on_bad)
    except NTUFormatError as e:
        print(f"error: {e}\n(use --skip-bad to report and skip malformed files)", file=sys.stderr)
        return 1
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {rep.out}: {rep.num_train} train / {rep.num_test} test samples, {rep.num_classes} classes, "
          f"benchmark {rep.benchmark}")
    if rep.bad:
        print(f"skipped {len(rep.bad)} bad file(s):")
        for e in rep.bad:
            print(f"  {e}")
    return 0
