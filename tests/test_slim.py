"""SLiM (seed 002): tube masking, views and augmentations, ViT + RoPE, DINO head, EMA/schedules,
chunked vs materialised heads, loss decrease, linear probe vs random init, inference FLOPs."""
import dataclasses
import math

import pytest
import torch

from fastskel.graph import SkeletonGraph
from fastskel.methods import get_method
from fastskel.data.transforms import resample
from fastskel.methods.slim import SLiM, SLiMConfig, koleo_loss
from fastskel.methods.slim_masking import TubeTable, connected_subsets, semantic_tube_mask
from fastskel.nn.dino_head import DINOHead
from fastskel.nn.vit import SkeletonViT
from fastskel.ops import reference as R

NTU = SkeletonGraph.ntu25()


pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(dim=32, depth=2, heads=4, mlp_dim=64, num_registers=2, num_prototypes=64, head_hidden_dim=48,
            head_bottleneck_dim=16, frames=16, local_frames=(8,), local_scales=((0.15, 0.4),),
            local_crops=1, freeze_last_layer_epochs=0, epochs=1,
            pretrain_bodies="all", center_joint=None)     # these tests pin the every-body path, root-centred


def tiny(**kw):
    return SLiMConfig(**{**TINY, **kw})


def _connected(graph, joints):
    joints = set(joints)
    start = next(iter(joints))
    seen, stack = {start}, [start]
    while stack:
        u = stack.pop()
        for i, j in graph.edges:
            for a, b in ((i, j), (j, i)):
                if a == u and b in joints and b not in seen:
                    seen.add(b)
                    stack.append(b)
    return seen == joints


# ============================================================================ semantic tube masking
def test_connected_subsets_chain_and_branch():
    # NTU left leg 12-13-14-15 is a chain: n(n+1)/2 connected subsets
    assert len(connected_subsets(NTU, NTU.parts["left_leg"])) == 10
    star = SkeletonGraph([(0, 1), (0, 2), (0, 3)], 0)
    subs = connected_subsets(star, (0, 1, 2, 3))
    # every subset containing the hub (8) + the three single leaves
    assert len(subs) == 11 and all(_connected(star, s) for s in subs)


@pytest.mark.parametrize("graph", [NTU, SkeletonGraph.openpose18()], ids=["ntu25", "openpose18"])
@pytest.mark.parametrize("time_blocks", [8, 3, 1])
def test_tube_masks_ratio_and_contiguity(graph, time_blocks):
    table = TubeTable(graph)
    gen = torch.Generator().manual_seed(time_blocks)
    b, v = 24, graph.V
    mask, tubes = semantic_tube_mask(b, time_blocks, table, generator=gen, return_tubes=True)
    n = time_blocks * v
    assert mask.shape == (b, n) and mask.dtype == torch.bool
    counts = mask.sum(1)
    assert (counts >= math.ceil(0.5 * n)).all() and (counts <= math.floor(0.9 * n)).all(), counts
    part_sets = [set(p) for p in graph.parts.values()]
    grid = mask.view(b, time_blocks, v)
    for i in range(b):
        union = torch.zeros(time_blocks, v, dtype=torch.bool)
        for k in range(tubes["part"].shape[1]):
            if not tubes["active"][i, k]:
                continue
            joints = set(tubes["joints"][i, k].nonzero().flatten().tolist())
            t0, h = int(tubes["start"][i, k]), int(tubes["height"][i, k])
            assert joints and joints <= part_sets[int(tubes["part"][i, k])]        # inside one body part
            assert _connected(graph, joints)                                      # skeletally contiguous
            assert 1 <= h and 0 <= t0 and t0 + h <= time_blocks                   # one contiguous time run
            union[t0:t0 + h, sorted(joints)] = True
        assert torch.equal(union, grid[i])                                        # the mask is these tubes


def test_tube_mask_constant_volume_and_area_bounds():
    # tube duration shrinks with the spatial width: h = round(A / w) (clamped), A ≤ A_max = 0.5·N
    table = TubeTable(NTU)
    gen = torch.Generator().manual_seed(0)
    _, tubes = semantic_tube_mask(64, 8, table, generator=gen, return_tubes=True)
    w = tubes["joints"].sum(-1)
    act = tubes["active"]
    area = (w * tubes["height"])[act]
    assert area.max() <= 0.5 * 200
    assert tubes["height"][act & (w == 1)].float().mean() > tubes["height"][act & (w >= 5)].float().mean()


