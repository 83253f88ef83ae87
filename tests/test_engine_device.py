"""The engine pins the current CUDA device to the one it trains on (Triton launches on the current
device, not on the tensors'): single process ``--device cuda:N``, and ``cuda:LOCAL_RANK`` under
torchrun. Checked on CPU with ``torch.cuda`` stubbed; nothing is touched for a CPU run."""
import pytest
import torch

from fastskel.data import SkeletonDataset
from fastskel.engine import distributed as D
from fastskel.engine.trainer import TrainOptions, Trainer
from fastskel.methods.supervised import Supervised, SupervisedConfig


def _method():
    return Supervised(SupervisedConfig(num_classes=2, backbone="tiny", hidden=4, depth=1, kernel=3, epochs=1,
                                       batch_size=2))


def _data():
    return SkeletonDataset(torch.randn(4, 3, 8, 25, 1), torch.tensor([0, 1, 0, 1]), torch.tensor([8, 8, 6, 7]))


@pytest.fixture
def fake_cuda(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls.append(torch.device(d)))
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    return calls


def test_single_process_sets_the_given_cuda_device(fake_cuda):
    t = Trainer(_method(), _data(), TrainOptions(device="cuda:1", progress=False))
    assert t.device == torch.device("cuda:1") and fake_cuda == [torch.device("cuda:1")]


def test_cpu_run_leaves_cuda_alone(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls.append(d))
    Trainer(_method(), _data(), TrainOptions(device="cpu", progress=False))
    assert calls == []


def _as_rank(monkeypatch, local_rank: int):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", str(local_rank))
    monkeypatch.setenv("LOCAL_RANK", str(local_rank))
    monkeypatch.setattr(D.dist, "is_initialized", lambda: True)       # the group itself is not needed
    monkeypatch.setattr(D.dist, "get_rank", lambda: local_rank)
    monkeypatch.setattr(D.dist, "get_world_size", lambda: 2)


@pytest.mark.parametrize("device", ["cuda", "auto", None, "cuda:1"])
def test_ddp_rank_uses_local_rank_device(fake_cuda, monkeypatch, device):
    _as_rank(monkeypatch, 1)
    info = D.init_distributed(device)
    assert info.device == torch.device("cuda:1") and fake_cuda == [torch.device("cuda:1")]
    assert info.local_rank == 1 and info.world_size == 2


def test_ddp_rejects_another_ranks_device(fake_cuda, monkeypatch):
    _as_rank(monkeypatch, 1)
    with pytest.raises(ValueError, match=r"device: under torchrun each rank uses cuda:LOCAL_RANK \(cuda:1"):
        D.init_distributed("cuda:0")
    assert fake_cuda == []
