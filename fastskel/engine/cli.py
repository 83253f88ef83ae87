"""Subcommands ``pretrain``, ``eval``, ``distill``, ``export``, ``bench``, ``profile`` of ``fastskel``.

The main job, on a CPU in a few minutes (see ``fastskel pretrain --help``)::

    fastskel pretrain amr --preset small --data synthetic:num_samples=2000 --out runs/amr
    fastskel eval linear --checkpoint runs/amr/last.pt --data synthetic:num_samples=2000

This module only parses and wires; the work is in :mod:`fastskel.engine`.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, Optional

__all__ = ["register"]

PRETRAIN_METHODS = ("amr", "mamp", "asma", "slim", "supervised")
PROTOCOLS = ("linear", "knn", "finetune", "semi")


class CLIError(Exception):
    """A user error: printed as ``fastskel <cmd>: error: <message>``, exit code 2."""


# ------------------------------------------------------------------------------------- helpers
def _add_common(p: argparse.ArgumentParser, training: bool = True) -> None:
    p.add_argument("--data", default="synthetic", metavar="SPEC",
                   help="'synthetic' (the embedded dataset; options as synthetic:num_classes=5,num_samples=64,T=32) "
                        "or a path in any supported format (default: synthetic)")
    p.add_argument("--test-data", default=None, metavar="PATH",
                   help="test-split file where --data holds one split per file (st-gcn .npy); default: "
                        "val_/test_ beside the training file")
    _add_score(p)
    p.add_argument("--device", default="auto", help="auto (CUDA if available) | cpu | cuda | cuda:N (default: auto)")
    p.add_argument("--seed", type=int, default=0, help="seed of model init, data order and subsets (default: 0)")
    p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes (default: 0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    if training:
        p.add_argument("--preset", metavar="NAME", help="named config overrides, e.g. 'small' (the CPU demo "
                                                         "size); --config and --set apply on top")
        p.add_argument("--config", metavar="YAML", help="YAML mapping overriding fields of the method's config "
                                                         "(optional 'trainer:' section for engine options)")
        p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override one config field (repeatable; VALUE is read as YAML, e.g. --set depth=2)")
        p.add_argument("--graph", metavar="NAME|FILE", help="skeleton graph: a built-in name (ntu25, openpose18, "
                                                              "openpose25, coco17, mediapipe33, h36m17) or a .yaml/.json "
                                                              "rig with edges, center (default: from the data's V)")
        p.add_argument("--epochs", type=int, help="epochs (default: the config's)")
        p.add_argument("--batch-size", type=int, help="global batch size (default: the config's)")


def _add_score(p: argparse.ArgumentParser) -> None:
    p.add_argument("--score", choices=("channel", "weight", "ignore"), default="channel",
                   help="2-D keypoints with confidence (channels xy+score): keep the score as channel 2 "
                        "(default, as PYSKL), 'weight' = zero the coordinates of joints with score <= "
                        "--score-threshold and drop the channel, 'ignore' = drop it")
    p.add_argument("--score-threshold", type=float, default=0.0, metavar="S",
                   help="--score weight: joints with score <= S are zeroed (default: 0, st-gcn's rule)")


def _data(args, split: str, graph: Any = None, num_joints: Optional[int] = None):
    """``--data`` (and ``--test-data``, ``--score``) as a dataset of ``split``; the joint count of
    ``graph`` / ``--graph`` (or ``num_joints``) reaches readers that need it (a CTR-GCN .npz)."""
    from .data import load_dataset

    graph = graph if graph is not None else getattr(args, "graph", None)
    if num_joints is None and graph:
        from fastskel.graph import SkeletonGraph

        num_joints = SkeletonGraph.get(graph).V
    test = getattr(args, "test_data", None) if split != "train" else None
    return load_dataset(args.data, split, test, score=getattr(args, "score", "channel"),
                        score_threshold=getattr(args, "score_threshold", 0.0), num_joints=num_joints)


def _joints_of(method) -> Optional[int]:
    cfg = getattr(method, "config", None)
    v = getattr(cfg, "num_joints", None)
    return int(v) if isinstance(v, int) else None


def _overrides(args, method: Optional[str] = None) -> Dict[str, Any]:
    """Method-config overrides from --preset, --config, --set, --epochs, --batch-size (later wins)."""
    import yaml

    from .config import load_yaml, split_trainer_section

    data: Dict[str, Any] = {}
    trainer: Dict[str, Any] = {}
    if getattr(args, "preset", None):
        from .presets import get_preset

        if method is None:
            raise CLIError("--preset needs a method (--method NAME)")
        data.update(get_preset(method, args.preset, _get_method(method)[1]))
    if getattr(args, "config", None):
        cfg_data, trainer = split_trainer_section(load_yaml(args.config))
        data.update(cfg_data)
    for item in getattr(args, "overrides", None) or []:
        key, eq, val = item.partition("=")
        if not eq or not key.strip():
            raise CLIError(f"--set: expected KEY=VALUE, got {item!r}")
        try:
            data[key.strip()] = yaml.safe_load(val)
        except yaml.YAMLError as e:
            raise CLIError(f"--set {item!r}: VALUE is not valid YAML: {e}") from None
    if getattr(args, "epochs", None) is not None:
        if args.epochs < 1:
            raise CLIError(f"--epochs: expected an int >= 1, got {args.epochs}")
        data["epochs"] = args.epochs
    if getattr(args, "batch_size", None) is not None:
        if args.batch_size < 1:
            raise CLIError(f"--batch-size: expected an int >= 1, got {args.batch_size}")
        data["batch_size"] = args.batch_size
    args._trainer_overrides = trainer
    return data


def _get_method(name: str):
    from fastskel.methods import METHODS, get_method

    try:
        return get_method(name)
    except (ImportError, AttributeError) as e:
        module = METHODS.get(name, ("?",))[0]
        raise CLIError(f"method {name!r} is not available yet in this build ({module}: {e})") from None


def _data_defaults(cfg_cls, ds, given: Dict[str, Any]) -> Dict[str, Any]:
    """Fill ``num_classes``/``num_joints``/``in_channels`` from the data where the config has them."""
    import dataclasses

    names = {f.name for f in dataclasses.fields(cfg_cls)}
    out = {}
    c, v = int(ds.x.shape[1]), int(ds.x.shape[3])
    for key, val in (("num_classes", int(ds.num_classes)), ("num_joints", int(v)), ("in_channels", int(c))):
        if key in names and key not in given:
            out[key] = val
    if "graph" in names and "graph" not in given:
        out["graph"] = _data_graph(cfg_cls, ds, v)
    declared = getattr(ds, "channels", None)
    if "channels" in names and declared:
        if given.get("channels") and given["channels"] != declared:
            raise CLIError(f"channels: the data declares {declared!r}, but the config sets {given['channels']!r}")
        out["channels"] = declared
    return out


def _data_graph(cfg_cls, ds, v: int):
    """The graph of the data: ``--graph`` (stored on the dataset by the CLI), the graph the data
    declares (synthetic data), the config default when its V matches, else the built-in with V joints."""
    import dataclasses

    from fastskel.graph import SkeletonGraph

    from .config import graph_value

    g = getattr(ds, "graph", None)
    if isinstance(g, SkeletonGraph):
        if g.name in SkeletonGraph.builtin_names() and SkeletonGraph.get(g.name).to_dict() == g.to_dict():
            return g.name
        return graph_value(g)
    default = {f.name: f.default for f in dataclasses.fields(cfg_cls)}["graph"]
    if isinstance(default, str) and default and SkeletonGraph.get(default).V == v:
        return default
    try:
        return SkeletonGraph.for_joints(v).name
    except ValueError:
        if default == "":
            return ""  # graph-free methods (AMR, MAMP, the tiny supervised net) run without one
        raise


def _check_keys(name: str, given: Dict[str, Any]) -> None:
    """Unknown config keys → a clear error before any data is loaded."""
    import dataclasses

    _, cfg_cls = _get_method(name)
    fields = sorted(f.name for f in dataclasses.fields(cfg_cls))
    unknown = sorted(set(given) - set(fields))
    if unknown:
        raise CLIError(f"{name} config: unknown key(s) {unknown} for {cfg_cls.__name__}; valid keys: {fields}")


def _build_config(name: str, args, ds, given: Optional[Dict[str, Any]] = None):
    from .config import apply_overrides

    _, cfg_cls = _get_method(name)
    given = _overrides(args, name) if given is None else given
    if getattr(args, "graph", None) and "graph" not in given:
        given = {**given, "graph": args.graph}
    _check_keys(name, given)
    auto = _data_defaults(cfg_cls, ds, given) if ds is not None else {}
    # the data's values first (defaults derived from V, e.g. ASMa's joint_mask_n, follow the data),
    # then every override at once, so a value checked against V is validated after --set applies
    return apply_overrides(cfg_cls(**auto) if auto else cfg_cls(), given, where=f"{name} config")


def _options(args, out: Optional[str]):
    from .config import apply_overrides
    from .trainer import TrainOptions

    opts = TrainOptions(out=out, device=args.device, seed=args.seed, workers=args.workers,
                        progress=not args.no_progress)
    extra = {k: v for k, v in (("amp", getattr(args, "amp", None)), ("clip_grad", getattr(args, "clip_grad", None)),
                               ("checkpoint_every", getattr(args, "checkpoint_every", None)),
                               ("log_every", getattr(args, "log_every", None)),
                               ("tensorboard", getattr(args, "tensorboard", None))) if v is not None}
    if getattr(args, "log_every", None) is not None and args.no_progress:
        extra["print_log"] = True  # --log-every N --no-progress: one printed line every N iterations
    opts = apply_overrides(opts, {**getattr(args, "_trainer_overrides", {}), **extra}, where="trainer options")
    return opts


def _guard(fn):
    """Clear one-line errors (exit 2) for user mistakes instead of tracebacks."""
    def run(args) -> int:
        from .checkpoint import CheckpointError

        try:
            return int(fn(args) or 0)
        except (CLIError, ValueError, TypeError, FileNotFoundError, CheckpointError, KeyError, ImportError) as e:
            msg = e.args[0] if isinstance(e, KeyError) and e.args else e
            print(f"fastskel {args.command}: error: {msg}", file=sys.stderr)
            return 2
    run.__name__ = fn.__name__
    return run


# ------------------------------------------------------------------------------------- pretrain
def cmd_pretrain(args) -> int:
    from .distributed import seed_everything
    from .trainer import Trainer

    name = args.method
    cls, _ = _get_method(name)
    given = _overrides(args, name)
    _check_keys(name, given)
    ds = _data(args, "train", given.get("graph"))
    cfg = _build_config(name, args, ds, given)
    out = args.out or str(Path("runs") / name)
    opts = _options(args, out)
    seed_everything(args.seed)
    method = cls(cfg)
    extra = {"data": args.data, "preset": args.preset}
    if name == "supervised":                    # it has its own classifier: `fastskel stream` can run it
        from .data_record import data_record
        extra["stream_data"] = data_record(ds, args.data, cfg)
    trainer = Trainer(method, ds, opts, method_name=name, extra=extra)
    if trainer.dist.rank == 0:
        n_params = sum(p.numel() for p in method.parameters())
        print(f"[fastskel] pretrain {name}: {len(ds)} samples {tuple(ds.x.shape[1:])}, {n_params / 1e6:.3g} M params, "
              f"{method.config.epochs} epochs, batch {method.config.batch_size}, device {trainer.device}, out {out}",
              flush=True)
    from .distributed import cleanup

    ok = False
    try:
        res = trainer.fit(resume=args.resume, stop_after=args.stop_after)
        ok = True
    finally:
        cleanup(trainer.dist, sync=ok)
    if res.interrupted and res.signal is not None:
        return 128 + int(res.signal)
    if trainer.dist.rank == 0 and res.checkpoint:
        print(f"[fastskel] checkpoint: {res.checkpoint}", flush=True)
    return 0


# ------------------------------------------------------------------------------------- eval
def _eval_method(args, train_ds):
    from .evaluate import build_method, load_method

    if args.checkpoint:
        method, st = load_method(args.checkpoint)
        return method, st.get("method")
    if not args.method:
        raise CLIError("give --checkpoint PATH (a pretraining checkpoint) or --method NAME (random init baseline)")
    cfg = _build_config(args.method, args, train_ds)
    from .config import config_to_dict
    from .distributed import seed_everything

    seed_everything(args.seed)
    print(f"[fastskel] eval: no --checkpoint, {args.method} with random weights (a baseline)", flush=True)
    return build_method(args.method, config_to_dict(cfg)), args.method


# (option, default, protocols that apply it); the model options apply only without --checkpoint
_EVAL_ONLY = (("optimizer", None, ("linear",)), ("k", None, ("knn",)), ("fraction", None, ("semi",)),
              ("semi_protocol", None, ("semi",)), ("lr", None, ("linear", "finetune", "semi")))


def _refuse_unused_eval_options(args) -> None:
    """Every eval option the chosen protocol / checkpoint does not apply is an error naming it."""
    flag = lambda name: "--" + name.replace("_", "-")  # noqa: E731
    if args.checkpoint:
        for name, opt in (("preset", "--preset"), ("config", "--config"), ("overrides", "--set")):
            if getattr(args, name, None):
                raise CLIError(f"{opt} is not used with --checkpoint: the model is rebuilt from the "
                               f"checkpoint's own config (use {opt} with --method NAME for a random-init baseline)")
        if args.method:
            raise CLIError("--method is not used with --checkpoint: the checkpoint names its method")
    mode = args.semi_protocol if args.protocol == "semi" and args.semi_protocol else args.protocol
    for name, default, protocols in _EVAL_ONLY:
        if getattr(args, name) is not default and args.protocol not in protocols \
                and not (name == "optimizer" and mode == "linear") and not (name == "lr" and mode == "linear"):
            raise CLIError(f"{flag(name)} is not used by `eval {args.protocol}` (it applies to: "
                           f"{', '.join(protocols)})")
    if mode == "knn" and args.epochs is not None:
        raise CLIError("--epochs is not used by `eval knn` (no training)")


def cmd_eval(args) -> int:
    from .distributed import resolve_device
    from .evaluate import (Classifier, FinetuneConfig, extract_features, finetune, knn_scores, linear_probe,
                           save_classifier, semi_subset)
    from .logging import RunLogger
    from .metrics import class_names_of, classification_report, format_summary, write_report

    _refuse_unused_eval_options(args)
    args.optimizer = args.optimizer or "sgd"
    args.k = args.k if args.k is not None else 1
    args.fraction = args.fraction if args.fraction is not None else 0.1
    args.semi_protocol = args.semi_protocol or "finetune"
    protocol = args.protocol
    method, name = _eval_method(args, None) if args.checkpoint else (None, None)  # V for the data reader
    train_ds = _data(args, "train", num_joints=_joints_of(method))
    test_ds = _data(args, "test", num_joints=_joints_of(method))
    if method is None:
        method, name = _eval_method(args, train_ds)
    device = resolve_device(args.device)
    out = Path(args.out) if args.out else (Path(args.checkpoint).parent if args.checkpoint else None)
    k = int(max(int(train_ds.y.max()), int(test_ds.y.max())) + 1)
    info: Dict[str, Any] = {"protocol": protocol, "data": args.data, "checkpoint": args.checkpoint,
                            "method": name, "train_samples": len(train_ds), "test_samples": len(test_ds)}
    sample_shape = tuple(train_ds.x.shape[1:])
    if protocol == "semi":
        idx = semi_subset(train_ds.y, args.fraction, seed=args.seed)
        train_ds = train_ds.subset(idx)
        info.update(fraction=args.fraction, labelled=len(train_ds), semi_protocol=args.semi_protocol)
    mode = args.semi_protocol if protocol == "semi" else protocol
    variant = getattr(args, "eval_protocol", "fastskel")
    info["eval_protocol"] = variant
    official = variant == "slim_official" and mode in ("linear", "knn")
    if official:
        from .eval_protocols import slim_official_knn, slim_official_linear

        clf = None
        if mode == "knn":
            acc = slim_official_knn(method, train_ds, test_ds, k=args.k, device=device)
        else:
            res = slim_official_linear(method, train_ds, test_ds, epochs=args.epochs or 10, seed=args.seed,
                                       device=device, batch_size=args.batch_size or 64,
                                       **({"lrs": (args.lr,)} if args.lr else {}))
            acc = res["top1"]
            info.update(best=res["best"], grid=res["grid"])
            print(f"[fastskel] slim_official linear grid: best {res['best']}", flush=True)
    elif mode in ("linear", "knn"):
        bs = args.batch_size or 256
        ftr, ytr = extract_features(method, train_ds, bs, device)
        fte, yte = extract_features(method, test_ds, bs, device)
        info["feature_dim"] = int(ftr.shape[1])
        if mode == "knn":
            scores = knn_scores(ftr, ytr, fte, k=args.k, num_classes=k)
            info["k"] = args.k
            clf = None
        else:
            res = linear_probe(ftr, ytr, fte, yte, num_classes=k, epochs=args.epochs or 100, lr=args.lr,
                               optimizer=args.optimizer, batch_size=bs, seed=args.seed)
            scores = res.test_scores
            clf = Classifier(method, k, mean=res.mean, std=res.std, head=res.head)
    else:
        fcfg = FinetuneConfig(num_classes=k, epochs=args.epochs or FinetuneConfig.epochs,
                              batch_size=min(args.batch_size or FinetuneConfig.batch_size, len(train_ds)),
                              lr=args.lr or FinetuneConfig.lr)
        opts = _options(args, str(out / f"{protocol}_run") if out else None)
        _, clf = finetune(method, train_ds, test_ds, fcfg, opts)
        scores, yte = clf.scores(test_ds, device=device)
    # slim_official reports its own top-1 (best of its grid); it has no per-sample scores to tabulate
    report = None if official else classification_report(scores, yte, k, class_names_of(test_ds, k))
    if report is not None:
        acc = report["top1"]
        info.update(top5=report["top5"], mean_class_accuracy=report["mean_class_accuracy"])
    info["top1"] = acc
    label = f"{protocol}({mode})" if protocol == "semi" else protocol
    print(f"[fastskel] {label} top-1 accuracy: {acc:.2f}%  ({info['train_samples'] if protocol != 'semi' else info['labelled']} "
          f"train / {len(test_ds)} test samples, data {args.data})", flush=True)
    if report is not None:
        print(format_summary(report), flush=True)
    if out is not None:
        if report is not None:
            paths = write_report(report, out, protocol)
            info["files"] = {kind: str(p) for kind, p in paths.items()}
            print("[fastskel] per-class accuracy and confusion matrix: " + ", ".join(str(p) for p in paths.values()),
                  flush=True)
        log = RunLogger(out, tensorboard=False)
        log.log("eval", **info)
        log.close()
        if clf is not None:
            from .data_record import data_record
            path = save_classifier(out / f"{protocol}.pt", clf, name, protocol, acc, sample_shape,
                                   data=data_record(train_ds, args.data, getattr(method, "config", None)))
            print(f"[fastskel] classifier: {path} (export it with: fastskel export --checkpoint {path})", flush=True)
    if args.json:
        print(json.dumps(info))
    return 0


# ------------------------------------------------------------------------------------- distill
def cmd_distill(args) -> int:
    import inspect

    from .checkpoint import load_checkpoint
    from .distill import distill
    from .evaluate import load_classifier, load_method

    if not Path(args.teacher).exists():
        raise FileNotFoundError(f"--teacher: no such checkpoint file: {args.teacher}")
    kind = load_checkpoint(args.teacher).get("kind")
    # a classifier file (e.g. `fastskel eval linear --out`) is a teacher with logits; a pretraining
    # checkpoint gives the bare method (ASMa then fits its linear-probe aligner first)
    teacher = load_classifier(args.teacher)[0] if kind == "classifier" else load_method(args.teacher)[0]
    v = _joints_of(teacher) or _joints_of(getattr(teacher, "encoder", None))  # a method or a Classifier
    train_ds = _data(args, "train", num_joints=v)
    test_ds = _data(args, "test", num_joints=v)
    out = args.out or str(Path(args.teacher).parent / "distill")
    kw = {"teacher": teacher, "train": train_ds, "test": test_ds, "epochs": args.epochs,
          "batch_size": args.batch_size, "device": args.device, "out": out, "seed": args.seed,
          "temperature": args.temperature, "student_blocks": args.student_blocks, "lr": args.lr,
          "teacher_epochs": args.teacher_epochs, "progress": not args.no_progress}
    params = inspect.signature(distill).parameters
    takes_kw = any(p.kind == p.VAR_KEYWORD for p in params.values())
    call = {k: v for k, v in kw.items() if v is not None and (takes_kw or k in params)}
    res = distill(**call)
    top1 = res.get("top1") if isinstance(res, dict) else res
    if isinstance(res, dict):
        if "teacher_params" in res and "student_params" in res:
            print(f"[fastskel] distill: teacher {res['teacher_params']:,} params -> student {res['student_params']:,} "
                  f"({-float(res.get('param_reduction', 0.0)):.1f}%)", flush=True)
        if res.get("teacher_top1") is not None:
            print(f"[fastskel] distill teacher top-1 accuracy: {float(res['teacher_top1']):.2f}%", flush=True)
        if res.get("path"):
            from .data_record import add_data_record
            add_data_record(res["path"], train_ds, args.data, res.get("student"))
            print(f"[fastskel] student: {res['path']}", flush=True)
    if isinstance(top1, (int, float)):
        print(f"[fastskel] distill student top-1 accuracy: {float(top1):.2f}%", flush=True)
    return 0


# ------------------------------------------------------------------------------------- export
def cmd_export(args) -> int:
    import shlex

    from .export import export_classifier

    clf, st, meta, method = _export_model(args.checkpoint, args.num_classes)
    shape = (st.get("data") or {}).get("sample_shape")
    if meta is not None:
        shape = (meta.C, meta.T, meta.V, meta.M)
    if args.data_shape:
        shape = tuple(int(s) for s in args.data_shape.split(","))
    if not shape:
        ds = _data(args, "test", num_joints=_joints_of(getattr(clf, "encoder", clf)))
        shape = tuple(ds.x.shape[1:])
    out = Path(args.out) if args.out else Path(args.checkpoint).parent / "export"
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    command = " ".join(["fastskel", "export", "--checkpoint", shlex.quote(str(args.checkpoint)),
                        "--threads", str(args.threads), "--runs", str(args.runs), "--warmup", str(args.warmup)]
                       + (["--data-shape", args.data_shape] if args.data_shape else []))
    rep = export_classifier(clf, shape, out, formats=formats, name=args.name, runs=args.runs,
                            atol=args.atol, rtol=args.rtol, meta=meta, method=method, threads=args.threads,
                            warmup=args.warmup, command=command)
    print(f"[fastskel] export of {method} encoder + classifier, input (B, {', '.join(map(str, shape))})")
    print(f"  parameters        {rep['parameters']:,} in the exported model ({rep['method_parameters']:,} in the "
          f"whole method)")
    if rep.get("flops_paper"):
        print(f"  FLOPs (paper)     {rep['flops_paper'] / 1e9:.3g} G per action")
    for fmt, f in rep["files"].items():
        print(f"  {fmt:<17} {f['path']} ({f['bytes'] / 1e6:.3g} MB)")
    if "onnx_max_abs_diff" in rep:
        print(f"  onnxruntime check max |Δ| = {rep['onnx_max_abs_diff']:.3g} (tolerance {rep['onnx_tolerance']:.3g}), "
              f"dynamic batch: {rep['onnx_dynamic_batch']}")
    if "torchscript_error" in rep:
        print(f"  torchscript       not written: {rep['torchscript_error']}")
    md = rep["metadata"]
    print(f"  input             (B, C, T, V, M) = (B, {md['C']}, {md['T']}, {md['V']}, {md['M']}), "
          + ("T dynamic" if rep["dynamic_T"] else f"T fixed: requires T={rep['required_T']}")
          + ("" if "fastskel" in md else " (no stream metadata)"))
    lat = rep["latency"]
    print(f"  CPU latency (batch 1, {lat['threads']} thread(s) for every engine, {lat['warmup']} warm-up, "
          f"median / p99 of {lat['runs']}, torch.inference_mode):")
    for k, e in lat["engines"].items():
        print(f"    {k:<22} {e['median_ms']:.3g} / {e['p99_ms']:.3g} ms (first call {e['first_call_ms']:.3g} ms)")
    print(f"  report            {out / (args.name + '.json')}")
    return 0


def _export_model(path, num_classes):
    """``(model with encoder/head/logits, state, StreamMeta or None, method name)`` of a classifier
    file, supervised checkpoint, distilled ``student.pt`` or (with ``num_classes``) a pretraining one."""
    import torch

    from .evaluate import load_classifier

    raw = None
    if Path(path).is_file():
        try:
            raw = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # damaged or foreign: load_classifier gives the message
            raw = None
    if isinstance(raw, dict) and raw.get("kind") == "asma_student":
        from fastskel.stream.model import load_student

        clf, st, method = load_student(raw).eval(), raw, "asma_student"
    else:
        clf, st = load_classifier(path, num_classes=num_classes)
        method = st.get("method")
    try:
        from fastskel.stream.meta import meta_from_state

        meta = meta_from_state({**st, "num_classes": int(clf.head.out_features)}, str(path))
    except (ImportError, ValueError, KeyError, TypeError) as e:
        print(f"[fastskel] export: no stream metadata for {path}: {e}", flush=True)
        meta = None
    return clf, st, meta, method


# ------------------------------------------------------------------------------------- bench
def cmd_bench(args) -> int:
    from .bench import BenchError, run_benchmarks
    from .profile import repo_results_dir

    out = args.out or repo_results_dir()   # never a new ./benchmarks/results
    try:
        jpath, mpath, rows, text = run_benchmarks(args.benchmarks, out, small=args.small, keyword=args.keyword,
                                                  extra_args=args.pytest_args)
    except BenchError as e:
        raise CLIError(str(e)) from None
    print(text)
    if mpath is not None:
        print(f"[fastskel] wrote {jpath} and {mpath}")
    return 0


# ------------------------------------------------------------------------------------- profile
def cmd_profile(args) -> int:
    from .distributed import resolve_device
    from .profile import format_table, profile_ops, repo_results_dir, write_results

    dev = resolve_device(args.device)
    dtypes = [d.strip() for d in args.dtype.split(",")] if args.dtype else None
    rows = profile_ops([args.op], small=args.small, device=dev, dtypes=dtypes, min_run_time=args.min_time,
                       backward=not args.no_backward)
    if not rows:
        raise CLIError(f"profile: no case of {args.op!r} matches --dtype {args.dtype}")
    print(format_table(rows))
    out = Path(args.out) if args.out else repo_results_dir()   # never a new ./benchmarks/results
    if not args.no_save and out is not None:
        js, md = write_results(rows, out, f"profile-{args.op}-", dev)
        print(f"[fastskel] wrote {js} and {md}")
    return 0


# ------------------------------------------------------------------------------------- parsers
PRETRAIN_HELP = """\
Pretrain a method with the shared engine (optimizer, warmup + cosine, bf16 on CUDA, DDP under
torchrun, atomic checkpoints <out>/last.pt + previous.pt, exact --resume, SIGTERM/SIGINT write a
checkpoint first). The main job, on a CPU in a few minutes (--preset small: a small model,
20 epochs; the paper-size defaults need a GPU):

  fastskel pretrain amr --preset small --data synthetic:num_samples=2000 --out runs/amr
  fastskel eval linear --checkpoint runs/amr/last.pt --data synthetic:num_samples=2000

