"""``fastskel export``: the metadata a deployment needs (round trip through the ONNX file and the
report), a dynamic T checked in onnxruntime at other lengths or the required T stated, and the
fair latency report's fields."""
import json

import numpy as np
import pytest
import torch
from torch import nn

from fastskel.cli import main
from fastskel.data import SyntheticSkeletons, valid_lengths
from fastskel.engine.data_record import add_data_record
from fastskel.engine.export import export_classifier, read_onnx_metadata
from fastskel.methods.asma import ASMaStudent
from fastskel.stream import StreamMeta, meta_from_checkpoint
from fastskel.engine.latency import torch_threads

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")


@pytest.fixture(scope="module")
def student_export(tmp_path_factory):
    """A distilled student (NTU-25, x y z, named classes) exported by the CLI."""
    d = tmp_path_factory.mktemp("stu")
    with torch_threads(2):
        ds = SyntheticSkeletons(num_classes=3, num_samples=9, T=12, seed=0)
        ds.class_names = ["wave", "bow", "kick"]
        torch.manual_seed(0)
        stu = ASMaStudent(3, depth=2, hidden_channels=4, out_dim=8, num_frames=10).eval()
        torch.save({"kind": "asma_student", "hparams": stu.hparams, "model": stu.state_dict()}, d / "student.pt")
        add_data_record(d / "student.pt", ds, "synthetic", stu)
        rc = main(["export", "--checkpoint", str(d / "student.pt"), "--out", str(d / "exp"), "--formats",
                   "onnx,torchscript", "--runs", "5", "--warmup", "2", "--threads", "1"])
        assert rc == 0
        assert torch.get_num_threads() == 2                          # the latency threads are restored
    rep = json.loads((d / "exp" / "model.json").read_text())
    return stu, d / "student.pt", d / "exp" / "model.onnx", rep


def test_metadata_round_trip(student_export):
    _, ckpt, onnx_path, rep = student_export
    props = read_onnx_metadata(onnx_path)
    assert props == rep["metadata"]                                   # the report holds the same
    meta = StreamMeta.from_json(props["fastskel"])
    assert json.loads(meta.to_json()) == json.loads(meta_from_checkpoint(ckpt).to_json())
    assert json.loads(props["class_names"]) == ["wave", "bow", "kick"] == meta.class_names
    assert props["input_layout"] == "(B, C, T, V, M)"
    assert (props["C"], props["T"], props["V"], props["M"]) == ("3", "12", "25", "2")
    assert props["graph"] == "ntu25" and props["method"] == "asma_student" and props["channels"] == "xyz"
    import fastskel

    assert props["fastskel_version"] == fastskel.__version__
    assert rep["sample_shape"] == [3, 12, 25, 2] and rep["method"] == "asma_student"


def test_dynamic_T_checked_at_other_lengths(student_export):
    stu, _, onnx_path, rep = student_export
    assert rep["dynamic_T"] is True and rep["required_T"] is None and rep["metadata"]["dynamic_T"] == "true"
    assert "required_T" not in rep["metadata"]
    checked = {c["T"] for c in rep["onnx_time_checks"]}
    assert len(checked) == 2 and 12 not in checked and all(c["ok"] for c in rep["onnx_time_checks"])
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    g = torch.Generator().manual_seed(5)
    for t in (7, 10, 31):                                            # incl. T == the model's num_frames
        x = torch.randn(3, 3, t, 25, 2, generator=g)
        x[1, :, t - 3:] = 0                                           # padding
        x[2, ..., 1] = 0                                              # one body
        with torch.no_grad():
            ref = stu.logits(x, valid_lengths(x)).numpy()
        np.testing.assert_allclose(sess.run(None, {"x": x.numpy()})[0], ref, atol=1e-4, rtol=1e-4)


def test_latency_report_is_fair_and_stated(student_export):
    lat = student_export[3]["latency"]
    assert lat["threads"] == 1 and lat["batch"] == 1 and lat["runs"] == 5 and lat["warmup"] == 2
    assert "inference_mode" in lat["pytorch_mode"]
    assert lat["command"].startswith("fastskel export --checkpoint") and "--threads 1" in lat["command"]
    assert {"pytorch", "pytorch_torch_backend", "onnxruntime", "torchscript"} <= set(lat["engines"])
    for e in lat["engines"].values():
        assert e["runs"] == 5 and 0 < e["min_ms"] <= e["median_ms"] <= e["p99_ms"] and e["first_call_ms"] > 0
    assert student_export[3]["latency_ms_batch1"] == lat["median_ms"]


class _PerFrame(nn.Module):
    """A model tied to its input's T: one learned offset per input frame."""

    def __init__(self, T=8):
        super().__init__()
        self.pos = nn.Parameter(torch.randn(1, 3, T, 1, 1))
        self.feature_dim = 3

    def encode(self, x, lengths=None):
        return (x + self.pos).mean((2, 3, 4))


class _Clf(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder, self.head = _PerFrame(), nn.Linear(3, 2)

    def logits(self, x, lengths=None):
        return self.head(self.encoder.encode(x, lengths))


def test_fixed_T_is_stated(tmp_path):
    meta = StreamMeta(C=3, T=8, V=5, M=1, channels="xyz", graph=None, class_names=["a", "b"], num_classes=2)
    rep = export_classifier(_Clf().eval(), (3, 8, 5, 1), tmp_path, formats=("onnx",), runs=2, warmup=1,
                            meta=meta, threads=1)
    assert rep["dynamic_T"] is False and rep["required_T"] == 8
    props = read_onnx_metadata(tmp_path / "model.onnx")
    assert props["dynamic_T"] == "false" and props["required_T"] == "8"
    from fastskel.stream.onnx_model import OnnxStreamModel

    om = OnnxStreamModel(tmp_path / "model.onnx")
    assert om.required_T == 8 and om.logits(np.ones((1, 3, 8, 5, 1), np.float32)).shape == (1, 2)
    with pytest.raises(ValueError, match="fixed T=8, got T=9"):
        om.logits(np.ones((1, 3, 9, 5, 1), np.float32))
    with pytest.raises(ValueError, match=r"\(C, ·, V, M\)"):
        export_classifier(_Clf().eval(), (3, 8, 6, 1), tmp_path, formats=("onnx",), meta=meta)
