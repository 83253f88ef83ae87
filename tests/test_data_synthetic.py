"""SyntheticSkeletons, valid_lengths, SkeletonDataset and the loader recipe."""
import pytest
import torch

from fastskel.data import SkeletonDataset, SyntheticSkeletons, make_loader, set_loader_epoch, valid_lengths
from fastskel.data.synthetic import ntu25_rest_pose
from fastskel.data.transforms import to_bone
from fastskel.graph import SkeletonGraph


@pytest.fixture(scope="module")
def small():
    return SyntheticSkeletons(num_classes=6, num_samples=60, T=40, seed=3)


def test_shapes_dtypes_and_lengths(small):
    ds = small
    assert ds.x.shape == (60, 3, 40, 25, 2) and ds.x.dtype == torch.float32
    assert ds.y.dtype == torch.int64 and ds.lengths.dtype == torch.int64
    assert torch.equal(valid_lengths(ds.x), ds.lengths)
    assert int(ds.lengths.min()) >= 20 and int(ds.lengths.max()) <= 40
    assert torch.isfinite(ds.x).all()
    # zero padding after the valid length, data inside it
    t = torch.arange(40)
    pad = t[None] >= ds.lengths[:, None]
    assert (ds.x.abs().sum((1, 3, 4))[pad] == 0).all()
    assert (ds.x[..., 0].abs().sum((1, 3))[~pad] > 0).all()
    # balanced labels, item protocol
    assert torch.bincount(ds.y, minlength=6).tolist() == [10] * 6
    x, length, label = ds[5]
    assert x.shape == (3, 40, 25, 2) and int(length) == int(ds.lengths[5]) and int(label) == int(ds.y[5])
    # body 2 only in interaction classes
    has2 = (ds.x[..., 1] != 0).flatten(1).any(1)
    inter = torch.tensor([int(c) in ds.interaction_classes for c in ds.y])
    assert torch.equal(has2, inter)


def test_seeded_and_class_structure():
    a = SyntheticSkeletons(num_classes=4, num_samples=12, T=24, seed=1)
    b = SyntheticSkeletons(num_classes=4, num_samples=12, T=24, seed=1)
    c = SyntheticSkeletons(num_classes=4, num_samples=12, T=24, seed=2)
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert not torch.equal(a.x, c.x)
    assert a.class_groups == c.class_groups  # classes depend on class_seed only
    d = SyntheticSkeletons(num_classes=4, num_samples=12, T=24, seed=1, class_seed=5)
    assert not torch.equal(a.x, d.x)


def test_bone_lengths_are_an_adult_skeleton_scaled_per_subject():
    ds = SyntheticSkeletons(num_classes=4, num_samples=16, T=20, bodies=1, seed=0, noise=0.0)
    g = SkeletonGraph.ntu25()
    rest = torch.tensor(ntu25_rest_pose(), dtype=torch.float32)
    rest_len = (rest - rest[list(g.parents)]).norm(dim=1)  # st-gcn tree bones
    bl = to_bone(ds.x[..., 0]).norm(dim=1)  # (N, T, V)
    valid = torch.arange(20)[None] < ds.lengths[:, None]
    # rigid bones: constant over time, 0.85*0.95 .. 1.15*1.05 of the rest length (FK tree = graph tree
    # except around the root, so compare only bones whose FK parent is the graph parent)
    for v in range(25):
        if v == g.center or rest_len[v] == 0:
            continue
        lens = bl[..., v][valid]
        ratio = lens / rest_len[v]
        assert float(ratio.min()) > 0.8 - 1e-4 and float(ratio.max()) < 1.21 + 1e-4, v
    height = (ds.x[:, 1, :, 3, 0] - ds.x[:, 1, :, 15, 0])[valid]  # head above left foot
    assert 1.2 < float(height.median()) < 2.0


def test_split_partitions_stratified():
    full = SyntheticSkeletons(num_classes=5, num_samples=50, T=16, seed=0)
    tr = SyntheticSkeletons(num_classes=5, num_samples=50, T=16, seed=0, split="train", test_fraction=0.2)
    te = SyntheticSkeletons(num_classes=5, num_samples=50, T=16, seed=0, split="test", test_fraction=0.2)
    assert len(tr) == 40 and len(te) == 10
    assert torch.bincount(te.y, minlength=5).tolist() == [2] * 5
    assert set(tr.names).isdisjoint(te.names) and set(tr.names) | set(te.names) == set(full.names)
    both = torch.cat([tr.x, te.x])
    assert sorted(map(tuple, both.flatten(1)[:, :5].tolist())) == sorted(map(tuple, full.x.flatten(1)[:, :5].tolist()))


def test_other_graph_and_single_body():
    ds = SyntheticSkeletons(num_classes=3, num_samples=9, T=16, graph="openpose18", bodies=1, seed=0)
    assert ds.x.shape == (9, 3, 16, 18, 1)
    assert torch.equal(valid_lengths(ds.x), ds.lengths)


@pytest.mark.parametrize("kw, match", [({"num_classes": 1}, "num_classes"), ({"bodies": 3}, "bodies"),
                                       ({"split": "val"}, "split"), ({"T": 0}, "T"),
                                       ({"min_length": 100}, "min_length")])
def test_bad_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        SyntheticSkeletons(**{"num_samples": 4, "T": 8, **kw})


