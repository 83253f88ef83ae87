"""NTU raw .skeleton files: C++ and Python parsers agree bit for bit, body selection, malformed
input (file + line), names and splits, and ``fastskel prepare ntu`` end to end."""
import os

import numpy as np
import pytest

from fastskel import _ext
from fastskel.cli import main
from fastskel.data import NTUFormatError, load, parse_ntu_name, read_ntu_skeleton, read_ntu_skeletons
from fastskel.data.ntu import NTU60_XSUB_TRAIN, NTU120_XSUB_TRAIN, center_like_ctrgcn, is_train, write_ntu_skeleton

HAS_PARSER = _ext.load() is not None and hasattr(_ext.load(), "read_ntu_skeletons")
requires_parser = pytest.mark.skipif(not HAS_PARSER, reason=f"fastskel._C without read_ntu_skeletons: {_ext.error()}")
BACKENDS = ["python"] + (["cpp"] if HAS_PARSER else [])


def _pose(rng, offset=0.0, scale=1.0):
    return rng.normal(size=(25, 3)) * 0.2 * scale + np.array([offset, 0.0, 3.0])


def make_frames(rng, T=20, ids=(72057594037931101, 72057594037931102), amps=(1.0, 0.3), gaps=True):
    """Frames with two tracked bodies of different activity, a noise body and empty frames."""
    base = [_pose(rng, 0.5 * k) for k in range(len(ids))]
    frames = []
    for t in range(T):
        bodies = []
        for k, (bid, amp) in enumerate(zip(ids, amps)):
            if gaps and k == 1 and 5 <= t < 8:
                continue  # body 2 briefly lost
            bodies.append((bid, base[k] + amp * np.sin(0.3 * t) * rng.normal(size=(25, 3)) * 0.05))
        if t in (3, 11):
            bodies = []  # no body in the frame -> dropped
        if t == 14:
            bodies.append((999, base[0] + 0.001))  # a short, still third body
        frames.append(bodies)
    return frames


@pytest.fixture
def ntu_dir(tmp_path):
    rng = np.random.default_rng(0)
    names = ["S001C001P001R001A001", "S001C002P002R001A002", "S002C003P003R002A060", "S017C001P008R001A013",
             "S018C002P045R002A120", "S002C002P001R001A007"]
    paths = []
    for i, name in enumerate(names):
        p = tmp_path / f"{name}.skeleton"
        write_ntu_skeleton(str(p), make_frames(rng, T=12 + 3 * i, amps=(1.0, 0.3) if i % 2 else (0.2, 1.5)))
        paths.append(str(p))
    return tmp_path, paths, names


def test_name_parsing_and_splits():
    info = parse_ntu_name("/data/S012C003P025R002A120.skeleton")
    assert info == {"setup": 12, "camera": 3, "subject": 25, "replication": 2, "action": 120, "label": 119}
    with pytest.raises(ValueError, match="name"):
        parse_ntu_name("foo.skeleton")
    assert is_train({"subject": 1, "camera": 1, "setup": 1}, "xsub") and not is_train({"subject": 3, "camera": 2, "setup": 2}, "xsub")
    assert is_train({"subject": 3, "camera": 2, "setup": 1}, "xview") and not is_train({"subject": 1, "camera": 1, "setup": 2}, "xview")
    assert is_train({"subject": 3, "camera": 1, "setup": 2}, "xset") and not is_train({"subject": 1, "camera": 1, "setup": 3}, "xset")
    assert len(NTU60_XSUB_TRAIN) == 20 and {s for s in NTU120_XSUB_TRAIN if s <= 40} == NTU60_XSUB_TRAIN
    assert len(NTU120_XSUB_TRAIN) == 53
    with pytest.raises(ValueError, match="benchmark"):
        is_train(info, "xfoo")


