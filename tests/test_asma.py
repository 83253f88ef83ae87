"""ASMa pretraining model and aligner (seed 001, docs/design.md §5.2): masks, streams, loss, fast vs reference."""
import dataclasses

import pytest
import torch

from fastskel.graph import SkeletonGraph
from fastskel.methods.asma import (ASMa, ASMaAligner, ASMaConfig, AlignerConfig, augment, ensemble_logits,
                                   to_stream, _bodies)
from fastskel.ops import reference

from conftest import TRITON_DEVICE, requires_C, requires_triton

G = SkeletonGraph.ntu25()
DEG = torch.tensor(G.degrees, dtype=torch.float32)


def tiny(**kw):
    base = dict(hidden_channels=4, out_dim=16, projector_dims=(32, 32, 32), dropout=0.0, num_frames=16,
                joint_mask_n=5, frame_mask_k=4)
    base.update(kw)
    return ASMaConfig(**base)


def batch(n=3, t=19, m=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, t, 25, m, generator=g).cumsum(2) * 0.1
    L = torch.randint(8, t + 1, (n,), generator=g)
    L[0] = t
    keep = torch.arange(t)[None, :] < L[:, None]
    x = x * keep[:, None, :, None, None]
    x[-1, ..., 1] = 0          # an action with an absent second body
    return x, L


def test_config_validation():
    with pytest.raises(ValueError, match="stream"):
        ASMaConfig(stream="rgb")
    with pytest.raises(ValueError, match="frame_mask_k"):
        ASMaConfig(num_frames=10, frame_mask_k=10)
    with pytest.raises(ValueError, match="joint_mask_n"):
        ASMaConfig(joint_mask_n=26)
    m = ASMa(tiny())
    with pytest.raises(ValueError, match="x: expected C=3"):
        m(torch.randn(2, 2, 16, 25, 1))
    with pytest.raises(ValueError, match="at least 2"):
        m(torch.randn(1, 3, 16, 25, 1))


def test_paper_defaults():
    c = ASMaConfig()
    assert (c.hidden_channels, c.depth, c.out_dim, c.num_frames) == (16, 10, 256, 50)
    assert (c.joint_mask_n, c.frame_mask_k, c.lambd, c.projector_dims) == (9, 10, 2e-4, (6144,) * 3)
    assert (c.optimizer, c.lr, c.weight_decay, c.warmup_epochs, c.epochs, c.batch_size) == \
        ("adam", 5e-3, 1e-5, 10, 150, 128)
    m = ASMa(ASMaConfig(projector_dims=(64, 64, 64)))
    assert sum(p.numel() for p in m.encoder_theta.parameters()) == 821_380
    assert m.feature_dim == 512


def test_projector_layout():
    m = ASMa(tiny())
    kinds = [type(l).__name__ for l in m.projector]
    assert kinds == ["Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d", "ReLU", "Linear"]
    assert all(l.bias is None for l in m.projector if isinstance(l, torch.nn.Linear))
    assert [l.out_features for l in m.projector if isinstance(l, torch.nn.Linear)] == [32, 32, 32]


def test_streams_mask_counts_and_pairing():
    cfg = tiny()
    m = ASMa(cfg)
    x, L = batch(4)
    xp = m.prepare(x, L)
    assert xp.shape == (4, 3, 16, 25, 2)
    out = m.streams(xp, torch.Generator().manual_seed(3))
    views = augment(xp.repeat(6, 1, 1, 1, 1), G, cfg.padding_ratio, cfg.shear, cfg.flip_prob,
                    torch.Generator().manual_seed(3)).split(4)
    for i, name in enumerate(("theta", "phi")):
        anchor, xj, xm, jmask, fmask = out[name]
        torch.testing.assert_close(anchor, views[3 * i])
        # counts: n joints / k frames per body (N·M sequences)
        assert jmask.shape == (8, 25) and fmask.shape == (8, 16)
        assert (jmask.sum(1) == cfg.joint_mask_n).all() and (fmask.sum(1) == cfg.frame_mask_k).all()
        bj, bm = _bodies(xj), _bodies(xm)
        assert (bj.permute(0, 3, 1, 2)[jmask] == 0).all()
        assert (bm.permute(0, 2, 1, 3)[fmask] == 0).all()
        # frame mask pairing: θ masks the lowest-motion frames (LMTM), φ the highest (HMTM)
        largest = name == "phi"
        _, ref_mask = reference.motion_frame_mask(_bodies(views[3 * i + 2]), cfg.frame_mask_k, largest)
        assert torch.equal(fmask, ref_mask)
        # kept joints/frames untouched
        torch.testing.assert_close(bj * (~jmask)[:, None, None, :], _bodies(views[3 * i + 1]) * (~jmask)[:, None, None, :])