def test_tube_mask_apply_seeded_and_errors():
    table = TubeTable(NTU)
    apply = torch.tensor([True, False, True, False])
    m1 = semantic_tube_mask(4, 8, table, apply=apply, generator=torch.Generator().manual_seed(1))
    m2 = semantic_tube_mask(4, 8, table, apply=apply, generator=torch.Generator().manual_seed(1))
    assert torch.equal(m1, m2)
    assert not m1[1].any() and not m1[3].any() and m1[0].float().mean() >= 0.5
    with pytest.raises(ValueError, match="ratio"):
        semantic_tube_mask(2, 8, table, ratio=(0.9, 0.5))
    with pytest.raises(ValueError, match="time_blocks"):
        semantic_tube_mask(2, 0, table)
    with pytest.raises(ValueError, match="parts"):
        TubeTable(SkeletonGraph([(0, 1), (1, 2)], 0))


# ============================================================================ views and augmentations
def test_views_shapes_anchors_and_augmentations():
    torch.manual_seed(0)
    cfg = tiny(frames=32, local_frames=(16, 8), local_scales=((0.35, 0.7), (0.15, 0.4)), local_crops=2)
    m = SLiM(cfg)
    bodies = torch.randn(3, 3, 40, 25)
    L = torch.tensor([40, 12, 25])
    glob, locals_ = m._views(bodies, L, torch.Generator().manual_seed(0))
    assert glob.shape == (6, 3, 32, 25)
    assert [v.shape for v, _ in locals_] == [(12, 3, 16, 25), (12, 3, 8, 25)]   # 2 anchors × 2 crops × 3
    for _, anchors in locals_:
        assert anchors.tolist() == [0] * 6 + [1] * 6
    # without symmetrisation only G1 has local crops
    m1 = SLiM(dataclasses.replace(cfg, symmetrize=False))
    _, loc1 = m1._views(bodies, L, torch.Generator().manual_seed(0))
    assert [v.shape[0] for v, _ in loc1] == [6, 6] and all((a == 0).all() for _, a in loc1)
    # p = 1: every view rotated, mirrored (bone j comes from bone flip(j)) and bone-scaled by 0.85–1.15
    m0 = SLiM(dataclasses.replace(cfg, aug_prob=1.0))
    x = torch.randn(4, 3, 8, 25)
    y = m0._augment(x, torch.Generator().manual_seed(1))
    par, flip = torch.tensor(NTU.parents), torch.tensor(NTU.flip_permutation())
    bx = (x - x[..., par]).norm(dim=1)[..., flip]
    r = (y - y[..., par]).norm(dim=1) / bx.clamp(min=1e-6)
    nonroot = [v for v in range(25) if v != NTU.center]
    assert ((r[..., nonroot] > 0.85 - 1e-4) & (r[..., nonroot] < 1.15 + 1e-4)).all()


def test_koleo_hand():
    # three unit vectors at 0°, 90°, 180° in the plane: nearest distances √2, √2, √2
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    torch.testing.assert_close(koleo_loss(x), torch.tensor(-math.log(math.sqrt(2.0))), atol=1e-6, rtol=0)


# ============================================================================ encoder and head
def test_vit_shapes_rope_and_mask_token():
    enc = SkeletonViT(num_joints=25, frames_per_patch=8, dim=32, depth=1, heads=4, mlp_dim=64, num_registers=4)
    x = torch.randn(2, 3, 64, 25)
    out = enc(x)
    assert out.shape == (2, 1 + 4 + 200, 32)
    pos = enc.positions(64, x.device)
    assert (pos[:5] == -1).all() and pos[5:].tolist() == [float(t) for t in range(8) for _ in range(25)]
    # masked tokens: the mask token + joint embedding, independent of the input patch
    mask = torch.zeros(2, 200, dtype=torch.bool)
    mask[:, :25] = True
    z1 = enc.embed(x, mask)
    z2 = enc.embed(torch.randn(2, 3, 64, 25), mask)
    torch.testing.assert_close(z1[:, 5:30], z2[:, 5:30])
    torch.testing.assert_close(z1[0, 5:30], (enc.mask_token + enc.joint_embed)[0])
    # other view lengths through the same weights
    assert enc(torch.randn(3, 3, 8, 25)).shape == (3, 30, 32)
    with pytest.raises(ValueError, match="frames_per_patch"):
        enc(torch.randn(1, 3, 12, 25))
    with pytest.raises(ValueError, match="mask"):
        enc(x, torch.zeros(2, 199, dtype=torch.bool))


