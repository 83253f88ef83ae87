"""Two gloo processes on CPU (torchrun) reproduce one process on the same global batch."""
import json
import os
import socket
import subprocess
import sys

import pytest
import torch

from fastskel.cli import main

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
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["pretrain", "supervised", *ARGS, "--out", str(tmp_path / "one")]) == 0
    finally:
        torch.set_num_threads(n)
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
           "-m", "fastskel.cli", "pretrain", "supervised", *ARGS, "--out", str(tmp_path / "two")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    one, two = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert len(one) == len(two) == 10
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
