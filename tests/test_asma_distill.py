"""ASMa-Distill (seed 001 §3.5): KL loss, student training, cost report, ONNX export.
"""
import pytest
import torch
import torch.nn.functional as F

from fastskel.engine.distill import distill
from fastskel.methods.asma import (ASMa, ASMaAligner, ASMaConfig, ASMaStudent, build_student, distillation_loss,
                                   model_cost)


def tiny(**kw):
    base = dict(hidden_channels=4, out_dim=16, projector_dims=(32, 32, 32), dropout=0.0, num_frames=16,
                joint_mask_n=5, frame_mask_k=4)
    base.update(kw)
    return ASMaConfig(**base)


@pytest.fixture(scope="module")
def data():
    """4 synthetic classes (two limb groups × two tempos), 256 train / 64 test actions."""
    from fastskel.data import SyntheticSkeletons

    kw = dict(num_classes=4, num_samples=320, T=20, seed=0, bodies=1)
    return SyntheticSkeletons(split="train", **kw), SyntheticSkeletons(split="test", **kw)


def test_distillation_loss_formula():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(5, 7, generator=g), torch.randn(5, 7, generator=g)
    tau = 8.0
    p_t = F.softmax(t / tau, 1)
    want = (p_t * (p_t.log() - F.log_softmax(s / tau, 1))).sum(1).mean() * tau ** 2
    torch.testing.assert_close(distillation_loss(s, t, tau), want)
    assert float(distillation_loss(t, t, tau)) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="temperature"):
        distillation_loss(s, t, 0.0)
    with pytest.raises(ValueError, match="student_logits"):
        distillation_loss(s[:, :3], t)


def test_cost_report_paper_sizes():
    """Teacher (2 encoders + aligner) vs 5-block student at the paper's sizes, 60 classes."""
    teacher = ASMaAligner(ASMa(ASMaConfig()), 60)
    student = build_student(teacher, 60)
    x = torch.randn(1, 3, 50, 25, 2)
    tc, sc = model_cost(teacher, x), model_cost(student, x)
    assert len(student.encoder.stgcn.st_gcn_networks) == 5
    assert 2.0e6 < tc["params"] < 2.3e6                  # paper: 6.3 M for three streams
    assert sc["params"] < 0.1 * tc["params"]             # ≥ 90 % fewer parameters
    assert sc["flops"] < 0.2 * tc["flops"]


def test_distill_reduces_kl_and_retains_accuracy(data, tmp_path):
    """A linear-probed aligner teacher (tiny random-init ASMa: its per-frame features, standardised,
    carry the class) is clearly above chance (25 %), and a 3-block student trained only on its
    soft targets keeps >= 80 % of its test accuracy (seed 0: teacher 84.4, student 79.7; seeds
    1/2: 73.4/85.9, 81.3/89.1). ~40 s on one thread."""
    train, test = data
    n_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        teacher = ASMa(tiny())
        rep = distill(teacher, train, test, epochs=30, batch_size=16, temperature=4.0, student_blocks=3,
                      teacher_epochs=50, teacher_lr=1e-2, lr=1e-2, device="cpu", out=str(tmp_path), seed=0)
    finally:
        torch.set_num_threads(n_threads)
    assert rep["kl_last_epoch"] < 0.7 * rep["kl_first_epoch"], rep["kl_history"]
    x, L, _ = test[list(range(len(test)))]
    with torch.no_grad():
        agree = (rep["student"].eval().logits(x, L).argmax(1) == rep["teacher"].logits(x, L).argmax(1)).float().mean()
    assert agree >= 0.6, float(agree)                         # the student reproduces the teacher's decisions
    assert rep["teacher_top1"] >= 50.0, rep["teacher_top1"]   # chance: 25 %
    assert rep["top1"] >= 0.8 * rep["teacher_top1"], (rep["top1"], rep["teacher_top1"])
    assert rep["student_params"] < rep["teacher_params"]
    assert (tmp_path / "student.pt").exists() and (tmp_path / "distill.json").exists()
    st = torch.load(tmp_path / "student.pt")
    s2 = ASMaStudent(**st["hparams"])
    s2.load_state_dict(st["model"])
    x, L, _ = test[list(range(4))]
    torch.testing.assert_close(s2.eval().logits(x, L), rep["student"].eval().logits(x, L))
    # the teacher stays frozen
    assert all(not p.requires_grad for p in teacher.parameters())


def test_distill_rejects_bad_teacher(data):
    with pytest.raises(TypeError, match="teacher"):
        distill(torch.nn.Linear(3, 3), data[0], epochs=1, device="cpu")


def test_student_onnx_export_matches_pytorch(tmp_path):
    pytest.importorskip("onnxruntime")
    from fastskel.engine.export import export_classifier

    torch.manual_seed(0)
    student = ASMaStudent(5, depth=5, hidden_channels=4, out_dim=16, num_frames=16).eval()
    try:
        rep = export_classifier(student, (3, 16, 25, 2), tmp_path, formats=("onnx",), runs=2)
    except Exception as e:  # noqa: BLE001 - exporter toolchain problems are environment, not ASMa
        if "onnxscript" in str(e) or "dynamo" in str(e).lower():
            pytest.skip(f"torch.onnx dynamo exporter unavailable: {e}")
        raise
    assert rep["onnx_max_abs_diff"] <= rep["onnx_tolerance"]
    import onnxruntime as ort

    sess = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    x = torch.randn(2, 3, 16, 25, 2)
    got = torch.from_numpy(sess.run(None, {"x": x.numpy()})[0])
    torch.testing.assert_close(got, student.logits(x), atol=1e-4, rtol=1e-4)
