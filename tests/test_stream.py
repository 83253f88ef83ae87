"""fastskel.stream: streamed predictions equal the offline evaluation path on the same windows
(several topologies incl. 2-D, four methods + a distilled student), and the documented rules for
dropped frames, absent / appearing / extra bodies, irregular timestamps, smoothing and bad input."""
import json

import numpy as np
import pytest
import torch

from fastskel.data import SkeletonDataset, SyntheticSkeletons
from fastskel.data.ntu import center_like_ctrgcn
from fastskel.engine.data_record import add_data_record, data_record
from fastskel.engine.evaluate import Classifier, build_method, save_classifier
from fastskel.stream import (ActionStream, StreamMeta, TorchStreamModel, load_stream_model, meta_from_checkpoint,
                             preprocess_window)

T = 16
CASES = {  # name: (synthetic options, method, tiny config)
    "amr-ntu25-xyz": (dict(graph=None, channels="xyz", bodies=2), "amr",
                      dict(num_frames=8, frames_per_patch=4, dim=16, depth=1, heads=2, decoder_dim=16,
                           decoder_depth=1, decoder_heads=2, crop_min_frames=4, r=1, windows=[4])),
    "asma-coco17-xy+score": (dict(graph="coco17", channels="xy+score", bodies=2), "asma",
                             dict(num_frames=12, hidden_channels=4, depth=2, out_dim=8, projector_dims=[16],
                                  in_channels=3, num_joints=17, graph="coco17")),
    "slim-openpose18-xy": (dict(graph="openpose18", channels="xy", bodies=2), "slim",
                           dict(dim=16, depth=1, heads=2, mlp_dim=32, num_registers=1, num_prototypes=16,
                                head_hidden_dim=16, head_bottleneck_dim=8, frames=8, local_frames=[4], frames_per_patch=4,
                                local_scales=[[0.15, 0.4]], local_crops=1, in_channels=2, num_joints=18,
                                graph="openpose18", encode_crop=0.9)),
    "supervised-ntu25-stgcn": (dict(graph=None, channels="xyz", bodies=2), "supervised",
                               dict(backbone="stgcn", hidden=4, depth=2, out_dim=8, num_classes=3)),
}


pytestmark = pytest.mark.usefixtures("one_thread")


def _data(opts, split):
    return SyntheticSkeletons(num_classes=3, num_samples=15, T=T, split=split, seed=1, **opts)


def _classifier(method, cfg, train):
    torch.manual_seed(0)
    m = build_method(method, cfg).eval()
    d = int(m.feature_dim)
    g = torch.Generator().manual_seed(1)
    return Classifier(m, 3, mean=torch.randn(d, generator=g) * 0.1, std=torch.rand(d, generator=g) + 0.5).eval()


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request, tmp_path_factory):
    opts, method, cfg = CASES[request.param]
    train, test = _data(opts, "train"), _data(opts, "test")
    clf = _classifier(method, cfg, train)
    path = tmp_path_factory.mktemp("clf") / "linear.pt"
    save_classifier(path, clf, method, "linear", 0.0, tuple(train.x.shape[1:]), data=data_record(train, "synthetic", clf.encoder.config))
    return clf, test, path


def _frames(x):
    """A dataset clip ``(C, T, V, M)`` → stream frames ``(T, M, V, C)``."""
    return np.ascontiguousarray(np.asarray(x).transpose(1, 3, 2, 0))


def _stream_all(stream, frames, times=None):
    preds = []
    for i, f in enumerate(frames):
        p = stream.push(f, None if times is None else times[i])
        if p is not None:
            preds.append(p)
    return preds + stream.flush()


def test_whole_clips_equal_offline_eval(case):
    """A window of exactly a test clip's valid frames gives the offline eval logits (Classifier.scores)."""
    clf, test, path = case
    model = TorchStreamModel(path)
    offline, _ = clf.scores(test, batch_size=4)
    for i in range(len(test)):
        L = int(test.lengths[i])
        frames = _frames(test.x[i, :, :L])
        if not frames[:, 1].any():                 # a one-person action: push only the body seen
            frames = frames[:, :1]
        preds = _stream_all(ActionStream(model, window=L, stride=L, missing="zero"), frames)
        assert len(preds) == 1 and (preds[0].start, preds[0].end) == (0, L - 1)
        np.testing.assert_allclose(preds[0].logits, offline[i].numpy(), rtol=0, atol=1e-5)
        assert preds[0].index == int(offline[i].argmax())


