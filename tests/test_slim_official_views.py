"""SLiMConfig.official() views and augmentations (KAIST-VICLab/SLiM 2b8bb41 slim/data/augmentations.py,
slim/data/datasets/ntu.py) against a per-sample reference written here from the official code's rules."""
import math

import pytest
import torch
import torch.nn.functional as F

from fastskel.data.slim_official import (OFFICIAL_LOCAL_VIEWS, axis_drop, buffer_length, gaussian_noise,
                                         official_augment, official_bone_scale, official_crop, official_geometric,
                                         official_test_crop)
from fastskel.graph import SkeletonGraph
from fastskel.methods.slim import SLiM, SLiMConfig

G = SkeletonGraph.get("ntu25")


def frames_input(n, t, L, c=3, v=25):
    """Channel 0 of frame f is f (so a view shows which source frames it read), zero past L."""
    x = torch.randn(n, c, t, v, generator=torch.Generator().manual_seed(5))
    x[:, 0] = torch.arange(t, dtype=torch.float32)[None, :, None]
    return x * (torch.arange(t)[None, None, :, None] < L[:, None, None, None])


def ref_crop(x, L, window, p_int, within, g):
    """The official ``_interpolated_crop`` per sample, from the same uniforms as official_crop."""
    n = x.shape[0]
    u = torch.rand((2, n), generator=g, dtype=torch.float64)
    u_gap = torch.rand((n, window + 1), generator=g)
    u_seg = torch.rand((n, window), generator=g, dtype=torch.float64)
    outs, rng = [], []
    for k in range(n):
        lk = int(L[k])
        blocks, cur, tot = [x[k, :, :lk]], x[k, :, :lk], lk
        while tot < 150:                                       # NTU._prepare_buffer (min_buffer 150)
            cur = cur.flip(1)
            blocks.append(cur)
            tot += lk
        buf = torch.cat(blocks, 1)
        T = buf.shape[1]
        thres = max(8, min(16, window))
        if within is None:
            size, base = (lk if lk >= thres else T), 0
        else:
            size, base = int(within[1][k] - within[0][k]), int(within[0][k])
        if size < thres:
            size, base = T, 0
        p = float(u[0, k]) * (p_int[1] - p_int[0]) + p_int[0]
        c = min(max(int(math.floor(size * p)), thres), size)
        bias = min(int(float(u[1, k]) * (size - c + 1)), size - c)
        if c < window:
            inds = list(range(c))
        elif c < 2 * window:
            chosen = set(u_gap[k].argsort()[: c - window].tolist())
            inds = [i + sum(1 for q in chosen if q <= i) for i in range(window)]
        else:
            b = [i * c // window for i in range(window + 1)]
            inds = [b[i] + min(int(float(u_seg[k, i]) * (b[i + 1] - b[i])), b[i + 1] - b[i] - 1) for i in range(window)]
        final = [min(max(i + bias + base, 0), T - 1) for i in inds]
        d = buf[:, final]                                       # (C, len, V)
        if len(final) != window:
            d = F.interpolate(d.permute(2, 0, 1), size=window, mode="linear", align_corners=False).permute(1, 2, 0)
        outs.append(d)
        rng.append((final[0], final[-1] + 1))
    return torch.stack(outs), rng


@pytest.mark.parametrize("window,p_int", [(64, (0.5, 1.0)), (32, (0.35, 0.7)), (16, (0.15, 0.4)), (8, (0.05, 0.2))])
def test_official_crop_matches_reference(window, p_int):
    L = torch.tensor([300, 200, 130, 64, 40, 17, 15, 9, 3, 1])
    x = frames_input(len(L), 300, L)
    v, (first, end) = official_crop(x, L, window, p_int, generator=torch.Generator().manual_seed(3))
    ref, rng = ref_crop(x, L, window, p_int, None, torch.Generator().manual_seed(3))
    torch.testing.assert_close(v, ref, atol=1e-5, rtol=1e-6)
    assert list(zip(first.tolist(), end.tolist())) == rng
    # locals inside that global range (as the official code: the range of the global crop)
    v2, (f2, e2) = official_crop(x, L, 16, (0.15, 0.4), within=(first, end), generator=torch.Generator().manual_seed(4))
    ref2, rng2 = ref_crop(x, L, 16, (0.15, 0.4), tuple(zip(*rng)), torch.Generator().manual_seed(4))
    torch.testing.assert_close(v2, ref2, atol=1e-5, rtol=1e-6)
    assert list(zip(f2.tolist(), e2.tolist())) == rng2


def test_official_crop_rules_sorted_random_frames_min_length_upsampling_only():
    n = 400
    L = torch.full((n,), 300)
    x = frames_input(n, 300, L)
    g = torch.Generator().manual_seed(0)
    v, (first, end) = official_crop(x, L, 64, (0.5, 1.0), generator=g)
    f = v[:, 0, :, 0]
    assert torch.equal(f, f.round()) and bool((f[:, 1:] > f[:, :-1]).all())    # real frames, strictly increasing
    assert bool((end - first >= 64).all()) and bool((end - first <= 300).all())
    loc, _ = official_crop(x, L, 16, (0.15, 0.4), within=(first, end), generator=g)
    lf = loc[:, 0, :, 0]
    assert bool((lf >= first[:, None]).all()) and bool((lf < end[:, None]).all())
    # window <= c < 2·window: exactly one of the 17 gaps is skipped when c = 17, uniformly
    L17 = torch.full((3400,), 17)
    v17, _ = official_crop(frames_input(3400, 17, L17), L17, 16, (1.0, 1.0), generator=torch.Generator().manual_seed(1))
    gap = torch.stack([torch.tensor(sorted(set(range(17)) - set(r.long().tolist()))[0]) for r in v17[:, 0, :, 0]])
    counts = torch.bincount(gap, minlength=17).float()
    assert counts.min() > 200 - 60 and counts.max() < 200 + 60     # 3400/17 = 200 each
    # minimum length: an 8-frame view of a 64-frame span takes >= 8 frames (never fewer); a 12-frame clip
    # (< 16) is cropped from its 156-frame ping-pong buffer and never reads the zero padding
    L12 = torch.full((64,), 12)
    v12, (f12, e12) = official_crop(frames_input(64, 40, L12), L12, 64, (0.5, 1.0), generator=g)
    assert int(buffer_length(torch.tensor([12]))) == 156 and bool((e12 - f12 >= 78).all())
    assert bool((v12[:, 0] >= 0).all()) and bool((v12[:, 0] <= 11).all()) and bool((v12[:, 1:].abs().sum((1, 3)) > 0).all())
    v8, (f8, e8) = official_crop(x[:64], L[:64], 8, (0.05, 0.2), generator=g)
    assert bool((e8 - f8 >= 8).all())


def test_official_test_crop():
    L = torch.tensor([300, 100, 40])
    x = frames_input(3, 300, L)
    v = official_test_crop(x, L, 64, 0.95, thres=64)
    c, b = 285, 7                                      # ⌊300·0.95⌋, ⌊0.05·300/2⌋
    assert v[0, 0, :, 0].tolist() == [float(b + i * c // 64) for i in range(64)]
    c, b = 95, 2
    assert v[1, 0, :, 0].tolist() == [float(b + i * c // 64) for i in range(64)]
    # 40 < 64 frames: all 40 from b = 1 (the last from the reversed lap: frame 39), upsampled to 64
    seq = torch.tensor([float(1 + i) if 1 + i < 40 else 39.0 for i in range(40)])
    ref = F.interpolate(seq.view(1, 1, -1), size=64, mode="linear", align_corners=False).view(-1)
    torch.testing.assert_close(v[2, 0, :, 0], ref)


def test_official_views_counts_lengths_in_slim():
    cfg = SLiMConfig.official(dim=16, depth=1, heads=2, mlp_dim=24, num_prototypes=32, head_hidden_dim=16,
                              head_bottleneck_dim=8)
    assert cfg.views == "official" and cfg.augment == "official" and cfg.local_counts == (1, 2, 1)
    assert tuple(zip(cfg.local_frames, cfg.local_scales, cfg.local_counts)) == OFFICIAL_LOCAL_VIEWS
    assert cfg.global_scale == (0.5, 1.0) and cfg.frames == 64
    assert cfg.rotate_tilt_deg == pytest.approx(math.degrees(0.3)) == cfg.rotate_vertical_deg
    assert SLiMConfig().views == "paper" and SLiMConfig().augment == "paper" and SLiMConfig().crops_per_scale == (2, 2, 2)
    m = SLiM(cfg)
    b = 3
    bodies = torch.randn(b, 3, 100, 25)
    glob, locals_ = m._views(bodies, torch.tensor([100, 60, 20]), torch.Generator().manual_seed(0))
    assert glob.shape == (2 * b, 3, 64, 25)
    assert [(v.shape[0], v.shape[2]) for v, _ in locals_] == [(2 * b, 32), (4 * b, 16), (2 * b, 8)]   # 8 per clip
    assert [a.tolist() for _, a in locals_][1] == [0] * 6 + [1] * 6
    with pytest.raises(ValueError, match="local_counts"):
        SLiMConfig(local_counts=(1, 2))


# ------------------------------------------------------------------------------- augmentations
def test_official_bone_scale_three_factors_exact_rebuild_and_the_official_bug():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2000, 3, 2, 25, generator=g)
    out, s = official_bone_scale(x, G, 0.85, 1.15, 0.5, root=0, generator=g, return_scales=True)
    par = [-1, 0, 20, 2, 20, 4, 5, 6, 20, 8, 9, 10, 0, 12, 13, 14, 0, 16, 17, 18, 1, 7, 7, 11, 11]   # official tree
    torso, arm, leg = [1, 20, 2, 3], [4, 5, 6, 7, 21, 22, 8, 9, 10, 11, 23, 24], [12, 13, 14, 15, 16, 17, 18, 19]
    for grp in (torso, arm, leg):                      # one factor per group and sample
        assert torch.equal(s[:, grp], s[:, grp[:1]].expand(-1, len(grp)))
    on = (s[:, 1] != 1) | (s[:, 4] != 1) | (s[:, 12] != 1)
    assert 0.45 < on.float().mean() < 0.55
    assert bool((s >= 0.85).all()) and bool((s <= 1.15).all()) and s[on].min() < 0.87 and s[on].max() > 1.13
    assert not torch.equal(s[on][:, 1], s[on][:, 4])   # torso and arms drawn independently
    torch.testing.assert_close(out[..., 0], x[..., 0])                           # root joint 0 kept
    for j in range(1, 25):                             # every official bone scaled by its group's factor
        torch.testing.assert_close(out[..., j] - out[..., par[j]], (x[..., j] - x[..., par[j]]) * s[:, None, None, j])
    # the official loop (index order) with s = 1 reads joint 20 before it is rebuilt: 14 joints move
    buggy = torch.zeros_like(x[:1])
    buggy[..., 0] = x[:1, ..., 0]
    for v in range(1, 25):
        buggy[..., v] = buggy[..., par[v]] + (x[:1, ..., v] - x[:1, ..., par[v]])
    moved = (buggy - x[:1]).abs().amax((0, 1, 2)) > 1e-6
    assert int(moved.sum()) == 14 and bool(moved[[2, 4, 8]].all())
    same, _ = official_bone_scale(x[:1], G, 1.0, 1.0, 1.0, root=0, return_scales=True)
    torch.testing.assert_close(same, x[:1])


def test_official_geometric_flip_and_rotation_limits():
    n = 4000
    g = torch.Generator().manual_seed(1)
    pt = torch.zeros(n, 3, 1, 25)
    pt[:, 1] = 1.0                                     # every joint at (0, 1, 0): flip and scaling act trivially
    out = official_geometric(pt, G, 0.5, generator=g)[:, :, 0, 0]
    tilt = torch.acos(out[:, 1].clamp(-1, 1))
    assert 0.45 < (tilt < 1e-6).float().mean() < 0.55                 # rotation with p = 0.5
    assert tilt.max() < 0.5 and tilt.max() > 0.3                        # |α|, |γ| <= 0.3 rad (paper: 30°)
    ex = torch.zeros(n, 3, 1, 25)
    ex[:, 0] = 1.0
    o = official_geometric(ex, G, 0.5, generator=g)[:, :, 0, 0]
    yaw = torch.acos((o[:, 0].abs() / o.norm(dim=1)).clamp(-1, 1))
    assert yaw.max() < 0.5 and yaw.max() > 0.3                          # |β| <= 0.3 rad too (paper: 180°)
    assert 0.45 < (o[:, 0] < 0).float().mean() < 0.55                   # flip (negates x) with p = 0.5
    lr = torch.randn(n, 3, 1, 25, generator=g)
    f = official_geometric(lr, G, 1.0, (1.0, 1.0), 0.0, 0.0, generator=g)
    torch.testing.assert_close(f[:, 0], -lr[:, 0][..., G.flip_permutation()])  # flip: swap L/R, negate x


@pytest.mark.parametrize("kind,std,p_noise,p_drop", [("global1", 0.01, 1.0, 0.0), ("global2", 0.05, 0.1, 0.2),
                                                      ("local", 0.01, 0.5, 0.0)])
def test_official_noise_and_axis_drop(kind, std, p_noise, p_drop):
    n = 4000
    x = torch.ones(n, 3, 4, 25)
    out = official_augment(x, kind, G, p=0.0, generator=torch.Generator().manual_seed(2))   # geometric off
    d = out - x
    dropped = (out == 0).all(-1).all(-1)                                # (N, 3) axes zeroed
    assert abs(dropped.any(1).float().mean() - p_drop) < 0.03
    if p_drop:
        per_axis = dropped.float().sum(0) / dropped.any(1).float().sum()
        assert bool(((per_axis - 1 / 3).abs() < 0.08).all())
    keep = ~dropped.any(1)
    noisy = d[keep].flatten(1).abs().amax(1) > 0
    assert abs(noisy.float().mean() - p_noise) < 0.03
    assert d[keep][noisy].std() == pytest.approx(std, rel=0.05)
    with pytest.raises(ValueError, match="kind"):
        official_augment(x, "global3", G)
    with pytest.raises(ValueError, match="p"):
        gaussian_noise(x, 0.1, 1.5)
    assert torch.equal(axis_drop(x, 0.0), x)


def test_official_views_and_augmentations_do_not_sync(monkeypatch):
    """No .item() / .tolist() / bool() of a tensor on the official view path (after the per-device
    constants are built): every draw stays on the input's device."""
    m = SLiM(SLiMConfig.official(dim=16, depth=1, heads=2, mlp_dim=24, num_prototypes=32, head_hidden_dim=16,
                                 head_bottleneck_dim=8))
    bodies, L = torch.randn(3, 3, 90, 25), torch.tensor([90, 40, 10])
    m._views(bodies, L, torch.Generator().manual_seed(0))           # builds the cached graph constants
    boom = lambda *a, **k: (_ for _ in ()).throw(AssertionError("host sync"))  # noqa: E731
    for name in ("item", "tolist", "__bool__"):
        monkeypatch.setattr(torch.Tensor, name, boom)
    glob, locals_ = m._views(bodies, L, torch.Generator().manual_seed(1))
    monkeypatch.undo()
    assert glob.shape == (6, 3, 64, 25) and bool(torch.isfinite(glob).all())
