"""Batched transforms: invariants (mirror², bone directions/lengths, rotation, crops inside valid
frames), agreement with the reference implementations they reproduce, determinism, padding."""
import math

import pytest
import torch
import torch.nn.functional as F

from fastskel.data import SyntheticSkeletons, valid_lengths
from fastskel.data import transforms as T
from fastskel.graph import SkeletonGraph

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(scope="module")
def batch():
    ds = SyntheticSkeletons(num_classes=4, num_samples=12, T=70, seed=1, min_length=20)
    return ds.x, ds.lengths


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def bone_lengths(x, graph=None):
    return T.to_bone(x, graph).norm(dim=1)


# ------------------------------------------------------------------------------- crop-resize (MAMP)
def _mamp_reference(x, start, length, size):
    """CTR-GCN/MAMP valid_crop_resize's resize, per sample, with F.interpolate (the original code)."""
    outs = []
    for i in range(x.shape[0]):
        w = x[i, :, int(start[i]): int(start[i]) + int(length[i])]
        C, Tw, V, M = w.shape
        w = w.permute(0, 2, 3, 1).reshape(1, 1, C * V * M, Tw)
        r = F.interpolate(w, size=(C * V * M, size), mode="bilinear", align_corners=False)
        outs.append(r.reshape(C, V, M, size).permute(0, 3, 1, 2))
    return torch.stack(outs)


@pytest.mark.parametrize("size", [120, 50, 17])
def test_crop_resize_matches_mamp_interpolate_and_stays_in_valid_frames(batch, size):
    x, L = batch
    out, (start, length) = T.crop_resize(x, L, size=size, generator=gen(size), return_window=True)
    assert out.shape == (12, 3, size, 25, 2)
    assert bool((start >= 0).all()) and bool((start + length <= L).all())
    lo = torch.minimum(torch.full_like(L, 64), L)
    assert bool((length >= lo).all()) and bool((length >= (L * 0.5).floor()).all())
    torch.testing.assert_close(out, _mamp_reference(x, start, length, size), atol=1e-6, rtol=1e-6)
    assert torch.equal(valid_lengths(out[..., :1]), torch.full_like(L, size))  # every output frame valid


def test_crop_resize_center_crop_for_evaluation(batch):
    x, L = batch
    out, (start, length) = T.crop_resize(x, L, size=64, p_interval=(0.95,), return_window=True)
    bias = ((1 - 0.95) * L / 2).floor().long()
    assert torch.equal(start, bias) and torch.equal(length, L - 2 * bias)
    # deterministic: no generator needed, identical on repeat
    assert torch.equal(out, T.crop_resize(x, L, size=64, p_interval=(0.95,)))


def test_crop_resize_seeded_and_validated(batch):
    x, L = batch
    a = T.crop_resize(x, L, generator=gen(3))
    assert torch.equal(a, T.crop_resize(x, L, generator=gen(3)))
    assert not torch.equal(a, T.crop_resize(x, L, generator=gen(4)))
    assert torch.equal(T.crop_resize(x, None, generator=gen(3)), a)  # lengths from valid_lengths
    with pytest.raises(ValueError, match="p_interval"):
        T.crop_resize(x, L, p_interval=(0.9, 0.5))
    with pytest.raises(ValueError, match="lengths"):
        T.crop_resize(x, L + 100)
    with pytest.raises(TypeError, match="lengths"):
        T.crop_resize(x, L.float())
    with pytest.raises(ValueError, match="x"):
        T.crop_resize(x[0, 0])


def test_resample_zero_length_and_batch_one():
    x = torch.randn(2, 3, 10, 5, generator=gen(0))
    out = T.resample(x, torch.tensor([0, 2]), torch.tensor([0, 1]), 4)
    assert out.shape == (2, 3, 4, 5) and torch.equal(out[0], torch.zeros(3, 4, 5))
    torch.testing.assert_close(out[1], x[1, :, 2:3].expand(3, 4, 5))  # one frame repeated (up to lerp rounding)
    one = T.crop_resize(x[:1], torch.tensor([10]), size=7, min_frames=4, generator=gen())
    assert one.shape == (1, 3, 7, 5)


