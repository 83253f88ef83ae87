"""``--data``: the embedded synthetic dataset or a file/directory in any supported format.

``synthetic`` is :class:`fastskel.data.SyntheticSkeletons` with its defaults; options follow a
colon, e.g. ``synthetic:num_classes=5,num_samples=64,T=32,bodies=1,seed=0``. Its ``train`` and
``test`` splits are a stratified partition of one generated set (same ``seed``), so a model
pretrained on ``train`` is evaluated on unseen samples of the same classes. Anything else is a
path read by :func:`fastskel.data.load` (format detected from the file).

The dataset carries ``channels`` (``"xyz"``, ``"xy"``, ``"xy+score"``; ``None`` where the file
does not say), which the CLI passes into the method config. ``score`` (``--score``) chooses what an
``"xy+score"`` dataset's confidence is used for (:func:`fastskel.data.channels.apply_score`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Tuple

__all__ = ["load_dataset", "load_split", "parse_synthetic", "SYNTHETIC_KEYS"]

SYNTHETIC_KEYS = {"num_classes": int, "num_samples": int, "T": int, "bodies": int, "seed": int,
                  "class_seed": int, "test_fraction": float, "min_length": int, "noise": float,
                  "graph": str, "channels": str}


def parse_synthetic(spec: str) -> Dict[str, Any]:
    """``"synthetic[:k=v,...]"`` → keyword arguments of ``SyntheticSkeletons``."""
    _, _, opts = spec.partition(":")
    kw: Dict[str, Any] = {}
    for item in filter(None, (s.strip() for s in opts.split(","))):
        key, eq, val = item.partition("=")
        key = key.strip()
        if not eq or key not in SYNTHETIC_KEYS:
            raise ValueError(f"data: bad synthetic option {item!r}; expected key=value with key in "
                             f"{sorted(SYNTHETIC_KEYS)} (e.g. synthetic:num_classes=5,num_samples=64)")
        try:
            kw[key] = SYNTHETIC_KEYS[key](val.strip())
        except ValueError:
            raise ValueError(f"data: synthetic option {key!r} expects a {SYNTHETIC_KEYS[key].__name__}, "
                             f"got {val!r}") from None
    return kw


_ONE_SPLIT_SUFFIXES = (".npy",)


def one_split_test_file(train_path: str) -> Path:
    """The test file beside a one-split-per-file training file (st-gcn/AimCLR ``.npy``):
    ``train_data_joint.npy`` → ``val_data_joint.npy`` or ``test_data_joint.npy``; ``ValueError``
    saying how to fix it when there is none (the test set is never silently the training set)."""
    p = Path(train_path)
    name = p.name
    cands = []
    if "train" in name:
        cands = [p.with_name(name.replace("train", alt, 1)) for alt in ("val", "test")]
    for c in cands:
        if c.is_file() and c.resolve() != p.resolve():
            return c
    looked = f" (looked for {', '.join(str(c) for c in cands)})" if cands else ""
    raise ValueError(f"data: {p} holds a single split (st-gcn/AimCLR layout), so the test set would be the "
                     f"training set{looked}; give the test file with --test-data PATH")


def load_dataset(spec: str, split: str = "train", test_data: Optional[str] = None, score: str = "channel",
                 score_threshold: float = 0.0, num_joints: Optional[int] = None):
    """:func:`load_split`, then the ``score`` option applied to an ``"xy+score"`` dataset:
    ``"channel"`` keeps the confidence as channel 2, ``"weight"`` zeroes the coordinates of joints
    with score <= ``score_threshold`` and drops the channel, ``"ignore"`` drops it (see
    :func:`fastskel.data.channels.apply_score`); ``weight``/``ignore`` on data without a score
    channel is an error. ``num_joints``: V of the graph in use (``--graph``, a checkpoint's), which
    a CTR-GCN ``.npz`` needs where its width splits into bodies × joints more than one way."""
    from fastskel.data.channels import apply_score

    ds = load_split(spec, split, test_data, num_joints)
    if score != "channel":
        ds.x, ds.channels = apply_score(ds.x, getattr(ds, "channels", None) or "", score, score_threshold)
    return ds


def load_split(spec: str, split: str = "train", test_data: Optional[str] = None, num_joints: Optional[int] = None):
    """A :class:`fastskel.data.SkeletonDataset` for ``--data spec`` and ``split`` ("train"/"test").

    ``test_data``: the file of the test split (``--test-data``) where ``spec`` holds one split per
    file (st-gcn ``.npy``); without it the test file is looked up beside ``spec``
    (:func:`one_split_test_file`). A test split that resolves to the training file is refused.
    """
    if test_data is not None and split != "train":
        tp = Path(test_data)
        if isinstance(spec, str) and Path(spec).exists() and tp.exists() and tp.resolve() == Path(spec).resolve() \
                and spec.lower().endswith(_ONE_SPLIT_SUFFIXES):
            raise ValueError(f"--test-data: {tp} is the training file given by --data; give the validation "
                             f"file (e.g. val_data_joint.npy)")
        # a one-split file is read as itself ("train": no lookup of a val_ file beside it)
        return load_split(str(tp), "test" if not str(tp).lower().endswith(_ONE_SPLIT_SUFFIXES) else "train",
                          num_joints=num_joints)
    if (isinstance(spec, str) and split != "train" and spec.lower().endswith(_ONE_SPLIT_SUFFIXES)
            and Path(spec).is_file()):
        return load_split(str(one_split_test_file(spec)), "train")
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"data: expected 'synthetic[:options]' or a path, got {spec!r}")
    if spec == "synthetic" or spec.startswith("synthetic:"):
        from fastskel.data import SyntheticSkeletons

        return SyntheticSkeletons(split=split, **parse_synthetic(spec))
    path = Path(spec)
    if not path.exists():
        raise FileNotFoundError(f"data: no such file or directory: {path} "
                                f"(use --data synthetic for the embedded dataset)")
    try:
        from fastskel.data import load
    except ImportError:
        raise ImportError("data: reading dataset files needs fastskel.data.load, which is not "
                          "available in this build; use --data synthetic") from None
    npz = {"num_joints": num_joints} if num_joints and str(path).lower().endswith(".npz") else {}
    data = load(str(path), split=split, **npz)
    if not hasattr(data, "dataset"):
        return data
    ds = data.dataset()
    ds.channels = data.meta.get("channels")  # the layout the file declares (PYSKL 2-D: "xy+score")
    return ds


def describe(ds) -> Tuple[int, Tuple[int, ...], int]:
    """``(num_samples, sample_shape (C, T, V, M), num_classes)``."""
    return len(ds), tuple(ds.x.shape[1:]), int(ds.num_classes)
