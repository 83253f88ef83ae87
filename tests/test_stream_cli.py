"""``fastskel stream`` end to end: a classifier file from ``fastskel eval linear --out`` on 2-D
OpenPose-18 data (x, y, score), streamed from .npy in both layouts, an OpenPose JSON folder and
JSON lines on stdin; malformed lines/files are reported in one line each and the stream goes on."""
import io
import json

import numpy as np
import pytest
import torch

from fastskel.cli import main
from fastskel.engine.latency import torch_threads

DATA = "synthetic:graph=openpose18,channels=xy+score,num_classes=3,num_samples=24,T=12,bodies=2"
TINY = ["--set", "backbone=tiny", "--set", "hidden=8", "--set", "depth=1", "--set", "kernel=3"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def clf(tmp_path_factory):
    out = tmp_path_factory.mktemp("clf")
    with torch_threads(1):
        rc = main(["eval", "linear", "--method", "supervised", *TINY, "--data", DATA, "--epochs", "2",
                   "--device", "cpu", "--out", str(out)])
    assert rc == 0
    return out / "linear.pt"


@pytest.fixture(scope="module")
def clip(clf):
    """A one-person test clip (C, L, V, M) with its offline eval logits."""
    from fastskel.engine.data import load_dataset
    from fastskel.engine.evaluate import load_classifier

    test = load_dataset(DATA, "test")
    model, _ = load_classifier(clf)
    scores, _ = model.scores(test, batch_size=8)
    i = next(i for i in range(len(test)) if not test.x[i, ..., 1].any())
    L = int(test.lengths[i])
    return test.x[i].numpy(), L, scores[i].numpy()


def _preds(path):
    return [json.loads(s) for s in path.read_text().splitlines()]


def _softmax(z):
    e = np.exp(z - z.max())
    return e / e.sum()


def test_eval_out_records_what_the_stream_needs(clf):
    st = torch.load(clf, weights_only=True)
    d = st["data"]
    assert tuple(d["sample_shape"]) == (3, 12, 18, 2) and d["channels"] == "xy+score"
    assert d["graph"]["num_joints"] == 18
    assert d["preprocess"]["center"] == {"joint": 1, "body": 0, "frame": "first_present", "channels": 2}
    assert d["preprocess"]["bodies"]["select"] == "score"


@pytest.mark.parametrize("layout", ["CTVM", "TMVC"])
def test_npy_stream_equals_offline_eval(clf, clip, tmp_path, layout, capsys):
    x, L, offline = clip
    arr = x if layout == "CTVM" else x[:, :L].transpose(1, 3, 2, 0)[:, :1]   # padded dataset clip / frames first
    np.save(tmp_path / "seq.npy", arr)
    out = tmp_path / "p.jsonl"
    assert main(["stream", "--model", str(clf), "--input", str(tmp_path / "seq.npy"), "--window", str(L),
                 "--stride", str(L), "--output", str(out)]) == 0
    (p,) = _preds(out)
    assert (p["start"], p["end"]) == (0, L - 1) and p["class"] == int(offline.argmax())
    assert p["probability"] == pytest.approx(float(_softmax(offline).max()), abs=1e-5)
    assert "1 predictions" in capsys.readouterr().err


def _lines(x, L, bad=()):
    rows = []
    for t in range(L):
        rows.append(json.dumps({"t": t / 30, "bodies": x[:, t, :, :1].transpose(2, 1, 0).tolist()}))
        if t == 3:
            rows.extend(bad)
    return "\n".join(rows) + "\n"


def test_stdin_malformed_lines_are_reported_and_skipped(clf, clip, monkeypatch, capsys):
    x, L, _ = clip
    args = ["stream", "--model", str(clf), "--input", "-", "--window", "6", "--stride", "2"]
    monkeypatch.setattr("sys.stdin", io.StringIO(_lines(x, L)))
    assert main(args) == 0
    clean = capsys.readouterr().out
    bad = ['{"t": 0.2, "bodies": [[[1, 2', '[1, 2, 3]', json.dumps({"t": 0.2, "bodies": [[[1, 2, 3]] * 17]}),
           json.dumps({"t": 0.2, "bodies": [[[float("nan"), 1, 1]] * 18]}), json.dumps({"t": "soon", "bodies": []})]
    monkeypatch.setattr("sys.stdin", io.StringIO(_lines(x, L, bad)))
    assert main(args) == 0
    cap = capsys.readouterr()
    assert cap.out == clean and len(clean.splitlines()) == (L - 6) // 2 + 1
    errs = [s for s in cap.err.splitlines() if s.startswith("fastskel stream:")]
    assert len(errs) == len(bad) and all(f"line {5 + k}:" in e for k, e in enumerate(errs))
    assert "invalid JSON" in errs[0] and "V=18 joints" in errs[2] and "finite" in errs[3] and "t:" in errs[4]


def _openpose(folder, x, L, drop=(), broken=()):
    folder.mkdir()
    for t in range(L):
        name = folder / f"frame_{t:04d}_keypoints.json"
        if t in broken:
            name.write_text('{"people": [{"pose_keypoints_2d": [1, 2]}]}')
            continue
        people = [] if t in drop else [{"pose_keypoints_2d": x[:, t, :, 0].T.reshape(-1).tolist()}]
        name.write_text(json.dumps({"version": 1.3, "people": people}))


def test_openpose_folder_streams_like_the_array(clf, clip, tmp_path, capsys):
    x, L, _ = clip
    np.save(tmp_path / "seq.npy", x[:, :L].transpose(1, 3, 2, 0)[:, :1])
    common = ["--model", str(clf), "--window", "5", "--stride", "2", "--format", "csv"]
    assert main(["stream", *common, "--input", str(tmp_path / "seq.npy"), "--output", str(tmp_path / "a.csv")]) == 0
    _openpose(tmp_path / "op", x, L)
    assert main(["stream", *common, "--input", str(tmp_path / "op"), "--output", str(tmp_path / "b.csv")]) == 0
    a, b = (tmp_path / "a.csv").read_text().splitlines(), (tmp_path / "b.csv").read_text().splitlines()
    assert a[0] == "start,end,t_start,t_end,class,name,probability" and len(a) == (L - 5) // 2 + 2
    np.testing.assert_allclose([float(r.split(",")[-1]) for r in b[1:]], [float(r.split(",")[-1]) for r in a[1:]],
                               atol=1e-5)
    capsys.readouterr()
    _openpose(tmp_path / "op2", x, L, drop=(2,), broken=(4,))
    assert main(["stream", *common, "--input", str(tmp_path / "op2")]) == 0
    cap = capsys.readouterr()
    errs = [s for s in cap.err.splitlines() if s.startswith("fastskel stream:")]
    assert len(errs) == 1 and "frame_0004_keypoints.json" in errs[0] and "18 or 25" in errs[0]
    assert len(cap.out.splitlines()) == (L - 1 - 5) // 2 + 2      # one file skipped, the dropped frame held


def test_realtime_reports_keeping_up(clf, clip, monkeypatch, capsys):
    x, L, _ = clip
    monkeypatch.setattr("sys.stdin", io.StringIO(_lines(x, L)))
    assert main(["stream", "--model", str(clf), "--input", "-", "--window", "4", "--stride", "4", "--realtime",
                 "--fps", "200"]) == 0
    err = capsys.readouterr().err
    assert "realtime at 200 fps" in err and "frames late" in err and "keep" in err and "p99" in err


def test_fatal_errors_are_one_line(clf, tmp_path, capsys):
    assert main(["stream", "--model", str(tmp_path / "none.pt"), "--input", "-"]) == 2
    assert main(["stream", "--model", str(clf), "--input", str(tmp_path / "nope.npy")]) == 2
    np.save(tmp_path / "bad.npy", np.zeros((4, 5, 6)))
    assert main(["stream", "--model", str(clf), "--input", str(tmp_path / "bad.npy")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 3 and "no such file" in err[0] and "no such file" in err[1] and "V=18" in err[2]


def test_supervised_checkpoint_streams_with_its_own_classifier(clip, tmp_path, capsys):
    """`fastskel pretrain supervised` records the data too; its checkpoint streams like its offline logits."""
    from fastskel.engine.evaluate import load_classifier
    from fastskel.stream import load_stream_model

    assert main(["pretrain", "supervised", "--data", DATA, "--epochs", "1", "--batch-size", "6", *TINY,
                 "--no-progress", "--device", "cpu", "--out", str(tmp_path)]) == 0
    model = load_stream_model(tmp_path / "last.pt")
    assert model.meta.preprocess["center"]["joint"] == 1 and model.meta.channels == "xy+score"
    x, L, _ = clip
    net, _ = load_classifier(tmp_path / "last.pt")
    with torch.no_grad():
        ref = net.eval().logits(torch.from_numpy(x[None]), torch.tensor([L]))[0].numpy()
    from fastskel.stream import ActionStream

    s = ActionStream(model, L, L)
    preds = [p for f in x[:, :L].transpose(1, 3, 2, 0)[:, :1] if (p := s.push(f)) is not None]
    np.testing.assert_allclose(preds[0].logits, ref, atol=1e-5, rtol=0)
