"""The training loop: schedule, optimizer groups, config overrides, exact resume, signals."""
import json
import math
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from conftest import requires_cuda
from fastskel.data import SkeletonDataset
from fastskel.engine.checkpoint import CheckpointError, load_checkpoint
from fastskel.engine.config import apply_overrides, load_yaml
from fastskel.engine.schedule import WarmupCosine, build_optimizer, param_groups, warmup_cosine_lr
from fastskel.engine.trainer import TrainOptions, Trainer
from fastskel.methods.supervised import Supervised, SupervisedConfig


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def tiny_data(n=40, k=4, t=12, v=25, m=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % k
    x = torch.randn(n, 3, t, v, m, generator=g) * 0.1 + y.view(n, 1, 1, 1, 1) * 0.2
    lengths = torch.randint(t // 2, t + 1, (n,), generator=g)
    x = x * (torch.arange(t).view(1, 1, t, 1, 1) < lengths.view(n, 1, 1, 1, 1))
    x[::3, ..., 1] = 0                                        # some single-body actions
    return SkeletonDataset(x, y, lengths)


class NoisySupervised(Supervised):
    """Consumes every RNG the engine must restore: torch global, numpy, python, its own generator."""

    def __init__(self, cfg):
        super().__init__(cfg)
        self.gen = torch.Generator().manual_seed(99)

    def forward(self, x, lengths=None, labels=None):
        scale = 1.0 + 0.1 * float(np.random.rand()) + 0.1 * random.random()
        x = x * scale + 0.01 * torch.randn_like(x) + 0.01 * torch.rand(x.shape, generator=self.gen)
        return super().forward(x, lengths, labels)


def make_method(cls=NoisySupervised, **kw):
    torch.manual_seed(0)
    cfg = dict(num_classes=4, backbone="tiny", hidden=8, depth=1, kernel=3, epochs=3, batch_size=8, jitter=0.01)
    cfg.update(kw)
    return cls(SupervisedConfig(**cfg))


def opts(out, **kw):
    base = dict(out=str(out), progress=False, log_every=1, tensorboard=False, device="cpu")
    base.update(kw)
    return TrainOptions(**base)


# ----------------------------------------------------------------------------------- schedule
def test_warmup_cosine_values():
    assert warmup_cosine_lr(0, 100, 10, 1.0, 0.1) == pytest.approx(0.1)
    assert warmup_cosine_lr(9, 100, 10, 1.0, 0.1) == pytest.approx(1.0)
    assert warmup_cosine_lr(10, 100, 10, 1.0, 0.1) == pytest.approx(1.0)
    assert warmup_cosine_lr(55, 100, 10, 1.0, 0.1) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert warmup_cosine_lr(100, 100, 10, 1.0, 0.1) == pytest.approx(0.1)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    s = WarmupCosine(opt, 20, 5, 2.0, 0.0)
    lrs = [s.step() for _ in range(20)]
    assert lrs[:5] == pytest.approx([0.4, 0.8, 1.2, 1.6, 2.0]) and opt.param_groups[0]["lr"] == lrs[-1]
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:]))
    s2 = WarmupCosine(opt, 20, 5, 2.0, 0.0)
    s2.load_state_dict(s.state_dict())
    assert s2.iteration == 20
    with pytest.raises(ValueError, match="total_iters"):
        WarmupCosine(opt, 21, 5, 2.0, 0.0).load_state_dict(s.state_dict())


def test_param_groups_no_decay_on_1d_and_bias():
    m = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
    m.pos = torch.nn.Parameter(torch.zeros(1, 5, 3))
    m.no_weight_decay = lambda: {"pos"}
    groups = param_groups(m, 0.05)
    decay = {id(p) for p in groups[0]["params"]}
    assert groups[0]["weight_decay"] == 0.05 and groups[1]["weight_decay"] == 0.0
    assert decay == {id(m[0].weight)}
    assert isinstance(build_optimizer(m, "adamw", 1e-3, 0.05), torch.optim.AdamW)
    with pytest.raises(ValueError, match="optimizer"):
        build_optimizer(m, "lion", 1e-3)