def test_vit_rope_relative_in_time():
    # with no joint embedding, shifting the clip in time cannot change attention between patch tokens:
    # RoPE scores depend on position differences only, so a block-causal rotation is invariant
    enc = SkeletonViT(num_joints=5, frames_per_patch=2, dim=16, depth=1, heads=2, mlp_dim=32, num_registers=0)
    blk = enc.blocks[0].attn
    x = torch.randn(1, 12, 16)
    pos = torch.arange(12.0)
    a = blk(x, rope=R.Rope(pos, pos))
    b = blk(x, rope=R.Rope(pos + 7, pos + 7))
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_vit_joint_groups():
    enc = SkeletonViT(num_joints=6, frames_per_patch=2, joints_per_patch=3, dim=8, depth=1, heads=2, mlp_dim=8,
                      num_registers=0)
    x = torch.arange(2 * 3 * 4 * 6, dtype=torch.float32).view(2, 3, 4, 6)
    p = enc.patchify(x)
    assert p.shape == (2, 4, 18)
    # token 1 = time block 0, joints 3..5; features (frame, joint, channel)
    torch.testing.assert_close(p[0, 1, :3], x[0, :, 0, 3])
    torch.testing.assert_close(p[0, 1, 3:6], x[0, :, 0, 4])
    torch.testing.assert_close(p[0, 1, 9:12], x[0, :, 1, 3])


def test_dino_head():
    head = DINOHead(16, num_prototypes=50, hidden_dim=24, bottleneck_dim=8)
    x = torch.randn(7, 16)
    w = head.prototypes()
    torch.testing.assert_close(w.norm(dim=1), torch.ones(50))
    torch.testing.assert_close(head.embed(x).norm(dim=1), torch.ones(7))
    torch.testing.assert_close(head(x), head.embed(x) @ w.T)
    assert not head.last_layer.weight_g.requires_grad
    assert set(dict(head.named_parameters())) >= {"last_layer.weight_g", "last_layer.weight_v", "mlp.0.weight"}


# ============================================================================ teacher and schedules
def test_ema_update_and_schedules():
    torch.manual_seed(0)
    m = SLiM(tiny(epochs=10, warmup_teacher_temp_epochs=2, freeze_last_layer_epochs=1))
    for p in m.student.parameters():
        if p.requires_grad:
            p.data.add_(torch.randn_like(p))
    before = {k: v.clone() for k, v in m.teacher.state_dict().items()}
    student = {k: v.clone() for k, v in m.student.state_dict().items()}
    total = 100
    mom = m.momentum(1, total)
    assert mom == pytest.approx(0.994)
    assert m.momentum(total + 1, total) == pytest.approx(1.0)
    assert m.momentum(51, total) == pytest.approx(0.997)
    m.after_step(1, total)
    for k, v in m.teacher.state_dict().items():
        torch.testing.assert_close(v, mom * before[k] + (1 - mom) * student[k])
    assert all(not p.requires_grad for p in m.teacher.parameters())
    # teacher temperature: 0.04 → 0.07 linearly over 2 of 10 epochs (20 of 100 steps)
    assert m.teacher_temperature == pytest.approx(0.04 + 0.03 / 20)
    m.after_step(9, total)
    assert m._last_layer_frozen()                                  # 1 of 10 epochs: steps < 10
    m.after_step(10, total)
    assert m.teacher_temperature == pytest.approx(0.055)
    assert not m._last_layer_frozen()
    m.after_step(20, total)
    assert m.teacher_temperature == pytest.approx(0.07)
    assert not m._last_layer_frozen()


def test_last_layer_frozen_gets_zero_grad():
    torch.manual_seed(0)
    m = SLiM(tiny(epochs=10, freeze_last_layer_epochs=1))
    x = torch.randn(3, 3, 20, 25, 2)
    m(x, generator=torch.Generator().manual_seed(0))["loss"].backward()
    for head in ("cl_head", "mae_head"):
        g = m.student[head].last_layer.weight_v.grad
        assert g is not None and torch.count_nonzero(g) == 0
        assert m.student[head].mlp[0].weight.grad.abs().sum() > 0


