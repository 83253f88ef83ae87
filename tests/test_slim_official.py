"""The official SLiM encoder (KAIST-VICLab/SLiM 2b8bb41): SwiGLU, the cls positional slot, its key
layout and both file formats, against a forward written here by hand from the official code's math."""
import json
import math

import pytest
import torch
import torch.nn.functional as F

from fastskel.methods.slim import SLiM, SLiMConfig, load_slim_checkpoint, save_slim_hub
from fastskel.methods.slim_checkpoint import fastskel_to_official, official_to_fastskel
from fastskel.nn import SkeletonViT
from fastskel.nn.transformer import SwiGLUFFN, swiglu_hidden

pytest.importorskip("safetensors")


def test_official_encoder_parameter_count():
    enc = SkeletonViT(ffn="swiglu", cls_pos=True)
    assert sum(p.numel() for p in enc.parameters()) == 6_368_768
    assert enc.blocks[0].mlp.w12.weight.shape == (2 * 688, 256) and enc.blocks[0].mlp.w3.weight.shape == (256, 688)
    assert sum(p.numel() for p in SkeletonViT().parameters()) == 6_332_928 + 0   # GELU MLP 1024, no cls slot


def test_swiglu_formula():
    assert swiglu_hidden(1024) == 688 and swiglu_hidden(64) == 48 and swiglu_hidden(10) == 8
    torch.manual_seed(0)
    f = SwiGLUFFN(6, 12)
    x = torch.randn(3, 6)
    h = f.hidden
    w, b = f.w12.weight, f.w12.bias
    a, g = x @ w[:h].T + b[:h], x @ w[h:].T + b[h:]
    ref = (a * torch.sigmoid(a) * g) @ f.w3.weight.T + f.w3.bias
    torch.testing.assert_close(f(x), ref)


