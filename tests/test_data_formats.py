"""Readers of the CTR-GCN/MAMP .npz, st-gcn .npy + label .pkl, PYSKL .pkl and PKU-MMD raw formats:
small fixture files read back exactly, malformed ones rejected with the file (and line) named."""
import pickle

import numpy as np
import pytest
import torch

from fastskel.data import SkeletonData, load, read_pku_mmd, valid_lengths, write_ctrgcn_npz


def rand_x(n=5, t=9, v=25, m=2, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3, t, v, m)).astype(np.float32)
    lengths = rng.integers(2, t + 1, size=n)
    lengths[0] = t
    for i, l in enumerate(lengths):
        x[i, :, l:] = 0
    x[1, ..., 1] = 0  # a single-body sample
    return x, lengths


# ------------------------------------------------------------------------------------------ CTR-GCN npz
def test_ctrgcn_npz_reads_the_layout_exactly(tmp_path):
    x, lengths = rand_x()
    y = np.array([3, 0, 59, 7, 1])
    # build the file the way CTR-GCN's seq_transformation lays it out: (N, T, M*V*C), one-hot y
    flat = x.transpose(0, 2, 4, 3, 1).reshape(5, 9, 150)
    onehot = np.eye(60)[y]
    np.savez(tmp_path / "NTU60_CS.npz", x_train=flat, y_train=onehot, x_test=flat[:2], y_test=onehot[:2])
    d = load(tmp_path / "NTU60_CS.npz", split="train")
    assert isinstance(d, SkeletonData) and d.x.dtype == torch.float32 and d.y.dtype == torch.int64
    assert torch.equal(d.x, torch.from_numpy(x)) and d.y.tolist() == y.tolist()
    assert d.lengths.tolist() == lengths.tolist() and d.meta["format"] == "ctrgcn_npz"
    te = load(tmp_path / "NTU60_CS.npz", split="test")
    assert torch.equal(te.x, torch.from_numpy(x[:2]))
    # integer labels are accepted too; our writer round-trips (with names)
    np.savez(tmp_path / "int.npz", x_train=flat, y_train=y, x_test=flat, y_test=y)
    assert load(tmp_path / "int.npz").y.tolist() == y.tolist()
    write_ctrgcn_npz(tmp_path / "w.npz", d, te, num_classes=60)
    back = load(tmp_path / "w.npz")
    assert torch.equal(back.x, d.x) and back.y.tolist() == y.tolist() and back.names == d.names


@pytest.mark.parametrize("bad, match", [
    ({"x_train": np.zeros((2, 4, 149)), "y_train": np.eye(3)[[0, 1]]}, "multiple of V\\*C"),
    ({"x_train": np.zeros((2, 4, 150)), "y_train": np.eye(3)[[0, 1, 2]]}, "expected 2 labels"),
    ({"x_train": np.zeros((2, 4, 150)), "y_train": np.array([[1, 1, 0], [0, 1, 0]])}, "row 0 is not one-hot"),
    ({"x_train": np.zeros((2, 4, 150))}, "expected keys x_train and y_train"),
    ({"x_train": np.full((2, 4, 150), np.nan), "y_train": np.eye(3)[[0, 1]]}, "non-finite"),
])
def test_ctrgcn_npz_malformed(tmp_path, bad, match):
    p = tmp_path / "bad.npz"
    np.savez(p, **bad)
    with pytest.raises(ValueError, match=match) as ei:
        load(p)
    assert str(p) in str(ei.value)


# ------------------------------------------------------------------------------------------ st-gcn npy + pkl
def test_stgcn_npy_and_label_pkl(tmp_path):
    x, lengths = rand_x(n=4, t=7)
    np.save(tmp_path / "train_data_joint.npy", x)
    names = [f"S001C001P001R001A00{i}.skeleton" for i in range(4)]
    with open(tmp_path / "train_label.pkl", "wb") as f:
        pickle.dump((names, [4, 3, 2, 1]), f)
    d = load(tmp_path / "train_data_joint.npy")
    assert torch.equal(d.x, torch.from_numpy(x)) and d.y.tolist() == [4, 3, 2, 1] and d.names == names
    assert d.lengths.tolist() == lengths.tolist()
    # explicit label path, and python-2 style (latin1) pickles
    with open(tmp_path / "other.pkl", "wb") as f:
        pickle.dump((names, np.array([0, 0, 1, 1])), f, protocol=2)
    assert load(tmp_path / "train_data_joint.npy", label_path=str(tmp_path / "other.pkl")).y.tolist() == [0, 0, 1, 1]


