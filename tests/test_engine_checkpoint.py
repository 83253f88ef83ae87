"""Checkpoints: atomic writes, previous kept, clear errors for corrupt/truncated files, RNG states."""
import os
import random

import numpy as np
import pytest
import torch

from fastskel.engine.checkpoint import (FORMAT, CheckpointError, find_generators, load_checkpoint, previous_path,
                                        resolve_resume, rng_state, save_checkpoint, set_rng_state)


def _state(v):
    return {"model": {"w": torch.full((3,), float(v))}, "iteration": v, "config": {"lr": 0.1, "betas": (0.9, 0.95)}}


def test_save_load_roundtrip_and_previous_kept(tmp_path):
    p = tmp_path / "run" / "last.pt"
    save_checkpoint(_state(1), p)
    assert not previous_path(p).exists()
    save_checkpoint(_state(2), p)
    assert previous_path(p) == tmp_path / "run" / "previous.pt"
    st, prev = load_checkpoint(p), load_checkpoint(previous_path(p))
    assert st["iteration"] == 2 and prev["iteration"] == 1
    assert st["format"] == FORMAT and st["config"]["betas"] == (0.9, 0.95)
    assert torch.equal(st["model"]["w"], torch.full((3,), 2.0))
    assert [f.name for f in p.parent.iterdir() if f.name.startswith(".")] == []  # no temp files left
    assert previous_path(tmp_path / "x.pt").name == "x.prev.pt"


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_checkpoint_clear_error_previous_survives(tmp_path, damage):
    p = tmp_path / "last.pt"
    save_checkpoint(_state(1), p)
    save_checkpoint(_state(2), p)
    data = p.read_bytes()
    if damage == "truncate":
        p.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        p.write_bytes(b"\x00not a zip" * 50)
    else:
        p.write_bytes(b"")
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(p)
    msg = str(e.value)
    assert str(p) in msg and str(previous_path(p)) in msg
    assert load_checkpoint(previous_path(p))["iteration"] == 1


def test_not_a_checkpoint_and_missing_file(tmp_path):
    p = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, p)
    with pytest.raises(CheckpointError, match="not a fastskel checkpoint"):
        load_checkpoint(p)
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_checkpoint(tmp_path / "nope.pt")
    with pytest.raises(CheckpointError, match="directory"):
        load_checkpoint(tmp_path)


def test_failed_save_keeps_last_checkpoint(tmp_path, monkeypatch):
    p = tmp_path / "last.pt"
    save_checkpoint(_state(1), p)
    real_save = torch.save

    def broken_save(obj, f, *a, **k):
        f.write(b"partial bytes")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(_state(2), p)
    monkeypatch.setattr(torch, "save", real_save)
    assert load_checkpoint(p)["iteration"] == 1
    assert sorted(f.name for f in tmp_path.iterdir()) == ["last.pt"]


def test_resolve_resume(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        resolve_resume(tmp_path)
    save_checkpoint(_state(1), tmp_path / "last.pt")
    assert resolve_resume(tmp_path) == tmp_path / "last.pt"
    os.replace(tmp_path / "last.pt", tmp_path / "previous.pt")     # as after a crash between the renames
    with pytest.warns(UserWarning, match="previous.pt"):
        assert resolve_resume(tmp_path) == tmp_path / "previous.pt"
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        resolve_resume(tmp_path / "missing.pt")


def test_rng_state_roundtrip_every_generator(tmp_path):
    m = torch.nn.Linear(2, 2)
    m.gen = torch.Generator().manual_seed(7)
    gens = find_generators(m)
    assert list(gens) == ["gen"]
    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    np.random.randn()  # a cached gaussian must survive too
    st = rng_state(gens)
    save_checkpoint({"rng": st}, tmp_path / "r.pt")
    st = load_checkpoint(tmp_path / "r.pt")["rng"]                 # through weights_only loading

    def draw():
        return (torch.rand(4), np.random.randn(4), [random.random() for _ in range(3)],
                torch.rand(4, generator=m.gen))

    a = draw()
    set_rng_state(st, gens)
    b = draw()
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2] and torch.equal(a[3], b[3])