def test_sliding_windows_equal_offline_on_the_same_windows(case):
    """Sliding windows over a long stream (clips back to back, moved in the camera): each window,
    cut, centred by the NTU reader's own ``center_like_ctrgcn`` and zero-padded to T like a dataset
    clip, evaluated offline, gives the streamed logits."""
    clf, test, path = case
    model = TorchStreamModel(path)
    meta = model.meta
    k = meta.coord_channels
    clips = [_frames(test.x[i, :, :int(test.lengths[i])]) for i in range(3)]
    seq = np.concatenate(clips).copy()
    shift = np.zeros(meta.C, np.float32)
    shift[:k] = [0.3, -0.2, 2.5][:k]
    present = seq.reshape(seq.shape[0], seq.shape[1], -1).any(-1)[:, :, None, None]
    seq = (seq + shift * present).astype(np.float32)
    window, stride = 10, 3
    preds = _stream_all(ActionStream(model, window, stride, missing="zero"), seq)
    assert [p.start for p in preds] == list(range(0, seq.shape[0] - window + 1, stride))
    xs = []
    for p in preds:
        w = seq[p.start:p.end + 1].transpose(3, 0, 2, 1)           # (C, W, V, M)
        if k == 3:
            c = center_like_ctrgcn(w)
        else:                                                        # 2-D: the same rule on x, y only
            c = w.copy()
            present = (w != 0).any(0, keepdims=True).astype(np.float32)
            c[:2] = center_like_ctrgcn(np.concatenate([w[:2], present]))[:2]
        xs.append(np.concatenate([c, np.zeros((meta.C, T - window, meta.V, meta.M), np.float32)], 1))
    ds = SkeletonDataset(torch.from_numpy(np.stack(xs)), torch.zeros(len(xs), dtype=torch.long))
    offline, _ = clf.scores(ds, batch_size=8)
    got = np.stack([p.logits for p in preds])
    np.testing.assert_allclose(got, offline.numpy(), rtol=0, atol=2e-5)


def test_distilled_student_streams_like_its_logits(tmp_path):
    from fastskel.methods.asma import ASMaStudent

    opts = dict(graph="coco17", channels="xy+score", bodies=2)
    train, test = _data(opts, "train"), _data(opts, "test")
    torch.manual_seed(0)
    stu = ASMaStudent(3, depth=1, hidden_channels=4, out_dim=8, num_frames=12, graph="coco17").eval()
    torch.save({"kind": "asma_student", "hparams": stu.hparams, "model": stu.state_dict()}, tmp_path / "student.pt")
    add_data_record(tmp_path / "student.pt", train, "synthetic", stu)
    model = load_stream_model(tmp_path / "student.pt")
    assert model.meta.method == "asma_student" and model.meta.channels == "xy+score" and model.meta.V == 17
    L = int(test.lengths[0])
    preds = _stream_all(ActionStream(model, L, L), _frames(test.x[0, :, :L]))
    with torch.no_grad():
        ref = stu.logits(test.x[:1], test.lengths[:1])
    np.testing.assert_allclose(preds[0].logits, ref[0].numpy(), rtol=0, atol=1e-5)


# ------------------------------------------------------------------------------ rules (fake model)
class Recorder:
    """A StreamModel that records its inputs; logits = a fixed function of the input."""

    def __init__(self, C=3, T=8, V=4, M=2, channels="xyz", center=None, select="order", K=3):
        pre = {"center": center, "bodies": {"max": M, "select": select}}
        self.meta = StreamMeta(C=C, T=T, V=V, M=M, channels=channels, graph=None, class_names=["a", "b", "c"][:K],
                               num_classes=K, preprocess=pre)
        self.inputs = []

    def logits(self, x):
        self.inputs.append(x.copy())
        s = float(x.sum())
        return np.array([[s, -s, 0.0]], np.float32)


def _frame(v, m=1, V=4, C=3):
    return np.full((m, V, C), v, np.float32)


