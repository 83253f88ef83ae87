"""AMR and its MAMP baseline (issue #9, docs/design.md §5.1): shapes, masking, objectives, gradients, fast paths,
MAMP checkpoints, and pretraining → linear probe beating a random encoder."""
import importlib

import pytest
import torch
import torch.nn.functional as F

from conftest import pretrain_on_class_motion, probe_pretrained_vs_random
from fastskel.backend import cpp_status, triton_status
from fastskel.methods import get_method
from fastskel.methods import amr as amr_mod
from fastskel.methods.amr import (
    AMR, AMRConfig, MAMP, MAMPConfig, keep_count, load_mamp_checkpoint,
    mamp_state_dict_to_fastskel, motion_aware_masking, token_motion,
)
from fastskel.nn.decoder import CrossAttentionDecoder
from fastskel.nn.transformer import Block, SeparablePosEmbed
from fastskel.ops import patchify, reference, unpatchify

TINY = dict(num_frames=16, frames_per_patch=4, dim=32, depth=2, heads=2, decoder_dim=32, decoder_depth=2,
            decoder_heads=2, crop_min_frames=8)


def tiny_amr(**kw):
    return AMRConfig(**{**TINY, "r": 2, "windows": (4, 8), **kw})


def tiny_mamp(**kw):
    return MAMPConfig(**{**TINY, **kw})


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def make_batch(n=3, t=24, v=25, m=2, seed=0, empty_second=()):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, t, v, m, generator=g).cumsum(2) * 0.1
    L = torch.randint(t // 2, t + 1, (n,), generator=g)
    L[0] = t
    x = x * (torch.arange(t)[None, :] < L[:, None]).float()[:, None, :, None, None]
    for i in empty_second:
        x[i, ..., 1] = 0
    return x, L


# ----------------------------------------------------------------------------- configs
def test_paper_defaults():
    a, m = AMRConfig(), MAMPConfig()
    assert (a.num_tokens, a.num_visible, a.num_queries, a.target_dim) == (750, 75, 125, 72)
    assert (a.dim, a.depth, a.heads, a.decoder_depth, a.tau, a.mask_ratio, a.k, a.windows) == \
        (256, 8, 8, 5, 0.8, 0.9, 0.01, (4, 8, 12))
    assert (a.optimizer, a.betas, a.lr, a.min_lr, a.weight_decay, a.epochs, a.warmup_epochs, a.batch_size) == \
        ("adamw", (0.9, 0.95), 1e-3, 5e-4, 0.05, 400, 20, 128)
    assert a.skip_empty_bodies and a.target == "joint_norm_joint" and a.ln_eps == 1e-6
    assert m.num_visible == 74 and not m.skip_empty_bodies and m.decoder_depth == 5
    assert keep_count(750, 0.9) == 75 and keep_count(750, 0.9, mamp_truncation=True) == 74
    assert AMRConfig(mamp_keep_truncation=True).num_visible == 74
    assert get_method("amr") == (AMR, AMRConfig) and get_method("mamp") == (MAMP, MAMPConfig)


@pytest.mark.parametrize("kw, name", [
    (dict(r=7), "r"), (dict(target="pose"), "target"), (dict(frames_per_patch=7), "frames_per_patch"),
    (dict(heads=5), "heads"), (dict(mask_ratio=1.0), "mask_ratio"), (dict(windows=()), "windows"),
    (dict(tau=0.0), "tau"), (dict(optimizer="sgd"), "optimizer"), (dict(backend="cuda"), "backend"),
    (dict(crop_interval=(0.6, 0.5)), "crop_interval"), (dict(mask_ratio=0.9999), "mask_ratio"),
])
def test_config_rejects_bad_values(kw, name):
    with pytest.raises(ValueError, match=name):
        AMRConfig(**kw)


def test_model_rejects_bad_input():
    model = AMR(tiny_amr())
    x, L = make_batch()
    with pytest.raises(ValueError, match="x: expected C=3"):
        model(x[:, :2])
    with pytest.raises(ValueError, match="V=25"):
        model(x[:, :, :, :20])
    with pytest.raises(ValueError, match="x: expected a 5-D"):
        model(x[:, 0, 0])
    with pytest.raises(ValueError, match="lengths"):
        model(x, L[:2])
    with pytest.raises(TypeError, match="x"):
        model(x.numpy())
    with pytest.raises(ValueError, match="all-zero"):
        model(torch.zeros_like(x))
    with pytest.raises(TypeError, match="AMRConfig"):
        AMR(tiny_mamp())


# ----------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("v, m", [(25, 2), (17, 1), (25, 1)])
def test_forward_and_encode_shapes(v, m):
    torch.manual_seed(0)
    model = AMR(tiny_amr(num_joints=v))
    x, L = make_batch(n=3, v=v, m=m)
    out = model(x, L)
    assert out["loss"].dim() == 0 and out["loss"].requires_grad and torch.isfinite(out["loss"])
    assert float(out["bodies"]) == 3 * m and torch.isfinite(out["mse"])
    feats = model.encode(x, L)
    assert feats.shape == (3, model.feature_dim) == (3, 32)
    assert model(x[..., 0], L)["loss"].isfinite()                       # (N, C, T, V) accepted
    mamp = MAMP(tiny_mamp(num_joints=v))
    assert mamp(x, L)["loss"].dim() == 0 and mamp.encode(x, L).shape == (3, 32)


def test_decoder_shapes_and_shared_queries():
    dec = CrossAttentionDecoder(t_blocks=2, joints=25, dim=32, depth=2, heads=4, out_dim=24)
    ctx = torch.randn(5, 11, 32)
    out = dec(ctx)
    assert out.shape == (5, 50, 24)
    assert dec.queries.shape == (1, 50, 32)                            # one query set, broadcast (Bq = 1)
    out[0].sum().backward()
    assert dec.queries.grad is not None and dec.queries.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="context"):
        dec(torch.randn(5, 11, 16))


