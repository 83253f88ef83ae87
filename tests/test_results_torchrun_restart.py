"""A ``torchrun --max-restarts 1`` run whose rank is SIGKILLed mid-epoch restarts, resumes from its
last checkpoint by itself (no ``--resume``: a restarted worker sees ``TORCHELASTIC_RESTART_COUNT``)
and ends with bit-identical weights to the same run uninterrupted (2 gloo processes on CPU)."""
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from fastskel.engine.checkpoint import load_checkpoint

DATA = "synthetic:num_classes=4,num_samples=40,T=12,bodies=2"
# 32 training samples, global batch 8 → 4 iterations/epoch, 3 epochs = 12 iterations; checkpoints
# every 3 iterations and at epoch ends; rank 1 is killed after iteration 7 → resume from 6 (mid-epoch)
ARGS = ["pretrain", "supervised", "--data", DATA, "--epochs", "3", "--batch-size", "8", "--set", "backbone=tiny",
        "--set", "hidden=8", "--set", "depth=1", "--set", "kernel=3", "--set", "warmup_epochs=1",
        "--set", "jitter=0.05", "--checkpoint-every", "3", "--log-every", "1", "--no-progress", "--device", "cpu",
        "--seed", "3"]


def _torchrun(out, kill_at=None, timeout=150):
    exe = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or shutil.which("torchrun")
    launcher = [exe] if exe else [sys.executable, "-m", "torch.distributed.run"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("FASTSKEL_TEST_KILL_AT_ITER", None)
    if kill_at is not None:
        env["FASTSKEL_TEST_KILL_AT_ITER"] = str(kill_at)
    cmd = [*launcher, "--standalone", "--nproc-per-node", "2", "--max-restarts", "1", "--monitor-interval", "0.2",
           "-m", "fastskel.cli", *ARGS, "--out", str(out)]
    p = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)
    return p.returncode, p.stdout


@pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                    reason="needs torch.distributed with gloo")
def test_killed_rank_restarts_resumes_and_matches_uninterrupted(tmp_path):
    rc, log = _torchrun(tmp_path / "ref")
    assert rc == 0, log[-3000:]
    rc, log = _torchrun(tmp_path / "killed", kill_at=7)
    assert rc == 0, log[-3000:]
    assert "Signals.SIGKILL" in log or "SIGKILL" in log or "exitcode: -9" in log, log[-3000:]
    events = [json.loads(s) for s in (tmp_path / "killed" / "log.jsonl").read_text().splitlines()]
    resumes = [e for e in events if e["event"] == "resume"]
    assert len(resumes) == 1 and resumes[0]["step"] == 6, resumes          # the iteration-6 checkpoint
    steps = [e["step"] for e in events if e["event"] == "train"]
    assert steps == list(range(1, 13))          # killed before logging 7; 7-12 by the restarted attempt
    ref, got = load_checkpoint(tmp_path / "ref" / "last.pt"), load_checkpoint(tmp_path / "killed" / "last.pt")
    assert got["iteration"] == ref["iteration"] == 12
    for k, v in ref["model"].items():
        assert torch.equal(got["model"][k], v), k
    for i, s in ref["optimizer"]["state"].items():
        for name, t in s.items():
            assert torch.equal(got["optimizer"]["state"][i][name], t), (i, name)
    losses = {e["step"]: e["loss"] for e in events if e["event"] == "train"}
    ref_losses = {e["step"]: e["loss"] for e in map(json.loads, (tmp_path / "ref" / "log.jsonl").read_text().splitlines())
                  if e["event"] == "train"}
    assert losses == ref_losses