@pytest.mark.parametrize("rule,expect", [("zero", [1, 0, 0, 4]), ("hold", [1, 1, 1, 4]),
                                         ("interpolate", [1, 2, 3, 4])])
def test_dropped_frames_rules(rule, expect):
    rec = Recorder()
    s = ActionStream(rec, window=4, stride=4, missing=rule, max_gap=2)
    _stream_all(s, [_frame(1), None, np.zeros((1, 4, 3)), _frame(4)])
    x = rec.inputs[0][0]                                   # (C, T, V, M)
    assert x.shape == (3, 8, 4, 2)
    np.testing.assert_allclose(x[0, :4, 0, 0], expect)
    assert not x[:, 4:].any() and not x[..., 1].any()       # padded to T, the absent second body is zeros


@pytest.mark.parametrize("rule", ["hold", "interpolate"])
def test_gap_longer_than_max_gap_is_zeros(rule):
    rec = Recorder()
    s = ActionStream(rec, window=5, stride=5, missing=rule, max_gap=2)
    _stream_all(s, [_frame(1), None, None, None, _frame(5)])
    want = [1, 1, 1, 0, 5] if rule == "hold" else [1, 0, 0, 0, 5]
    np.testing.assert_allclose(rec.inputs[0][0, 0, :5, 0, 0], want)


def test_interpolated_gap_at_the_end_is_zeros_on_flush():
    rec = Recorder()
    s = ActionStream(rec, window=3, stride=3, missing="interpolate", max_gap=3)
    assert s.push(_frame(1)) is None and s.push(None) is None and s.push(None) is None   # waiting
    preds = s.flush()
    assert len(preds) == 1
    np.testing.assert_allclose(rec.inputs[0][0, 0, :3, 0, 0], [1, 0, 0])


def test_body_appearing_mid_stream_and_centring():
    rec = Recorder(center={"joint": 1, "body": 0, "frame": "first_present", "channels": 2}, channels="xy+score")
    s = ActionStream(rec, window=4, stride=4)
    a = np.arange(12, dtype=np.float32).reshape(4, 3) + 1
    frames = [a[None], a[None] + 1, np.stack([a + 2, a * 2]), np.stack([a + 3, a * 3])]
    _stream_all(s, frames)
    x = rec.inputs[0][0]
    assert not x[:, :2, :, 1].any()                       # body 1 absent before it appears
    origin = a[1, :2]
    np.testing.assert_allclose(x[:2, 2, :, 1].T, (a * 2)[:, :2] - origin)   # centred on body 0, frame 0, joint 1
    np.testing.assert_allclose(x[2, 2, :, 1], (a * 2)[:, 2])                # the score channel is not centred
    np.testing.assert_allclose(x[:2, 0, 1, 0], 0)


def test_more_bodies_than_M_keep_the_readers_choice():
    a = np.ones((4, 3), np.float32)
    rec = Recorder(M=2, channels="xy+score", select="score")
    s = ActionStream(rec, 1, 1)
    low, mid, high = a * [1, 1, 0.1], a * [2, 2, 0.5], a * [3, 3, 0.9]
    s.push(np.stack([low, high, mid]))
    x = rec.inputs[0][0, :, 0]                            # (C, V, M): highest score first
    np.testing.assert_allclose(x[0, 0], [3, 2])
    rec = Recorder(M=1, select="energy")
    s = ActionStream(rec, 3, 3)
    still, moving = a, a
    _stream_all(s, [np.stack([still, moving * t]) for t in (1, 2, 3)])
    np.testing.assert_allclose(rec.inputs[0][0, 0, :3, 0, 0], [1, 2, 3])   # the most active body kept


def test_irregular_timestamps_are_resampled_linearly():
    rec = Recorder()
    s = ActionStream(rec, window=6, stride=6, fps=10.0, max_gap=3)
    times = [0.0, 0.07, 0.21, 0.33, 0.38, 0.52, 0.61]
    for t in times:
        s.push(_frame(10 * t + 1), timestamp=t)          # a coordinate linear in time
    x = rec.inputs[0][0, 0, :6, 0, 0]
    np.testing.assert_allclose(x, 1 + 10 * np.arange(6) / 10.0, atol=1e-5)   # exact at the 10 fps grid
    assert s.frames_done == 7                            # grid 0.0 ... 0.6