def test_joint_mask_pairing_statistics():
    """θ (HDSM) masks higher-degree joints on average than φ (LDSM)."""
    m = ASMa(tiny(joint_mask_n=3))
    xp = m.prepare(*batch(8))
    g = torch.Generator().manual_seed(0)
    deg = {"theta": [], "phi": []}
    for _ in range(5):
        out = m.streams(xp, g)
        for k in deg:
            jm = out[k][3]
            deg[k].append((jm.float() @ DEG / jm.sum(1)).mean())
    th, ph = torch.stack(deg["theta"]).mean(), torch.stack(deg["phi"]).mean()
    assert th > ph + 0.1, (th, ph)


def test_augment_keeps_empty_bodies_and_is_seeded():
    x, L = batch(3)
    x = x[:, :, :16]
    a1 = augment(x, G, generator=torch.Generator().manual_seed(1))
    a2 = augment(x, G, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a1, a2)
    assert (a1[-1, ..., 1] == 0).all()
    assert not torch.allclose(a1, x)


def test_to_stream_formulas():
    x = torch.randn(2, 3, 7, 25, 1)
    b = to_stream(x, "bone", G)
    par = G.parents
    torch.testing.assert_close(b[:, :, :, 4], x[:, :, :, 4] - x[:, :, :, par[4]])
    assert (b[:, :, :, G.center] == 0).all()
    mo = to_stream(x, "motion")
    torch.testing.assert_close(mo[:, :, 2], x[:, :, 3] - x[:, :, 2])
    assert (mo[:, :, -1] == 0).all()
    assert to_stream(x, "joint") is x
    with pytest.raises(ValueError, match="stream"):
        to_stream(x, "depth")


def test_ensemble_logits():
    a, b = torch.randn(4, 5), torch.randn(4, 5)
    torch.testing.assert_close(ensemble_logits([a, b], [1.0, 0.5]), a + 0.5 * b)
    with pytest.raises(ValueError, match="weights"):
        ensemble_logits([a, b], [1.0])


def test_forward_parts_and_encode():
    m = ASMa(tiny())
    x, L = batch(3)
    out = m(x, L, generator=torch.Generator().manual_seed(0))
    parts = ["loss_theta_joint", "loss_theta_frame", "loss_phi_joint", "loss_phi_frame"]
    torch.testing.assert_close(out["loss"].detach(), sum(out[k] for k in parts))
    out["loss"].backward()
    assert m.encoder_theta.st_gcn_networks[0].gcn.conv.weight.grad.abs().sum() > 0
    assert all(p.grad is not None for p in m.encoder_phi.parameters() if p.requires_grad)
    m.eval()
    f = m.encode(x, L)
    assert f.shape == (3, m.feature_dim) == (3, 32)
    torch.testing.assert_close(f, m.encode(x, L))
    ht, hp = m.sequence_features(x, L)
    assert ht.shape == hp.shape == (3, 4, 16)
    torch.testing.assert_close(torch.cat([ht.mean(1), hp.mean(1)], 1), f)


def _loss_and_grads(m, x, L, seed=0):
    m.zero_grad(set_to_none=True)
    out = m(x, L, generator=torch.Generator().manual_seed(seed))
    out["loss"].backward()
    return out["loss"].detach(), {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}


def _compare(backend_a, backend_b, batched_a=True, batched_b=True, atol=1e-4, rtol=1e-4):
    torch.manual_seed(0)
    ma = ASMa(tiny(batched_streams=batched_a))
    mb = ASMa(dataclasses.replace(ma.config, batched_streams=batched_b))
    mb.load_state_dict(ma.state_dict())
    ma.set_backend(backend_a)
    mb.set_backend(backend_b)
    ma.eval(), mb.eval()          # BN on running stats: batched and sequential streams agree
    x, L = batch(3)
    la, ga = _loss_and_grads(ma, x, L)
    lb, gb = _loss_and_grads(mb, x, L)
    torch.testing.assert_close(la, lb, atol=atol, rtol=rtol)
    assert ga.keys() == gb.keys()
    for k in ga:
        torch.testing.assert_close(ga[k], gb[k], atol=atol * 10, rtol=rtol * 10, msg=k)


