"""``fastskel eval`` writes top-1/top-5, per-class accuracy and the confusion matrix for every
protocol (linear, knn, finetune, semi, transfer), and refuses options it would not use."""
import csv
import json

import pytest
import torch

from fastskel.cli import main
from fastskel.engine.data import load_dataset
from fastskel.engine.metrics import classification_report, confusion_matrix, per_class_accuracy, topk_accuracy
from fastskel.engine.plot import have_matplotlib
from fastskel.engine.latency import torch_threads

pytestmark = pytest.mark.usefixtures("one_thread")

K = 6  # > 5 classes, so top-5 is not trivially 100 %
DATA = f"synthetic:num_classes={K},num_samples=60,T=12,bodies=2"
OTHER = f"synthetic:num_classes={K},num_samples=48,T=12,bodies=1,seed=5,class_seed=5"
TINY = ["--set", "backbone=tiny", "--set", "hidden=8", "--set", "depth=1", "--set", "kernel=3"]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    out = tmp_path_factory.mktemp("pre")
    with torch_threads(1):
        assert main(["pretrain", "supervised", "--data", DATA, "--epochs", "1", "--batch-size", "8", *TINY,
                     "--no-progress", "--device", "cpu", "--out", str(out)]) == 0
    return out / "last.pt"


def _check_outputs(out, protocol, data=DATA):
    """The per-class table and confusion matrix agree with each other and with the test set."""
    test = load_dataset(data, "test")
    rep = json.loads((out / f"{protocol}_metrics.json").read_text())
    conf = torch.tensor(rep["confusion"])
    assert conf.shape == (K, K) and int(conf.sum()) == len(test) == rep["num_samples"]
    assert conf.sum(1).tolist() == torch.bincount(test.y, minlength=K).tolist()       # rows = true class
    assert rep["top5"] >= rep["top1"]
    assert rep["top1"] == pytest.approx(100.0 * float(conf.diag().sum()) / len(test))
    with open(out / f"{protocol}_per_class.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == K
    for c, r in enumerate(rows):
        assert int(r["support"]) == int(conf[c].sum()) and int(r["correct"]) == int(conf[c, c])
        assert float(r["accuracy"]) == pytest.approx(100.0 * float(conf[c, c]) / float(conf[c].sum()), abs=1e-3)
    with open(out / f"{protocol}_confusion.csv") as f:
        grid = list(csv.reader(f))
    assert len(grid) == K + 1 and [list(map(int, g[1:])) for g in grid[1:]] == conf.tolist()
    png = out / f"{protocol}_confusion.png"
    assert png.exists() == have_matplotlib()
    ev = [json.loads(s) for s in (out / "log.jsonl").read_text().splitlines() if '"eval"' in s][-1]
    assert ev["top1"] == pytest.approx(rep["top1"]) and ev["top5"] == pytest.approx(rep["top5"])
    return rep


def test_eval_linear_writes_per_class_table_and_confusion(ckpt, tmp_path, capsys):
    out = tmp_path / "lin"
    assert main(["eval", "linear", "--checkpoint", str(ckpt), "--data", DATA, "--epochs", "5", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "top-5" in text and "mean class accuracy" in text and "lowest classes" in text
    _check_outputs(out, "linear")


@pytest.mark.parametrize("protocol,extra", [
    ("knn", []),
    ("finetune", ["--epochs", "1", "--batch-size", "8", "--no-progress"]),
    ("semi", ["--epochs", "3", "--fraction", "0.2", "--semi-protocol", "linear"]),
])
def test_other_protocols_write_the_same_outputs(ckpt, tmp_path, protocol, extra):
    out = tmp_path / protocol
    assert main(["eval", protocol, "--checkpoint", str(ckpt), "--data", DATA, "--device", "cpu", "--out", str(out),
                 *extra]) == 0
    _check_outputs(out, protocol)


def test_transfer_writes_outputs_for_the_other_data(ckpt, tmp_path):
    out = tmp_path / "tr"
    assert main(["eval", "knn", "--checkpoint", str(ckpt), "--data", OTHER, "--out", str(out)]) == 0
    _check_outputs(out, "knn", OTHER)


def test_metrics_hand_computed():
    scores = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1], [0.1, 0.2, 0.7]])
    y = torch.tensor([0, 1, 1, 0])
    assert topk_accuracy(scores, y, 1) == 50.0 and topk_accuracy(scores, y, 2) == 75.0
    conf = confusion_matrix(scores.argmax(1), y, 3)
    assert conf.tolist() == [[1, 0, 1], [1, 1, 0], [0, 0, 0]]
    per = per_class_accuracy(conf)
    assert per[:2] == [50.0, 50.0] and per[2] != per[2]          # NaN: class absent from the test set
    rep = classification_report(scores, y, 3, ["a", "b", "c"])
    assert rep["mean_class_accuracy"] == 50.0 and rep["top5"] == 100.0 and rep["per_class"][1]["name"] == "b"


# ----------------------------------------------------------------------------------- refused options
def _err(capsys, argv):
    rc = main(argv)
    return rc, capsys.readouterr().err


@pytest.mark.parametrize("extra,named", [
    (["--set", "depth=abc"], "--set"),
    (["--preset", "nonexistent"], "--preset"),
    (["--config", "nothere.yaml"], "--config"),
    (["--method", "amr"], "--method"),
])
def test_eval_with_checkpoint_refuses_model_options(ckpt, capsys, extra, named):
    rc, err = _err(capsys, ["eval", "linear", "--checkpoint", str(ckpt), "--data", DATA, *extra])
    assert rc == 2 and named in err and "--checkpoint" in err


@pytest.mark.parametrize("protocol,extra,named", [
    ("linear", ["--k", "5"], "--k"),
    ("linear", ["--fraction", "0.1"], "--fraction"),
    ("knn", ["--optimizer", "adam"], "--optimizer"),
    ("knn", ["--lr", "0.1"], "--lr"),
    ("knn", ["--epochs", "3"], "--epochs"),
    ("finetune", ["--semi-protocol", "linear"], "--semi-protocol"),
    ("finetune", ["--optimizer", "adam"], "--optimizer"),
])
def test_eval_refuses_options_the_protocol_does_not_use(ckpt, capsys, protocol, extra, named):
    rc, err = _err(capsys, ["eval", protocol, "--checkpoint", str(ckpt), "--data", DATA, *extra])
    assert rc == 2 and named in err and f"eval {protocol}" in err
