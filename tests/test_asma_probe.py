"""ASMa pretraining through the engine, then the paper's evaluation head (ASMaAligner, linear mode):
the pretrained encoders must beat the same encoders at their random initialisation (seeded).

Data: :class:`fastskel.data.SyntheticSkeletons`, 10 classes (five limb-motion groups, each in a slow
and a fast tempo), one body, 400 train / 100 test actions. Model: a small ASMa (two 4-block ST-GCN
encoders, hidden 8, 32-d; projector 64-64-64). Barlow Twins' redundancy weight is scaled to the
projector width (λ·D ≈ 1, as the paper's λ = 2e-4 at D = 6144): with the paper's λ at D = 64 the
redundancy term is negligible and the representation collapses (the loss settles at the fully
collapsed value 4·λ·D(D−1)), and the probe then does no better than the random encoders.
"""
import copy

import pytest
import torch

from fastskel.engine.align import accuracy as _accuracy
from fastskel.engine.align import fit_aligner as _fit_aligner
from fastskel.methods.asma import ASMa, ASMaAligner, ASMaConfig

CLASSES = 10
SMALL = dict(hidden_channels=8, out_dim=32, depth=4, projector_dims=(64, 64, 64), lambd=2e-2, dropout=0.0,
             num_frames=16, joint_mask_n=5, frame_mask_k=4, epochs=10, batch_size=32, lr=5e-3, min_lr=0.0,
             warmup_epochs=1)


@pytest.fixture(scope="module")
def pretrain_run():
    """Pretrain a small ASMa through the engine (seed 0), keeping its random initialisation."""
    from fastskel.data import SyntheticSkeletons
    from fastskel.engine.trainer import TrainOptions, Trainer

    n_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        kw = dict(num_classes=CLASSES, num_samples=500, T=24, seed=0, bodies=1)
        train, test = SyntheticSkeletons(split="train", **kw), SyntheticSkeletons(split="test", **kw)
        torch.manual_seed(0)
        model = ASMa(ASMaConfig(**SMALL))
        init = copy.deepcopy(model.state_dict())
        opts = TrainOptions(out=None, device="cpu", seed=0, progress=False, tensorboard=False,
                            handle_signals=False, log_every=4)
        result = Trainer(model, train, opts, method_name="asma").fit()
        return model, init, result, train, test
    finally:
        torch.set_num_threads(n_threads)


def test_pretraining_loss_decreases(pretrain_run):
    _, _, result, train, _ = pretrain_run
    losses = [h["loss"] for h in result.history]
    assert result.iteration == 10 * (len(train) // 32)
    first, last = sum(losses[:2]) / 2, sum(losses[-2:]) / 2
    assert last < 0.6 * first, (first, last)


def _aligner_probe(asma, train, test):
    """Linear-mode aligner (frozen encoders), the same aligner initialisation for every encoder;
    Adam at the paper's linear-evaluation lr (1e-3, AlignerConfig's default), cosine, 30 epochs."""
    torch.manual_seed(1)
    al = ASMaAligner(asma, CLASSES, mode="linear")
    _fit_aligner(al, train, epochs=30, batch_size=16, lr=1e-3, device="cpu", seed=0)
    return _accuracy(al, test, 64, "cpu")


def test_pretrained_aligner_beats_random_init_on_linear_probe(pretrain_run):
    model, init, _, train, test = pretrain_run
    random_model = ASMa(model.config)
    random_model.load_state_dict(init)
    n_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        acc = {"pretrained": _aligner_probe(model, train, test), "random": _aligner_probe(random_model, train, test)}
    finally:
        torch.set_num_threads(n_threads)
    print(f"aligner linear probe top-1: {acc}")
    assert acc["random"] > 100.0 / CLASSES + 10.0, acc          # the probe itself works (chance: 10 %)
    assert acc["pretrained"] >= acc["random"] + 10.0, acc
