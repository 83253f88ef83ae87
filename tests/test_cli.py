"""Every ``fastskel`` engine command end to end on tiny synthetic data, and clear errors."""
import importlib.util
import json
import textwrap

import pytest
import torch

from fastskel.cli import main
from fastskel.engine.latency import torch_threads

DATA = "synthetic:num_classes=3,num_samples=36,T=12,bodies=2"
OTHER = "synthetic:num_classes=3,num_samples=30,T=12,bodies=1,seed=5,class_seed=5"
TINY = ["--set", "backbone=tiny", "--set", "hidden=8", "--set", "depth=1", "--set", "kernel=3"]


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    with torch_threads(1):
        rc = main(["pretrain", "supervised", "--data", DATA, "--epochs", "2", "--batch-size", "6", *TINY,
                   "--no-progress", "--device", "cpu", "--out", str(out)])
    assert rc == 0
    return out


def _evals(out):
    return [json.loads(s) for s in (out / "log.jsonl").read_text().splitlines() if '"eval"' in s]


def test_pretrain_writes_checkpoints_and_log(run):
    from fastskel.engine.checkpoint import load_checkpoint

    st = load_checkpoint(run / "last.pt")
    assert st["method"] == "supervised" and st["iteration"] == st["total_iterations"] == 10  # 30 train samples, batch 6
    assert st["config"]["num_classes"] == 3 and st["extra"]["data"] == DATA   # num_classes taken from the data
    assert (run / "previous.pt").exists()


@pytest.mark.parametrize("protocol,extra", [
    ("linear", ["--epochs", "5"]),
    ("knn", []),
    ("finetune", ["--epochs", "1", "--batch-size", "6", "--no-progress"]),
    ("semi", ["--epochs", "1", "--fraction", "0.01", "--no-progress"]),
    ("semi", ["--epochs", "5", "--fraction", "0.1", "--semi-protocol", "linear"]),
])
def test_eval_protocols(run, capsys, protocol, extra):
    rc = main(["eval", protocol, "--checkpoint", str(run / "last.pt"), "--data", DATA, "--device", "cpu",
               "--json", *extra])
    assert rc == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert "top-1 accuracy" in "\n".join(lines)
    info = json.loads(lines[-1])
    assert info["protocol"] == protocol and 0.0 <= info["top1"] <= 100.0
    if protocol == "semi":
        assert info["labelled"] >= 3                               # at least one sample per class
    assert _evals(run)[-1]["top1"] == pytest.approx(info["top1"])
    if protocol != "knn":
        assert (run / f"{protocol}.pt").exists()


def test_transfer_and_random_baseline(run, tmp_path, capsys):
    # transfer: pretrained on DATA, evaluated on another synthetic set (other subjects and class prototypes)
    assert main(["eval", "knn", "--checkpoint", str(run / "last.pt"), "--data", OTHER, "--out", str(tmp_path)]) == 0
    assert _evals(tmp_path)[-1]["data"] == OTHER
    assert main(["eval", "knn", "--method", "supervised", *TINY, "--data", DATA]) == 0
    assert "random weights" in capsys.readouterr().out


def test_resume_cli(tmp_path, capsys):
    args = ["pretrain", "supervised", "--data", DATA, "--epochs", "2", "--batch-size", "6", *TINY,
            "--no-progress", "--out", str(tmp_path)]
    assert main(args + ["--stop-after", "3"]) == 0
    assert "stopped at iteration 3/10" in capsys.readouterr().out
    assert main(args + ["--resume", str(tmp_path)]) == 0
    from fastskel.engine.checkpoint import load_checkpoint

    assert load_checkpoint(tmp_path / "last.pt")["iteration"] == 10


