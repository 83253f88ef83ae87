"""Evaluation protocols: kNN, linear probe, semi-supervised subsets, fine-tuning, feature extraction."""
import pytest
import torch

from fastskel.data import SkeletonDataset
from fastskel.engine.evaluate import (FinetuneConfig, extract_features, finetune, knn_accuracy, linear_probe,
                                      semi_subset, top1)
from fastskel.engine.trainer import TrainOptions
from fastskel.methods.supervised import Supervised, SupervisedConfig


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def test_knn_cosine_hand_computed():
    train = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    ty = torch.tensor([0, 1, 2])
    # cosine ignores the norm: [10, 1] is nearest to [1, 0]; [-1, 5] to [0, 1]; [-3, -1] to [-1, 0]
    test = torch.tensor([[10.0, 1.0], [-1.0, 5.0], [-3.0, -1.0], [0.1, 1.0]])
    assert knn_accuracy(train, ty, test, torch.tensor([0, 1, 2, 1])) == 100.0
    assert knn_accuracy(train, ty, test, torch.tensor([0, 1, 0, 0])) == 50.0
    # k=3 majority vote: two neighbours of class 1 outvote the nearest (class 0)
    train3 = torch.tensor([[1.0, 0.0], [0.9, 0.5], [0.8, 0.6], [-1.0, 0.0]])
    assert knn_accuracy(train3, torch.tensor([0, 1, 1, 0]), torch.tensor([[1.0, 0.05]]), torch.tensor([1]), k=3) == 100.0
    with pytest.raises(ValueError, match="k"):
        knn_accuracy(train, ty, test, ty[:1].repeat(4), k=4)


def test_linear_probe_separable_blobs():
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(4, 16, generator=g) * 3
    y = torch.arange(200) % 4
    x = centers[y] + torch.randn(200, 16, generator=g) + 50.0       # a large offset: standardisation handles it
    res = linear_probe(x[:160], y[:160], x[160:], y[160:], epochs=30, seed=0)
    assert res.top1 >= 95.0
    assert res.head.out_features == 4 and res.mean.shape == (16,)
    again = linear_probe(x[:160], y[:160], x[160:], y[160:], epochs=30, seed=0)
    assert torch.equal(again.head.weight, res.head.weight)          # seeded
    assert top1(torch.tensor([0, 1, 1]), torch.tensor([0, 1, 0])) == pytest.approx(200 / 3)


def test_semi_subset_stratified_seeded():
    y = torch.cat([torch.full((n,), c) for c, n in enumerate([300, 50, 7])])
    idx = semi_subset(y, 0.1, seed=0)
    counts = torch.bincount(y[idx], minlength=3).tolist()
    assert counts == [30, 5, 1]
    assert torch.bincount(y[semi_subset(y, 0.01, seed=0)], minlength=3).tolist() == [3, 1, 1]
    assert torch.equal(idx, semi_subset(y, 0.1, seed=0)) and not torch.equal(idx, semi_subset(y, 0.1, seed=1))
    assert len(set(idx.tolist())) == len(idx)
    with pytest.raises(ValueError, match="fraction"):
        semi_subset(y, 0.0)


def _blobs(n=48, k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % k
    x = torch.randn(n, 3, 8, 25, 1, generator=g) * 0.3 + 1.0
    wave = torch.sin(torch.arange(8) * (2 * torch.pi / 8)).view(1, 8, 1, 1)
    x[:, 1] += y.view(n, 1, 1, 1).float() * 1.5 * wave                 # class = amplitude of a vertical bob
    return SkeletonDataset(x, y)


def test_extract_features_and_finetune(tmp_path):
    torch.manual_seed(0)
    enc = Supervised(SupervisedConfig(num_classes=3, backbone="tiny", hidden=8, depth=1, kernel=3))
    ds = _blobs()
    enc.train()
    f1, y1 = extract_features(enc, ds, batch_size=16)
    f2, _ = extract_features(enc, ds, batch_size=7)
    assert f1.shape == (48, 8) and torch.equal(y1, ds.y) and enc.training   # mode restored
    torch.testing.assert_close(f1, f2)
    cfg = FinetuneConfig(num_classes=3, epochs=15, batch_size=12, lr=1e-2, warmup_epochs=1)
    acc, clf = finetune(enc, ds, _blobs(seed=1), cfg, TrainOptions(progress=False, device="cpu", log_every=4))
    assert acc >= 90.0
    assert not torch.equal(clf.encoder.backbone.convs[0].weight, enc.backbone.convs[0].weight)  # a copy trained