@pytest.mark.parametrize("backend", BACKENDS)
def test_body_selection_and_frames(tmp_path, backend):
    rng = np.random.default_rng(1)
    frames = make_frames(rng, T=20, amps=(0.2, 1.5))
    p = tmp_path / "S001C001P001R001A001.skeleton"
    write_ntu_skeleton(str(p), frames)
    x = read_ntu_skeleton(str(p), backend=backend)
    assert x.shape == (3, 18, 25, 2) and x.dtype == np.float32  # 2 empty frames dropped
    kept = [t for t in range(20) if t not in (3, 11)]
    # the more active body (id ...102, amp 1.5) comes first; text precision %.7g -> float32 exact
    expect0 = np.stack([np.float32([float("%.7g" % v) for v in frames[t][1][1].reshape(-1)]).reshape(25, 3)
                        if len(frames[t]) > 1 and frames[t][1][0] == 72057594037931102 else None
                        for t in kept if t not in (5, 6, 7)])
    got0 = np.stack([x[:, i, :, 0].T for i, t in enumerate(kept) if t not in (5, 6, 7)])
    np.testing.assert_array_equal(got0, expect0)
    # where the first-ranked body is lost (frames 5-7) it is zero; the noise body 999 is never chosen
    for i, t in enumerate(kept):
        if t in (5, 6, 7):
            assert not x[:, i, :, 0].any() and x[:, i, :, 1].any()
    assert not np.isclose(x[..., 1], 0.001 + x[..., 0]).all()


@requires_parser
def test_cpp_and_python_agree_bit_for_bit(ntu_dir):
    _, paths, _ = ntu_dir
    a = read_ntu_skeletons(paths, backend="cpp", num_threads=3)
    b = read_ntu_skeletons(paths, backend="python")
    for u, v in zip(a, b):
        assert u.shape == v.shape and u.dtype == v.dtype == np.float32
        assert np.array_equal(u.view(np.uint32), v.view(np.uint32))


@requires_parser
def test_cpp_and_python_agree_on_number_syntax(tmp_path):
    rng = np.random.default_rng(3)
    frames = [[(1, _pose(rng))], [(1, _pose(rng)), (2, _pose(rng, 1.0))]]
    p = tmp_path / "a.skeleton"
    write_ntu_skeleton(str(p), frames, fmt="%.17g")
    text = p.read_text().split("\n")
    # exotic but valid spellings: '+', leading '.', trailing '.', exponents, tabs, CRLF, tiny/huge
    j = text.index("25") + 1
    text[j] = "+1.5e-3\t.25 7. 1 2 3 4 5 6 7 8 2"
    text[j + 1] = "1e-320 -0.0 123456789012345678901234567890 1 2 3 4 5 6 7 8 2\r"
    text[j + 2] = "  0.1000000000000000055511151231257827 -1E+2 3.40282e38 1 2 3 4 5 6 7 8 2  "
    p.write_text("\n".join(text) + "\n\n  \n")
    u, v = read_ntu_skeleton(str(p), backend="cpp"), read_ntu_skeleton(str(p), backend="python")
    assert np.array_equal(u.view(np.uint32), v.view(np.uint32))
    assert u[0, 0, 0, 0] == np.float32(1.5e-3) and u[1, 0, 0, 0] == np.float32(0.25)


def _break(lines, kind):
    j = lines.index("25")  # first joint count line
    if kind == "wrong joint count":
        lines[j] = "24"
        return j + 1, "expected 25 joints, got 24"
    if kind == "non-numeric field":
        lines[j + 4] = lines[j + 4].replace("250.5", "abc", 1)
        return j + 5, "field 4 is not a number: 'abc'"
    if kind == "missing field":
        lines[j + 2] = " ".join(lines[j + 2].split()[:11])
        return j + 3, "expected 12 fields, got 11"
    if kind == "bad body count":
        lines[j - 2] = "x"
        return j - 1, "expected the body count of frame 1/"
    if kind == "bad body id":
        lines[j - 1] = "id7 " + " ".join(lines[j - 1].split()[1:])
        return j, "body id"
    if kind == "truncated":
        del lines[j + 10:]
        return j + 11, "unexpected end of file: expected joint 10/25 of body 1 in frame 1"
    if kind == "trailing data":
        lines.append("5")
        return len(lines), "unexpected data after the last of"
    if kind == "nan":
        lines[j + 1] = "nan 1 2 3 4 5 6 7 8 9 10 2"
        return j + 2, "field 1 is not a number: 'nan'"
    if kind == "overflow":
        lines[j + 1] = "1e999 1 2 3 4 5 6 7 8 9 10 2"
        return j + 2, "field 1 is out of the float32 range"
    if kind == "huge frame count":
        lines[0] = "99999999999"
        return 1, "value too large"
    raise AssertionError(kind)