def test_separable_pos_embed_gather_matches_table():
    pe = SeparablePosEmbed(6, 5, 8)
    table = pe()
    assert table.shape == (30, 8)
    assert torch.allclose(table.view(6, 5, 8), pe.temporal[:, None] + pe.joint[None])
    idx = torch.tensor([[0, 7, 29], [3, 3, 12]])
    assert torch.equal(pe.gather(idx), table[idx])


def test_block_is_pre_norm_residual():
    torch.manual_seed(0)
    blk = Block(16, 4)
    x = torch.randn(2, 7, 16)
    h = x + blk.attn(blk.norm1(x))
    assert torch.allclose(blk(x), h + blk.mlp.fc2(F.gelu(blk.mlp.fc1(blk.norm2(h)))), atol=1e-6)
    assert blk.norm1.eps == 1e-6 and blk.mlp.fc1.out_features == 64 and blk.attn.qkv.bias is not None


# ----------------------------------------------------------------------------- masking
def test_token_motion_by_hand():
    p = torch.zeros(1, 3, 2, 4)                                         # (B, T_blocks, V, F)
    p[0, 1, 0] = 1.0                                                     # joint 0 jumps at block 1
    p[0, 2, 1] = torch.tensor([2.0, 0, 0, 0])                            # joint 1 at block 2
    m = token_motion(p).view(3, 2)
    expect = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.5]])          # block 0 copies block 1
    torch.testing.assert_close(m, expect)


@pytest.mark.parametrize("b, tb, v, keep", [(1, 30, 25, 75), (4, 4, 25, 10), (3, 5, 17, 1), (2, 3, 7, 20)])
def test_masking_counts(b, tb, v, keep):
    p = torch.randn(b, tb, v, 12)
    ids, mask = motion_aware_masking(p, keep, 0.8, torch.Generator().manual_seed(0))
    assert ids.shape == (b, keep) and mask.shape == (b, tb * v) and mask.dtype == torch.bool
    assert (mask.sum(1) == tb * v - keep).all()
    assert (ids[:, 1:] > ids[:, :-1]).all()                              # unique, ascending
    assert not mask.gather(1, ids).any()


def test_masking_law_is_gumbel_sampling_from_motion_softmax():
    # masking exactly one token = a Gumbel-max draw: P(token j masked) = softmax(m / (max m · τ))_j
    tau, n = 0.8, 20000
    motion = torch.tensor([0.0, 0.5, 1.0, 2.0, 4.0, 0.2])
    p = torch.zeros(1, 2, 6, 4)
    p[0, 1] = motion[:, None]                                            # |Δ| = motion in every feature
    ids, mask = motion_aware_masking(p.expand(n, -1, -1, -1), 11, tau, torch.Generator().manual_seed(3))
    freq = mask.view(n, 2, 6).float().mean(0).sum(0) / 2                 # both blocks share the motion
    m = torch.cat([motion, motion])
    law = torch.softmax(m / (m.max() * tau), 0).view(2, 6).sum(0) / 2
    torch.testing.assert_close(freq, law, atol=0.012, rtol=0)


