"""``fastskel export``: ONNX (checked in onnxruntime) and TorchScript of encoder + classifier."""
import json

import numpy as np
import pytest
import torch

from fastskel.cli import main
from fastskel.data import valid_lengths
from fastskel.engine.evaluate import Classifier, load_classifier, save_classifier
from fastskel.methods.supervised import Supervised, SupervisedConfig
from fastskel.engine.latency import torch_threads

ort = pytest.importorskip("onnxruntime")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_export_onnx_matches_onnxruntime_and_torchscript(tmp_path, capsys):
    with torch_threads(1):
        torch.manual_seed(0)
        enc = Supervised(SupervisedConfig(num_classes=5, backbone="tiny", hidden=8, depth=2, kernel=3))
        g = torch.Generator().manual_seed(1)
        clf = Classifier(enc, 4, mean=torch.randn(8, generator=g), std=torch.rand(8, generator=g) + 0.5)
        path = save_classifier(tmp_path / "linear.pt", clf, "supervised", "linear", 50.0, (3, 10, 25, 2))
        loaded, st = load_classifier(path)
        x = torch.randn(3, 3, 10, 25, 2, generator=g)
        x[1, :, 6:] = 0                                               # a padded action
        x[2, ..., 1] = 0                                              # a single-body action
        with torch.no_grad():                                         # the graph computes lengths = valid frames
            ref = loaded.logits(x, valid_lengths(x))
            torch.testing.assert_close(ref, clf.logits(x, valid_lengths(x)))   # the file round-trips
        rc = main(["export", "--checkpoint", str(path), "--out", str(tmp_path / "exp"), "--runs", "3"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "onnxruntime check" in out and "CPU latency" in out
    rep = json.loads((tmp_path / "exp" / "model.json").read_text())
    onnx_path = tmp_path / "exp" / "model.onnx"
    assert rep["files"]["onnx"]["bytes"] == onnx_path.stat().st_size
    used = sum(p.numel() for p in enc.backbone.parameters()) + sum(p.numel() for p in clf.head.parameters())
    assert rep["parameters"] == used                                  # the encoder's own classifier is not exported
    assert rep["method_parameters"] == sum(p.numel() for p in enc.parameters())
    assert rep["num_classes"] == 4 and rep["sample_shape"] == [3, 10, 25, 2]
    assert rep["onnx_max_abs_diff"] <= rep["onnx_tolerance"] <= 1e-3
    assert all(v > 0 for v in rep["latency_ms_batch1"].values()) and "pytorch" in rep["latency_ms_batch1"]

    # independent check, on inputs the exporter never saw (batch 3, padding, an empty body)
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    xin = x if rep["onnx_dynamic_batch"] else x[:2]
    got = sess.run(None, {"x": xin.numpy()})[0]
    np.testing.assert_allclose(got, ref[: xin.shape[0]].numpy(), atol=1e-4, rtol=1e-4)

    if "torchscript_error" not in rep:
        ts = torch.jit.load(str(tmp_path / "exp" / "model.ts.pt"))
        torch.testing.assert_close(ts(x), ref, atol=1e-5, rtol=1e-5)


def test_export_pretraining_checkpoint_uses_own_classifier(tmp_path):
    from fastskel.engine.checkpoint import save_checkpoint
    from fastskel.engine.config import config_to_dict

    enc = Supervised(SupervisedConfig(num_classes=3, backbone="tiny", hidden=4, depth=1, kernel=3))
    p = save_checkpoint({"method": "supervised", "config": config_to_dict(enc.config), "model": enc.state_dict()},
                        tmp_path / "last.pt")
    clf, _ = load_classifier(p)
    assert clf.head.out_features == 3
    torch.testing.assert_close(clf.head.weight, enc.classifier.weight)
    clf5, _ = load_classifier(p, num_classes=5)                       # another head size: a fresh head
    assert clf5.head.out_features == 5
    with pytest.raises(ValueError, match="formats"):
        from fastskel.engine.export import export_classifier

        export_classifier(clf, (3, 8, 25, 1), tmp_path, formats=("tflite",))