# ---------------------------------------------------------------- hand-written official forward
def _official_state(dim, depth, heads, hidden, v, pt, regs, c=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s, std=0.2: torch.randn(*s, generator=g) * std  # noqa: E731
    sd = {"cls_token": r(1, 1, dim, std=1.0), "pos_embed": r(1, 1 + v, dim, std=0.5),
          "register_tokens": r(1, regs, dim, std=1.0), "mask_token": r(1, dim, std=1.0),
          "patch_embed.proj.weight": r(dim, c, pt, 1, std=0.3), "patch_embed.proj.bias": r(dim),
          "norm.weight": 1 + r(dim), "norm.bias": r(dim)}
    for i in range(depth):
        p = f"blocks.{i}."
        sd.update({p + "norm1.weight": 1 + r(dim), p + "norm1.bias": r(dim),
                   p + "attn.qkv.weight": r(3 * dim, dim), p + "attn.qkv.bias": r(3 * dim),
                   p + "attn.proj.weight": r(dim, dim), p + "attn.proj.bias": r(dim),
                   p + "norm2.weight": 1 + r(dim), p + "norm2.bias": r(dim),
                   p + "mlp.w12.weight": r(2 * hidden, dim), p + "mlp.w12.bias": r(2 * hidden),
                   p + "mlp.w3.weight": r(dim, hidden), p + "mlp.w3.bias": r(dim)})
    return sd


def _official_forward(sd, x, heads, depth, regs, pt, masks=None):
    """Official math: x (B, C, T, V, M) → (B·M, C, T, V); Conv2d (P_T, 1) patches; mask token on
    the projection; + pos_embed[1:] per joint; cls + pos_embed[0]; registers after cls; blocks with
    temporal RoPE on patch tokens (rotate-half, base 1e4, cos/sin of cat(freqs, freqs)); SwiGLU."""
    b_, c, t, v, m = x.shape
    x = x.permute(0, 4, 1, 2, 3).reshape(b_ * m, c, t, v)
    b = x.shape[0]
    z = F.conv2d(x, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=(pt, 1))
    z = z.flatten(2).transpose(1, 2)
    if masks is not None:
        z = torch.where(masks[..., None], sd["mask_token"][None], z)
    nt = t // pt
    z = (z.reshape(b, nt, v, -1) + sd["pos_embed"][:, 1:][:, None]).flatten(1, 2)
    cls = sd["cls_token"].expand(b, -1, -1) + sd["pos_embed"][:, :1]
    z = torch.cat([cls, sd["register_tokens"].expand(b, -1, -1), z], 1)
    dim = z.shape[-1]
    hd = dim // heads
    inv = 1.0 / (10000.0 ** (torch.arange(0, hd, 2).float() / hd))
    fr = torch.arange(nt).float()[:, None] * inv[None]
    emb = torch.cat([fr, fr], -1).repeat_interleave(v, 0)              # (N, hd)
    cos, sin = emb.cos()[None, :, None], emb.sin()[None, :, None]

    def rot(q):
        q1, q2 = q.chunk(2, -1)
        return torch.cat([-q2, q1], -1)

    def ln(u, k):
        return F.layer_norm(u, (dim,), sd[k + ".weight"], sd[k + ".bias"], 1e-6)

    for i in range(depth):
        p = f"blocks.{i}."
        h = ln(z, p + "norm1")
        n = h.shape[1]
        qkv = (h @ sd[p + "attn.qkv.weight"].T + sd[p + "attn.qkv.bias"]).reshape(b, n, 3, heads, hd)
        q, k, vv = qkv.unbind(2)                                        # (B, N, H, hd)
        g = 1 + regs
        q = torch.cat([q[:, :g], q[:, g:] * cos + rot(q[:, g:]) * sin], 1)
        k = torch.cat([k[:, :g], k[:, g:] * cos + rot(k[:, g:]) * sin], 1)
        att = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(hd)
        o = torch.einsum("bhqk,bkhd->bqhd", att.softmax(-1), vv).reshape(b, n, dim)
        z = z + o @ sd[p + "attn.proj.weight"].T + sd[p + "attn.proj.bias"]
        h = ln(z, p + "norm2")
        a12 = h @ sd[p + "mlp.w12.weight"].T + sd[p + "mlp.w12.bias"]
        a, gg = a12.chunk(2, -1)
        z = z + (F.silu(a) * gg) @ sd[p + "mlp.w3.weight"].T + sd[p + "mlp.w3.bias"]
    return ln(z, "norm")


TINY = dict(dim=16, depth=2, heads=2, mlp=24, v=25, pt=8, regs=4)


def _tiny_vit():
    c = TINY
    return SkeletonViT(num_joints=c["v"], frames_per_patch=c["pt"], dim=c["dim"], depth=c["depth"], heads=c["heads"],
                       mlp_dim=c["mlp"], num_registers=c["regs"], ffn="swiglu", cls_pos=True)


@pytest.mark.parametrize("frames", [64, 32, 8])
@pytest.mark.parametrize("masked", [False, True])
def test_official_layout_loads_and_reproduces_tokens(frames, masked):
    c = TINY
    sd = _official_state(c["dim"], c["depth"], c["heads"], swiglu_hidden(c["mlp"]), c["v"], c["pt"], c["regs"])
    enc = _tiny_vit().eval()
    res = load_slim_checkpoint(enc, {"teacher": {f"backbone.{k}": t for k, t in sd.items()}})
    assert not res.missing and len(res.loaded) == len(enc.state_dict())
    x = torch.randn(2, 3, frames, c["v"], 2, generator=torch.Generator().manual_seed(frames))
    n = (frames // c["pt"]) * c["v"]
    mask = (torch.rand(4, n, generator=torch.Generator().manual_seed(1)) < 0.5) if masked else None
    ref = _official_forward(sd, x, c["heads"], c["depth"], c["regs"], c["pt"], mask)
    got = enc(x.permute(0, 4, 1, 2, 3).reshape(4, 3, frames, c["v"]), mask)
    assert ref.abs().max() > 0.1
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=0)


def test_round_trip_fastskel_hub_fastskel(tmp_path):
    torch.manual_seed(0)
    a, b = _tiny_vit(), _tiny_vit()
    save_slim_hub(a, tmp_path / "hub")
    cfg = json.loads((tmp_path / "hub" / "config.json").read_text())
    assert cfg["ffn_layer"] == "swiglufused" and cfg["patch_size"] == [8, 1] and cfg["num_register_tokens"] == 4
    for src in (tmp_path / "hub", tmp_path / "hub" / "model.safetensors"):
        load_slim_checkpoint(b, src)
        for k, v in a.state_dict().items():
            assert torch.equal(v, b.state_dict()[k]), k
    mapped, ignored = official_to_fastskel(fastskel_to_official(a))
    assert not ignored and set(mapped) == set(a.state_dict())


def test_export_encoder_pth_into_slim_teacher_and_student(tmp_path):
    cfg = SLiMConfig(dim=16, depth=2, heads=2, mlp_dim=24, num_registers=4, num_prototypes=32, head_hidden_dim=16,
                     head_bottleneck_dim=8)
    m = SLiM(cfg)
    src = _tiny_vit()
    payload = {"teacher": {f"backbone.{k}": v for k, v in fastskel_to_official(src).items()}, "note": "x"}
    payload["teacher"]["dino_head.mlp.0.weight"] = torch.zeros(2, 2)
    torch.save(payload, tmp_path / "enc.pth")
    res = load_slim_checkpoint(m, tmp_path / "enc.pth")
    assert any("dino_head" in k for k in res.ignored) and not res.missing
    for enc in (m.student["encoder"], m.teacher["encoder"]):
        torch.testing.assert_close(enc.joint_embed, src.joint_embed, rtol=0, atol=0)


def test_load_errors_name_the_key(tmp_path):
    sd = fastskel_to_official(_tiny_vit())
    bad = dict(sd)
    bad["blocks.0.mlp.w3.weight"] = torch.zeros(3, 3)
    with pytest.raises(ValueError, match="blocks.0.mlp.w3.weight"):
        load_slim_checkpoint(_tiny_vit(), bad)
    short = {k: v for k, v in sd.items() if k != "norm.bias"}
    with pytest.raises(ValueError, match="norm.bias"):
        load_slim_checkpoint(_tiny_vit(), short)
    res = load_slim_checkpoint(_tiny_vit(), short, strict=False)
    assert res.missing == ["norm.bias"]
    save_slim_hub(_tiny_vit(), tmp_path / "h")
    cfg = json.loads((tmp_path / "h" / "config.json").read_text())
    cfg["num_register_tokens"] = 2
    (tmp_path / "h" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="num_register_tokens"):
        load_slim_checkpoint(_tiny_vit(), tmp_path / "h")
    assert any("num_register_tokens" in s for s in load_slim_checkpoint(_tiny_vit(), tmp_path / "h", strict=False)
               .config_mismatches)
    with pytest.raises(TypeError, match="model"):
        load_slim_checkpoint(torch.nn.Linear(2, 2), sd)


# ---------------------------------------------------------------- SLiMConfig.official()
def test_official_recipe_items():
    c = SLiMConfig.official()
    assert (c.ffn, c.cls_pos, c.center_joint, c.pretrain_bodies) == ("swiglu", True, 1, "one")
    assert c.local_mask_prob == 1.0 and c.mask_ratio == (0.5, 0.9) and c.clip_grad == 3.0
    assert c.lr == pytest.approx(2e-4 * math.sqrt(768 / 1024)) and c.batch_size == 768 and c.epochs == 150
    assert c.token_weight_decay and c.freeze_last_layer_epochs == 1 and c.weight_decay == 0.04
    assert SLiMConfig.official(lr=1e-3).lr == 1e-3
    d = SLiMConfig()                       # the paper where it speaks, the code where it is silent
    assert (d.ffn, d.cls_pos, d.center_joint, d.pretrain_bodies) == ("swiglu", True, 1, "one")
    assert d.local_mask_prob == 0.5 and d.lr == 2e-4 and not d.token_weight_decay
    m = SLiM(SLiMConfig.official(dim=16, depth=1, heads=2, mlp_dim=24, num_prototypes=32, head_hidden_dim=16,
                                 head_bottleneck_dim=8))
    assert m.no_weight_decay() == [] and "cls_pos_embed" in SLiM(SLiMConfig(
        dim=16, depth=1, heads=2, mlp_dim=24, num_prototypes=32, head_hidden_dim=16, head_bottleneck_dim=8)
    ).no_weight_decay()
    with pytest.raises(ValueError, match="center_joint"):
        SLiMConfig(center_joint=25)
    with pytest.raises(ValueError, match="pretrain_bodies"):
        SLiMConfig(pretrain_bodies="two")


def test_one_random_valid_body_per_clip_centred_on_joint_1():
    cfg = SLiMConfig.official(dim=16, depth=1, heads=2, mlp_dim=24, num_registers=2, num_prototypes=32,
                              head_hidden_dim=16, head_bottleneck_dim=8, frames=16, local_frames=(8,),
                              local_scales=((0.2, 0.5),), local_crops=1)
    m = SLiM(cfg)
    seen = {}
    views = m._views

    def spy(bodies, L, generator):
        seen["bodies"] = bodies
        return views(bodies, L, generator)

    m._views = spy
    x = torch.randn(3, 3, 16, 25, 2)
    x[0, ..., 0] = 0                      # clip 0: only the second body is present
    x[2, ..., 1] = 0
    out = m(x, generator=torch.Generator().manual_seed(0))
    assert int(out["bodies"]) == 3
    b = seen["bodies"]
    assert b.shape[0] == 3 and bool(b.flatten(1).ne(0).any(1).all())
    torch.testing.assert_close(b[0], x[0, ..., 1] - x[0, :, :1, 1:2, 1])            # body 1 − its joint 1 at frame 0
    assert b[:, :, 0, 1].abs().max() == 0


def test_cli_eval_takes_official_files(tmp_path, capsys):
    from fastskel.cli import main
    from fastskel.engine.evaluate import load_method

    torch.manual_seed(0)
    enc = SkeletonViT(dim=16, depth=1, heads=2, mlp_dim=24, num_registers=4, ffn="swiglu", cls_pos=True)
    save_slim_hub(enc, tmp_path / "hub")
    torch.save({"teacher": {f"backbone.{k}": v for k, v in fastskel_to_official(_tiny_vit()).items()}},
               tmp_path / "enc.pth")
    m, st = load_method(tmp_path / "hub")
    assert st["method"] == "slim" and m.config.ffn == "swiglu" and m.config.dim == 16
    torch.testing.assert_close(m.teacher["encoder"].joint_embed, enc.joint_embed, rtol=0, atol=0)
    with pytest.raises(ValueError, match="patch_embed.weight"):   # a .pth is built vit_tiny-shaped
        load_method(tmp_path / "enc.pth")
    assert main(["eval", "knn", "--checkpoint", str(tmp_path / "hub" / "model.safetensors"), "--data",
                 "synthetic:num_samples=60", "--out", str(tmp_path / "ev")]) == 0
    assert "knn top-1" in capsys.readouterr().out


def _tiny_official(**kw):
    base = dict(dim=16, depth=1, heads=2, mlp_dim=24, num_registers=2, num_prototypes=32, head_hidden_dim=16,
                head_bottleneck_dim=8, frames=16, local_frames=(8,), local_scales=((0.2, 0.5),), local_crops=2,
                head_impl="reference")
    return SLiMConfig.official(**{**base, **kw})


def test_official_masking_and_cls_pairings():
    c = SLiMConfig.official()
    assert (c.global_mask_prob, c.local_pairs) == (0.5, "both")
    m = SLiM(_tiny_official())
    seen = {}
    enc = m.student["encoder"]
    fwd = enc.forward

    def spy(x, mask=None):
        seen.setdefault("masks", []).append(None if mask is None else mask.clone())
        return fwd(x, mask)

    enc.forward = spy
    plc = m._prototype_loss
    m._prototype_loss = lambda zs, ws, zt, wt, index, t: seen.setdefault("index", []).append(index) or plc(
        zs, ws, zt, wt, index, t)
    x = torch.randn(3, 3, 16, 25, 1)
    m(x, generator=torch.Generator().manual_seed(0))
    g_mask, l_mask = seen["masks"][0], seen["masks"][1]
    assert g_mask.shape[0] == 6 and int(g_mask.any(1).sum()) == 3          # exactly half the 2B globals
    assert bool(l_mask.any(1).all())                                       # every local view masked
    cls_index = seen["index"][0]
    b, locals_ = 3, 2 * 2 * 3                                              # 2 anchors × 2 crops × B
    assert cls_index.numel() == 2 * b + 2 * locals_                        # globals swapped + locals × both
    loc = cls_index[2 * b:]
    assert torch.equal(loc[: locals_] // b, torch.zeros(locals_, dtype=torch.long))
    assert torch.equal(loc[locals_:] // b, torch.ones(locals_, dtype=torch.long))
    d = SLiM(_tiny_official(global_mask_prob=1.0, local_pairs="own", local_mask_prob=0.5))
    assert d.config.global_mask_prob == 1.0 and SLiMConfig().local_pairs == "own"


def test_official_mask_rule_bounds_stratified_and_no_host_sync(monkeypatch):
    from fastskel.graph import SkeletonGraph
    from fastskel.methods.slim_masking import TubeTable, semantic_tube_mask

    table = TubeTable(SkeletonGraph.get("ntu25"))
    b = 40
    m, rec = semantic_tube_mask(b, 8, table, (0.5, 0.9), 8.0, 0.5, stratified=True, return_tubes=True,
                                generator=torch.Generator().manual_seed(0))
    frac = m.float().mean(1)
    assert frac.min() >= 0.5 - 1e-6 and frac.max() <= 0.9 + 1e-6
    k = torch.arange(b)
    srt = frac.sort().values                                                   # the k-th ratio in stratum k (± rounding)
    assert bool((srt >= 0.5 + 0.4 * k / b - 0.0026).all() and (srt <= 0.5 + 0.4 * (k + 1) / b + 0.0026).all())
    cfg = _tiny_official(frames=32, local_frames=(16, 8), local_scales=((0.3, 0.6), (0.1, 0.3)))
    model = SLiM(cfg)
    seen = []
    import fastskel.methods.slim as slim_mod
    real = slim_mod.semantic_tube_mask

    def spy(batch, tb, table, ratio, lo_area, hi_area, **kw):
        seen.append((tb, lo_area, hi_area, kw["stratified"], kw["sync"]))
        return real(batch, tb, table, ratio, lo_area, hi_area, **kw)

    monkeypatch.setattr(slim_mod, "semantic_tube_mask", spy)
    monkeypatch.setattr(torch.Tensor, "item", lambda self: (_ for _ in ()).throw(AssertionError("host sync")))
    model._tube_mask(4, 4, None, None, torch.device("cpu"))
    model._tube_mask(4, 1, None, None, torch.device("cpu"))
    assert seen[0] == (4, 4.0, 1.0, True, False) and seen[1] == (1, 1.0, 1.0, True, False)   # A_min = T_b, A_max 100
    model.config.frames = 64
    model._tube_mask(2, 8, None, None, torch.device("cpu"))
    assert seen[2][1:3] == (8.0, 0.5)                                        # 64 frames: A_min 8, A_max 100 = 0.5·200


def test_official_optimisation_lr_scale_and_weight_decay_cosine():
    from fastskel.engine.schedule import WarmupCosine, build_optimizer

    c = SLiMConfig.official()
    assert (c.weight_decay, c.weight_decay_end, c.patch_embed_lr_mult) == (0.04, 0.2, 0.2)
    assert SLiMConfig().weight_decay_end is None and SLiMConfig().patch_embed_lr_mult == 1.0
    m = SLiM(_tiny_official())
    opt = build_optimizer(m, "adamw", 1e-3, 0.04)
    pe = {id(p) for p in m.student["encoder"].patch_embed.parameters()}
    for g in opt.param_groups:
        ids = {id(p) for p in g["params"]}
        assert (ids <= pe) == (g.get("lr_scale", 1.0) == 0.2) and (not ids & pe or ids <= pe)
    tok = id(m.student["encoder"].cls_token)
    assert any(tok in {id(p) for p in g["params"]} and g["weight_decay"] == 0.04 for g in opt.param_groups)
    sch = WarmupCosine(opt, 100, 10, 1e-3, 1e-6, wd_end=0.2)
    sch.step()
    g_pe = next(g for g in opt.param_groups if g.get("lr_scale") == 0.2 and g["weight_decay"] > 0)
    assert g_pe["lr"] == pytest.approx(0.2 * 1e-4) and g_pe["weight_decay"] == pytest.approx(0.04)
    for _ in range(50):
        sch.step()
    assert g_pe["weight_decay"] == pytest.approx(0.04 + (0.2 - 0.04) * 0.5 * (1 - math.cos(math.pi * 50 / 100)))
    assert all(g["weight_decay"] == 0.0 for g in opt.param_groups if g["wd_base"] == 0.0)


def test_official_encode_sum_bodies_last_blocks_mean_patch_centre_crop():
    from fastskel.data.transforms import resample

    m = SLiM(_tiny_official(depth=2, encode_layers=2, encode_patch=True, encode_sampling="linear")).eval()
    assert SLiMConfig.official().encode_bodies == "sum" and SLiMConfig.official().encode_crop == 0.95
    assert SLiMConfig.official().encode_sampling == "official" and SLiMConfig().encode_sampling == "linear"
    assert SLiMConfig().encode_bodies == "mean" and m.feature_dim == 16 * 3
    x = torch.randn(2, 3, 40, 25, 2)
    x[1, ..., 1] = 0
    L = torch.tensor([40, 20])
    f = m.encode(x, L)
    assert f.shape == (2, 48)
    enc = m.teacher["encoder"]
    xc = x[0] - x[0, :, :1, 1:2, :1]
    keep = 38                                                        # round(0.95 · 40)
    v = resample(xc.permute(3, 0, 1, 2), torch.full((2,), 1), torch.full((2,), keep), 16)
    outs = enc.forward_layers(v, 2)
    per = torch.cat([outs[0][:, 0], outs[1][:, 0], outs[1][:, 3:].mean(1)], -1)
    torch.testing.assert_close(f[0], per.sum(0), atol=1e-5, rtol=1e-5)          # both bodies summed
    torch.testing.assert_close(enc.forward_layers(v, 1)[0], enc(v), atol=1e-6, rtol=0)
    # official test sampling (DownstreamAugmentation._test_sampling): frames 1 + ⌊i·38/16⌋, no interpolation
    m.config.encode_sampling = "official"
    idx = torch.tensor([1 + i * 38 // 16 for i in range(16)])
    outs = enc.forward_layers(xc.permute(3, 0, 1, 2)[:, :, idx], 2)
    per = torch.cat([outs[0][:, 0], outs[1][:, 0], outs[1][:, 3:].mean(1)], -1)
    torch.testing.assert_close(m.encode(x, L)[0], per.sum(0), atol=1e-5, rtol=1e-5)


def test_slim_official_eval_protocol(tmp_path, capsys):
    from fastskel.cli import main
    from fastskel.data import SkeletonDataset
    from fastskel.engine.eval_protocols import slim_official_features, slim_official_linear

    torch.manual_seed(0)
    m = SLiM(_tiny_official(depth=2))
    x = torch.randn(12, 3, 16, 25, 2)
    ds = SkeletonDataset(x, torch.arange(12) % 3, torch.full((12,), 16))
    f, y = slim_official_features(m, ds, 2, True, 1.0)
    assert f.shape == (12, 48) and m.config.encode_layers == 1 and m.config.encode_bodies == "sum"
    res = slim_official_linear(m, ds, ds, lrs=(0.1, 0.01), epochs=2)
    assert len(res["grid"]) == 2 * 2 * 2 and res["top1"] == max(res["grid"].values())
    save_slim_hub(SkeletonViT(dim=16, depth=2, heads=2, mlp_dim=24, num_registers=4, ffn="swiglu", cls_pos=True),
                  tmp_path / "hub")
    assert main(["eval", "linear", "--checkpoint", str(tmp_path / "hub"), "--data", "synthetic:num_samples=40",
                 "--eval-protocol", "slim_official", "--epochs", "2", "--lr", "0.1", "--out", str(tmp_path / "e")]) == 0
    assert "slim_official linear grid: best blocks=" in capsys.readouterr().out


def test_official_probe_grid_matches_torch_sgd_per_classifier():
    """The jointly trained grid = each classifier alone with nn.Linear + SGD(0.9) + CosineAnnealingLR
    on the same batches, unstandardised features, N(0, 0.01²) init (slim/eval/linear.py)."""
    from fastskel.engine.eval_protocols import SLIM_LR_GRID, official_probe_grid

    assert SLIM_LR_GRID == (1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2, 0.1)
    g = torch.Generator().manual_seed(0)
    y = torch.arange(90) % 3
    x = torch.randn(90, 6, generator=g) + F.one_hot(y, 6).float() * 3 + 5.0        # offset: not standardised
    xt, yt = x[::2] + 0.3 * torch.randn(45, 6, generator=g), y[::2]
    cols = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    lrs, iters, bs = [0.02, 0.002], 30, 16
    got, w, b = official_probe_grid(x, y, xt, yt, cols, lrs, iters, bs, num_classes=3, seed=4, return_params=True)
    gen = torch.Generator().manual_seed(4)
    w0 = torch.randn(2, 6, 3, generator=gen) * 0.01 * cols[..., None].float()
    order, batches = torch.empty(0, dtype=torch.int64), []
    for _ in range(iters):
        if order.numel() < bs:
            order = torch.cat([order, torch.randperm(90, generator=gen)])
        batches.append(order[:bs])
        order = order[bs:]
    for k in range(2):
        c = cols[k]
        lin = torch.nn.Linear(int(c.sum()), 3)
        with torch.no_grad():
            lin.weight.copy_(w0[k][c].T)
            lin.bias.zero_()
        opt = torch.optim.SGD(lin.parameters(), lr=lrs[k], momentum=0.9, weight_decay=0)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, iters, eta_min=0)
        for idx in batches:
            loss = F.cross_entropy(lin(x[idx][:, c]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        ref = (lin(xt[:, c]).argmax(1) == yt).float().mean() * 100
        assert float(got[k]) == pytest.approx(float(ref)), k
        torch.testing.assert_close(w[k][c].T, lin.weight.detach(), atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(b[k], lin.bias.detach(), atol=1e-5, rtol=1e-4)
        assert bool((w[k][~c] == 0).all())
    std = official_probe_grid(x, y, xt, yt, cols, lrs, iters, bs, num_classes=3, seed=4, standardize=True)
    assert not torch.equal(std, got)                       # fastskel's standardisation is an option, off by default


def test_official_prototype_gain_is_trained_and_decayed():
    """DINOv2 dino_head.py (SLiM's slim/layers/__init__.py imports DINOv2's DINOHead; ssl_meta_arch.py
    builds it without norm_last_layer): weight_g filled with 1, not frozen; param_groups.py gives it
    weight decay (name not *.bias / norm / gamma) and the last-layer lr schedule (0 for epoch 1)."""
    from fastskel.engine.schedule import param_groups

    m = SLiM(_tiny_official())
    assert not SLiMConfig.official().norm_last_layer and SLiMConfig().norm_last_layer
    g = m.student["cl_head"].last_layer.weight_g
    assert g.requires_grad and bool((g == 1).all()) and m.student["mae_head"].last_layer.weight_g.requires_grad
    assert not SLiM(SLiMConfig(dim=16, depth=1, heads=2, mlp_dim=24, num_prototypes=32, head_hidden_dim=16,
                               head_bottleneck_dim=8)).student["cl_head"].last_layer.weight_g.requires_grad
    decayed = [p for grp in param_groups(m, 0.04) if grp["weight_decay"] > 0 for p in grp["params"]]
    assert any(p is g for p in decayed)
    x = torch.randn(4, 3, 16, 25, 2)
    for step, frozen in ((0, True), (10, False)):
        m.step.fill_(step)
        m.total_steps.fill_(20)
        m.zero_grad()
        m(x, generator=torch.Generator().manual_seed(0))["loss"].backward()
        assert (g.grad is None or not bool(g.grad.any())) == frozen