def test_high_motion_tokens_are_masked_more_often():
    b, tb, v = 200, 30, 25
    t = torch.arange(tb * 4, dtype=torch.float32)
    x = torch.zeros(b, 3, tb * 4, v)
    x[:, :, :, :10] = torch.sin(t / 3.0)[None, None, :, None]            # joints 0-9 move, the rest are still
    patches = patchify(x, 4).view(b, tb, v, 12)
    _, mask = motion_aware_masking(patches, 75, 0.8, torch.Generator().manual_seed(0))
    rate = mask.view(b, tb, v).float().mean((0, 1))
    assert rate[:10].mean() > rate[10:].mean() + 0.03
    assert rate[:10].min() > rate[10:].max()


def test_masking_is_seeded():
    p = torch.randn(2, 4, 25, 12)
    a = motion_aware_masking(p, 10, 0.8, torch.Generator().manual_seed(5))[1]
    b = motion_aware_masking(p, 10, 0.8, torch.Generator().manual_seed(5))[1]
    c = motion_aware_masking(p, 10, 0.8, torch.Generator().manual_seed(6))[1]
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_model_keeps_the_configured_visible_count():
    seen = []
    orig = amr_mod.motion_aware_masking

    def spy(*a, **k):
        out = orig(*a, **k)
        seen.append(out)
        return out

    x, L = make_batch(n=2)
    # 100 · (1 − 0.93) = 6.999…: rounding keeps 7, MAMP's truncation 6
    for cfg, want in ((tiny_amr(), 10), (tiny_amr(mask_ratio=0.93), 7),
                      (tiny_amr(mamp_keep_truncation=True, mask_ratio=0.93), 6)):
        amr_mod.motion_aware_masking = spy
        try:
            AMR(cfg)(x, L)
        finally:
            amr_mod.motion_aware_masking = orig
        ids, mask = seen[-1]
        assert ids.shape[1] == want and (mask.sum(1) == 100 - want).all()


# ----------------------------------------------------------------------------- objectives
def _capture(model, x, L, seed=0):
    """Run forward, capturing the prepared bodies, the mask and the prediction."""
    got = {}
    orig_mask = amr_mod.motion_aware_masking

    def spy(*a, **k):
        got["ids"], got["mask"] = orig_mask(*a, **k)
        return got["ids"], got["mask"]

    orig_target = model.make_target
    model.make_target = lambda bodies: (got.__setitem__("bodies", bodies), orig_target(bodies))[1]
    head = model.decoder if isinstance(model, AMR) else model.decoder_pred
    h = head.register_forward_hook(lambda mod, a, out: got.__setitem__("pred", out))
    amr_mod.motion_aware_masking = spy
    try:
        out = model(x, L, generator=torch.Generator().manual_seed(seed))
    finally:
        amr_mod.motion_aware_masking = orig_mask
        h.remove()
        del model.make_target
    return out, got


def test_amr_loss_is_focal_loss_over_all_patches():
    torch.manual_seed(0)
    model = AMR(tiny_amr())
    x, L = make_batch(n=3, empty_second=(1,))
    out, got = _capture(model, x, L)
    bodies, pred = got["bodies"], got["pred"]
    assert bodies.shape == (5, 3, 16, 25)                                # the empty body was skipped
    assert pred.shape == (5, 50, 24)
    xf = bodies.float()
    mu, sd = xf.mean((2, 3), keepdim=True), xf.std((2, 3), unbiased=False, keepdim=True)
    target = patchify((xf - mu) / (sd + 1e-6), 8)
    w = reference.motion_energy_weights(bodies, (4, 8), 0.01)            # (B, T, V)
    w_patch = patchify(w[:, None].expand(-1, 3, -1, -1), 8)
    want = (w_patch * (pred - target) ** 2).sum((1, 2)).div(50).mean()
    torch.testing.assert_close(out["loss"], want, rtol=1e-5, atol=1e-6)
    # the weight of feature (frame f, channel c) of patch (block, joint) is w[block·8 + f, joint]
    back = unpatchify(w_patch, 8, 25)
    assert torch.equal(back, w[:, None].expand(-1, 3, -1, -1))


