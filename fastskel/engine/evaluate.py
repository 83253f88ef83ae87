"""Evaluation protocols on a pretrained encoder (``method.encode``): linear probe, kNN, fine-tuning,
semi-supervised subsets; transfer is any of these with ``--data`` of another dataset.

All return top-1 accuracy in percent on the test split and can save a *classifier file* (encoder
state + linear head + feature normalisation) that ``fastskel export`` turns into ONNX/TorchScript.

- **linear**: features of the frozen encoder are extracted once (``eval()`` mode, no
  augmentation); each feature is standardised with the training set's mean/std (the
  ``BatchNorm1d(affine=False)`` of MAE/MAMP linear probing, folded into the head at export); a
  linear classifier is trained with SGD (momentum 0.9) or Adam, cosine schedule, seeded shuffling.
- **knn**: k-nearest neighbours (k=1 by default) by cosine similarity between L2-normalised test and
  train features; ties in votes go to the nearest neighbour's class.
- **finetune**: encoder + linear head trained end to end with cross-entropy by the shared
  :class:`~fastskel.engine.trainer.Trainer` (AdamW, warmup + cosine).
- **semi**: a seeded, stratified subset of the training labels (``fraction`` of each class, at least
  one sample per class), then fine-tuning (default) or a linear probe on it.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch
from torch import nn
import torch.nn.functional as F

from .checkpoint import FORMAT, CheckpointError, load_checkpoint, save_checkpoint
from .config import config_to_dict
from .trainer import TrainOptions, Trainer, autocast_context

__all__ = ["build_method", "load_method", "extract_features", "linear_probe", "knn_accuracy",
           "semi_subset", "knn_scores", "Classifier", "FinetuneConfig", "finetune", "top1", "save_classifier",
           "load_classifier", "ProbeResult"]


# ------------------------------------------------------------------------------------- methods
def build_method(name: str, config: Optional[Dict[str, Any]] = None):
    """``Method(Config(**config))`` from the registry (unknown config keys → clear error)."""
    from fastskel.methods import get_method

    from .config import apply_overrides

    cls, cfg_cls = get_method(name)
    cfg = apply_overrides(cfg_cls(), dict(config or {}), where=f"{name} config")
    return cls(cfg)


def load_method(path, map_location="cpu") -> Tuple[nn.Module, Dict[str, Any]]:
    """Rebuild the method of a pretraining checkpoint (or a classifier file) and load its weights.
    Official SLiM files (hub folder, model.safetensors, export_encoder .pth) give a SLiM built with
    ``SLiMConfig.official()`` holding the released encoder (see :func:`load_official_slim`)."""
    from fastskel.methods.slim_checkpoint import is_official_slim_checkpoint

    import warnings

    with warnings.catch_warnings():  # a garbage file: torch's weights_only Unpickler warning is noise here
        warnings.filterwarnings("ignore", message=".*pickle protocol.*")
        official = is_official_slim_checkpoint(path)
    if official:
        return load_official_slim(path)
    st = load_checkpoint(path, map_location=map_location)
    name = st.get("method")
    if not name or "model" not in st:
        raise CheckpointError(f"checkpoint {path} holds no method weights (keys {sorted(st)})")
    method = build_method(name, st.get("config"))
    try:
        method.load_state_dict(st["model"])
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint {path}: weights do not fit {name} with its saved config: "
                              f"{str(e).splitlines()[0]}") from e
    return method, st


def load_official_slim(path) -> Tuple[nn.Module, Dict[str, Any]]:
    """``(SLiM(SLiMConfig.official(...)), info)`` with the official encoder of ``path`` in its
    student and teacher (strict); the encoder's shape comes from ``config.json`` when there is one.
    The prototype heads are not in the released files, so they are built small (256 prototypes)."""
    import json
    from pathlib import Path

    from fastskel.methods.slim import SLiM, SLiMConfig, load_slim_checkpoint

    p = Path(path)
    cfg_file = p / "config.json" if p.is_dir() else p.parent / "config.json"
    over: Dict[str, Any] = {"num_prototypes": 256, "head_hidden_dim": 256}
    if cfg_file.is_file() and (p.is_dir() or p.suffix == ".safetensors"):
        c = json.loads(cfg_file.read_text())
        if "img_size" in c:
            over["num_joints"] = int(c["img_size"][1])
        if "in_chans" in c:
            over["in_channels"] = int(c["in_chans"])
        if "num_register_tokens" in c:
            over["num_registers"] = int(c["num_register_tokens"])
        if "ffn_layer" in c:
            over["ffn"] = "mlp" if c["ffn_layer"] == "mlp" else "swiglu"
        from fastskel.methods.slim_checkpoint import file_shape
        over.update(file_shape(p) or {})        # fastskel-written files record their width; vit_tiny otherwise
        if "patch_size" in c:
            over["frames_per_patch"] = int(c["patch_size"][0])
    method = SLiM(SLiMConfig.official(**over))
    res = load_slim_checkpoint(method, path, strict=True)
    from .config import config_to_dict
    return method, {"method": "slim", "config": config_to_dict(method.config), "official": str(path),
                    "loaded": len(res.loaded)}


# ------------------------------------------------------------------------------------- features
@torch.no_grad()
def extract_features(method: nn.Module, dataset, batch_size: int = 256,
                     device: torch.device | str = "cpu") -> Tuple[torch.Tensor, torch.Tensor]:
    """``(features float32 (N, D) on CPU, labels int64 (N,))`` of ``method.encode`` in eval mode."""
    from fastskel.data import make_loader

    device = torch.device(device)
    was_training = method.training
    method.eval().to(device)
    feats, labels = [], []
    try:
        for x, lengths, y in make_loader(dataset, batch_size, shuffle=False):
            with autocast_context(device):
                f = method.encode(x.to(device), lengths.to(device))
            if f.dim() != 2 or f.shape[0] != x.shape[0]:
                raise ValueError(f"method.encode: expected (N, D) features, got shape {tuple(f.shape)}")
            feats.append(f.float().cpu())
            labels.append(y.cpu())
    finally:
        method.train(was_training)
    return torch.cat(feats), torch.cat(labels)


def top1(logits_or_pred: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy in percent (``logits`` (N, K) or predictions (N,))."""
    pred = logits_or_pred.argmax(1) if logits_or_pred.dim() == 2 else logits_or_pred
    return 100.0 * float((pred == labels).float().mean()) if labels.numel() else float("nan")


