"""Readers that know their classes' names fill ``class_names``, and evaluation output shows them."""
import json
import pickle

import numpy as np
import pytest

from fastskel.cli import main
from fastskel.data import load
from fastskel.data.ntu import ntu_action_names, ntu_class_names, write_ntu_skeleton
from fastskel.engine.data import load_dataset

pytestmark = pytest.mark.usefixtures("one_thread")


def test_ntu_action_names_are_the_official_list():
    n120, n60 = ntu_action_names(), ntu_action_names(60)
    assert len(n120) == 120 and n60 == n120[:60] and len(set(n120)) == 120
    # spot checks against the dataset authors' list (github.com/shahroudy/NTURGB-D, "Action Classes")
    assert n120[0] == "drink water" and n120[8] == "standing up (from sitting position)"
    assert n120[42] == "falling" and n120[57] == "handshaking" and n120[59] == "walking apart from each other"
    assert n120[60] == "put on headphone" and n120[119] == "finger-guessing game (playing rock-paper-scissors)"
    assert all(n == n.strip() and not n.endswith(".") for n in n120)
    with pytest.raises(ValueError, match="num_classes"):
        ntu_action_names(10)
    assert ntu_class_names(7, ["not_ntu"], "data.npz") is None
    assert ntu_class_names(60, [], "NTU60_CS.npz") == n60


def test_ntu_directory_and_file_have_action_names(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("S001C001P001R001A001", "S001C002P002R001A003", "S002C001P003R001A043"):
        frames = [[(1, rng.normal(size=(25, 3)) + [0, 0, 3])] for _ in range(5)]
        write_ntu_skeleton(str(tmp_path / f"{name}.skeleton"), frames)
    d = load(str(tmp_path), split="all")
    assert d.meta["class_names"] == ntu_action_names(60)
    ds = d.dataset()
    assert ds.class_names[int(ds.y[2])] == "falling" and ds.subset([0]).class_names == ds.class_names
    one = load(str(tmp_path / "S001C002P002R001A003.skeleton"))
    assert one.dataset().class_names[int(one.y[0])] == "brushing teeth"


def test_ctrgcn_npz_class_names(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 6, 2 * 25 * 3)).astype(np.float32)
    y = np.eye(60, dtype=np.float32)[[0, 5, 42, 59]]
    p = tmp_path / "NTU60_CS.npz"
    np.savez(p, x_train=x, y_train=y, x_test=x, y_test=y)
    assert load(str(p), "test").meta["class_names"] == ntu_action_names(60)
    q = tmp_path / "mine.npz"
    np.savez(q, x_train=x[:, :, :75], y_train=y[:, :3][[0, 0, 0, 0]], x_test=x[:, :, :75], y_test=y[:, :3][[0] * 4],
             class_names=np.array(["a", "b", "c"]))
    assert load(str(q), "train").meta["class_names"] == ["a", "b", "c"]
    np.savez(q, x_train=x[:, :, :75], y_train=np.array([0, 1, 2, 1]), x_test=x[:, :, :75], y_test=np.array([0, 1, 2, 1]))
    assert "class_names" not in load(str(q), "train").meta        # no names: nothing invented


def _pyskl(path, label_names=None):
    rng = np.random.default_rng(1)
    anns = [{"frame_dir": f"clip{i}", "label": i % 3, "total_frames": 6,
             "keypoint": rng.normal(size=(1, 6, 17, 2)).astype(np.float32)} for i in range(9)]
    obj = {"split": {"train": [a["frame_dir"] for a in anns[:6]], "test": [a["frame_dir"] for a in anns[6:]]},
           "annotations": anns}
    if label_names is not None:
        obj["label_names"] = label_names
    with open(path, "wb") as f:
        pickle.dump(obj, f)
    return path


def test_pyskl_label_names_reach_the_evaluation_table(tmp_path, capsys):
    p = _pyskl(tmp_path / "d.pkl", ["jump", "wave", "sit"])
    assert load_dataset(str(p), "test").class_names == ["jump", "wave", "sit"]
    assert getattr(load_dataset(str(_pyskl(tmp_path / "e.pkl")), "test"), "class_names") is None
    out = tmp_path / "ev"
    rc = main(["eval", "knn", "--method", "supervised", "--set", "backbone=tiny", "--set", "hidden=8",
               "--set", "depth=1", "--data", str(p), "--device", "cpu", "--out", str(out)])
    assert rc == 0
    rep = json.loads((out / "knn_metrics.json").read_text())
    assert rep["class_names"] == ["jump", "wave", "sit"]
    assert [r["name"] for r in rep["per_class"]] == ["jump", "wave", "sit"]
    rows = (out / "knn_per_class.csv").read_text().splitlines()
    assert rows[1].split(",")[1] == "jump"
    assert (out / "knn_confusion.csv").read_text().splitlines()[0] == "true\\pred,jump,wave,sit"


def test_prepare_openpose_class_folders_become_class_names(tmp_path):
    import os

    root = tmp_path / "op"
    for cls in ("jump", "wave"):
        for i in range(2):
            d = root / cls / f"c{i}"
            os.makedirs(d)
            for t in range(3):
                kp = np.concatenate([np.full((18, 2), t + i, np.float32), np.ones((18, 1), np.float32)], 1)
                (d / f"f_{t:04d}_keypoints.json").write_text(json.dumps({"people": [{"pose_keypoints_2d": kp.ravel().tolist()}]}))
    out = tmp_path / "op.pkl"
    assert main(["prepare", "openpose", "--raw", str(root), "--out", str(out), "--test-fraction", "0.5"]) == 0
    assert load(str(out), "train").meta["class_names"] == ["jump", "wave"]