@pytest.mark.parametrize("target", ["joint_norm_joint", "motion", "raw"])
def test_amr_targets(target):
    model = AMR(tiny_amr(target=target))
    bodies = torch.randn(4, 3, 16, 25).cumsum(2)
    t = model.make_target(bodies)
    assert t.shape == (4, 50, 24)
    if target == "joint_norm_joint":
        seq = unpatchify(t, 8, 25)
        torch.testing.assert_close(seq.mean((2, 3)), torch.zeros(4, 3), atol=1e-5, rtol=0)
        torch.testing.assert_close(seq.std((2, 3), unbiased=False), torch.ones(4, 3), atol=1e-4, rtol=0)
    elif target == "motion":
        torch.testing.assert_close(t.mean(-1), torch.zeros(4, 50), atol=1e-5, rtol=0)
        mot = torch.zeros_like(bodies)
        mot[:, :, :-1] = bodies[:, :, 1:] - bodies[:, :, :-1]
        raw = patchify(mot, 8)
        torch.testing.assert_close(t * (raw.var(-1, keepdim=True) + 1e-6).sqrt() + raw.mean(-1, keepdim=True), raw,
                                   atol=1e-4, rtol=1e-4)
    else:
        assert torch.equal(t, patchify(bodies, 8))


def test_amr_without_focal_is_plain_mse_over_all_patches():
    torch.manual_seed(0)
    model = AMR(tiny_amr(focal=False))
    x, L = make_batch(n=2)
    out, got = _capture(model, x, L)
    target = model.make_target(got["bodies"])
    torch.testing.assert_close(out["loss"], (got["pred"] - target).pow(2).sum((1, 2)).div(50).mean())


def test_mamp_loss_is_masked_only_mse_on_per_patch_normalised_motion():
    torch.manual_seed(0)
    model = MAMP(tiny_mamp())
    x, L = make_batch(n=2, empty_second=(0,))
    out, got = _capture(model, x, L)
    bodies, pred, mask = got["bodies"], got["pred"], got["mask"]
    assert bodies.shape[0] == 4 and pred.shape == (4, 100, 12)           # MAMP keeps the empty body
    mot = torch.zeros_like(bodies)
    mot[:, :, :-1] = bodies[:, :, 1:] - bodies[:, :, :-1]
    t = patchify(mot, 4)
    t = (t - t.mean(-1, keepdim=True)) / (t.var(-1, keepdim=True) + 1e-6).sqrt()
    per = (pred - t).pow(2).mean(-1)
    torch.testing.assert_close(out["loss"], per[mask].mean(), rtol=1e-5, atol=1e-6)


def test_skip_empty_bodies_and_encode_pools_non_empty_bodies():
    torch.manual_seed(0)
    model = AMR(tiny_amr())
    x, L = make_batch(n=3, empty_second=(0, 2))
    assert float(model(x, L)["bodies"]) == 4
    waste = AMR(tiny_amr(skip_empty_bodies=False))
    assert float(waste(x, L)["bodies"]) == 6
    model.eval()
    f = model.encode(x, L)
    torch.testing.assert_close(f[0], model.encode(x[:1, ..., :1], L[:1])[0], atol=1e-5, rtol=1e-5)
    both = model.encode(x[1:2], L[1:2])[0]
    one = (model.encode(x[1:2, ..., :1], L[1:2]) + model.encode(x[1:2, ..., 1:], L[1:2])) / 2
    torch.testing.assert_close(both, one[0], atol=1e-5, rtol=1e-5)


def test_encode_is_deterministic_and_ignores_padding():
    torch.manual_seed(0)
    model = AMR(tiny_amr())
    x, L = make_batch(n=3)
    a = model.encode(x, L)
    assert torch.equal(a, model.encode(x, L))
    padded = torch.cat([x, torch.zeros_like(x)], dim=2)                  # 24 more zero frames
    torch.testing.assert_close(model.encode(padded, L), a, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model.encode(padded), model.encode(x), atol=1e-5, rtol=1e-5)   # lengths inferred


def test_forward_is_seeded():
    torch.manual_seed(0)
    model = AMR(tiny_amr())
    x, L = make_batch()
    a = model(x, L, generator=torch.Generator().manual_seed(1))["loss"]
    b = model(x, L, generator=torch.Generator().manual_seed(1))["loss"]
    c = model(x, L, generator=torch.Generator().manual_seed(2))["loss"]
    assert a == b and a != c


