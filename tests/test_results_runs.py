"""``fastskel plot`` (learning-curve PNG) and ``fastskel report`` (one row per run, Markdown + CSV),
including a run that was extended with ``--resume --epochs`` after an idle gap."""
import csv
import io
import json

import pytest

from fastskel.cli import main
from fastskel.engine.latency import torch_threads
from fastskel.engine.plot import have_matplotlib
from fastskel.engine.report import BASE_COLUMNS, report_table

pytestmark = pytest.mark.usefixtures("one_thread")

DATA = "synthetic:num_classes=3,num_samples=36,T=12,bodies=2"
TINY = ["--set", "backbone=tiny", "--set", "hidden=8", "--set", "depth=1", "--set", "kernel=3"]
IDLE = 5000.0  # seconds the first run's events are moved into the past: the gap before its resume


def _pretrain(out, epochs, *extra):
    return main(["pretrain", "supervised", "--data", DATA, "--epochs", str(epochs), "--batch-size", "6", *TINY,
                 "--log-every", "2", "--no-progress", "--device", "cpu", "--out", str(out), *extra])


def _shift_log(out, seconds):
    lines = [json.loads(s) for s in (out / "log.jsonl").read_text().splitlines()]
    for e in lines:
        e["time"] -= seconds
    (out / "log.jsonl").write_text("".join(json.dumps(e) + "\n" for e in lines))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("runs")
    with torch_threads(1):
        a, b = base / "a", base / "b"
        assert _pretrain(a, 2) == 0
        _shift_log(a, IDLE)                                     # finished long ago ...
        assert _pretrain(a, 3, "--resume", str(a)) == 0         # ... then extended to 3 epochs
        assert main(["eval", "knn", "--checkpoint", str(a / "last.pt"), "--data", DATA]) == 0
        assert _pretrain(b, 1) == 0
        assert main(["eval", "linear", "--checkpoint", str(b / "last.pt"), "--data", DATA, "--epochs", "3"]) == 0
    return a, b


def test_report_one_row_per_run_with_the_expected_columns(runs, tmp_path, capsys):
    a, b = runs
    assert main(["report", str(a), str(b), "--out", str(tmp_path / "results")]) == 0
    md = (tmp_path / "results.md").read_text().splitlines()
    assert len(md) == 2 + 2                                      # header, rule, one row per run
    header = [c.strip() for c in md[0].strip("|").split("|")]
    for col in BASE_COLUMNS + ["knn top-1", "knn top-5", "linear top-1", "linear top-5", "wall_s", "device",
                               "versions"]:
        assert col in header, col
    with open(tmp_path / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["run"] for r in rows] == [str(a), str(b)]
    ra, rb = rows
    assert ra["method"] == rb["method"] == "supervised" and ra["data"] == DATA
    assert ra["epochs"] == "3/3" and rb["epochs"] == "1/1"        # was "3/2" after the extension
    assert int(ra["iterations"]) == 15 and int(rb["iterations"]) == 5   # 30 train samples / batch 6
    assert float(ra["knn top-1"]) >= 0 and ra["linear top-1"] == "" and float(rb["linear top-1"]) >= 0
    assert float(ra["final_loss"]) > 0 and "torch" in ra["versions"] and ra["device"].startswith("cpu")
    assert 0 <= float(ra["wall_s"]) < 600                         # the idle gap before the resume is not counted
    capsys.readouterr()
    assert main(["report", str(a), "--csv"]) == 0
    printed = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(printed) == 1 and printed[0]["epochs"] == "3/3"


def test_report_errors(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "log.jsonl" in capsys.readouterr().err
    with pytest.raises(ValueError, match="at least one"):
        report_table([])


@pytest.mark.skipif(not have_matplotlib(), reason="matplotlib is not installed")
def test_plot_writes_a_nontrivial_png(runs, tmp_path, capsys):
    import numpy as np
    from matplotlib.image import imread

    a, b = runs
    out = tmp_path / "curves.png"
    assert main(["plot", str(a), str(b), "--out", str(out), "--labels", "extended,short"]) == 0
    assert out.stat().st_size > 10_000 and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = imread(out)
    assert img.shape[0] > 200 and img.shape[1] > 400
    flat = img.reshape(-1, img.shape[-1])
    assert len(np.unique(flat, axis=0)) > 20                      # curves, axes and text, not one colour
    assert main(["plot", str(a), "--keys", "loss,lr", "--out", str(tmp_path / "two.png")]) == 0
    assert main(["plot", str(a), "--keys", "nope"]) == 2
    assert "nope" in capsys.readouterr().err
    # the confusion matrix PNG of an evaluation is an image too
    conf = imread(a / "knn_confusion.png")
    assert len(np.unique(conf.reshape(-1, conf.shape[-1]), axis=0)) > 5


def test_plot_without_matplotlib_fails_clearly(runs, monkeypatch, capsys):
    import fastskel.engine.plot as plot

    monkeypatch.setattr(plot, "have_matplotlib", lambda: False)
    assert main(["plot", str(runs[0])]) == 2
    assert "matplotlib" in capsys.readouterr().err
    assert plot.plot_confusion({"confusion": [[1]]}, "x.png") is None


def _main_job_commands():
    """The ``fastskel`` lines of ``run.sh main`` (the README's main-job example), comments dropped."""
    import shlex
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "run.sh").read_text()
    block = text.split("  main)", 1)[1].split(";;", 1)[0]
    cmds = []
    for line in block.splitlines():
        line = line.split(" #", 1)[0].strip()
        if line.startswith("fastskel ") and line != "fastskel info":
            cmds.append(shlex.split(line)[1:])
    return cmds


def test_main_job_plot_and_report_lines_run(tmp_path, monkeypatch, capsys):
    """run.sh main's own commands, on tiny data and 1 epoch: pretrain, both probes, plot, report."""
    cmds = _main_job_commands()
    assert [c[0] for c in cmds] == ["pretrain", "eval", "eval", "plot", "report"]
    monkeypatch.chdir(tmp_path)
    small = ["--set", "num_frames=8", "--set", "frames_per_patch=4", "--set", "r=1", "--set", "dim=16", "--set", "depth=1",
             "--set", "decoder_depth=1", "--set", "crop_min_frames=4"]
    for argv in cmds:
        argv = [DATA if a == "$DATA" else a for a in argv]
        if argv[0] == "pretrain":
            argv += ["--epochs", "1", "--batch-size", "6", "--no-progress", *small]
        elif argv[0] == "eval":
            argv += ["--epochs", "3"] + (small if "--method" in argv else [])
        if argv[0] == "plot" and not have_matplotlib():
            continue
        assert main(argv) == 0, argv
    out = capsys.readouterr().out
    assert (tmp_path / "runs" / "amr" / "linear_confusion.csv").exists()
    assert (tmp_path / "runs" / "amr-random" / "linear_per_class.csv").exists()
    if have_matplotlib():
        assert (tmp_path / "runs" / "amr" / "curves.png").stat().st_size > 10_000
    with open(tmp_path / "runs" / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["run"] for r in rows] == ["runs/amr", "runs/amr-random"] and "linear top-1" in rows[0]
    assert rows[0]["method"] == rows[1]["method"] == "amr" and rows[0]["epochs"] == "1/1"
    assert rows[0]["preset"] == "small" and rows[1]["data"] == DATA          # an eval-only folder: its data
    assert "| runs/amr |" in out