# ------------------------------------------------------------------------------- SLiM
def test_mirror_twice_is_identity_and_mirror_is_a_reflection(batch):
    x, _ = batch
    m = T.slim_mirror(x, p=1.0)
    assert torch.equal(T.slim_mirror(m, p=1.0), x)
    perm = list(SkeletonGraph.ntu25().flip_permutation())
    assert torch.equal(m[:, 0], -x[:, 0][:, :, perm]) and torch.equal(m[:, 1:], x[:, 1:][:, :, :, perm])
    # a reflection keeps bone lengths (with swapped labels)
    torch.testing.assert_close(bone_lengths(m), bone_lengths(x)[:, :, perm])
    assert torch.equal(T.slim_mirror(x, p=0.0), x)


def test_mirror_probability_is_per_sample(batch):
    x, _ = batch
    m = T.slim_mirror(x, p=0.5, generator=gen(1))
    flipped = [not torch.equal(m[i], x[i]) for i in range(len(x))]
    assert 0 < sum(flipped) < len(x)


@pytest.mark.parametrize("device", DEVICES)
def test_rotations_preserve_bone_lengths(batch, device):
    x = batch[0].to(device)
    for rot in (T.slim_rotate(x, p=1.0, generator=gen(2)), T.random_rotate(x, generator=gen(2))):
        torch.testing.assert_close(bone_lengths(rot), bone_lengths(x), atol=2e-5, rtol=1e-5)
        assert not torch.allclose(rot, x)
        assert torch.equal(rot == 0, x == 0) or bool(((x == 0) <= (rot == 0)).all())


def test_slim_rotation_matrix_convention():
    # a unit x vector under R = Rz(g) Ry(b) Rx(a): with only b = 90°, x -> -z (right-handed about +y)
    x = torch.zeros(1, 3, 1, 1)
    x[0, 0] = 1.0
    g = gen(0)
    u = torch.rand((1, 4), generator=g)
    out = T.slim_rotate(x, p=1.0, vert_deg=180, tilt_deg=0, generator=gen(0))
    beta = math.radians(float((u[0, 1] * 2 - 1) * 180))
    torch.testing.assert_close(out[0, :, 0, 0], torch.tensor([math.cos(beta), 0.0, -math.sin(beta)]), atol=1e-6, rtol=0)


def test_bone_scale_preserves_directions_and_bounds_lengths(batch):
    x, L = batch
    g = SkeletonGraph.ntu25()
    out, s = T.bone_scale(x, p=1.0, generator=gen(5), return_scales=True)
    b0, b1 = T.to_bone(x), T.to_bone(out)
    n0, n1 = b0.norm(dim=1), b1.norm(dim=1)
    present = n0 > 1e-4
    cos = (b0 * b1).sum(1)[present] / (n0 * n1)[present]
    assert float(cos.min()) > 1 - 1e-5
    ratio = (n1 / n0.clamp_min(1e-12))[present]
    assert float(ratio.min()) >= 0.85 - 1e-4 and float(ratio.max()) <= 1.15 + 1e-4
    # one factor per body part, per sample and body, used by every bone of the part
    parts = torch.as_tensor(g.part_index())
    for p in range(5):
        sp = s[:, parts == p]
        assert torch.equal(sp, sp[:, :1].expand_as(sp))
    torch.testing.assert_close(n1, n0 * s[:, None], atol=1e-5, rtol=1e-4)
    # the root's trajectory is kept, padding stays zero
    assert torch.equal(out[:, :, :, g.center], x[:, :, :, g.center])
    assert torch.equal(valid_lengths(out), L)
    assert torch.equal(T.bone_scale(x, p=0.0), x) or torch.allclose(T.bone_scale(x, p=0.0), x, atol=1e-6)