# ----------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("cls, cfg", [(AMR, tiny_amr()), (MAMP, tiny_mamp()), (AMR, tiny_amr(target="motion"))])
def test_gradients_reach_every_parameter(cls, cfg):
    torch.manual_seed(0)
    model = cls(cfg)
    x, L = make_batch(n=4)
    model(x, L, generator=torch.Generator().manual_seed(0))["loss"].backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


# ----------------------------------------------------------------------------- fast paths
def _loss_and_grads(model, backend, x, L, seed=0):
    model.set_backend(backend)
    model.zero_grad()
    loss = model(x, L, generator=torch.Generator().manual_seed(seed))["loss"]
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


def _assert_same(a, b, rtol=1e-4, atol=1e-5):
    torch.testing.assert_close(a[0], b[0], rtol=rtol, atol=atol)
    for n in a[1]:
        torch.testing.assert_close(a[1][n], b[1][n], rtol=rtol, atol=atol, msg=lambda m: f"{n}: {m}")


@pytest.mark.parametrize("cls, cfg", [(AMR, tiny_amr()), (MAMP, tiny_mamp())])
def test_auto_backend_matches_reference(cls, cfg):
    torch.manual_seed(0)
    model = cls(cfg)
    x, L = make_batch(n=3, t=21, empty_second=(1,))
    _assert_same(_loss_and_grads(model, "auto", x, L), _loss_and_grads(model, "torch", x, L))


# (op module, the name the model calls it by, where that name lives)
AMR_OPS = [
    ("fastskel.ops.attention", "attention", "fastskel.nn.attention"),
    ("fastskel.ops.focal", "motion_energy_weights", "fastskel.methods.amr"),
    ("fastskel.ops.focal", "focal_reconstruction_loss", "fastskel.methods.amr"),
]


def _runnable(op_module, fn, backend):
    impl = importlib.import_module(op_module).IMPLEMENTED
    if backend not in impl:
        return f"{op_module}.{fn} implements {impl}, not '{backend}' yet"
    ok, why = triton_status("cpu") if backend == "triton" else cpp_status(fn, "cpu")
    return None if ok else why


@pytest.mark.parametrize("backend", ["triton", "cpp"])
@pytest.mark.parametrize("op_module, fn, home", AMR_OPS)
def test_each_fast_op_inside_amr_matches_reference(monkeypatch, op_module, fn, home, backend):
    why = _runnable(op_module, fn, backend)
    if why:
        pytest.skip(why)
    torch.manual_seed(0)
    model = AMR(tiny_amr())
    x, L = make_batch(n=1, t=19)
    ref = _loss_and_grads(model, "torch", x, L)
    mod = importlib.import_module(home)
    orig = getattr(mod, fn)
    fast = backend
    monkeypatch.setattr(mod, fn, lambda *a, backend=None, **k: orig(*a, backend=fast, **k))
    model.zero_grad()
    loss = model(x, L, generator=torch.Generator().manual_seed(0))["loss"]
    loss.backward()
    _assert_same((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}), ref,
                 rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("backend", ["triton", "cpp"])
def test_whole_amr_on_fast_backend_matches_reference(backend):
    whys = [w for w in (_runnable(m, f, backend) for m, f, _ in AMR_OPS) if w]
    if whys:
        pytest.skip("; ".join(whys))
    torch.manual_seed(0)
    model = AMR(tiny_amr())
    x, L = make_batch(n=2, t=19)
    _assert_same(_loss_and_grads(model, backend, x, L), _loss_and_grads(model, "torch", x, L), rtol=2e-4, atol=2e-5)


def test_bf16_autocast_close_to_fp32():
    torch.manual_seed(0)
    model = AMR(tiny_amr())
    x, L = make_batch(n=3)
    ref = model(x, L, generator=torch.Generator().manual_seed(0))["loss"]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x, L, generator=torch.Generator().manual_seed(0))["loss"]
    assert out.dtype == torch.float32 and torch.isfinite(out)
    torch.testing.assert_close(out, ref, rtol=0.05, atol=0)
    out.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_decoder_traces_with_torch_compile_fullgraph():
    # aot_eager: traces the graph (shared-query cross-attention, MLP, head) without a C++ toolchain.
    torch._dynamo.reset()
    dec = CrossAttentionDecoder(2, 5, 32, 1, 2, 24)
    ctx = torch.randn(3, 10, 32)
    compiled = torch.compile(dec, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(ctx), dec(ctx))