MALFORMED = ["wrong joint count", "non-numeric field", "missing field", "bad body count", "bad body id", "truncated",
             "trailing data", "nan", "overflow", "huge frame count"]


@pytest.mark.parametrize("kind", MALFORMED)
@pytest.mark.parametrize("backend", BACKENDS)
def test_malformed_files_name_file_and_line(tmp_path, kind, backend):
    rng = np.random.default_rng(2)
    p = tmp_path / "S001C001P001R001A001.skeleton"
    write_ntu_skeleton(str(p), make_frames(rng, T=4, gaps=False))
    lines = p.read_text().split("\n")[:-1]
    line, msg = _break(lines, kind)
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(NTUFormatError) as ei:
        read_ntu_skeleton(str(p), backend=backend)
    e = ei.value
    assert e.path == str(p) and e.line == line and msg in str(e), str(e)
    assert str(e).startswith(f"{p}:{line}: ")


@pytest.mark.parametrize("content, line, msg", [(b"", 0, "empty file"), (b"0\n", 0, "no body in any of the 0 frames"),
                                                (b"2\n0\n0\n", 0, "no body in any of the 2 frames"),
                                                (b"1\n1\n\xe9\n", 3, "non-ASCII byte 0xe9"),
                                                (b"\n", 1, "expected the frame count")])
@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_and_odd_files(tmp_path, content, line, msg, backend):
    p = tmp_path / "S001C001P001R001A001.skeleton"
    p.write_bytes(content)
    with pytest.raises(NTUFormatError, match=msg) as ei:
        read_ntu_skeleton(str(p), backend=backend)
    assert ei.value.line == line


@requires_parser
def test_both_backends_report_identical_errors(tmp_path):
    rng = np.random.default_rng(4)
    paths = []
    for kind in MALFORMED:
        p = tmp_path / f"{kind.replace(' ', '_')}.skeleton"
        write_ntu_skeleton(str(p), make_frames(rng, T=3, gaps=False))
        lines = p.read_text().split("\n")[:-1]
        _break(lines, kind)
        p.write_text("\n".join(lines) + "\n")
        paths.append(str(p))
    paths.append(str(tmp_path / "missing.skeleton"))
    a, ea = read_ntu_skeletons(paths, backend="cpp", skip_bad=True)
    b, eb = read_ntu_skeletons(paths, backend="python", skip_bad=True)
    assert a == [None] * len(paths) and b == a
    assert [str(e) for e in ea] == [str(e) for e in eb]
    assert "cannot read: No such file or directory" in str(ea[-1])


def test_load_directory_and_single_file(ntu_dir):
    d, paths, names = ntu_dir
    data = load(str(d), split="all")
    assert data.x.shape[0] == 6 and data.x.shape[1:] == (3, max(12 + 3 * i for i in range(6)) - 2, 25, 2)
    assert data.names == sorted(names)
    assert data.y.tolist() == [parse_ntu_name(n)["label"] for n in sorted(names)]
    assert data.lengths.tolist() == [read_ntu_skeleton(os.path.join(d, n + ".skeleton")).shape[1] for n in sorted(names)]
    tr = load(str(d), split="xview_train")
    assert all(parse_ntu_name(n)["camera"] in (2, 3) for n in tr.names) and len(tr) == 4
    one = load(paths[0])
    assert one.x.shape[0] == 1 and one.y.tolist() == [0]