def test_bone_scale_matches_topological_loop(batch):
    """Algorithm 4 of SLiM literally (root first, then joints in BFS order)."""
    x = batch[0][:3, :, :10, :, :1].squeeze(-1)
    g = SkeletonGraph.ntu25()
    out, s = T.bone_scale(x, p=1.0, generator=gen(9), return_scales=True)
    par = g.parents
    ref = torch.zeros_like(x)
    ref[:, :, :, g.center] = x[:, :, :, g.center]
    order, seen = [g.center], {g.center}
    while len(order) < g.V:
        for v in range(g.V):
            if v not in seen and par[v] in seen:
                order.append(v)
                seen.add(v)
    for v in order[1:]:
        ref[:, :, :, v] = ref[:, :, :, par[v]] + s[:, v, None, None] * (x[:, :, :, v] - x[:, :, :, par[v]])
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=1e-6)


def test_hierarchical_views_stay_inside_their_intervals(batch):
    x, L = batch
    v = T.hierarchical_views(x, L, generator=gen(11))
    assert [t.shape[2] for t in v.globals] == [64, 64]
    assert {k: [t.shape[2] for t in c] for k, c in v.locals.items()} == {32: [32, 32], 16: [16, 16], 8: [8, 8]}
    g1s, g1l = v.intervals["G1"]
    for name, (s, l) in v.intervals.items():
        assert bool((s >= 0).all()) and bool((s + l <= L).all()), name
        if name.startswith("G"):
            assert bool((l >= (0.5 * L).round().clamp_min(1)).all())
        else:
            assert bool((s >= g1s).all()) and bool((s + l <= g1s + g1l).all()), name
    s, l = v.intervals["L8_0"]
    torch.testing.assert_close(v.locals[8][0], T.resample(x, s, l, 8))
    assert torch.equal(T.hierarchical_views(x, L, generator=gen(11)).globals[1], v.globals[1])


# ------------------------------------------------------------------------------- PSTL
def test_reflect_pad_crop_matches_pstl_on_full_sequences():
    x = torch.randn(5, 3, 30, 25, 2, generator=gen(42))
    out = T.reflect_pad_crop(x, None, padding_ratio=6, generator=gen(4))
    P = 30 // 6
    padded = torch.cat([x[:, :, :P].flip(2), x, x[:, :, -P:].flip(2)], dim=2)  # PSTL's crop()
    starts = []
    for i in range(5):
        hits = [s for s in range(2 * P + 1) if torch.equal(padded[i, :, s:s + 30], out[i])]
        assert hits, i
        starts.append(hits[0])
    assert len(set(starts)) > 1  # per-sample offsets


def test_reflect_pad_crop_keeps_padding_and_stays_in_valid_frames(batch):
    x, L = batch
    out = T.reflect_pad_crop(x, L, generator=gen(1))
    assert torch.equal(valid_lengths(out) <= L, torch.ones_like(L, dtype=torch.bool))
    t = torch.arange(x.shape[2])
    assert bool((out.abs().sum((1, 3, 4))[t[None] >= L[:, None]] == 0).all())
    # every output frame is one of the sample's valid frames
    for i in range(3):
        frames = {tuple(x[i, :, f].flatten()[:6].tolist()) for f in range(int(L[i]))}
        assert all(tuple(out[i, :, f].flatten()[:6].tolist()) in frames for f in range(int(L[i])))


def test_shear_matches_pstl_einsum():
    x = torch.randn(4, 3, 6, 25, 2, generator=gen(42))
    out = T.shear(x, 0.5, generator=gen(6))
    u = torch.rand((4, 6), generator=gen(6)) * 2 - 1
    for i in range(4):
        s = u[i] * 0.5
        S = torch.tensor([[1, s[0], s[1]], [s[2], 1, s[3]], [s[4], s[5], 1]])
        torch.testing.assert_close(out[i], torch.einsum("ctvm,cd->dtvm", x[i], S), atol=1e-5, rtol=1e-5)