def test_config_overrides(tmp_path):
    cfg = SupervisedConfig()
    new = apply_overrides(cfg, {"lr": "1e-3", "epochs": 3, "betas": [0.8, 0.9], "min_lr": 0})
    assert new.lr == 1e-3 and new.epochs == 3 and new.betas == (0.8, 0.9) and isinstance(new.min_lr, float)
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['learning_rate'\].*valid keys: \[.*'lr'"):
        apply_overrides(cfg, {"learning_rate": 1})
    with pytest.raises(ValueError, match="'epochs' expects a int"):
        apply_overrides(cfg, {"epochs": "many"})
    bad = tmp_path / "bad.yaml"
    bad.write_text("lr: [1, 2\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_yaml(bad)
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        load_yaml(tmp_path / "missing.yaml")


# ----------------------------------------------------------------------------------- training
def test_training_reduces_loss_and_logs(tmp_path):
    ds = tiny_data()
    m = make_method(Supervised, epochs=8, lr=3e-3, warmup_epochs=1)
    res = Trainer(m, ds, opts(tmp_path, clip_grad=1.0), "supervised").fit()
    assert res.iteration == res.total_iterations == 8 * 5 and not res.interrupted
    first = np.mean([h["loss"] for h in res.history[:5]])
    last = np.mean([h["loss"] for h in res.history[-5:]])
    assert last < first
    lines = [json.loads(s) for s in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert lines[0]["event"] == "config" and lines[0]["method"] == "supervised"
    train = [r for r in lines if r["event"] == "train"]
    assert len(train) == 40 and {"loss", "lr", "samples_per_s", "acc"} <= set(train[0])
    st = load_checkpoint(tmp_path / "last.pt")
    assert st["iteration"] == 40 and st["method"] == "supervised" and st["config"]["backbone"] == "tiny"
    assert st["data"]["sample_shape"] == (3, 12, 25, 2) and "fastskel_version" in st
    assert {"torch", "numpy", "python", "cuda", "generators"} <= set(st["rng"][0])


@pytest.mark.parametrize("stop", [7, 10])  # mid-epoch and exactly at an epoch boundary (5 iterations/epoch)
def test_resume_is_bit_identical(tmp_path, stop):
    ds = tiny_data()
    ref = make_method()
    Trainer(ref, ds, opts(tmp_path / "ref"), "supervised").fit()

    a = make_method()
    res = Trainer(a, ds, opts(tmp_path / "b"), "supervised").fit(stop_after=stop)
    assert res.interrupted and res.iteration == stop
    assert load_checkpoint(tmp_path / "b" / "last.pt")["iteration"] == stop
    torch.manual_seed(1234), np.random.seed(5), random.seed(6)   # resuming must not depend on the process state
    b = make_method()
    b.gen.manual_seed(0)
    res = Trainer(b, ds, opts(tmp_path / "b"), "supervised").fit(resume=str(tmp_path / "b"))
    assert res.iteration == 15
    for (k, p), q in zip(ref.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), k
    sa = load_checkpoint(tmp_path / "ref" / "last.pt")["optimizer"]["state"]
    sb = load_checkpoint(tmp_path / "b" / "last.pt")["optimizer"]["state"]
    assert all(torch.equal(sa[i]["exp_avg_sq"], sb[i]["exp_avg_sq"]) for i in sa)


def test_checkpoint_every_n_iterations_keeps_last_and_previous(tmp_path):
    ds = tiny_data()
    Trainer(make_method(Supervised, epochs=1), ds, opts(tmp_path, checkpoint_every=2), "supervised").fit()
    assert load_checkpoint(tmp_path / "last.pt")["iteration"] == 5          # end of the epoch (= the run)
    assert load_checkpoint(tmp_path / "previous.pt")["iteration"] == 4      # the last 2-iteration one
    events = [json.loads(s) for s in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in events if e["event"] == "checkpoint"] == [2, 4, 5]


def test_resume_with_other_config_is_refused(tmp_path):
    ds = tiny_data()
    Trainer(make_method(), ds, opts(tmp_path), "supervised").fit(stop_after=3)
    with pytest.raises(CheckpointError, match="different config"):
        Trainer(make_method(lr=0.5), ds, opts(tmp_path), "supervised").fit(resume=str(tmp_path))


def test_sigint_in_process_writes_checkpoint(tmp_path):
    ds = tiny_data()
    m = make_method(Supervised)
    m.after_step = lambda step, total: os.kill(os.getpid(), signal.SIGINT) if step == 4 else None
    res = Trainer(m, ds, opts(tmp_path), "supervised").fit()
    assert res.interrupted and res.signal == signal.SIGINT and res.iteration == 4
    assert load_checkpoint(tmp_path / "last.pt")["iteration"] == 4
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler   # handlers restored


def test_nonfinite_loss_and_bad_batch(tmp_path):
    ds = tiny_data()
    m = make_method(Supervised, lr=1e30, warmup_epochs=0, optimizer="adam")
    m.classifier.weight.data.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="iteration 1"):
        Trainer(m, ds, opts(tmp_path), "supervised").fit()
    with pytest.raises(ValueError, match="larger than the dataset"):
        Trainer(make_method(batch_size=64), ds, opts(tmp_path / "x"), "supervised").fit()


def test_sigterm_subprocess_writes_checkpoint_then_exits(tmp_path):
    out = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "fastskel.cli", "pretrain", "supervised",
           "--data", "synthetic:num_classes=3,num_samples=24,T=8,bodies=1", "--epochs", "100000",
           "--batch-size", "4", "--set", "backbone=tiny", "--set", "hidden=4", "--set", "depth=1",
           "--log-every", "1", "--no-progress", "--device", "cpu", "--out", str(out)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 120
        log = out / "log.jsonl"
        while time.time() < deadline:
            if log.exists() and sum('"train"' in s for s in log.read_text().splitlines()) >= 3:
                break
            if proc.poll() is not None:
                pytest.fail(f"training exited early: {proc.stdout.read()}")
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = proc.stdout.read()
    assert rc == 128 + signal.SIGTERM, text
    assert "SIGTERM" in text
    st = load_checkpoint(out / "last.pt")
    assert 3 <= st["iteration"] < st["total_iterations"]


@requires_cuda
def test_cuda_bf16_training(tmp_path):
    ds = tiny_data()
    res = Trainer(make_method(Supervised), ds, opts(tmp_path, device="cuda"), "supervised").fit()
    assert res.iteration == 15 and math.isfinite(res.last_loss)