# ----------------------------------------------------------------------------- MAMP checkpoints
def mamp_style_state_dict(cfg, seed=0, decoder=True, head=False):
    """A state dict with the names and shapes of MAMP's model_mamp/transformer.py (patch_size 1)."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g) * 0.2
    d, l, c, tb, v, h = cfg.dim, cfg.frames_per_patch, cfg.in_channels, cfg.t_blocks, cfg.num_joints, int(cfg.dim * cfg.mlp_ratio)
    sd = {"joints_embed.proj.weight": r(d, c, l, 1), "joints_embed.proj.bias": r(d),
          "temp_embed": r(1, tb, 1, d), "pos_embed": r(1, 1, v, d),
          "norm.weight": 1 + r(d), "norm.bias": r(d)}

    def block(prefix, dim):
        sd.update({f"{prefix}.norm1.weight": 1 + r(dim), f"{prefix}.norm1.bias": r(dim),
                   f"{prefix}.attn.qkv.weight": r(3 * dim, dim), f"{prefix}.attn.qkv.bias": r(3 * dim),
                   f"{prefix}.attn.proj.weight": r(dim, dim), f"{prefix}.attn.proj.bias": r(dim),
                   f"{prefix}.norm2.weight": 1 + r(dim), f"{prefix}.norm2.bias": r(dim),
                   f"{prefix}.mlp.fc1.weight": r(h, dim), f"{prefix}.mlp.fc1.bias": r(h),
                   f"{prefix}.mlp.fc2.weight": r(dim, h), f"{prefix}.mlp.fc2.bias": r(dim)})

    for i in range(cfg.depth):
        block(f"blocks.{i}", d)
    if decoder:
        dd = cfg.decoder_dim
        sd.update({"decoder_embed.weight": r(dd, d), "decoder_embed.bias": r(dd), "mask_token": r(1, 1, dd),
                   "decoder_temp_embed": r(1, tb, 1, dd), "decoder_pos_embed": r(1, 1, v, dd),
                   "decoder_norm.weight": 1 + r(dd), "decoder_norm.bias": r(dd),
                   "decoder_pred.weight": r(l * c, dd), "decoder_pred.bias": r(l * c)})
        for i in range(cfg.decoder_depth):
            block(f"decoder_blocks.{i}", dd)
    if head:
        sd.update({"head.fc.weight": r(60, d), "head.fc.bias": r(60)})
    return sd


def mamp_encoder_reference(sd, x, cfg, eps):
    """MAMP's encoder forward written from its description: Conv2d (l, 1) patch embedding on
    (N, C, T, V), + pos + temp embed, pre-norm blocks (qkv as (B, N, 3, H, d)), final LN."""
    h = F.conv2d(x, sd["joints_embed.proj.weight"], sd["joints_embed.proj.bias"], stride=(cfg.frames_per_patch, 1))
    h = h.permute(0, 2, 3, 1) + sd["pos_embed"][0] + sd["temp_embed"][0]          # (N, Tb, V, D)
    n, tb, v, d = h.shape
    h = h.reshape(n, tb * v, d)
    heads = cfg.heads

    def ln(z, p):
        return F.layer_norm(z, (d,), sd[p + ".weight"], sd[p + ".bias"], eps)

    for i in range(cfg.depth):
        p = f"blocks.{i}"
        z = ln(h, p + ".norm1")
        qkv = F.linear(z, sd[p + ".attn.qkv.weight"], sd[p + ".attn.qkv.bias"]).reshape(n, -1, 3, heads, d // heads)
        q, k, vv = qkv.permute(2, 0, 3, 1, 4)
        a = torch.softmax(q @ k.transpose(-1, -2) * (d // heads) ** -0.5, -1) @ vv
        h = h + F.linear(a.transpose(1, 2).reshape(n, -1, d), sd[p + ".attn.proj.weight"], sd[p + ".attn.proj.bias"])
        z = ln(h, p + ".norm2")
        z = F.linear(F.gelu(F.linear(z, sd[p + ".mlp.fc1.weight"], sd[p + ".mlp.fc1.bias"])),
                     sd[p + ".mlp.fc2.weight"], sd[p + ".mlp.fc2.bias"])
        h = h + z
    return ln(h, "norm")


def test_mamp_checkpoint_reproduces_mamp_encoder():
    cfg = tiny_mamp(ln_eps=1e-5)
    sd = mamp_style_state_dict(cfg)
    model = MAMP(cfg)
    res = model.load_mamp_checkpoint({"model": {"module." + k: v for k, v in sd.items()}, "epoch": 399})
    assert res.missing == [] and res.ignored == []
    assert len(res.loaded) == len(model.state_dict())
    x = torch.randn(2, 3, 16, 25)
    ours = model.encoder(model.encoder.embed(patchify(x, 4)))
    torch.testing.assert_close(ours, mamp_encoder_reference(sd, x, cfg, 1e-5), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(model.mask_token, sd["mask_token"])
    torch.testing.assert_close(model.decoder_pos(), (sd["decoder_temp_embed"] + sd["decoder_pos_embed"]).reshape(100, 32))
    torch.testing.assert_close(model.decoder.blocks[1].attn.qkv.weight, sd["decoder_blocks.1.attn.qkv.weight"])


def test_mamp_checkpoint_into_amr_loads_the_encoder_only(tmp_path):
    cfg = tiny_amr()
    sd = mamp_style_state_dict(tiny_mamp(), head=True)
    path = tmp_path / "checkpoint-399.pth"
    torch.save({"model": sd}, path)
    model = AMR(cfg)
    dec_before = model.decoder.queries.detach().clone()
    res = load_mamp_checkpoint(model, path)
    assert all(k.startswith("encoder.") for k in res.loaded)
    assert len(res.loaded) == len([k for k in model.state_dict() if k.startswith("encoder.")])
    assert "head.fc.weight" in res.ignored and "decoder_embed.weight" in res.ignored
    assert all(not k.startswith("encoder.") for k in res.missing)
    assert torch.equal(model.decoder.queries, dec_before)
    torch.testing.assert_close(model.encoder.blocks[0].mlp.fc2.bias, sd["blocks.0.mlp.fc2.bias"])
    w = sd["joints_embed.proj.weight"][..., 0]                           # (D, C, l) → (D, l·C), (frame, channel)
    torch.testing.assert_close(model.encoder.patch_embed.weight, w.permute(0, 2, 1).reshape(32, 12))


def test_mamp_checkpoint_errors():
    cfg = tiny_mamp()
    sd = mamp_style_state_dict(cfg)
    broken = {k: v for k, v in sd.items() if k != "blocks.1.norm2.bias"}
    with pytest.raises(ValueError, match="encoder.blocks.1.norm2.bias"):
        load_mamp_checkpoint(MAMP(cfg), broken)
    res = load_mamp_checkpoint(MAMP(cfg), broken, strict=False)
    assert "encoder.blocks.1.norm2.bias" in res.missing
    with pytest.raises(ValueError, match="temp_embed|temporal"):
        load_mamp_checkpoint(MAMP(tiny_mamp(num_frames=32)), sd)
    with pytest.raises(TypeError, match="state_dict"):
        mamp_state_dict_to_fastskel([1, 2])
    with pytest.raises(TypeError, match="model"):
        load_mamp_checkpoint(torch.nn.Linear(2, 2), sd)
    mapped, unmapped = mamp_state_dict_to_fastskel({**sd, "something.else": torch.zeros(1)})
    assert unmapped == ["something.else"] and "encoder.pos_embed.joint" in mapped


# ----------------------------------------------------------------------------- pretrain → linear probe
@pytest.fixture(scope="module")
def pretrain_run():
    """Pretrain a tiny AMR through the engine (seeded), keeping its random initialisation."""
    cfg = tiny_amr(num_joints=13, decoder_depth=1, epochs=13, batch_size=16, lr=2e-3, min_lr=1e-4, warmup_epochs=1)
    return pretrain_on_class_motion(lambda: AMR(cfg), "amr")


def test_pretraining_loss_decreases(pretrain_run):
    _, _, result, _, _ = pretrain_run
    losses = [h["loss"] for h in result.history]
    assert result.iteration == 13 * 16 and len(losses) >= 20
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < 0.5 * first, (first, last)


def test_pretrained_encoder_beats_random_init_on_linear_probe(pretrain_run):
    model, init, _, train, test = pretrain_run
    acc = probe_pretrained_vs_random(model, init, train, test)
    assert acc["pretrained"] >= acc["random"] + 10.0, acc