def test_profile_cli(tmp_path, capsys):
    rc = main(["profile", "frame_motion", "--small", "--device", "cpu", "--min-time", "0.01", "--out", str(tmp_path)])
    assert rc == 0
    out = capsys.readouterr().out
    assert "| frame_motion |" in out and "reference (ms)" in out
    js = list(tmp_path.glob("profile-frame_motion-*.json"))
    assert len(js) == 1
    data = json.loads(js[0].read_text())
    assert data["meta"]["torch"] == torch.__version__ and "triton" in data["meta"]
    row = data["rows"][0]
    assert row["reference_ms"] > 0
    if row["backend"] == "torch":   # "auto" is the reference on a CPU: no second timing, no ratio
        assert row["fast_ms"] is None and row["ratio"] is None and "= reference" in out
    else:
        assert row["fast_ms"] > 0 and row["ratio"] == pytest.approx(row["reference_ms"] / row["fast_ms"])


def test_bench_cli(tmp_path, capsys):
    bdir = tmp_path / "benchmarks"
    bdir.mkdir()
    (bdir / "bench_toy.py").write_text(textwrap.dedent("""
        import pytest

        @pytest.mark.parametrize("backend", ["torch", "fast"])
        def test_toy(benchmark, backend):
            x = list(range(2000))
            benchmark.group = "toy"
            benchmark.extra_info.update(shape=[64, 64], dtype="float32", device="cpu", backend=backend)
            fn = (lambda: sorted(x, reverse=True)) if backend == "torch" else (lambda: x[:10])
            benchmark.pedantic(fn, rounds=3, iterations=1)
    """))
    res = tmp_path / "results"
    assert main(["bench", "--benchmarks", str(bdir), "--out", str(res), "--small"]) == 0
    md = list(res.glob("*.md"))
    js = list(res.glob("*.json"))
    assert len(md) == len(js) == 1
    meta = json.loads(js[0].read_text())["fastskel"]
    assert {"device", "torch", "triton", "date"} <= set(meta)
    table = md[0].read_text()
    assert "test_toy[torch]" in table and "test_toy[fast]" in table and "1.00x" in table  # reference vs itself
    assert "64x64" in table and "float32" in table


def test_distill_cli(tmp_path, run, capsys):
    if importlib.util.find_spec("fastskel.methods.asma") is None:
        assert main(["distill", "--teacher", str(run / "last.pt")]) == 2
        assert "ASMa is not available yet" in capsys.readouterr().err
        return
    import dataclasses

    from fastskel.methods import get_method

    fields = {f.name for f in dataclasses.fields(get_method("asma")[1])}
    small = dict(num_frames=12, hidden_channels=4, depth=2, out_dim=8, projector_dims="[16]", joint_mask_n=2,
                 frame_mask_k=2, pad=2, warmup_epochs=0)
    tiny = [a for k, v in small.items() if k in fields for a in ("--set", f"{k}={v}")]
    assert main(["pretrain", "asma", "--data", DATA, "--epochs", "1", "--batch-size", "6", *tiny,
                 "--no-progress", "--out", str(tmp_path)]) == 0
    rc = main(["distill", "--teacher", str(tmp_path / "last.pt"), "--data", DATA, "--epochs", "1", "--batch-size", "6",
               "--teacher-epochs", "1", "--student-blocks", "1", "--no-progress", "--out", str(tmp_path / "d")])
    assert rc == 0
    out = capsys.readouterr().out
    assert "distill student top-1 accuracy" in out and "params" in out
    assert (tmp_path / "d" / "student.pt").exists()
    assert main(["distill", "--teacher", str(tmp_path / "nope.pt")]) == 2


