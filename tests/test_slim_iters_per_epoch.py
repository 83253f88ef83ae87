"""``iters_per_epoch`` (official SLiM / DINOv2 ``OFFICIAL_EPOCH_LENGTH``): an epoch of the schedule
is a fixed number of iterations, the loader cycles through reshuffled passes, resume is exact."""
import json

import numpy as np
import pytest
import torch

from fastskel.engine.batches import batch_stream
from fastskel.engine.checkpoint import CheckpointError, load_checkpoint
from fastskel.engine.trainer import TrainOptions, Trainer
from fastskel.methods.slim import SLiMConfig
from test_engine_trainer import make_method, opts, tiny_data  # noqa: F401  (one-thread fixture there too)


pytestmark = pytest.mark.usefixtures("one_thread")


def test_official_epoch_is_1250_iterations():
    assert SLiMConfig.official().iters_per_epoch == 1250 and SLiMConfig().iters_per_epoch is None
    with pytest.raises(ValueError, match="iters_per_epoch"):
        SLiMConfig(iters_per_epoch=0)
    with pytest.raises(ValueError, match="iters_per_epoch"):
        TrainOptions(iters_per_epoch=-1)


class _Loader:
    """len 3; pass p yields (p, 0), (p, 1), (p, 2)."""

    def __init__(self):
        self.sampler, self.epoch = self, None

    def set_epoch(self, e):
        self.epoch = e

    def __len__(self):
        return 3

    def __iter__(self):
        return iter([(self.epoch, i) for i in range(3)])


def test_batch_stream_cycles_passes_and_resumes_anywhere():
    full = [b for _, b in zip(range(10), batch_stream(_Loader()))]
    assert full == [(p, i) for p in range(4) for i in range(3)][:10]
    for start in range(8):
        calls = []
        s = batch_stream(_Loader(), start, lambda: calls.append(start))
        assert [b for _, b in zip(range(10 - start), s)] == full[start:] and calls == [start]


def test_trainer_iters_per_epoch_schedule_and_exact_resume(tmp_path):
    ds = tiny_data()                                              # 40 samples, batch 8: 5 batches a pass
    ref = make_method(epochs=2, warmup_epochs=1)
    res = Trainer(ref, ds, opts(tmp_path / "ref", iters_per_epoch=7), "supervised").fit()
    assert res.iteration == res.total_iterations == 14            # epochs × iters_per_epoch, not × passes
    ck = load_checkpoint(tmp_path / "ref" / "last.pt")
    assert ck["iterations_per_epoch"] == 7 and ck["loader_batches"] == 5 and ck["scheduler"]["total_iters"] == 14
    assert ck["scheduler"]["warmup_iters"] == 7
    ev = [json.loads(s) for s in (tmp_path / "ref" / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in ev if e["event"] == "epoch"] == [7, 14]
    lrs = [e["lr"] for e in ev if e["event"] == "train"]
    assert len(lrs) == 14 and lrs[6] == pytest.approx(max(lrs))   # warmup ends at iteration 7 (1 epoch)

    # stopped mid-pass in epoch 1 (3), at the epoch boundary mid-pass (7), at a pass boundary in epoch 2 (10)
    for stop in (3, 7, 10):
        a = make_method(epochs=2, warmup_epochs=1)
        r = Trainer(a, ds, opts(tmp_path / f"s{stop}", iters_per_epoch=7), "supervised").fit(stop_after=stop)
        assert r.interrupted and r.iteration == stop
        torch.manual_seed(77), np.random.seed(1)
        b = make_method(epochs=2, warmup_epochs=1)
        b.gen.manual_seed(3)
        r = Trainer(b, ds, opts(tmp_path / f"s{stop}", iters_per_epoch=7), "supervised").fit(resume="auto")
        assert r.iteration == 14
        for (k, p), q in zip(ref.state_dict().items(), b.state_dict().values()):
            assert torch.equal(p, q), (stop, k)

    # a different epoch length cannot resume; more epochs extend the schedule to epochs × 7
    with pytest.raises(CheckpointError, match="iterations/epoch"):
        Trainer(make_method(epochs=2, warmup_epochs=1), ds, opts(tmp_path / "s3", iters_per_epoch=6),
                "supervised").fit(resume="auto")
    ext = make_method(epochs=3, warmup_epochs=1)
    r = Trainer(ext, ds, opts(tmp_path / "s3", iters_per_epoch=7), "supervised").fit(resume="auto")
    assert r.iteration == 21 and load_checkpoint(tmp_path / "s3" / "last.pt")["scheduler"]["total_iters"] == 21


def test_method_config_iters_per_epoch_is_read(tmp_path):
    m = make_method(epochs=1)
    m.config.iters_per_epoch = 4            # what SLiMConfig.official() carries (1,250 there)
    res = Trainer(m, tiny_data(), opts(tmp_path), "supervised").fit()
    assert res.total_iterations == 4