def test_stgcn_mismatched_or_missing_labels(tmp_path):
    x, _ = rand_x(n=4, t=7)
    np.save(tmp_path / "val_data.npy", x)
    with pytest.raises(ValueError, match="cannot find its label file"):
        load(tmp_path / "val_data.npy")
    with open(tmp_path / "val_label.pkl", "wb") as f:
        pickle.dump((["a", "b", "c"], [0, 1, 2]), f)
    with pytest.raises(ValueError, match="expected 4 names and labels") as ei:
        load(tmp_path / "val_data.npy")
    assert "val_label.pkl" in str(ei.value)
    with open(tmp_path / "val_label.pkl", "wb") as f:
        pickle.dump({"labels": [0]}, f)
    with pytest.raises(ValueError, match="\\(names, labels\\) pair"):
        load(tmp_path / "val_data.npy")
    np.save(tmp_path / "flat_data.npy", np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match="\\(N, C, T, V, M\\)"):
        load(tmp_path / "flat_data.npy", label_path=str(tmp_path / "val_label.pkl"))


# ------------------------------------------------------------------------------------------ PYSKL
def _pyskl(tmp_path, anns, split):
    p = tmp_path / "ntu60_3d.pkl"
    with open(p, "wb") as f:
        pickle.dump({"split": split, "annotations": anns}, f)
    return p


def test_pyskl_pickle(tmp_path):
    rng = np.random.default_rng(1)
    kps = [rng.normal(size=(m, t, 25, 3)).astype(np.float32) for m, t in ((1, 5), (2, 8), (2, 3))]
    anns = [{"frame_dir": f"v{i}", "label": i * 10, "keypoint": kp, "total_frames": kp.shape[1]} for i, kp in enumerate(kps)]
    p = _pyskl(tmp_path, anns, {"xsub_train": ["v0", "v2"], "xsub_val": ["v1"]})
    tr = load(p, split="train")
    assert tr.names == ["v0", "v2"] and tr.y.tolist() == [0, 20] and tr.x.shape == (2, 3, 5, 25, 2)
    np.testing.assert_array_equal(tr.x[0, :, :5, :, 0].numpy(), kps[0][0].transpose(2, 0, 1))
    np.testing.assert_array_equal(tr.x[1, :, :3, :, 0].numpy(), kps[2][0].transpose(2, 0, 1))
    assert tr.lengths.tolist() == [5, 3]
    te = load(p, split="xsub_val")
    np.testing.assert_array_equal(te.x[0].numpy(), kps[1].transpose(3, 1, 2, 0))
    assert load(p, split="all").x.shape == (3, 3, 8, 25, 2)


def test_pyskl_malformed(tmp_path):
    kp = np.zeros((1, 4, 25, 3), np.float32)
    p = _pyskl(tmp_path, [{"frame_dir": "a", "label": 0, "keypoint": kp}], {"xsub_train": ["a"], "xview_train": ["a"]})
    with pytest.raises(ValueError, match="ambiguous"):
        load(p, split="train")
    p = _pyskl(tmp_path, [{"frame_dir": "a", "label": 0, "keypoint": kp}], {"xsub_train": ["a", "b"]})
    with pytest.raises(ValueError, match="without an annotation"):
        load(p, split="xsub_train")
    p = _pyskl(tmp_path, [{"frame_dir": "a", "keypoint": kp}], {"xsub_train": ["a"]})
    with pytest.raises(ValueError, match="missing 'label'"):
        load(p, split="xsub_train")
    p = _pyskl(tmp_path, [{"frame_dir": "a", "label": 0, "keypoint": kp[0]}], {"xsub_train": ["a"]})
    with pytest.raises(ValueError, match="keypoint expected \\(M, T, V, C\\)"):
        load(p, split="xsub_train")
    with open(tmp_path / "list.pkl", "wb") as f:
        pickle.dump([1, 2], f)
    with pytest.raises(ValueError, match="not a PYSKL"):
        load(tmp_path / "list.pkl")


# ------------------------------------------------------------------------------------------ PKU-MMD
def _pku(tmp_path, videos):
    (tmp_path / "PKU_Skeleton_Renew").mkdir(exist_ok=True)
    (tmp_path / "Train_Label_PKU_final").mkdir(exist_ok=True)
    rng = np.random.default_rng(2)
    data = {}
    for vid, (T, labels) in videos.items():
        frames = rng.normal(size=(T, 150)).round(5)
        frames[:, 75:] = 0 if vid.endswith("L") else frames[:, 75:]
        np.savetxt(tmp_path / "PKU_Skeleton_Renew" / f"{vid}.txt", frames, fmt="%.5f")
        with open(tmp_path / "Train_Label_PKU_final" / f"{vid}.txt", "w") as f:
            f.write("\n".join(",".join(map(str, row)) for row in labels) + "\n")
        data[vid] = frames
    return data


