"""Two gloo processes on CPU (launched as torchrun would) reproduce one process on the same global batch."""
import json
import os
import socket
import subprocess
import sys

import pytest
import torch

from fastskel.cli import main
from fastskel.engine.latency import torch_threads

DATA = "synthetic:num_classes=4,num_samples=40,T=12,bodies=2"
ARGS = ["--data", DATA, "--epochs", "2", "--batch-size", "8", "--set", "backbone=tiny", "--set", "hidden=8",
        "--set", "depth=2", "--set", "kernel=3", "--set", "warmup_epochs=1", "--log-every", "1",
        "--no-progress", "--device", "cpu", "--seed", "3"]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _losses(out):
    rows = [json.loads(s) for s in (out / "log.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in rows if r["event"] == "train"]


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")
def test_two_process_gloo_matches_single_process(tmp_path):
    with torch_threads(1):
        assert main(["pretrain", "supervised", *ARGS, "--out", str(tmp_path / "one")]) == 0
    # What torchrun does, without its agent process: two ranks with RANK/WORLD_SIZE/MASTER_* set.
    port = str(_free_port())
    procs = []
    for rank in range(2):
        env = dict(os.environ, OMP_NUM_THREADS="1", RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2",
                   LOCAL_WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
        cmd = [sys.executable, "-m", "fastskel.cli", "pretrain", "supervised", *ARGS, "--out", str(tmp_path / "two")]
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    try:
        outs = [p.communicate(timeout=240)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, o in zip(procs, outs):
        assert p.returncode == 0, o[-3000:]
    one, two = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert len(one) == len(two) == 8  # 32 training samples, batch 8, 2 epochs
    assert [s for s, _ in one] == [s for s, _ in two]
    for (s, a), (_, b) in zip(one, two):
        assert abs(a - b) <= 1e-5, (s, a, b)
    cfg = json.loads((tmp_path / "two" / "log.jsonl").read_text().splitlines()[0])
    assert cfg["world_size"] == 2
    from fastskel.engine.checkpoint import load_checkpoint

    st1, st2 = load_checkpoint(tmp_path / "one" / "last.pt"), load_checkpoint(tmp_path / "two" / "last.pt")
    assert len(st2["rng"]) == 2 and st2["world_size"] == 2        # every rank's RNG state is saved
    for k, v in st1["model"].items():
        torch.testing.assert_close(st2["model"][k], v, atol=1e-5, rtol=1e-4)
