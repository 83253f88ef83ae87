"""Resume that behaves: ``--epochs`` extends a run (schedule recomputed), a corrupt ``last.pt`` falls
back to ``previous.pt`` with a warning, checkpoint errors are whole sentences naming the file;
logging: TensorBoard real or a one-line warning, ``--log-every`` prints with ``--no-progress``."""
import json
import re

import pytest
import torch

from fastskel.cli import main
from fastskel.data import SkeletonDataset
from fastskel.engine import logging as runlog
from fastskel.engine.checkpoint import CheckpointError, load_checkpoint, resolve_resume, save_checkpoint
from fastskel.engine.schedule import warmup_cosine_lr
from fastskel.engine.trainer import TrainOptions, Trainer
from fastskel.methods.supervised import Supervised, SupervisedConfig

pytestmark = pytest.mark.usefixtures("one_thread")


def _data(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 4
    x = torch.randn(n, 3, 12, 25, 2, generator=g) * 0.1 + y.view(n, 1, 1, 1, 1) * 0.2
    return SkeletonDataset(x, y)


def _method(**kw):
    torch.manual_seed(0)
    cfg = dict(num_classes=4, backbone="tiny", hidden=8, depth=1, kernel=3, epochs=3, batch_size=8,
               warmup_epochs=1, jitter=0.01)
    cfg.update(kw)
    return Supervised(SupervisedConfig(**cfg))


def _opts(out, **kw):
    return TrainOptions(**{"out": str(out), "progress": False, "log_every": 1, "tensorboard": False, "device": "cpu",
                           **kw})


def _events(out):
    return [json.loads(s) for s in (out / "log.jsonl").read_text().splitlines()]


def test_resume_with_more_epochs_extends_the_run_and_recomputes_the_schedule(tmp_path):
    ds = _data()
    assert Trainer(_method(epochs=3), ds, _opts(tmp_path), "supervised").fit().iteration == 15   # 5 it/epoch
    m = _method(epochs=4)
    res = Trainer(m, ds, _opts(tmp_path), "supervised").fit(resume=str(tmp_path))
    assert res.iteration == 20 and not res.interrupted
    st = load_checkpoint(tmp_path / "last.pt")
    assert st["iteration"] == 20 and st["total_iterations"] == 20 and st["config"]["epochs"] == 4
    assert st["scheduler"]["total_iters"] == 20
    cfg = m.config
    lrs = {e["step"]: e["lr"] for e in _events(tmp_path) if e["event"] == "train" and e["step"] > 15}
    assert sorted(lrs) == [16, 17, 18, 19, 20]
    for s, lr in lrs.items():   # the 4-epoch schedule (warmup 5, cosine to iteration 20), from where it resumed
        assert lr == pytest.approx(warmup_cosine_lr(s - 1, 20, 5, cfg.lr, cfg.min_lr), rel=1e-9)
    resume = [e for e in _events(tmp_path) if e["event"] == "resume"]
    assert resume[-1]["epochs"] == 4 and resume[-1]["total_iterations"] == 20
    with pytest.raises(CheckpointError, match=r"--epochs of at least 4"):     # cannot shrink below the run
        Trainer(_method(epochs=2), ds, _opts(tmp_path), "supervised").fit(resume=str(tmp_path))


def test_cli_resume_dir_epochs_extends(tmp_path, capsys):
    args = ["pretrain", "supervised", "--data", "synthetic:num_classes=3,num_samples=36,T=12,bodies=1",
            "--batch-size", "6", "--set", "backbone=tiny", "--set", "hidden=8", "--set", "depth=1",
            "--no-progress", "--device", "cpu", "--out", str(tmp_path)]
    assert main(args + ["--epochs", "3"]) == 0
    assert main(args + ["--epochs", "4", "--resume", str(tmp_path)]) == 0
    assert "different config" not in capsys.readouterr().err
    st = load_checkpoint(tmp_path / "last.pt")
    assert st["iteration"] == st["total_iterations"] == 20 and st["epoch"] == 4
    assert [e["epoch"] for e in _events(tmp_path) if e["event"] == "epoch"] == [1, 2, 3, 4]


def test_corrupt_last_falls_back_to_previous_with_a_warning_and_resumes_exactly(tmp_path):
    ds = _data()
    ref = _method(epochs=2)
    Trainer(ref, ds, _opts(tmp_path / "ref"), "supervised").fit()
    run = tmp_path / "run"
    Trainer(_method(epochs=2), ds, _opts(run), "supervised").fit(stop_after=7)   # last = 7, previous = 5
    assert load_checkpoint(run / "previous.pt")["iteration"] == 5
    data = (run / "last.pt").read_bytes()
    (run / "last.pt").write_bytes(data[: len(data) // 3])                          # a crash mid-copy
    with pytest.warns(UserWarning, match=r"last\.pt cannot be loaded .*resuming from the previous checkpoint .*previous\.pt"):
        path = resolve_resume(run)
    assert path == run / "previous.pt"
    b = _method(epochs=2)
    with pytest.warns(UserWarning, match="previous"):
        res = Trainer(b, ds, _opts(run), "supervised").fit(resume=str(run))
    assert res.iteration == 10
    for (k, p), q in zip(ref.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), k
    (run / "previous.pt").write_bytes(b"garbage")
    (run / "last.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match=r"last\.pt"):                       # nothing to fall back to
        resolve_resume(run)


def _assert_whole_sentences(msg, path):
    assert str(path) in msg
    assert "weights_only" not in msg and "WeightsUnpickler" not in msg and "Unpickler" not in msg
    assert msg.rstrip().endswith("."), msg
    assert msg.count("(") == msg.count(")"), msg
    assert "\n" not in msg and len(msg) < 400, msg


@pytest.mark.parametrize("content", ["random", "truncated", "object", "foreign"])
def test_garbage_checkpoint_message_is_whole_sentences_naming_the_file(tmp_path, content):
    p = tmp_path / "x.pt"
    if content == "random":
        p.write_bytes(bytes(range(256)) * 20)
    elif content == "truncated":
        save_checkpoint({"model": {"w": torch.ones(1000)}}, p)
        p.write_bytes(p.read_bytes()[:700])
    elif content == "object":
        torch.save({"cfg": SupervisedConfig(num_classes=3)}, p)       # pickled code: refused, not run
    else:
        torch.save({"state_dict": {"w": torch.ones(2)}}, p)           # a torch file, not a fastskel checkpoint
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(p)
    msg = str(e.value)
    _assert_whole_sentences(msg, p)
    if content == "object":
        assert "not a fastskel checkpoint" in msg and "never runs code" in msg
    # with a previous checkpoint beside it, the message says so (a whole sentence too)
    save_checkpoint({"model": {}}, tmp_path / "x.prev.pt")
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(p)
    _assert_whole_sentences(str(e.value), p)
    assert re.search(r"The previous checkpoint .*x\.prev\.pt exists and can be used instead\.$", str(e.value))


def test_cli_garbage_checkpoint_one_line_error(tmp_path, capsys):
    p = tmp_path / "last.pt"
    p.write_bytes(b"\x80\x04not a checkpoint at all" * 10)
    import warnings

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert main(["eval", "knn", "--checkpoint", str(p), "--data", "synthetic:num_classes=3,num_samples=30,T=8"]) == 2
    assert not [w for w in seen if "weights_only" in str(w.message) or "Unpickler" in str(w.message)]
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("fastskel eval: error: checkpoint")
    _assert_whole_sentences(err, p)


# ----------------------------------------------------------------------------------- logging
def test_tensorboard_missing_warns_once_when_asked_for(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(runlog, "_summary_writer", lambda: None)
    runlog.RunLogger(tmp_path / "a", tensorboard=True).close()
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "tensorboard" in err.lower() and "pip install tensorboard" in err
    runlog.RunLogger(tmp_path / "b", tensorboard=None).close()     # not asked for: silent
    runlog.RunLogger(tmp_path / "c", tensorboard=False).close()
    assert capsys.readouterr().err == ""
    rc = main(["pretrain", "supervised", "--data", "synthetic:num_classes=3,num_samples=24,T=8,bodies=1",
               "--epochs", "1", "--batch-size", "6", "--set", "backbone=tiny", "--set", "hidden=4", "--set", "depth=1",
               "--no-progress", "--device", "cpu", "--tensorboard", "--out", str(tmp_path / "run")])
    assert rc == 0 and capsys.readouterr().err.lower().count("tensorboard") >= 1


def test_tensorboard_writes_scalars_when_installed(tmp_path, monkeypatch):
    calls = []

    class FakeWriter:
        def __init__(self, logdir):
            calls.append(("init", logdir))

        def add_scalar(self, tag, value, step):
            calls.append((tag, value, step))

        def close(self):
            calls.append(("close",))

    monkeypatch.setattr(runlog, "_summary_writer", lambda: FakeWriter)
    ds = _data(24)
    Trainer(_method(epochs=1), ds, _opts(tmp_path, tensorboard=None, log_every=1), "supervised").fit()
    assert calls[0] == ("init", str(tmp_path / "tb")) and calls[-1] == ("close",)
    tags = {c[0] for c in calls if len(c) == 3}
    assert {"train/loss", "train/lr", "train/samples_per_s", "epoch/loss"} <= tags
    assert [c[2] for c in calls if c[0] == "train/loss"] == [1, 2, 3]


def test_log_every_prints_with_no_progress(tmp_path, capsys):
    base = ["pretrain", "supervised", "--data", "synthetic:num_classes=3,num_samples=36,T=8,bodies=1", "--epochs", "1",
            "--batch-size", "6", "--set", "backbone=tiny", "--set", "hidden=4", "--set", "depth=1", "--device", "cpu",
            "--no-progress"]
    assert main(base + ["--log-every", "2", "--out", str(tmp_path / "a")]) == 0
    lines = [s for s in capsys.readouterr().out.splitlines() if s.startswith("[fastskel] it ")]
    assert [s.split()[2] for s in lines] == ["2/5", "4/5", "5/5"]
    assert all(" loss " in s and " lr " in s and "samples_per_s" in s for s in lines)
    assert main(base + ["--out", str(tmp_path / "b")]) == 0                      # no --log-every: no such lines
    assert not [s for s in capsys.readouterr().out.splitlines() if s.startswith("[fastskel] it ")]


def test_resume_auto_starts_fresh_then_continues_the_out_folder(tmp_path, monkeypatch):
    args = ["pretrain", "supervised", "--data", "synthetic:num_classes=3,num_samples=36,T=8,bodies=1", "--epochs", "2",
            "--batch-size", "6", "--set", "backbone=tiny", "--set", "hidden=4", "--set", "depth=1", "--device", "cpu",
            "--no-progress", "--out", str(tmp_path), "--resume", "auto"]
    assert main(args + ["--stop-after", "3"]) == 0                       # empty folder: a fresh start
    assert load_checkpoint(tmp_path / "last.pt")["iteration"] == 3
    assert main(args) == 0                                                # the folder's checkpoint: continued
    ev = _events(tmp_path)
    assert [e["step"] for e in ev if e["event"] == "resume"] == [3] and sum(e["event"] == "config" for e in ev) == 1
    assert load_checkpoint(tmp_path / "last.pt")["iteration"] == 10
    # a restarted torchrun worker (TORCHELASTIC_RESTART_COUNT > 0) resumes without being asked
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    assert main(args[:-2] + ["--epochs", "3"]) == 0
    assert [e["step"] for e in _events(tmp_path) if e["event"] == "resume"] == [3, 10]