# ============================================================================ the method
def test_registry_and_config_defaults():
    cls, cfg_cls = get_method("slim")
    assert cls is SLiM and cfg_cls is SLiMConfig
    c = SLiMConfig()
    assert (c.frames, c.frames_per_patch, c.dim, c.depth, c.heads, c.mlp_dim, c.num_registers) == (64, 8, 256, 8, 8, 1024, 4)
    assert c.num_tokens == 205 and c.num_prototypes == 65536 and c.local_frames == (32, 16, 8)
    assert (c.student_temp, c.warmup_teacher_temp, c.teacher_temp, c.koleo_weight) == (0.1, 0.04, 0.07, 0.1)
    assert (c.optimizer, c.lr, c.min_lr, c.warmup_epochs, c.epochs) == ("adamw", 2e-4, 1e-6, 20, 150)
    with pytest.raises(ValueError, match="frames_per_patch"):
        SLiMConfig(frames=60)
    with pytest.raises(ValueError, match="head_impl"):
        SLiMConfig(head_impl="fused")
    with pytest.raises(ValueError, match="local_scales"):
        SLiMConfig(local_scales=((0.1, 0.2),))


def test_forward_chunked_equals_reference_heads():
    torch.manual_seed(0)
    two_locals = dict(frames=32, local_frames=(16, 8), local_scales=((0.35, 0.7), (0.15, 0.4)))
    fast = SLiM(tiny(chunk_size=5, **two_locals))
    ref = SLiM(tiny(head_impl="reference", **two_locals))
    ref.load_state_dict(fast.state_dict())
    x = torch.randn(3, 3, 40, 25, 2)
    x[1, ..., 1] = 0                                               # an empty second body is skipped
    lengths = torch.tensor([40, 23, 31])
    out_f = fast(x, lengths, generator=torch.Generator().manual_seed(3))
    out_r = ref(x, lengths, generator=torch.Generator().manual_seed(3))
    assert int(out_f["bodies"]) == 5
    for k in ("loss", "mfm", "glcl", "koleo"):
        torch.testing.assert_close(out_f[k], out_r[k], atol=1e-5, rtol=1e-5)
    out_f["loss"].backward()
    out_r["loss"].backward()
    pf, pr = dict(fast.named_parameters()), dict(ref.named_parameters())
    for k, p in pf.items():
        if p.grad is not None:
            torch.testing.assert_close(p.grad, pr[k].grad, atol=1e-5, rtol=1e-4, msg=k)


def test_forward_seeded_and_errors():
    torch.manual_seed(0)
    m = SLiM(tiny(symmetrize=False))
    x = torch.randn(2, 3, 24, 25)
    a = m(x, generator=torch.Generator().manual_seed(1))["loss"]
    b = m(x, generator=torch.Generator().manual_seed(1))["loss"]
    assert torch.equal(a, b) and torch.isfinite(a)
    with pytest.raises(ValueError, match="all-zero"):
        m(torch.zeros(2, 3, 24, 25))
    with pytest.raises(ValueError, match="V=25"):
        m(torch.randn(2, 3, 24, 18))
    with pytest.raises(ValueError, match="lengths"):
        m(x, torch.tensor([30, 2]))


def test_encode_cls_body_average():
    torch.manual_seed(0)
    m = SLiM(tiny()).eval()
    x = torch.randn(3, 3, 30, 25, 2)
    x[0, ..., 1] = 0
    x[2, :, 17:] = 0
    lengths = torch.tensor([30, 30, 17])
    f = m.encode(x, lengths)
    assert f.shape == (3, m.feature_dim)
    torch.testing.assert_close(f, m.encode(x, lengths))                  # deterministic
    one = m.encode(x[:1, ..., :1], lengths[:1])                           # the empty body does not count
    torch.testing.assert_close(f[:1], one, atol=1e-5, rtol=1e-5)
    xc = x[2] - x[2, :, :1, NTU.center:NTU.center + 1, :1]                  # centred on body 0's root at frame 0
    views = resample(xc.permute(3, 0, 1, 2), torch.zeros(2, dtype=torch.long), torch.tensor([17, 17]), 16)
    cls = m.teacher["encoder"](views)[:, 0].mean(0)
    torch.testing.assert_close(f[2], cls, atol=1e-5, rtol=1e-5)


def _synthetic_batch(n, gen):
    """Smooth random motions (first-order random walk in joint space) with lengths 20–40."""
    x = torch.cumsum(torch.randn(n, 3, 40, 25, 1, generator=gen) * 0.05, dim=2) + torch.randn(n, 3, 1, 25, 1, generator=gen)
    lengths = torch.randint(20, 41, (n,), generator=gen)
    return x * (torch.arange(40)[None, None, :, None, None] < lengths[:, None, None, None, None]), lengths


