"""Readers fail clearly: damaged files give one ValueError line naming the file (+ fuzzing)."""
import os
import pickle
import signal

import numpy as np
import pytest

from fastskel.data import load
from fastskel.data.core import SkeletonData
from fastskel.data.formats import read_pyskl, write_ctrgcn_npz


def _data(n=4, c=3, t=6, v=5, m=2, seed=0):
    rng = np.random.default_rng(seed)
    return SkeletonData(rng.standard_normal((n, c, t, v, m)).astype(np.float32), np.arange(n) % 2)


@pytest.fixture
def files(tmp_path):
    out = {}
    npz = tmp_path / "d.npz"
    write_ctrgcn_npz(str(npz), _data(), _data(seed=1))
    out["npz"] = npz
    npy = tmp_path / "train_data_joint.npy"
    np.save(npy, _data().x.numpy())
    with open(tmp_path / "train_label.pkl", "wb") as f:
        pickle.dump((["a", "b", "c", "d"], [0, 1, 0, 1]), f)
    out["npy"] = npy
    out["pkl_label"] = tmp_path / "train_label.pkl"
    pk = tmp_path / "pyskl.pkl"
    anns = [{"frame_dir": f"s{i}", "label": i % 2, "total_frames": 6,
             "keypoint": np.random.rand(1, 6, 17, 2).astype(np.float32),
             "keypoint_score": np.random.rand(1, 6, 17).astype(np.float32)} for i in range(3)]
    with open(pk, "wb") as f:
        pickle.dump({"split": {"xsub_train": ["s0", "s1"], "xsub_val": ["s2"]}, "annotations": anns}, f)
    out["pyskl"] = pk
    return out


def _one_line(e, path):
    msg = str(e.value)
    assert "\n" not in msg and os.path.basename(str(path)) in msg, msg
    return msg


def test_truncated_empty_corrupt_npz(files, tmp_path):
    raw = files["npz"].read_bytes()
    p = tmp_path / "trunc.npz"
    p.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError) as e:
        load(p)
    assert "truncated or corrupt" in _one_line(e, p)
    p = tmp_path / "empty.npz"
    p.write_bytes(b"")
    with pytest.raises(ValueError) as e:
        load(p)
    assert "empty" in _one_line(e, p)
    # flip a byte inside the stored x_train array: zipfile's CRC check fails
    p = tmp_path / "crc.npz"
    i = raw.index(b"x_train.npy") + 400
    p.write_bytes(raw[:i] + bytes([raw[i] ^ 0xFF]) + raw[i + 1:])
    with pytest.raises(ValueError) as e:
        load(p)
    assert "CRC" in _one_line(e, p)


def test_truncated_npy_and_pkl(files):
    raw = files["npy"].read_bytes()
    files["npy"].write_bytes(raw[:-40])
    with pytest.raises(ValueError) as e:
        load(files["npy"])
    _one_line(e, files["npy"])
    files["npy"].write_bytes(raw)
    lab = files["pkl_label"].read_bytes()
    files["pkl_label"].write_bytes(lab[: len(lab) // 2])
    with pytest.raises(ValueError) as e:
        load(files["npy"])
    assert "truncated or corrupt pickle" in _one_line(e, files["pkl_label"])
    raw = files["pyskl"].read_bytes()
    files["pyskl"].write_bytes(raw[:100])
    with pytest.raises(ValueError) as e:
        load(files["pyskl"])
    _one_line(e, files["pyskl"])


def test_wrong_shapes_name_the_file(tmp_path):
    p = tmp_path / "w.npz"
    np.savez(p, x_train=np.zeros((2, 3, 7), np.float32), y_train=np.eye(2))
    with pytest.raises(ValueError) as e:
        load(p)
    assert "last dim 7" in _one_line(e, p)


def test_npz_joint_count_inferred():
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "rig.npz")
        write_ctrgcn_npz(p, _data(v=16), _data(v=16, seed=1))  # 96 = 2 bodies x 16 joints x 3
        got = load(p, "test")
        assert tuple(got.x.shape[1:]) == (3, 6, 16, 2)
        np.testing.assert_array_equal(got.x.numpy(), _data(v=16, seed=1).x.numpy())


def test_pyskl_keeps_keypoint_score(files):
    d = read_pyskl(str(files["pyskl"]), "train")
    assert d.x.shape[1] == 3 and d.meta["channels"] == "xy+score"
    with open(files["pyskl"], "rb") as f:
        ann = pickle.load(f)["annotations"][0]
    np.testing.assert_array_equal(d.x[0, 2, :, :, 0].numpy(), ann["keypoint_score"][0])
    d2 = read_pyskl(str(files["pyskl"]), "train", score="ignore")
    assert d2.x.shape[1] == 2 and d2.meta["channels"] == "xy"


# --------------------------------------------------------------------------------- fuzzing
hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402


class _Hang(Exception):
    pass


def _alarm(*_):
    raise _Hang()


def _load_only_valueerror(path, mutated):
    """``load(path)`` within 5 s; a ``ValueError`` is the readers' promise, a hang fails the test."""
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(5)
    try:
        load(path)
    except ValueError:
        pass
    except _Hang:
        pytest.fail(f"reader hung on a mutation of {mutated}")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _fuzz_one(src, tmp, cut, flips):
    raw = bytearray(src.read_bytes())
    for pos, val in flips:
        raw[pos % len(raw)] = val
    if cut is not None:
        raw = raw[: cut % (len(raw) + 1)]
    dst = tmp / (src.stem + "_fz" + src.suffix)
    dst.write_bytes(bytes(raw))
    _load_only_valueerror(dst, src.name)


@pytest.mark.parametrize("kind", ["npz", "npy", "pkl_label", "pyskl"])
def test_fuzz_readers_only_raise_valueerror(files, tmp_path, kind):
    src = files[kind]
    # the st-gcn label pickle is fuzzed in place, read through its data file
    target = files["npy"] if kind == "pkl_label" else src
    raw0 = src.read_bytes()

    @settings(max_examples=300, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(cut=st.none() | st.integers(0, 10 ** 6),
           flips=st.lists(st.tuples(st.integers(0, 10 ** 6), st.integers(0, 255)), max_size=4))
    def run(cut, flips):
        _fuzz_one(src, tmp_path, cut, flips)
        if kind == "pkl_label":
            os.replace(tmp_path / (src.stem + "_fz" + src.suffix), src)
            try:
                _load_only_valueerror(target, src.name)
            finally:
                src.write_bytes(raw0)

    run()
