"""2-D keypoints with confidence: geometric augmentations act on the spatial channels only, the
``channels`` setting of every method config, the ``score`` option, SLiM's mirror without L/R
pairs, ASMa on rigs with V < 9, 1-body CTR-GCN .npz files, distill/export --test-data."""
import math
import pickle
import warnings

import numpy as np
import pytest
import torch
import yaml

from fastskel.cli import main
from fastskel.data import SyntheticSkeletons
from fastskel.data import transforms as T
from fastskel.data.channels import apply_score, resolve_channels
from fastskel.data.formats import read_ctrgcn_npz, write_ctrgcn_npz
from fastskel.graph import SkeletonGraph


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def xys():
    """(N, 3, T, V, M) x, y, score on COCO-17 with zero-padded frames and an absent body."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(4, 3, 10, 17, 2, generator=g)
    x[:, 2] = torch.rand(4, 10, 17, 2, generator=g) * 0.5 + 0.5
    x[:, :, 7:] = 0
    x[1, :, :, :, 1] = 0
    return x


GEOMETRIC = {
    "shear": lambda x, ch, s: T.shear(x, 0.5, generator=gen(s), channels=ch),
    "random_rotate": lambda x, ch, s: T.random_rotate(x, generator=gen(s), channels=ch),
    "slim_rotate": lambda x, ch, s: T.slim_rotate(x, 1.0, generator=gen(s), channels=ch),
    "bone_scale": lambda x, ch, s: T.bone_scale(x, p=1.0, graph="coco17", generator=gen(s), channels=ch),
    "slim_mirror": lambda x, ch, s: T.slim_mirror(x, 1.0, graph="coco17", generator=gen(s), channels=ch),
}


@pytest.mark.parametrize("name", sorted(GEOMETRIC))
def test_score_channel_passes_through_geometric_transforms(xys, name):
    fn = GEOMETRIC[name]
    out = fn(xys, "xy+score", 1)
    perm = list(SkeletonGraph.get("coco17").flip_permutation())
    score = xys[:, 2][:, :, perm] if name == "slim_mirror" else xys[:, 2]
    torch.testing.assert_close(out[:, 2], score, rtol=0, atol=0)     # the score is never z
    torch.testing.assert_close(out[:, :2], fn(xys[:, :2].contiguous(), "xy", 1))  # (x, y) as pure 2-D
    assert (out[:, :, 7:] == 0).all() and (out[1, :, :, :, 1] == 0).all()       # padding stays zero


def test_2d_rotations_stay_in_the_image_plane(xys):
    xy = xys[:, :2].contiguous()
    for out in (T.random_rotate(xy, generator=gen(2)), T.slim_rotate(xy, 1.0, generator=gen(2))):
        torch.testing.assert_close(out.norm(dim=1), xy.norm(dim=1))  # a rotation about the image normal
    # slim_rotate's in-plane angle is its 3-D draw's gamma, within +-tilt
    e = torch.zeros(1, 2, 1, 1)
    e[0, 0] = 1.0
    out = T.slim_rotate(e, 1.0, tilt_deg=30.0, generator=gen(5))
    assert abs(math.degrees(math.atan2(float(out[0, 1]), float(out[0, 0])))) <= 30.0 + 1e-4


def test_xyz_unchanged_and_bad_layouts(xys):
    x = torch.randn(3, 3, 6, 25, generator=gen(1))
    for f in (T.shear, T.random_rotate):
        torch.testing.assert_close(f(x, generator=gen(4)), f(x, generator=gen(4), channels="xyz"))
    with pytest.raises(ValueError, match="C=2"):
        T.shear(torch.randn(2, 3, 4, 25), channels="xy")
    with pytest.raises(ValueError, match="channels"):
        T.random_rotate(x, channels="uvw")


def test_pstl_and_asma_augment_keep_the_score(xys):
    from fastskel.methods.asma import augment

    g = SkeletonGraph.get("coco17")
    out = augment(xys, g, padding_ratio=6, flip_prob=0.0, generator=gen(7), channels="xy+score")
    full = torch.full((4,), 10, dtype=torch.int64)
    crop = T.reflect_pad_crop(xys, full, 6, generator=gen(7))  # the first draw of the same generator
    torch.testing.assert_close(out[:, 2], crop[:, 2], rtol=0, atol=0)


def test_slim_augment_and_centring_keep_the_score(xys):
    from fastskel.methods.slim import SLiM, SLiMConfig

    cfg = SLiMConfig(in_channels=3, channels="xy+score", num_joints=17, graph="coco17", frames=8, local_frames=(8,),
                     local_scales=((0.3, 0.6),), local_crops=1, frames_per_patch=4, dim=16, depth=1, heads=2,
                     mlp_dim=16, num_registers=1, num_prototypes=16, head_hidden_dim=16, head_bottleneck_dim=8)
    m = SLiM(cfg)
    bodies, _, _ = m._actions(xys, None)
    score = xys.permute(0, 4, 1, 2, 3).reshape(8, 3, 10, 17)[:, 2]
    torch.testing.assert_close(bodies[:, 2], score, rtol=0, atol=0)  # centring moves (x, y) only
    aug = m._augment(bodies, gen(0))
    flipped = aug[:, 2] != bodies[:, 2]
    perm = list(SkeletonGraph.get("coco17").flip_permutation())
    assert torch.equal(torch.where(flipped, bodies[:, 2][:, :, perm], bodies[:, 2]), aug[:, 2])


@pytest.mark.parametrize("cls", ["ASMaConfig", "SLiMConfig", "AMRConfig", "MAMPConfig", "SupervisedConfig"])
def test_every_config_has_channels(cls):
    import fastskel.methods.amr as amr
    import fastskel.methods.asma as asma
    import fastskel.methods.slim as slim
    import fastskel.methods.supervised as sup

    C = {m.__name__.split(".")[-1]: m for m in (amr, asma, slim, sup)}
    mod = {"ASMaConfig": "asma", "SLiMConfig": "slim", "AMRConfig": "amr", "MAMPConfig": "amr",
           "SupervisedConfig": "supervised"}[cls]
    cfg_cls = getattr(C[mod], cls)
    assert cfg_cls().channels == "" and cfg_cls(in_channels=3, channels="xy+score").channels == "xy+score"
    with pytest.raises(ValueError, match=r"channels: 'xyz' needs C=3.*C=2"):
        cfg_cls(in_channels=2, channels="xyz")
    with pytest.raises(ValueError, match="channels"):
        cfg_cls(channels="rgb")


def test_resolve_channels_and_apply_score():
    assert (resolve_channels(None, 3), resolve_channels("", 2), resolve_channels("xy+score", 3)) == ("xyz", "xy", "xy+score")
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0], [0.0, 0.6]]).reshape(1, 3, 1, 2)
    w, ch = apply_score(x, "xy+score", "weight")
    assert ch == "xy" and w.tolist() == [[[[0.0, 2.0]], [[0.0, 4.0]]]]  # score 0 -> joint zeroed
    w, _ = apply_score(x, "xy+score", "weight", threshold=0.7)
    assert (w == 0).all()
    i, ch = apply_score(x, "xy+score", "ignore")
    assert ch == "xy" and torch.equal(i, x[:, :2])
    assert apply_score(x, "xy+score", "channel")[0] is x
    with pytest.raises(ValueError, match="no score channel"):
        apply_score(x, "xyz", "weight")


TINY_SUP = ["--set", "backbone=tiny", "--set", "hidden=4", "--set", "depth=1"]
XYS = "synthetic:graph=coco17,channels=xy+score,num_samples=12,T=8,num_classes=2,bodies=1"


def _run(tmp_path, *args):
    return main(["pretrain", *args, "--epochs", "1", "--batch-size", "4", "--no-progress", "--device", "cpu",
                 "--out", str(tmp_path)])


def test_cli_channels_from_data_score_option_and_contradictions(tmp_path, capsys):
    assert _run(tmp_path / "a", "supervised", "--data", XYS, *TINY_SUP) == 0
    ck = torch.load(tmp_path / "a" / "last.pt", weights_only=True)
    assert ck["config"]["channels"] == "xy+score" and ck["config"]["in_channels"] == 3
    assert _run(tmp_path / "b", "supervised", "--data", XYS, "--score", "weight", *TINY_SUP) == 0
    ck = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    assert ck["config"]["channels"] == "xy" and ck["config"]["in_channels"] == 2
    capsys.readouterr()
    assert _run(tmp_path / "c", "supervised", "--data", XYS, "--set", "channels=xyz", *TINY_SUP) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "declares 'xy+score'" in err
    from fastskel.data import SkeletonData

    xy = SyntheticSkeletons(num_classes=2, num_samples=12, T=8, bodies=1, graph="coco17", channels="xy")
    plain = SkeletonData(xy.x, xy.y)  # a C=2 file that declares no layout name
    write_ctrgcn_npz(str(tmp_path / "xy.npz"), plain, plain)
    xy = str(tmp_path / "xy.npz")
    assert _run(tmp_path / "d", "supervised", "--data", xy, "--set", "channels=xyz", *TINY_SUP) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "channels: 'xyz' needs C=3" in err
    assert _run(tmp_path / "e", "supervised", "--data", xy, "--score", "weight", *TINY_SUP) == 2
    assert "no score channel" in capsys.readouterr().err


def test_slim_mirror_without_lr_pairs_is_disabled_with_one_warning():
    g = SkeletonGraph.from_dict({"edges": [[0, 1], [1, 2], [1, 3], [3, 4]], "center": 1, "name": "nopairs"})
    x = torch.randn(3, 3, 5, 5, generator=gen(0))
    with pytest.warns(UserWarning, match="no lr_pairs, mirroring is disabled"):
        out = T.slim_mirror(x, 1.0, graph=g, generator=gen(0))
    assert torch.equal(out, x)  # not negated without relabelling
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        T.slim_mirror(x, 1.0, graph=g, generator=gen(0))  # once per graph


RIG7 = {"edges": [[0, 1], [1, 2], [2, 3], [1, 4], [4, 5], [1, 6]], "center": 1,
        "lr_pairs": [[2, 4], [3, 5]]}
TINY_ASMA = ["--set", "num_frames=8", "--set", "hidden_channels=4", "--set", "depth=1", "--set", "out_dim=8",
             "--set", "projector_dims=[16]", "--set", "frame_mask_k=2", "--set", "warmup_epochs=0"]


def test_asma_rig_with_fewer_than_nine_joints_from_the_cli(tmp_path):
    rig = tmp_path / "rig7.yaml"
    rig.write_text(yaml.safe_dump(RIG7))
    data = f"synthetic:graph={rig},num_samples=8,T=8,num_classes=2,bodies=1"
    assert _run(tmp_path / "a", "asma", "--data", data, "--graph", str(rig), "--set", "joint_mask_n=4", *TINY_ASMA) == 0
    assert torch.load(tmp_path / "a" / "last.pt", weights_only=True)["config"]["joint_mask_n"] == 4
    assert _run(tmp_path / "b", "asma", "--data", data, "--graph", str(rig), *TINY_ASMA) == 0
    assert torch.load(tmp_path / "b" / "last.pt", weights_only=True)["config"]["joint_mask_n"] == 3  # round(9*7/25)
    from fastskel.methods.asma import ASMaConfig

    assert ASMaConfig().joint_mask_n == 9 and ASMaConfig(num_joints=17, graph="coco17").joint_mask_n == 6
    with pytest.raises(ValueError, match="at most num_joints=7"):
        ASMaConfig(num_joints=7, graph=RIG7, joint_mask_n=8)


def _flat(d):
    n, c, t, v, m = d.x.shape
    return d.x.numpy().transpose(0, 2, 4, 3, 1).reshape(n, t, m * v * c)


def test_one_body_npz(tmp_path):
    g = SkeletonGraph.from_dict({"edges": [[i, i + 1] for i in range(15)], "center": 0})
    kw = dict(num_classes=2, num_samples=8, T=6, bodies=1, graph=g)
    tr, te = SyntheticSkeletons(split="train", **kw), SyntheticSkeletons(split="test", **kw)
    y = lambda d: np.eye(2, dtype=np.float32)[d.y.numpy()]  # noqa: E731
    p = tmp_path / "m1.npz"  # F = 1 body x 16 joints x 3 = 48 = 2 x 8 x 3: ambiguous without help
    np.savez(p, x_train=_flat(tr), y_train=y(tr), x_test=_flat(te), y_test=y(te))
    with pytest.raises(ValueError, match=r"ambiguous \(M=2 x V=8 or M=1 x V=16\).*num_joints=.*num_bodies="):
        read_ctrgcn_npz(str(p))
    for opt in ({"num_joints": 16}, {"num_bodies": 1}):
        got = read_ctrgcn_npz(str(p), "test", **opt)
        np.testing.assert_array_equal(got.x.numpy(), te.x.numpy())
    with pytest.raises(ValueError, match="V=16, C=3, M=2"):
        read_ctrgcn_npz(str(p), num_joints=16, num_bodies=2)
    # fastskel's writer records [C, V, M]: reads back exactly with no options; options contradicting it fail
    q = tmp_path / "w.npz"
    write_ctrgcn_npz(str(q), tr, te, channels="xyz")
    got = read_ctrgcn_npz(str(q), "test")
    np.testing.assert_array_equal(got.x.numpy(), te.x.numpy())
    assert got.meta["channels"] == "xyz"
    with pytest.raises(ValueError, match="contradicts"):
        read_ctrgcn_npz(str(q), num_joints=8)
    # unambiguous widths: a built-in V (COCO-17, 1 body), or one split only (odd width / C)
    for v, m in ((17, 1), (7, 1)):
        np.savez(tmp_path / "u.npz", x_train=np.ones((2, 3, m * v * 3), np.float32), y_train=np.array([0, 1]))
        assert read_ctrgcn_npz(str(tmp_path / "u.npz")).x.shape[3:] == (v, m)
    # from the CLI: --graph gives V to the reader
    rig = tmp_path / "line16.yaml"
    rig.write_text(yaml.safe_dump(g.to_dict()))
    assert _run(tmp_path / "r", "supervised", "--data", str(p), "--graph", str(rig), *TINY_SUP) == 0
    assert main(["eval", "knn", "--checkpoint", str(tmp_path / "r" / "last.pt"), "--data", str(p), "--k", "1"]) == 0


def test_distill_and_export_take_test_data(tmp_path, capsys):
    d = tmp_path
    for part, split in (("train", "train"), ("holdout", "test")):
        ds = SyntheticSkeletons(num_classes=2, num_samples=16, T=8, bodies=1, split=split)
        np.save(d / f"{part}_data_joint.npy", ds.x.numpy())
        with open(d / f"{part}_label.pkl", "wb") as f:
            pickle.dump(([f"{part}{i}" for i in range(len(ds))], ds.y.tolist()), f)
    tr, ho = str(d / "train_data_joint.npy"), str(d / "holdout_data_joint.npy")
    assert _run(d / "a", "asma", "--data", tr, *TINY_ASMA, "--set", "joint_mask_n=2") == 0
    capsys.readouterr()
    ck = str(d / "a" / "last.pt")
    assert main(["distill", "--teacher", ck, "--data", tr, "--epochs", "1", "--batch-size", "4",
                 "--teacher-epochs", "1", "--student-blocks", "1", "--no-progress", "--out", str(d / "d")]) == 2
    assert "--test-data" in capsys.readouterr().err  # no val_ file beside the training file: refused
    assert main(["distill", "--teacher", ck, "--data", tr, "--test-data", ho, "--epochs", "1", "--batch-size", "4",
                 "--teacher-epochs", "1", "--student-blocks", "1", "--no-progress", "--out", str(d / "d")]) == 0
    assert "distill student top-1 accuracy" in capsys.readouterr().out
    assert main(["export", "--checkpoint", ck, "--num-classes", "2", "--data", tr, "--test-data", ho,
                 "--formats", "torchscript", "--runs", "1", "--out", str(d / "x")]) == 0


def test_read_pyskl_score_weight(tmp_path):
    from fastskel.data.formats import read_pyskl

    kp = np.arange(2 * 3 * 17 * 2, dtype=np.float32).reshape(2, 3, 17, 2) + 1
    sc = np.full((2, 3, 17), 0.9, np.float32)
    sc[0, 1, 4] = 0.2
    with open(tmp_path / "p.pkl", "wb") as f:
        pickle.dump({"split": {"train": ["a"]}, "annotations": [
            {"frame_dir": "a", "label": 0, "keypoint": kp, "keypoint_score": sc, "total_frames": 3}]}, f)
    d = read_pyskl(str(tmp_path / "p.pkl"), score="weight", score_threshold=0.5)
    assert d.x.shape[1] == 2 and d.meta["channels"] == "xy"
    assert (d.x[0, :, 1, 4, 0] == 0).all() and d.x[0, 0, 1, 5, 0] == kp[0, 1, 5, 0]
    assert (d.x != 0).sum() == kp.size - 2


# ---------------------------------------------------------------- bone / motion streams of x, y, score
def _pyskl_bone_motion(x, parents):
    """PYSKL's JointToBone / ToMotion for (x, y, score) on (N, C, T, V), written out per joint/frame."""
    n, c, t, v = x.shape
    bone = torch.zeros_like(x)
    for j in range(v):
        p = parents[j]
        bone[:, :2, :, j] = x[:, :2, :, j] - x[:, :2, :, p]
        bone[:, 2, :, j] = (x[:, 2, :, j] + x[:, 2, :, p]) / 2
    motion = torch.zeros_like(x)
    for f in range(t - 1):
        motion[:, :2, f] = x[:, :2, f + 1] - x[:, :2, f]
        motion[:, 2, f] = (x[:, 2, f + 1] + x[:, 2, f]) / 2
    return bone, motion


def test_bone_and_motion_streams_average_the_score_like_pyskl():
    from fastskel.data.transforms import to_bone, to_motion
    from fastskel.graph import SkeletonGraph
    from fastskel.methods.asma import to_stream

    g = SkeletonGraph.get("coco17")
    x = torch.randn(3, 3, 9, 17, generator=gen(4))
    x[:, 2] = x[:, 2].abs()
    parents = g.parents.tolist() if hasattr(g.parents, "tolist") else list(g.parents)
    bone, motion = _pyskl_bone_motion(x, parents)
    full = torch.full((3,), 9)
    torch.testing.assert_close(to_bone(x, g, channels="xy+score"), bone)
    torch.testing.assert_close(to_motion(x, full, channels="xy+score"), motion)
    torch.testing.assert_close(to_stream(x, "bone", g, "xy+score"), bone)
    torch.testing.assert_close(to_stream(x, "motion", g, "xy+score"), motion)
    # xy / xyz keep plain differences on every channel
    assert torch.equal(to_bone(x, g)[:, 2], x[:, 2] - x[:, 2][..., parents])