def test_valid_lengths_rules():
    x = torch.zeros(3, 3, 7, 4, 2)
    x[0, :, :5] = 1.0
    x[1, 0, 2, 1, 1] = -2.0  # only the second body, frame 2
    x[0, :, 1] = 0.0         # an interior zero frame does not shorten the sequence
    assert valid_lengths(x).tolist() == [5, 3, 0]
    assert valid_lengths(x[..., 0]).tolist() == [5, 0, 0]
    assert valid_lengths(x.numpy()).tolist() == [5, 3, 0]
    x[2, 1, 6, 0, 0] = float("nan")
    assert valid_lengths(x).tolist() == [5, 3, 7]
    with pytest.raises(ValueError, match="x"):
        valid_lengths(torch.zeros(3, 4, 5))


def test_loader_recipe_batches_and_determinism(small):
    ld = make_loader(small, batch_size=16, shuffle=True, seed=7)
    batches = list(ld)
    assert len(batches) == 4
    x, lengths, y = batches[0]
    assert x.shape == (16, 3, 40, 25, 2) and lengths.shape == (16,) and y.shape == (16,)
    seen = torch.cat([b[2] for b in batches])
    assert sorted(seen.tolist()) == sorted(small.y.tolist())
    # same (seed, epoch) -> same order; another epoch -> another order
    again = [b[1] for b in make_loader(small, 16, True, 7)]
    assert all(torch.equal(a, b[1]) for a, b in zip(again, batches))
    set_loader_epoch(ld, 1)
    other = [b[1] for b in ld]
    assert not all(torch.equal(a, b[1]) for a, b in zip(other, batches))
    # items and batches agree
    idx = [3, 1, 4]
    xb, lb, yb = small[idx]
    assert torch.equal(xb[1], small[1][0]) and lb.tolist() == [int(small.lengths[i]) for i in idx]
    # non-shuffled covers in order, drop_last
    ys = torch.cat([b[2] for b in make_loader(small, 25, shuffle=False, drop_last=True)])
    assert torch.equal(ys, small.y[:50])


def test_dataset_validation_and_transform_hook():
    with pytest.raises(ValueError, match="y"):
        SkeletonDataset(torch.zeros(4, 3, 5, 25, 1), torch.zeros(3))
    with pytest.raises(TypeError, match="x"):
        SkeletonDataset(torch.zeros(4, 3, 5, 25, 1, dtype=torch.int64), torch.zeros(4))
    ds = SkeletonDataset(torch.ones(4, 3, 5, 25), torch.arange(4), transform=lambda x, l: x * 2)
    assert ds.x.shape == (4, 3, 5, 25, 1) and ds.lengths.tolist() == [5] * 4
    assert float(ds[0][0].max()) == 2.0 and float(ds[[0, 1]][0].max()) == 2.0


def _ridge_probe(train, test, lam=10.0):
    xtr, xte = train.x.flatten(1).double(), test.x.flatten(1).double()
    mu, sd = xtr.mean(0), xtr.std(0) + 1e-6
    xtr, xte = (xtr - mu) / sd, (xte - mu) / sd
    Y = torch.nn.functional.one_hot(train.y, train.num_classes).double()
    alpha = torch.linalg.solve(xtr @ xtr.T + lam * torch.eye(len(xtr), dtype=torch.float64), Y)
    pred = (xte @ (xtr.T @ alpha)).argmax(1)
    return float((pred == test.y).double().mean())


def test_linear_probe_on_raw_input_beats_chance_but_is_not_trivial():
    kw = dict(num_classes=10, num_samples=300, T=48, seed=0)
    acc = _ridge_probe(SyntheticSkeletons(split="train", **kw), SyntheticSkeletons(split="test", **kw))
    # chance is 0.10: well above it, far from solved (tempo-variant classes share their mean pose)
    assert 0.25 < acc < 0.85, acc


def _classifier(num_classes):
    try:
        from fastskel.nn.stgcn import STGCN
    except ImportError:  # fastskel.nn not available: a small temporal conv net over flattened joints
        STGCN = None
    if STGCN is not None:
        enc = STGCN(3, hidden_channels=16, out_dim=32, depth=4, dropout=0.0, strides=[1, 2, 1, 2])
        return torch.nn.Sequential(enc, torch.nn.Linear(enc.out_dim, num_classes)), "STGCN"
    net = torch.nn.Sequential(
        torch.nn.Conv1d(3 * 25, 64, 5, padding=2), torch.nn.BatchNorm1d(64), torch.nn.ReLU(),
        torch.nn.Conv1d(64, 64, 5, padding=4, dilation=2, stride=2), torch.nn.BatchNorm1d(64), torch.nn.ReLU(),
        torch.nn.Conv1d(64, 64, 5, padding=4, dilation=2, stride=2), torch.nn.BatchNorm1d(64), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool1d(1), torch.nn.Flatten(), torch.nn.Linear(64, num_classes))

    class Conv(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x):  # (N, C, T, V, 1) -> (N, C*V, T)
            return self.net(x[..., 0].permute(0, 1, 3, 2).flatten(1, 2))

    return Conv(), "conv"


def test_small_supervised_model_reaches_high_accuracy(one_thread):
    torch.manual_seed(0)
    kw = dict(num_classes=6, num_samples=300, T=48, bodies=1, seed=0)
    tr, te = SyntheticSkeletons(split="train", **kw), SyntheticSkeletons(split="test", **kw)
    model, kind = _classifier(6)
    lr, epochs = (1e-2, 10) if kind == "STGCN" else (3e-3, 15)
    opt = torch.optim.Adam(model.parameters(), lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs) if kind == "conv" else None
    for epoch in range(epochs):
        model.train()
        for x, _, y in make_loader(tr, 40, shuffle=True, seed=epoch):
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        if sched is not None:
            sched.step()
    model.eval()
    with torch.no_grad():
        acc = float((model(te.x).argmax(1) == te.y).double().mean())
    assert acc >= 0.85, (kind, acc)