def test_smoothing_is_an_ema_of_probabilities():
    rec = Recorder()
    raw, smooth = ActionStream(rec, 1, 1), ActionStream(Recorder(), 1, 1, smoothing=0.25)
    ps = [raw.push(_frame(v * 0.05)).probs for v in (1, 5, -3)]
    qs = [smooth.push(_frame(v * 0.05)).probs for v in (1, 5, -3)]
    want = ps[0]
    np.testing.assert_allclose(qs[0], want, atol=1e-6)
    for p, q in zip(ps[1:], qs[1:]):
        want = 0.25 * p + 0.75 * want
        np.testing.assert_allclose(q, want, atol=1e-6)


@pytest.mark.parametrize("bad,err,msg", [
    (np.zeros((1, 5, 3)), ValueError, "V=4 joints"), (np.zeros((1, 4, 2)), ValueError, "C=3 channels"),
    (np.full((1, 4, 3), np.nan), ValueError, "finite"), ("frame", TypeError, "keypoints"),
    ([[[1, 2, 3]], [[1, 2]]], ValueError, "ragged"), (np.zeros((2, 2, 4, 3)), ValueError, "expected (M, V=4"),
])
def test_bad_input_is_one_clear_line_and_the_stream_goes_on(bad, err, msg):
    clean, rec = Recorder(), Recorder()
    a, b = ActionStream(clean, 2, 1), ActionStream(rec, 2, 1)
    a.push(_frame(1))
    b.push(_frame(1))
    with pytest.raises(err) as e:
        b.push(bad)
    assert msg in str(e.value) and "\n" not in str(e.value)
    assert a.push(_frame(2)).logits.tolist() == b.push(_frame(2)).logits.tolist()


def test_decreasing_timestamp_is_refused():
    s = ActionStream(Recorder(), 2, 1)
    s.push(_frame(1), 1.0)
    with pytest.raises(ValueError, match="non-decreasing"):
        s.push(_frame(1), 0.5)


def test_options_are_checked():
    for kw, msg in ((dict(window=0, stride=1), "window"), (dict(window=2, stride=1, missing="drop"), "missing"),
                    (dict(window=2, stride=1, smoothing=1.5), "smoothing"), (dict(window=2, stride=1, fps=-1), "fps")):
        with pytest.raises(ValueError, match=msg):
            ActionStream(Recorder(), **kw)
    with pytest.raises(TypeError, match="StreamModel"):
        ActionStream(object(), 2, 1)


# ------------------------------------------------------------------------------ meta
def test_meta_json_roundtrip_and_checkpoint_record(case):
    _, test, path = case
    meta = meta_from_checkpoint(path)
    assert StreamMeta.from_json(meta.to_json()) == meta
    assert (meta.C, meta.T, meta.V, meta.M) == tuple(test.x.shape[1:])
    assert meta.channels == test.channels and meta.num_classes == 3
    assert meta.preprocess["center"]["joint"] == 1 and meta.graph["num_joints"] == meta.V
    json.loads(meta.to_json())
    with pytest.raises(ValueError, match="missing field"):
        StreamMeta.from_json('{"C": 3}')


def test_old_classifier_file_falls_back_and_says_so(tmp_path):
    opts, method, cfg = CASES["amr-ntu25-xyz"]
    clf = _classifier(method, cfg, None)
    save_classifier(tmp_path / "old.pt", clf, method, "linear", 0.0, (3, T, 25, 2))      # no data record
    meta = meta_from_checkpoint(tmp_path / "old.pt")
    assert (meta.C, meta.T, meta.V, meta.M, meta.channels) == (3, T, 25, 2, "xyz")
    assert meta.preprocess["center"] is None and "not recorded" in meta.preprocess["source"]["fallback"]


def test_preprocess_window_checks_its_input():
    meta = Recorder().meta
    assert preprocess_window(np.ones((3, 1, 4, 3), np.float32), meta).shape == (1, 3, 8, 4, 2)
    assert preprocess_window(np.ones((9, 3, 4, 3), np.float32), meta).shape == (1, 3, 9, 4, 2)
    with pytest.raises(ValueError, match="V=4"):
        preprocess_window(np.ones((3, 1, 5, 3), np.float32), meta)