def test_pku_mmd_segments(tmp_path):
    data = _pku(tmp_path, {"0002-L": (40, [(3, 0, 10, 1), (51, 12, 30, 2)]), "0002-M": (20, [(1, 5, 19, 1)])})
    d = load(tmp_path, split="all")
    assert d.names == ["0002-L_0_10", "0002-L_12_30", "0002-M_5_19"] and d.y.tolist() == [2, 50, 0]
    assert d.x.shape == (3, 3, 18, 25, 2) and d.lengths.tolist() == [10, 18, 14]
    seg = data["0002-L"][12:30].astype(np.float32).reshape(18, 2, 25, 3).transpose(3, 0, 2, 1)
    np.testing.assert_array_equal(d.x[1].numpy(), seg)
    assert torch.equal(valid_lengths(d.x), d.lengths)
    split = tmp_path / "cross-subject.txt"
    split.write_text("Training videos: \n0002-L, 0002-R\nValidataion videos: \n0002-M\n")
    assert load(tmp_path, split="test", split_file=str(split)).names == ["0002-M_5_19"]
    single = read_pku_mmd(str(tmp_path / "PKU_Skeleton_Renew" / "0002-M.txt"),
                          str(tmp_path / "Train_Label_PKU_final" / "0002-M.txt"))
    assert single.names == ["0002-M_5_19"]


def test_pku_mmd_malformed(tmp_path):
    _pku(tmp_path, {"0002-L": (40, [(3, 0, 10, 1)]), "0003-L": (10, [(3, 2, 12, 1)])})
    with pytest.raises(ValueError, match="ends after the 10 frames") as ei:
        load(tmp_path, split="all")
    assert "0003-L.txt:1" in str(ei.value)
    (tmp_path / "Train_Label_PKU_final" / "0003-L.txt").write_text("3,2,8,1\n4,x,9,1\n")
    with pytest.raises(ValueError, match="0003-L.txt:2: expected integers"):
        load(tmp_path, split="all")
    (tmp_path / "Train_Label_PKU_final" / "0003-L.txt").write_text("3,2,8\n")
    with pytest.raises(ValueError, match="0003-L.txt:1: expected 'class,start,end,confidence'"):
        load(tmp_path, split="all")
    (tmp_path / "Train_Label_PKU_final" / "0003-L.txt").unlink()
    with pytest.raises(ValueError, match="0003-L.txt: skeleton file without a label file"):
        load(tmp_path, split="all")
    (tmp_path / "Train_Label_PKU_final" / "0003-L.txt").write_text("3,2,8,1\n")
    sk = tmp_path / "PKU_Skeleton_Renew" / "0003-L.txt"
    lines = sk.read_text().split("\n")
    lines[4] = lines[4].rsplit(" ", 1)[0]
    sk.write_text("\n".join(lines))
    with pytest.raises(ValueError, match="0003-L.txt:5: expected 150 numbers per frame, got 149"):
        load(tmp_path, split="all")
    lines[4] = " ".join(["1.0"] * 149 + ["abc"])
    sk.write_text("\n".join(lines))
    with pytest.raises(ValueError, match="0003-L.txt:5: field 150 is not a number"):
        load(tmp_path, split="all")
    sk.write_text("")
    with pytest.raises(ValueError, match="empty skeleton file"):
        load(tmp_path, split="all")
    with pytest.raises(ValueError, match="split_file"):
        load(tmp_path, split="train")


def test_load_detection_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="path"):
        load(tmp_path / "nope.npz")
    (tmp_path / "x.csv").write_text("1,2")
    with pytest.raises(ValueError, match="unknown format"):
        load(tmp_path / "x.csv")
    (tmp_path / "sub").mkdir()
    with pytest.raises(ValueError, match="cannot detect"):
        load(tmp_path / "sub")


def test_skeleton_data_checks_and_subset():
    x, lengths = rand_x(n=3)
    d = SkeletonData(x, [0, 1, 2], meta={"subject": np.array([5, 6, 7])})
    assert d.lengths.tolist() == lengths.tolist() and d.names == ["0", "1", "2"]
    s = d.subset([2, 0])
    assert s.y.tolist() == [2, 0] and s.meta["subject"].tolist() == [7, 5] and s.names == ["2", "0"]
    ds = d.dataset()
    assert len(ds) == 3 and torch.equal(ds[1][0], d.x[1])
    with pytest.raises(ValueError, match="y"):
        SkeletonData(x, [0, 1])