def _ctr_rows(arr, T=300, center=True):
    a = center_like_ctrgcn(arr) if center else arr
    out = np.zeros((T, 150), np.float32)
    out[: a.shape[1]] = a.transpose(1, 3, 2, 0).reshape(a.shape[1], 150)
    return out


@pytest.mark.parametrize("split_name", ["xsub", "xview", "xset"])
def test_prepare_writes_the_expected_arrays_and_splits(ntu_dir, tmp_path, capsys, split_name):
    d, paths, names = ntu_dir
    out = tmp_path / "out" / f"ntu_{split_name}.npz"
    rc = main(["prepare", "ntu", "--raw", str(d), "--out", str(out), "--benchmark", split_name, "--quiet",
               "--threads", "2", "--chunk", "2"])
    assert rc == 0
    z = np.load(out)
    order = sorted(names)
    train = [n for n in order if is_train(parse_ntu_name(n), split_name)]
    test = [n for n in order if n not in train]
    assert list(z["names_train"]) == train and list(z["names_test"]) == test
    assert z["x_train"].shape == (len(train), 300, 150) and z["x_test"].dtype == np.float32
    assert z["y_train"].shape == (len(train), 120)  # an action id > 60 occurs -> NTU-120
    for part, lst in (("train", train), ("test", test)):
        for i, n in enumerate(lst):
            arr = read_ntu_skeleton(os.path.join(d, n + ".skeleton"))
            np.testing.assert_array_equal(z[f"x_{part}"][i], _ctr_rows(arr))
            assert int(z[f"y_{part}"][i].argmax()) == parse_ntu_name(n)["label"] and z[f"y_{part}"][i].sum() == 1
    # readable back through load() (the CTR-GCN/MAMP reader)
    back = load(str(out), split="train")
    assert back.names == train and back.x.shape == (len(train), 3, 300, 25, 2)
    assert not [p for p in os.listdir(out.parent) if p.startswith(".fastskel-prepare")]  # scratch removed
    assert f"{len(train)} train / {len(test)} test" in capsys.readouterr().out


def test_prepare_bad_files_stop_or_are_skipped_and_listed(ntu_dir, tmp_path, capsys):
    d, paths, names = ntu_dir
    with open(paths[2], "a") as f:
        f.write("garbage\n")
    open(os.path.join(d, "S001C001P004R001A003.skeleton"), "w").close()  # empty
    out = tmp_path / "o.npz"
    rc = main(["prepare", "ntu", "--raw", str(d), "--out", str(out), "--benchmark", "xsub", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 1 and "--skip-bad" in err and not out.exists()
    assert "S001C001P004R001A003.skeleton: empty file" in err or f"{paths[2]}:" in err
    rc = main(["prepare", "ntu", "--raw", str(d), "--out", str(out), "--benchmark", "xsub", "--quiet", "--skip-bad",
               "--no-center"])
    cap = capsys.readouterr()
    assert rc == 0
    assert "skipped 2 bad file(s)" in cap.out and "empty file" in cap.out and "unexpected data after the last" in cap.out
    z = np.load(out)
    kept = set(z["names_train"]) | set(z["names_test"])
    assert kept == set(names) - {os.path.basename(paths[2])[:-9]}
    i = list(z["names_train"]).index("S001C001P001R001A001")
    np.testing.assert_array_equal(z["x_train"][i], _ctr_rows(read_ntu_skeleton(paths[0]), center=False))


def test_prepare_errors(tmp_path, capsys):
    assert main(["prepare", "ntu", "--raw", str(tmp_path / "nope"), "--out", str(tmp_path / "o.npz"),
                 "--benchmark", "xsub"]) == 1
    assert "not a directory" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["prepare", "ntu", "--raw", str(tmp_path), "--out", "o.npz", "--benchmark", "xfoo"])


def test_backend_argument():
    with pytest.raises(ValueError, match="backend"):
        read_ntu_skeletons([], backend="rust")