def test_pstl_rotation_is_the_transposed_matrices():
    x = torch.randn(3, 3, 4, 25, generator=gen(42))
    out = T.random_rotate(x, generator=gen(8))
    g = gen(8)
    main = (torch.rand((3,), generator=g) * 3).floor().clamp(max=2).long()
    u = torch.rand((3, 3), generator=g)
    for i in range(3):
        seq = x[i].permute(1, 2, 0)  # T, V, C as PSTL
        for axis in range(3):
            a = math.radians(float(u[i, axis]) * (30.0 if axis == int(main[i]) else 1.0))
            c, s = math.cos(a), math.sin(a)
            R = {0: [[1, 0, 0], [0, c, s], [0, -s, c]], 1: [[c, 0, -s], [0, 1, 0], [s, 0, c]],
                 2: [[c, s, 0], [-s, c, 0], [0, 0, 1]]}[axis]
            seq = seq @ torch.tensor(R).T
        torch.testing.assert_close(out[i], seq.permute(2, 0, 1), atol=1e-5, rtol=1e-5)


def test_pstl_flip_swaps_indices_only(batch):
    x, _ = batch
    out = T.random_flip(x, p=1.0)
    perm = list(SkeletonGraph.ntu25().flip_permutation())
    assert torch.equal(out, x[:, :, :, perm])


def test_pstl_augment_shapes_padding_and_seed(batch):
    x, L = batch
    a = T.pstl_augment(x, L, generator=gen(0))
    assert a.shape == x.shape and torch.isfinite(a).all()
    assert bool((valid_lengths(a) <= L).all())
    assert torch.equal(a, T.pstl_augment(x, L, generator=gen(0)))


# ------------------------------------------------------------------------------- streams and checks
def test_bone_and_motion_streams(batch):
    x, L = batch
    b = T.to_bone(x)
    par = SkeletonGraph.ntu25().parents
    assert torch.equal(b[:, :, :, 20], torch.zeros_like(b[:, :, :, 20]))
    assert torch.equal(b[:, :, :, 3], x[:, :, :, 3] - x[:, :, :, par[3]])
    m = T.to_motion(x, L)
    i = 0
    l0 = int(L[i])
    assert torch.equal(m[i, :, : l0 - 1], x[i, :, 1:l0] - x[i, :, : l0 - 1])
    assert torch.equal(m[i, :, l0 - 1:], torch.zeros_like(m[i, :, l0 - 1:]))  # no jump into the padding
    assert torch.equal(T.to_motion(x), m)


def test_other_graph_and_argument_errors():
    x = torch.randn(2, 3, 8, 18, generator=gen(42))
    assert T.slim_mirror(x, p=1.0, graph="openpose18").shape == x.shape
    assert T.bone_scale(x, p=1.0, graph="openpose18", generator=gen()).shape == x.shape
    with pytest.raises(ValueError, match="V=18"):
        T.slim_mirror(x, graph="ntu25")
    with pytest.raises(ValueError, match="C=3"):  # C=2 is 2-D (in-plane); C=4 has no layout
        T.slim_rotate(torch.randn(2, 4, 8, 25, generator=gen(42)))
    with pytest.raises(ValueError, match="p"):
        T.slim_mirror(torch.randn(2, 3, 8, 25, generator=gen(42)), p=1.5)
    with pytest.raises(TypeError, match="x"):
        T.to_bone(x.numpy())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_same_result_on_cuda_with_a_cpu_generator(batch):
    x, L = batch
    for fn in (lambda t, l: T.crop_resize(t, l, generator=gen(1)),
               lambda t, l: T.slim_rotate(t, p=1.0, generator=gen(1)),
               lambda t, l: T.bone_scale(t, p=1.0, generator=gen(1)),
               lambda t, l: T.pstl_augment(t, l, generator=gen(1))):
        torch.testing.assert_close(fn(x.cuda(), L.cuda()).cpu(), fn(x, L), atol=1e-5, rtol=1e-5)
