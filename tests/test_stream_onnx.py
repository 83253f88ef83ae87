"""fastskel.stream with an exported ONNX file: the file alone streams (its metadata is the
checkpoint's StreamMeta) and onnxruntime's streamed logits equal PyTorch's and the offline
evaluation's on the same windows (≤ 1e-4), on a 2-D topology (COCO-17, x, y, score)."""
import json

import numpy as np
import pytest
import torch

from fastskel.cli import main
from fastskel.data import SkeletonDataset, SyntheticSkeletons
from fastskel.engine.data_record import data_record
from fastskel.engine.evaluate import Classifier, build_method, save_classifier
from fastskel.stream import ActionStream, TorchStreamModel, load_stream_model, preprocess_window
from fastskel.engine.latency import torch_threads

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

T = 16
CFG = dict(num_frames=12, hidden_channels=4, depth=2, out_dim=8, projector_dims=[16], in_channels=3,
           num_joints=17, graph="coco17")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    with torch_threads(1):
        opts = dict(graph="coco17", channels="xy+score", bodies=2, num_classes=3, T=T, seed=1)
        train = SyntheticSkeletons(num_samples=15, split="train", **opts)
        test = SyntheticSkeletons(num_samples=15, split="test", **opts)
        torch.manual_seed(0)
        m = build_method("asma", CFG).eval()
        g = torch.Generator().manual_seed(1)
        d = int(m.feature_dim)
        clf = Classifier(m, 3, mean=torch.randn(d, generator=g) * 0.1, std=torch.rand(d, generator=g) + 0.5).eval()
        d = tmp_path_factory.mktemp("onnx")
        path = save_classifier(d / "linear.pt", clf, "asma", "linear", 0.0, tuple(train.x.shape[1:]),
                               data=data_record(train, "synthetic", clf.encoder.config))
        rc = main(["export", "--checkpoint", str(path), "--out", str(d / "exp"), "--formats", "onnx",
                   "--runs", "2", "--warmup", "1"])
        assert rc == 0
    return clf, test, path, d / "exp" / "model.onnx"


def _frames(x):
    return np.ascontiguousarray(np.asarray(x).transpose(1, 3, 2, 0))


def _stream_all(stream, frames):
    preds = [p for p in (stream.push(f) for f in frames) if p is not None]
    return preds + stream.flush()


def test_the_onnx_file_alone_carries_the_checkpoints_meta(exported):
    _, _, path, onnx_path = exported
    model = load_stream_model(onnx_path, threads=1)
    assert type(model).__name__ == "OnnxStreamModel" and model.dynamic_T
    ref = TorchStreamModel(path).meta
    assert json.loads(model.meta.to_json()) == json.loads(ref.to_json())
    assert model.meta.channels == "xy+score" and model.meta.V == 17 and model.meta.graph["name"] == "coco17"
    assert "OnnxStreamModel(" in repr(model)


def test_onnx_streaming_equals_pytorch_streaming_and_offline_eval(exported):
    clf, test, path, onnx_path = exported
    om, tm = load_stream_model(onnx_path, threads=1), TorchStreamModel(path)
    # whole clips: the offline eval logits (Classifier.scores over the test set)
    offline, _ = clf.scores(test, batch_size=4)
    for i in range(len(test)):
        L = int(test.lengths[i])
        frames = _frames(test.x[i, :, :L])
        po = _stream_all(ActionStream(om, window=L, stride=L, missing="zero"), frames)
        assert len(po) == 1
        np.testing.assert_allclose(po[0].logits, offline[i].numpy(), rtol=0, atol=1e-4)
    # sliding windows over clips back to back, and windows longer than T (a dynamic T)
    seq = np.concatenate([_frames(test.x[i, :, :int(test.lengths[i])]) for i in range(3)])
    for window, stride in ((10, 3), (T + 5, 7)):
        po = _stream_all(ActionStream(om, window, stride, missing="zero"), seq)
        pt = _stream_all(ActionStream(tm, window, stride, missing="zero"), seq)
        assert len(po) == len(pt) > 1 and [p.start for p in po] == [p.start for p in pt]
        np.testing.assert_allclose(np.stack([p.logits for p in po]), np.stack([p.logits for p in pt]),
                                   rtol=0, atol=1e-4)
        assert [p.index for p in po] == [p.index for p in pt]
    # the same windows, preprocessed and evaluated offline as one batch
    xs = [preprocess_window(seq[p.start:p.end + 1], tm.meta)[0] for p in pt]
    ds = SkeletonDataset(torch.from_numpy(np.stack(xs)), torch.zeros(len(xs), dtype=torch.long))
    off, _ = clf.scores(ds, batch_size=8)
    np.testing.assert_allclose(np.stack([p.logits for p in po]), off.numpy(), rtol=0, atol=1e-4)


def test_onnx_without_fastskel_metadata_is_one_clear_line(tmp_path):
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 17, 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 17, 2])
    g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, tmp_path / "plain.onnx")
    with pytest.raises(ValueError, match=r"plain\.onnx has no fastskel metadata") as e:
        load_stream_model(tmp_path / "plain.onnx")
    assert "\n" not in str(e.value)
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="not a loadable ONNX model"):
        load_stream_model(tmp_path / "junk.onnx")
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_stream_model(tmp_path / "missing.onnx")


def test_onnx_model_checks_its_input(exported):
    om = load_stream_model(exported[3])
    with pytest.raises(ValueError, match="V=17"):
        om.logits(np.zeros((1, 3, T, 25, 2), np.float32))
    with pytest.raises(ValueError, match="threads"):
        load_stream_model(exported[3], threads=0)