def test_loss_decreases_on_synthetic_data():
    torch.manual_seed(0)
    m = SLiM(tiny(momentum_teacher=0.9, warmup_teacher_temp_epochs=0))
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=2e-3)
    gen = torch.Generator().manual_seed(0)
    x, lengths = _synthetic_batch(6, gen)
    losses = []
    steps = 16
    for s in range(steps):
        out = m(x, lengths, generator=torch.Generator().manual_seed(s % 3))
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        m.after_step(s + 1, steps)
        losses.append(float(out["loss"].detach()))
    assert all(math.isfinite(v) for v in losses)
    assert sum(losses[-4:]) / 4 < 0.9 * sum(losses[:4]) / 4, losses


# ============================================================================ inference FLOPs
def _encoder_flops(tokens, patches, patch_dim, dim=256, depth=8, mlp=1024, full=True, swiglu=False):
    """Analytic FLOPs (2 × MACs) of one body through a pre-norm ViT: Linear layers (+ the two
    attention matmuls when ``full``) and the patch embedding; SwiGLU has three matrices of width
    swiglu_hidden(mlp) (688 for 1024)."""
    ffn = 3 * dim * ((int(mlp * 2 / 3) + 7) // 8 * 8) if swiglu else 2 * dim * mlp
    per_layer = 2 * tokens * (4 * dim * dim + ffn) + (4 * tokens * tokens * dim if full else 0)
    return depth * per_layer + 2 * patches * patch_dim * dim


def test_inference_flops_vs_mamp_encoder():
    flops = pytest.importorskip("fastskel.utils.flops")
    amr = pytest.importorskip("fastskel.methods.amr")
    slim = SLiM(SLiMConfig(num_prototypes=16, head_hidden_dim=16)).eval()      # heads do not run in encode
    x = torch.randn(1, 3, 64, 25, 2)                                           # one action, both bodies
    ours = {c: flops.count_flops(slim, (x,), convention=c, method="encode") for c in ("full", "paper")}
    assert ours["full"] == 2 * _encoder_flops(205, 200, 24, swiglu=True) == 5_879_316_480      # 5.88 G
    assert ours["paper"] == 2 * _encoder_flops(205, 200, 24, full=False, swiglu=True) == 5_190_778_880  # 5.19 G
    mamp = amr.MAMP(amr.MAMPConfig()).eval()
    xm = torch.randn(1, 3, 120, 25, 2)
    mamp_full = flops.count_flops(mamp, (xm,), convention="full", method="encode")
    assert mamp_full == 2 * _encoder_flops(750, 750, 12)                        # 28.10 G (paper: 28.32 G)
    ratio = mamp_full / ours["full"]
    # the paper's 7.89x (28.32 / 3.59 G) needs ~130 tokens per body; 205 tokens give 4.78x
    assert 4.7 < ratio < 4.9, ratio


def test_finetune_trains_the_teacher_encoder_it_encodes_with():
    from fastskel.data import SkeletonDataset
    from fastskel.engine.evaluate import FinetuneConfig, finetune
    from fastskel.engine.trainer import TrainOptions

    torch.manual_seed(0)
    m = SLiM(tiny())
    gen = torch.Generator().manual_seed(3)
    x, lengths = _synthetic_batch(8, gen)
    ds = SkeletonDataset(x, torch.arange(8) % 2, lengths)
    acc, clf = finetune(m, ds, ds, FinetuneConfig(num_classes=2, epochs=1, batch_size=4, warmup_epochs=0),
                        TrainOptions(progress=False, device="cpu"))
    ft = clf.encoder
    trained = {n for n, p in ft.named_parameters() if p.requires_grad}
    assert trained == {f"teacher.encoder.{n}" for n, _ in ft.teacher["encoder"].named_parameters()}
    before = dict(m.teacher["encoder"].named_parameters())
    assert any(not torch.equal(p, before[n]) for n, p in ft.teacher["encoder"].named_parameters())
    assert all(torch.equal(p, dict(m.student.named_parameters())[n]) for n, p in ft.student.named_parameters())
    assert all(not p.requires_grad for p in m.teacher.parameters())        # the original is untouched
    assert 0.0 <= acc <= 100.0