def test_data_from_a_file(tmp_path, capsys):
    import numpy as np

    import fastskel.data as fd

    if not hasattr(fd, "load"):
        path = tmp_path / "x.npz"
        path.write_bytes(b"")
        rc, err = _err(capsys, ["pretrain", "supervised", "--data", str(path)])
        assert rc == 2 and "fastskel.data.load" in err
        return
    # CTR-GCN / MAMP layout (docs/design.md §6): x (N, T, 150) = (T, M=2, V=25, C=3) flattened, one-hot y
    from fastskel.data import SyntheticSkeletons

    def ctr(ds):
        x = ds.x.permute(0, 2, 4, 3, 1).reshape(len(ds), ds.x.shape[2], -1).numpy()
        return x, np.eye(3, dtype=np.float32)[ds.y.numpy()]

    xtr, ytr = ctr(SyntheticSkeletons(3, 36, T=12, split="train"))
    xte, yte = ctr(SyntheticSkeletons(3, 36, T=12, split="test"))
    path = tmp_path / "tiny.npz"
    np.savez(path, x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
    assert main(["pretrain", "supervised", "--data", str(path), "--epochs", "1", "--batch-size", "6", *TINY,
                 "--no-progress", "--out", str(tmp_path / "r")]) == 0
    assert main(["eval", "knn", "--checkpoint", str(tmp_path / "r" / "last.pt"), "--data", str(path)]) == 0
    assert "knn top-1 accuracy" in capsys.readouterr().out


def _amr_available():
    try:
        from fastskel.methods import get_method

        get_method("amr")
        return True
    except Exception:
        return False


@pytest.mark.skipif(not _amr_available(), reason="fastskel.methods.amr is not available")
def test_main_job_amr_then_linear(tmp_path, capsys):
    small = ["--set", "num_frames=8", "--set", "frames_per_patch=4", "--set", "r=1", "--set", "dim=16",
             "--set", "depth=1", "--set", "heads=2", "--set", "decoder_dim=16", "--set", "decoder_depth=1",
             "--set", "decoder_heads=2", "--set", "crop_min_frames=4", "--set", "mask_ratio=0.5"]
    assert main(["pretrain", "amr", "--data", DATA, "--epochs", "1", "--batch-size", "6", *small,
                 "--no-progress", "--out", str(tmp_path)]) == 0
    assert main(["eval", "linear", "--checkpoint", str(tmp_path / "last.pt"), "--data", DATA, "--epochs", "3"]) == 0
    assert "linear top-1 accuracy" in capsys.readouterr().out


# ----------------------------------------------------------------------------------- errors
def _err(capsys, argv):
    rc = main(argv)
    return rc, capsys.readouterr().err


def test_bad_arguments_and_missing_files(tmp_path, capsys, run):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("learning_rate: 0.1\n")
    rc, err = _err(capsys, ["pretrain", "supervised", "--config", str(cfg), "--data", DATA])
    assert rc == 2 and "unknown key(s) ['learning_rate']" in err and "'lr'" in err
    rc, err = _err(capsys, ["pretrain", "supervised", "--config", str(tmp_path / "none.yaml")])
    assert rc == 2 and "none.yaml" in err
    rc, err = _err(capsys, ["pretrain", "supervised", "--data", str(tmp_path / "nodata.npz")])
    assert rc == 2 and "nodata.npz" in err
    rc, err = _err(capsys, ["pretrain", "supervised", "--data", "synthetic:bogus=1"])
    assert rc == 2 and "bogus" in err
    rc, err = _err(capsys, ["pretrain", "supervised", "--epochs", "0"])
    assert rc == 2 and "--epochs" in err
    rc, err = _err(capsys, ["pretrain", "supervised", "--set", "depth"])
    assert rc == 2 and "KEY=VALUE" in err
    rc, err = _err(capsys, ["eval", "linear", "--checkpoint", str(tmp_path / "missing.pt"), "--data", DATA])
    assert rc == 2 and "missing.pt" in err
    bad = tmp_path / "last.pt"
    bad.write_bytes((run / "last.pt").read_bytes()[:500])
    rc, err = _err(capsys, ["eval", "knn", "--checkpoint", str(bad), "--data", DATA])
    assert rc == 2 and "corrupt or truncated" in err and str(bad) in err
    rc, err = _err(capsys, ["eval", "linear", "--data", DATA])
    assert rc == 2 and "--checkpoint" in err
    rc, err = _err(capsys, ["export", "--checkpoint", str(tmp_path / "missing.pt")])
    assert rc == 2 and "missing.pt" in err
    rc, err = _err(capsys, ["bench", "--benchmarks", str(tmp_path / "nobench")])
    assert rc == 2 and "nobench" in err
    for argv in (["pretrain", "nope"], ["eval", "cluster"], ["profile", "no_such_op"], ["pretrain", "supervised", "--epochs", "x"]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2
        assert "invalid" in capsys.readouterr().err
