"""SIGKILL at random points of checkpoint writes never loses the last good checkpoint.

A forked writer process saves numbered states through :func:`fastskel.engine.checkpoint.save_checkpoint`
in a loop (about 2 MB each, so a kill often lands inside ``torch.save`` or between the renames) and
reports every save that returned; the test kills it with SIGKILL after a random delay, then checks
that the run folder resumes (``resolve_resume``) from a state the writer wrote, no older than the
last save it reported, and that ``previous.pt`` holds the one before (or the same one, when the
kill fell between its rotation and the rename of the new file). 20 trials (≈ 5 s on 2 cores).
"""
import multiprocessing as mp
import os
import random
import signal
import time
import warnings

import pytest
import torch

from fastskel.engine.checkpoint import load_checkpoint, resolve_resume, save_checkpoint

TRIALS = 20


def _state(i: int):
    return {"i": i, "w": torch.full((512, 1024), float(i)), "tail": torch.arange(i + 1)}


def _writer(folder: str, conn) -> None:
    torch.set_num_threads(1)
    i = 0
    while True:
        save_checkpoint(_state(i), os.path.join(folder, "last.pt"))
        conn.send(i)        # this save returned: it must survive a kill from here on
        i += 1


def _check_state(st, i_min: int) -> int:
    i = int(st["i"])
    assert i >= i_min, f"resumed state {i} is older than the last completed save {i_min}"
    assert torch.equal(st["w"], torch.full((512, 1024), float(i))) and torch.equal(st["tail"], torch.arange(i + 1))
    return i


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_sigkill_during_checkpoint_writes_leaves_a_loadable_checkpoint(tmp_path):
    ctx = mp.get_context("fork")
    rng = random.Random(0)
    mid_write = 0
    for trial in range(TRIALS):
        d = tmp_path / f"t{trial}"
        d.mkdir()
        recv, send = ctx.Pipe(duplex=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)   # fork with threads: the child only saves
            p = ctx.Process(target=_writer, args=(str(d), send), daemon=True)
            p.start()
        send.close()
        done = recv.recv()                                   # the first save is complete
        time.sleep(rng.uniform(0.0, 0.12))
        os.kill(p.pid, signal.SIGKILL)
        p.join(10)
        assert p.exitcode == -signal.SIGKILL
        while recv.poll():
            try:
                done = recv.recv()
            except EOFError:
                break
        recv.close()
        mid_write += any(f.name.startswith(".") for f in d.iterdir())     # a temp file: killed inside a save
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")                  # a fallback to previous.pt warns
            path = resolve_resume(d)
        i = _check_state(load_checkpoint(path), done)
        assert path.name == "last.pt", f"trial {trial}: last.pt was not loadable after the kill"
        if i > 0:   # = i when killed between the rotation of previous.pt and the rename of the new file
            assert int(load_checkpoint(d / "previous.pt")["i"]) in (i - 1, i)
        # the next save (a resumed run) cleans the killed writer's temp files and rotates normally
        save_checkpoint(_state(i + 1), d / "last.pt")
        assert not [f for f in d.iterdir() if f.name.startswith(".")]
        assert int(load_checkpoint(d / "previous.pt")["i"]) == i
    print(f"{TRIALS} SIGKILL trials, {mid_write} landed inside a save")