def test_onnx_dispatch(tmp_path):
    """``*.onnx`` goes to OnnxStreamModel (its own one-line errors), anything else to TorchStreamModel."""
    with pytest.raises(FileNotFoundError, match="m.onnx"):
        load_stream_model(tmp_path / "m.onnx")
    (tmp_path / "bad.onnx").write_bytes(b"not an onnx file")
    pytest.importorskip("onnxruntime")
    with pytest.raises(ValueError, match="bad.onnx"):
        load_stream_model(tmp_path / "bad.onnx")


def test_resampling_a_long_gap_leaves_it_missing_and_skips_none_frames():
    rec = Recorder(T=8)
    s = ActionStream(rec, window=7, stride=7, fps=10.0, max_gap=2, missing="zero")
    for t, v in ((0.0, 1.0), (0.1, 2.0), (0.15, None), (0.6, 7.0)):
        s.push(None if v is None else _frame(v), timestamp=t)
    np.testing.assert_allclose(rec.inputs[0][0, 0, :7, 0, 0], [1, 2, 0, 0, 0, 0, 7], atol=1e-6)


def test_with_fps_timestamps_are_all_or_none():
    s = ActionStream(Recorder(), 4, 1, fps=30.0)
    s.push(_frame(1), 0.0)
    with pytest.raises(ValueError, match="a time for every frame"):
        s.push(_frame(1))
    s = ActionStream(Recorder(), 4, 1, fps=30.0)
    s.push(_frame(1))
    with pytest.raises(ValueError, match="no time for every frame"):
        s.push(_frame(1), 0.1)


def test_a_pretraining_checkpoint_without_classifier_is_refused(tmp_path):
    from fastskel.engine.checkpoint import save_checkpoint

    opts, method, cfg = CASES["amr-ntu25-xyz"]
    m = build_method(method, cfg)
    save_checkpoint({"method": method, "config": dict(cfg), "model": m.state_dict()}, tmp_path / "last.pt")
    for fn in (TorchStreamModel, meta_from_checkpoint):
        with pytest.raises(ValueError, match="without a classifier"):
            fn(tmp_path / "last.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(Exception, match="junk.pt"):
        TorchStreamModel(tmp_path / "junk.pt")


def test_data_record_infers_from_files_without_attributes():
    """A dataset read from a file carries no channels attribute: they, the centring and the body
    rule are inferred from the clips (NTU-like xyz → energy; 2-D + score → score; raw → no centre)."""
    syn = SyntheticSkeletons(num_classes=3, num_samples=9, T=8, seed=2)
    ntu = SkeletonDataset(syn.x.clone(), syn.y)
    rec = data_record(ntu, "ntu60_xsub.npz")
    assert rec["channels"] == "xyz" and rec["preprocess"]["bodies"]["select"] == "energy"
    assert rec["preprocess"]["center"]["joint"] == 1 and rec["graph"]["name"] == "ntu25"
    s2 = SyntheticSkeletons(num_classes=3, num_samples=9, T=8, seed=2, graph="coco17", channels="xy+score",
                            center=False)
    raw = SkeletonDataset(s2.x.clone(), s2.y)
    raw.class_names = ["wave", "sit", "jump"]
    rec = data_record(raw, "kinetics_2d.pkl")
    assert rec["channels"] == "xy+score" and rec["preprocess"]["bodies"]["select"] == "score"
    assert rec["preprocess"]["center"] is None and rec["class_names"] == ["wave", "sit", "jump"]
    assert "inferred" in rec["preprocess"]["source"]["channels"]


def test_class_names_reach_the_predictions(tmp_path):
    opts, method, cfg = CASES["amr-ntu25-xyz"]
    train = _data(opts, "train")
    train.class_names = ["drink", "eat", "read"]
    clf = _classifier(method, cfg, train)
    save_classifier(tmp_path / "c.pt", clf, method, "linear", 0.0, tuple(train.x.shape[1:]),
                    data=data_record(train, "synthetic", clf.encoder.config))
    model = TorchStreamModel(tmp_path / "c.pt")
    p = _stream_all(ActionStream(model, 4, 4), _frames(train.x[0, :, :4]))
    assert p[0].name == ["drink", "eat", "read"][p[0].index]