def test_batched_streams_equal_sequential():
    _compare("torch", "torch", True, False)


@requires_C
def test_fast_cpu_path_equals_reference():
    """einsum graph conv + materialised Barlow Twins + reference masks vs _C graph conv + Gram-form BT."""
    _compare("torch", "auto", False, True)


@requires_triton
def test_triton_masks_equal_reference():
    if TRITON_DEVICE != "cpu":
        pytest.skip("CPU comparison; the CUDA run is covered by the op tests")
    torch.manual_seed(0)
    m = ASMa(tiny())
    xp = m.prepare(*batch(3))
    m.set_backend("torch")
    ref = m.streams(xp, torch.Generator().manual_seed(5))
    m.set_backend("triton")
    got = m.streams(xp, torch.Generator().manual_seed(5))
    for k in ref:
        for a, b in zip(ref[k], got[k]):
            torch.testing.assert_close(a, b)


def test_loss_decreases_on_synthetic():
    from fastskel.data import SyntheticSkeletons

    torch.manual_seed(0)
    ds = SyntheticSkeletons(num_classes=3, num_samples=6, T=20, seed=1)
    x, L, _ = ds[list(range(6))]
    m = ASMa(tiny(flip_prob=0.0, shear=0.0))
    opt = torch.optim.Adam(m.parameters(), lr=5e-3)
    losses = []
    for i in range(4):
        out = m(x, L, generator=torch.Generator().manual_seed(0))
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(float(out["loss"].detach()))
    assert losses[-1] < 0.8 * losses[0], losses


def test_aligner_modes():
    m = ASMa(tiny())
    x, L = batch(3)
    y = torch.tensor([0, 1, 2])
    lin = ASMaAligner(m, 3, mode="linear")
    lin.train()
    assert not m.training and all(not p.requires_grad for p in m.parameters())
    out = lin(x, L, labels=y)
    out["loss"].backward()
    assert lin.classifier.weight.grad is not None and lin.attn_theta.q.weight.grad is not None
    assert lin.attn_phi.kv.weight.grad is not None
    assert lin.logits(x, L).shape == (3, 3)
    ft = ASMaAligner(ASMa(tiny()), 3, mode="finetune")
    ft.train()
    ft(x, L, labels=y)["loss"].backward()
    assert ft.asma.training
    assert all(p.grad is not None for p in ft.asma.encoder_theta.parameters())
    assert ft.asma.projector[0].weight.grad is None       # pretraining-only head stays out
    with pytest.raises(ValueError, match="mode"):
        ASMaAligner(ASMa(tiny()), 3, mode="frozen")
    with pytest.raises(TypeError, match="asma"):
        ASMaAligner(torch.nn.Linear(2, 2), 3)


def test_aligner_is_bidirectional_sum():
    torch.manual_seed(0)
    m = ASMa(tiny())
    al = ASMaAligner(m, 4).eval()
    x, L = batch(2)
    ht, hp = m.sequence_features(x, L)
    assert ht.shape[1] == al.frames == 4                      # 16 frames through two stride-2 stages
    hn, pn = al.normalize(ht, hp)                             # feature_norm: per (frame, channel) standardisation
    var = al.norm_theta.running_var.view(4, -1)
    torch.testing.assert_close(hn, (ht - al.norm_theta.running_mean.view(4, -1)) / (var + 1e-5).sqrt())
    want = al.classifier((al.attn_theta(hn, pn) + al.attn_phi(pn, hn)).mean(1))
    torch.testing.assert_close(al.logits(x, L), want)
    raw = ASMaAligner(m, 4, config=AlignerConfig(feature_norm=False)).eval()   # eq. 10-12 exactly
    want = raw.classifier((raw.attn_theta(ht, hp) + raw.attn_phi(hp, ht)).mean(1))
    torch.testing.assert_close(raw.logits(x, L), want)


def test_get_method_registry():
    from fastskel.methods import get_method

    cls, cfg = get_method("asma")
    assert cls is ASMa and cfg is ASMaConfig