Config: --preset, then --config YAML, then --set KEY=VALUE, then --epochs/--batch-size.

Multi-GPU: torchrun --nproc_per_node 8 -m fastskel.cli pretrain amr --data PATH
"""

EVAL_HELP = """\
Evaluate an encoder (method.encode of a pretraining checkpoint) with a protocol and print top-1:
  linear    frozen features, standardised, linear classifier (SGD + cosine)
  knn       k-NN (k=1) by cosine similarity of frozen features
  finetune  encoder + linear head trained end to end
  semi      --fraction of the training labels (stratified, seeded), then finetune (or --semi-protocol linear)
Transfer: pretrain on one --data, evaluate with another. Prints top-1, top-5, mean class accuracy and
the weakest classes; writes <out>/log.jsonl, <out>/<protocol>_metrics.json (top-1/top-5, per-class,
confusion), <protocol>_per_class.csv, <protocol>_confusion.csv (+ .png with matplotlib) and
<out>/<protocol>.pt (a classifier file for `fastskel export`); <out> defaults to the checkpoint's
directory. Options a protocol does not use (e.g. --k for linear, --set with --checkpoint) are errors.
"""


def register(sub) -> None:
    from .profile import op_names

    fmt = argparse.RawDescriptionHelpFormatter

    p = sub.add_parser("pretrain", help="pretrain a method (amr, mamp, asma, slim, supervised)",
                       description=PRETRAIN_HELP, formatter_class=fmt)
    p.add_argument("method", choices=PRETRAIN_METHODS, help="the method")
    _add_common(p)
    p.add_argument("--out", help="run directory (default: runs/<method>)")
    p.add_argument("--resume", metavar="CKPT|DIR|auto",
                   help="continue exactly from a checkpoint or run directory (a corrupt last.pt falls back to "
                        "previous.pt); 'auto': the --out folder's checkpoint if it has one (what a restarted "
                        "torchrun worker does by itself); with a larger --epochs, extend the run (the "
                        "warmup + cosine schedule is recomputed for the new total)")
    p.add_argument("--clip-grad", type=float, help="clip the global gradient norm to this value")
    p.add_argument("--amp", choices=("auto", "bf16", "fp16", "none"),
                   help="autocast: auto = bf16 on CUDA, off on CPU (default: auto)")
    p.add_argument("--checkpoint-every", type=int, metavar="N", help="also checkpoint every N iterations")
    p.add_argument("--log-every", type=int, metavar="N", help="log/progress every N iterations (default: 10); with --no-progress, also print a line each time")
    p.add_argument("--tensorboard", action="store_true", default=None,
                   help="TensorBoard event files in <out>/tb (default: when tensorboard is installed; with this "
                        "flag a warning when it is not)")
    p.add_argument("--stop-after", type=int, metavar="N", help=argparse.SUPPRESS)
    p.set_defaults(func=_guard(cmd_pretrain))

    p = sub.add_parser("eval", help="evaluate an encoder: linear, knn, finetune, semi (transfer: another --data)",
                       description=EVAL_HELP, formatter_class=fmt)
    p.add_argument("protocol", choices=PROTOCOLS, help="evaluation protocol")
    p.add_argument("--checkpoint", metavar="CKPT", help="pretraining checkpoint (e.g. runs/amr/last.pt)")
    p.add_argument("--method", choices=PRETRAIN_METHODS, help="without --checkpoint: this method, random weights")
    _add_common(p)
    p.add_argument("--out", help="where to log and save the classifier (default: the checkpoint's directory)")
    p.add_argument("--lr", type=float, help="learning rate (linear: 0.1 SGD / 1e-3 Adam; finetune: 1e-3)")
    p.add_argument("--optimizer", choices=("sgd", "adam"), help="linear probe optimizer (default: sgd)")
    p.add_argument("--k", type=int, help="neighbours for knn (default: 1)")
    p.add_argument("--eval-protocol", choices=("fastskel", "slim_official"), default="fastskel",
                   help="linear/knn features: fastskel's (default) or the official SLiM protocol (last 1/4 "
                        "blocks' cls ± mean patch, bodies summed, 95%% test crop, lr grid; SLiM only)")
    p.add_argument("--fraction", type=float, help="semi: labelled fraction, e.g. 0.01 or 0.1 (default: 0.1)")
    p.add_argument("--semi-protocol", choices=("finetune", "linear"),
                   help="semi: how the labelled subset is used (default: finetune)")
    p.add_argument("--json", action="store_true", help="also print the result as one JSON line")
    p.set_defaults(func=_guard(cmd_eval))

    p = sub.add_parser("distill", help="distil an ASMa teacher into a small ST-GCN student")
    p.add_argument("--teacher", required=True, metavar="CKPT",
                   help="ASMa pretraining checkpoint (a linear-probe teacher is fitted first) or a classifier "
                        "file from `fastskel eval linear|finetune`")
    p.add_argument("--data", default="synthetic", metavar="SPEC", help="dataset (default: synthetic)")
    p.add_argument("--test-data", default=None, metavar="PATH",
                   help="test-split file where --data holds one split per file (st-gcn .npy); default: "
                        "val_/test_ beside the training file")
    _add_score(p)
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--temperature", type=float, help="distillation temperature (ASMa: 8)")
    p.add_argument("--student-blocks", type=int, help="ST-GCN blocks of the student (ASMa: 5)")
    p.add_argument("--lr", type=float, help="student learning rate (ASMa: Adam 5e-3)")
    p.add_argument("--teacher-epochs", type=int,
                   help="epochs of the linear-probe teacher fitted first when --teacher is a pretraining checkpoint")
    p.add_argument("--device", default="auto")
    p.add_argument("--out")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_guard(cmd_distill))

    p = sub.add_parser("export", help="export encoder + classifier to ONNX (checked in onnxruntime) and TorchScript")
    p.add_argument("--checkpoint", required=True, metavar="CKPT",
                   help="a classifier file from `fastskel eval ... --out` or a pretraining checkpoint")
    p.add_argument("--num-classes", type=int, help="head size when CKPT has no classifier (the head is untrained)")
    p.add_argument("--data", default="synthetic", metavar="SPEC",
                   help="dataset giving the input shape when the checkpoint does not record it")
    p.add_argument("--test-data", default=None, metavar="PATH",
                   help="test-split file giving the input shape where --data holds one split per file")
    p.add_argument("--data-shape", metavar="C,T,V,M", help="input shape of one action (overrides the recorded one)")
    p.add_argument("--out", help="output directory (default: <checkpoint dir>/export)")
    p.add_argument("--formats", default="onnx,torchscript", help="comma list of onnx, torchscript")
    p.add_argument("--name", default="model", help="file stem (default: model)")
    p.add_argument("--runs", type=int, default=50, help="timed runs for the CPU latency median/p99 (default: 50)")
    p.add_argument("--warmup", type=int, default=10, help="untimed calls before timing, per engine (default: 10)")
    p.add_argument("--threads", type=int, default=1,
                   help="intra-op threads for PyTorch and onnxruntime alike in the latency report (default: 1)")
    p.add_argument("--atol", type=float, default=1e-4, help="ONNX vs PyTorch absolute tolerance (default: 1e-4)")
    p.add_argument("--rtol", type=float, default=1e-4, help="... plus rtol × max|logits| (default: 1e-4)")
    p.set_defaults(func=_guard(cmd_export))

    p = sub.add_parser("bench", help="run the benchmark suites, print reference vs fast-path medians (--out: also .json + .md)")
    p.add_argument("--benchmarks", metavar="DIR", help="suite directory (default: ./benchmarks)")
    p.add_argument("--out", help="write <device>-<date>.{json,md} here (default: benchmarks/results when run "
                   "from a fastskel checkout, else print only)")
    p.add_argument("--small", action="store_true", help="tiny shapes (FASTSKEL_BENCH_SMALL=1)")
    p.add_argument("-k", dest="keyword", help="pytest -k expression selecting benchmarks")
    p.add_argument("pytest_args", nargs=argparse.REMAINDER, help="after --: more pytest arguments")
    p.set_defaults(func=_guard(cmd_bench))

    p = sub.add_parser("profile", help="time an op's fast path against its reference at the paper shapes")
    p.add_argument("op", choices=op_names() + ["all"], help="the op (or all)")
    p.add_argument("--small", action="store_true", help="tiny shapes")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (default: auto)")
    p.add_argument("--dtype", help="comma list: float32,bfloat16 (default: float32, + bfloat16 on CUDA)")
    p.add_argument("--min-time", type=float, default=0.2, help="seconds of timing per measurement (default: 0.2)")
    p.add_argument("--no-backward", action="store_true", help="forward only")
    p.add_argument("--out", help="write profile-<op>-<device>-<date>.{json,md} here (default: benchmarks/results "
                   "when run from a fastskel checkout, else print only)")
    p.add_argument("--no-save", action="store_true", help="print only")
    p.set_defaults(func=_guard(cmd_profile))