def _num_classes(*ys: torch.Tensor) -> int:
    return int(max(int(y.max()) for y in ys if y.numel())) + 1


# ------------------------------------------------------------------------------------- linear
@dataclass
class ProbeResult:
    top1: float
    head: nn.Linear
    mean: torch.Tensor
    std: torch.Tensor
    test_scores: Optional[torch.Tensor] = None  # (N_test, K) logits, for top-5 / per-class / confusion


def linear_probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                 num_classes: Optional[int] = None, epochs: int = 100, lr: Optional[float] = None,
                 optimizer: str = "sgd", batch_size: int = 256, weight_decay: float = 0.0,
                 seed: int = 0) -> ProbeResult:
    """Train a linear classifier on standardised frozen features; top-1 (%) on the test features.

    Defaults: SGD lr 0.1 (Adam: 1e-3), momentum 0.9, cosine to 0 over ``epochs``, batch 256."""
    if optimizer not in ("sgd", "adam"):
        raise ValueError(f"optimizer: expected 'sgd' or 'adam', got {optimizer!r}")
    if train_x.shape[0] == 0:
        raise ValueError("train_x: expected at least one training feature, got none")
    k = num_classes or _num_classes(train_y, test_y)
    mean = train_x.mean(0)
    std = train_x.std(0, unbiased=False).clamp_min(1e-6)
    xs = (train_x - mean) / std
    g = torch.Generator().manual_seed(seed)
    head = nn.Linear(train_x.shape[1], k)
    with torch.no_grad():
        bound = 1.0 / math.sqrt(train_x.shape[1])
        head.weight.uniform_(-bound, bound, generator=g)
        head.bias.zero_()
    lr = lr if lr is not None else (0.1 if optimizer == "sgd" else 1e-3)
    opt = (torch.optim.SGD(head.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
           if optimizer == "sgd" else torch.optim.Adam(head.parameters(), lr=lr, weight_decay=weight_decay))
    n = xs.shape[0]
    bs = min(batch_size, n)
    steps_per_epoch = math.ceil(n / bs)
    total = max(1, epochs * steps_per_epoch)
    step = 0
    for _ in range(epochs):
        perm = torch.randperm(n, generator=g)
        for i in range(0, n, bs):
            idx = perm[i:i + bs]
            for grp in opt.param_groups:
                grp["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / total))
            loss = F.cross_entropy(head(xs[idx]), train_y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
    with torch.no_grad():
        scores = head((test_x - mean) / std)
        acc = top1(scores, test_y)
    return ProbeResult(acc, head, mean, std, scores)


# ------------------------------------------------------------------------------------- kNN
@torch.no_grad()
def knn_scores(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, k: int = 1,
               num_classes: Optional[int] = None, chunk: int = 1024) -> torch.Tensor:
    """``(N_test, K)`` class scores of a k-NN classifier with cosine similarity; argmax = its prediction.

    ``score[c] = votes_c + 1e-3·[c = nearest neighbour's class] + 1e-4·(1 + max_{i: y_i=c} cos)/2``:
    the majority vote among the ``k`` nearest (ties → the nearest neighbour's class), and classes
    without votes ranked by their nearest training sample (so top-5 is defined, also for k = 1,
    where it is "the 5 classes with the nearest training samples")."""
    if k < 1 or k > train_x.shape[0]:
        raise ValueError(f"k: expected an int in [1, {train_x.shape[0]}] (training samples), got {k}")
    kk = num_classes or _num_classes(train_y)
    tr = F.normalize(train_x.float(), dim=1)
    te = F.normalize(test_x.float(), dim=1)
    out = []
    for i in range(0, te.shape[0], chunk):
        sim = te[i:i + chunk] @ tr.T                              # (b, N_train)
        idx = sim.topk(k, dim=1).indices                          # (b, k), nearest first
        votes = F.one_hot(train_y[idx], kk).float()               # (b, k, K)
        score = votes.sum(1) + votes[:, 0] * 1e-3
        cmax = torch.full((sim.shape[0], kk), -1.0).scatter_reduce(
            1, train_y.view(1, -1).expand(sim.shape[0], -1), sim, reduce="amax")
        out.append(score + 1e-4 * (1.0 + cmax) / 2)
    return torch.cat(out) if out else torch.zeros(0, kk)


def knn_accuracy(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                 k: int = 1, chunk: int = 1024) -> float:
    """Top-1 (%) of a k-NN classifier with cosine similarity (majority vote, ties → nearest)."""
    return top1(knn_scores(train_x, train_y, test_x, k=k, chunk=chunk), test_y)


# ------------------------------------------------------------------------------------- semi
def semi_subset(labels: torch.Tensor, fraction: float, seed: int = 0) -> torch.Tensor:
    """Indices of a seeded stratified subset: ``max(1, round(fraction·n_c))`` samples of each class c."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction: expected a value in (0, 1], got {fraction}")
    g = torch.Generator().manual_seed(seed)
    out = []
    for c in torch.unique(labels).tolist():
        idx = (labels == c).nonzero().flatten()
        m = max(1, int(round(fraction * idx.numel())))
        out.append(idx[torch.randperm(idx.numel(), generator=g)[:m]])
    return torch.sort(torch.cat(out)).values


# ------------------------------------------------------------------------------------- finetune
@dataclass
class FinetuneConfig:
    """Engine fields of end-to-end fine-tuning (encoder + linear head)."""

    num_classes: int = 60
    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    min_lr: float = 1e-5
    warmup_epochs: int = 2
    weight_decay: float = 0.01
    optimizer: str = "adamw"
    betas: Tuple[float, float] = (0.9, 0.999)
    label_smoothing: float = 0.0


class Classifier(nn.Module):
    """``head((encode(x) − mean) / std)``: an encoder method plus a linear head (what is exported).

    ``forward(x, lengths, labels)`` returns the fine-tuning objective (the engine calls it with
    labels); :meth:`logits` the class scores.
    """

    uses_labels = True

    def __init__(self, encoder: nn.Module, num_classes: int, config: Optional[FinetuneConfig] = None,
                 mean: Optional[torch.Tensor] = None, std: Optional[torch.Tensor] = None,
                 head: Optional[nn.Linear] = None):
        super().__init__()
        d = int(getattr(encoder, "feature_dim"))
        self.encoder = encoder
        self.config = config or FinetuneConfig(num_classes=num_classes)
        self.head = head if head is not None else nn.Linear(d, num_classes)
        self.register_buffer("feat_mean", mean.clone().float() if mean is not None else torch.zeros(d))
        self.register_buffer("feat_std", std.clone().float() if std is not None else torch.ones(d))

    def logits(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
        f = self.encoder.encode(x, lengths)
        return self.head(((f.float() - self.feat_mean) / self.feat_std).to(f.dtype))

    def forward(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None,
                labels: Optional[torch.Tensor] = None):
        logits = self.logits(x, lengths)
        if labels is None:
            return logits
        loss = F.cross_entropy(logits.float(), labels, label_smoothing=self.config.label_smoothing)
        return {"loss": loss, "acc": (logits.detach().argmax(1) == labels).float().mean()}

    @torch.no_grad()
    def scores(self, dataset, batch_size: int = 256, device="cpu") -> Tuple[torch.Tensor, torch.Tensor]:
        """``(logits float32 (N, K) on CPU, labels (N,))`` over ``dataset`` in eval mode."""
        from fastskel.data import make_loader

        device = torch.device(device)
        was = self.training
        self.eval().to(device)
        out, ys = [], []
        try:
            for x, lengths, y in make_loader(dataset, batch_size, shuffle=False):
                with autocast_context(device):
                    out.append(self.logits(x.to(device), lengths.to(device)).float().cpu())
                ys.append(y)
        finally:
            self.train(was)
        return torch.cat(out), torch.cat(ys)

    def accuracy(self, dataset, batch_size: int = 256, device="cpu") -> float:
        return top1(*self.scores(dataset, batch_size, device))


def finetune(method: nn.Module, train_ds, test_ds, config: FinetuneConfig,
             options: Optional[TrainOptions] = None) -> Tuple[float, Classifier]:
    """Fine-tune ``method`` (a copy) + a linear head end to end; ``(top1 %, classifier)``.

    The copy's ``prepare_finetune()`` (when it has one) picks the trainable parameters; otherwise
    all of them are trained."""
    enc = copy.deepcopy(method)
    prepare = getattr(enc, "prepare_finetune", None)
    if callable(prepare):
        prepare()
    else:
        enc.requires_grad_(True)
    if not any(p.requires_grad for p in enc.parameters()):
        raise ValueError(f"method: {type(method).__name__} has no trainable parameters to fine-tune")
    clf = Classifier(enc, config.num_classes, config)
    trainer = Trainer(clf, train_ds, options or TrainOptions(progress=False), method_name="finetune")
    trainer.fit()
    return clf.accuracy(test_ds, device=trainer.device), clf


# ------------------------------------------------------------------------------------- files
def save_classifier(path, clf: Classifier, method_name: str, protocol: str, acc: float,
                    sample_shape: Optional[Tuple[int, ...]] = None, data: Optional[Dict[str, Any]] = None) -> Path:
    """Write a classifier file: the encoder's method/config/weights + head + feature normalisation.

    ``data``: what the stream runtime needs to feed the model as ``fastskel eval`` did (channels,
    graph, class names, preprocessing; :func:`fastskel.engine.data_record.data_record`)."""
    import fastskel

    state = {
        "format": FORMAT, "kind": "classifier", "fastskel_version": fastskel.__version__,
        "method": method_name, "config": config_to_dict(clf.encoder.config),
        "model": clf.encoder.state_dict(), "head": clf.head.state_dict(),
        "feat_mean": clf.feat_mean.cpu(), "feat_std": clf.feat_std.cpu(),
        "num_classes": int(clf.head.out_features), "protocol": protocol, "top1": float(acc),
        "data": {"sample_shape": tuple(int(s) for s in sample_shape) if sample_shape else None},
    }
    if data:
        state["data"] = {**dict(data), **({"sample_shape": state["data"]["sample_shape"]} if sample_shape else {})}
    return save_checkpoint(state, path)


def load_classifier(path, num_classes: Optional[int] = None, map_location="cpu") -> Tuple[Classifier, Dict[str, Any]]:
    """A :class:`Classifier` from a classifier file, or from a pretraining checkpoint (then with a
    freshly initialised head of ``num_classes`` outputs — untrained; the encoder's own
    ``classifier`` is used instead when the method has one, e.g. ``Supervised``)."""
    method, st = load_method(path, map_location)
    if st.get("kind") == "classifier":
        k = int(st["num_classes"])
        clf = Classifier(method, k, mean=st["feat_mean"], std=st["feat_std"])
        clf.head.load_state_dict(st["head"])
        return clf, st
    own = getattr(method, "classifier", None)
    if isinstance(own, nn.Linear) and (num_classes is None or num_classes == own.out_features):
        return Classifier(method, own.out_features, head=own), st
    if num_classes is None:
        raise ValueError(f"num_classes: {path} is a pretraining checkpoint without a classifier; pass "
                         f"--num-classes (an untrained head is attached) or export the file saved by "
                         f"`fastskel eval linear|finetune --out DIR`")
    return Classifier(method, int(num_classes)), st
