"""``fastskel prepare pku`` / ``prepare openpose`` round-trip generated fixtures exactly."""
import json
import os

import numpy as np
import pytest

from fastskel.cli import main
from fastskel.data import load


def _grid(rng, *shape):
    return (rng.integers(-512, 512, shape) / 64.0).astype(np.float32)  # exact in float32 and text


def test_prepare_pku_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "pku"
    (root / "skeleton").mkdir(parents=True)
    (root / "label").mkdir()
    frames = {}
    for vid in ("0002-L", "0002-M", "0003-R"):
        a = _grid(rng, 20, 150)
        frames[vid] = a
        np.savetxt(root / "skeleton" / f"{vid}.txt", a, fmt="%.6f")
    labels = {"0002-L": [(3, 0, 5), (7, 8, 14)], "0002-M": [(1, 2, 9)], "0003-R": [(2, 4, 20)]}
    for vid, segs in labels.items():
        (root / "label" / f"{vid}.txt").write_text("".join(f"{c},{s},{e},1\n" for c, s, e in segs))
    split = tmp_path / "cross-subject.txt"
    split.write_text("Training videos:\n0002-L, 0002-M\nValidation videos:\n0003-R\n")
    out = tmp_path / "pku.npz"
    assert main(["prepare", "pku", "--raw", str(root), "--split-file", str(split), "--out", str(out)]) == 0
    tr, te = load(out, "train"), load(out, "test")
    assert (len(tr), len(te)) == (3, 1)
    assert tr.y.tolist() == [2, 6, 0] and te.y.tolist() == [1]
    assert tr.names == ["0002-L_0_5", "0002-L_8_14", "0002-M_2_9"]
    seg = frames["0002-L"][8:14].reshape(6, 2, 25, 3).transpose(3, 0, 2, 1)
    np.testing.assert_array_equal(tr.x[1, :, :6].numpy(), seg)
    assert (tr.x[1, :, 6:] == 0).all()
    np.testing.assert_array_equal(te.x[0, :, :16].numpy(), frames["0003-R"][4:20].reshape(16, 2, 25, 3).transpose(3, 0, 2, 1))


def _write_clip(d, kp, sc):
    """kp (M, T, V, 2), sc (M, T, V) -> one OpenPose JSON per frame."""
    os.makedirs(d, exist_ok=True)
    for t in range(kp.shape[1]):
        people = [{"person_id": [-1], "pose_keypoints_2d": np.concatenate([kp[m, t], sc[m, t, :, None]], 1).ravel().tolist()}
                  for m in range(kp.shape[0])]
        with open(os.path.join(d, f"clip_{t:012d}_keypoints.json"), "w") as f:
            json.dump({"version": 1.3, "people": people}, f)


@pytest.mark.parametrize("V", [18, 25])
def test_prepare_openpose_round_trip_folders(tmp_path, V):
    rng = np.random.default_rng(V)
    root = tmp_path / "op"
    clips = {}
    for cls in ("jump", "wave"):
        for i in range(3):
            kp = _grid(rng, 1, 4 + i, V, 2)
            sc = (rng.integers(0, 64, (1, 4 + i, V)) / 64.0).astype(np.float32)
            _write_clip(root / cls / f"c{i}", kp, sc)
            clips[f"{cls}/c{i}"] = (kp, sc)
    out = tmp_path / "op.pkl"
    assert main(["prepare", "openpose", "--raw", str(root), "--out", str(out), "--test-fraction", "0.34"]) == 0
    tr, te = load(out, "train"), load(out, "test")
    assert te.names == ["jump/c2", "wave/c2"] and tr.y.tolist() == [0, 0, 1, 1]
    assert tr.x.shape[1] == 3 and tr.meta["channels"] == "xy+score" and tr.x.shape[3] == V
    for d in (tr, te):
        for i, name in enumerate(d.names):
            kp, sc = clips[name]
            T = kp.shape[1]
            np.testing.assert_array_equal(d.x[i, :2, :T, :, 0].numpy(), kp[0].transpose(2, 0, 1))
            np.testing.assert_array_equal(d.x[i, 2, :T, :, 0].numpy(), sc[0])
            assert int(d.lengths[i]) == T


def test_prepare_openpose_csv_labels_and_errors(tmp_path, capsys):
    rng = np.random.default_rng(1)
    root = tmp_path / "op"
    for i in range(3):
        _write_clip(root / f"v{i}", _grid(rng, 2, 3, 18, 2), np.ones((2, 3, 18), np.float32))
    csv = tmp_path / "labels.csv"
    csv.write_text("clip,label,split\nv0,4,train\nv1,2,train\nv2,4,test\n")
    out = tmp_path / "op.pkl"
    assert main(["prepare", "openpose", "--raw", str(root), "--labels", str(csv), "--out", str(out)]) == 0
    assert load(out, "test").y.tolist() == [4] and load(out, "train").x.shape[-1] == 2
    csv.write_text("v0,four\n")
    assert main(["prepare", "openpose", "--raw", str(root), "--labels", str(csv), "--out", str(out)]) == 1
    assert "labels.csv:1: label" in capsys.readouterr().err
    (root / "v0" / "clip_000000000000_keypoints.json").write_text('{"people": [\n{"pose_keypoints_2d": [1, 2]}]}')
    csv.write_text("v0,1\n")
    assert main(["prepare", "openpose", "--raw", str(root), "--labels", str(csv), "--out", str(out)]) == 1
    assert "18 or 25" in capsys.readouterr().err
