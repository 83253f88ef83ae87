"""ops.skip_data_checks: the internal fast path skips the data-dependent (host-synchronising)
checks of the public ops and keeps the structural ones; by default every check runs."""
import threading

import pytest
import torch

import fastskel.ops as ops
from fastskel.ops import data_checks_enabled, skip_data_checks


def _inputs():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 2, 9, 5, generator=g)
    L = torch.tensor([9, 4, 6])
    return x, L


@pytest.fixture
def no_host_reads(monkeypatch):
    """Make every tensor → host read-back raise (item, bool, int, float, tolist)."""
    def boom(*_a, **_k):
        raise AssertionError("host synchronisation inside skip_data_checks()")
    for name in ("item", "__bool__", "__int__", "__float__", "__index__", "tolist"):
        monkeypatch.setattr(torch.Tensor, name, boom)


def _run_ops(backend="torch"):
    x, L = _inputs()
    ops.frame_motion(x, L, backend=backend)
    ops.motion_frame_mask(x, 3, True, L, backend=backend)
    ops.motion_energy_weights(x, lengths=L, backend=backend)
    z, w = torch.randn(6, 4), torch.randn(5, 4)
    t = ops.sinkhorn_knopp(z, w, 0.1)
    ops.prototype_cross_entropy(z, w, t, 0.1, index=torch.tensor([0, 1, 2, 3, 4, 5]))


def test_default_checks_raise():
    assert data_checks_enabled()
    x, L = _inputs()
    with pytest.raises(ValueError, match="lengths"):
        ops.frame_motion(x, torch.tensor([9, 4, 10]))
    with pytest.raises(ValueError, match="k:"):
        ops.motion_frame_mask(x, 4, True, L)
    bad = x.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="finite"):
        ops.motion_frame_mask(bad, 1)
    z, w = torch.randn(6, 4), torch.randn(5, 4)
    t = ops.sinkhorn_knopp(z, w, 0.1)
    with pytest.raises(ValueError, match="index"):
        ops.prototype_cross_entropy(z, w, t, 0.1, index=torch.tensor([0, 1, 2, 3, 4, 6]))


def test_skip_data_checks_keeps_structural_checks():
    x, L = _inputs()
    with skip_data_checks():
        assert not data_checks_enabled()
        ops.frame_motion(x, torch.tensor([9, 4, 10]), backend="torch")      # range check skipped
        with pytest.raises(ValueError, match="lengths"):
            ops.frame_motion(x, torch.tensor([9, 4]))                       # shape still checked
        with pytest.raises(TypeError, match="lengths"):
            ops.frame_motion(x, torch.tensor([9.0, 4.0, 6.0]))              # dtype still checked
        with pytest.raises(ValueError, match="k:"):
            ops.motion_frame_mask(x, 9, True, L)                            # k < T still checked
    assert data_checks_enabled()


def test_skip_data_checks_nests_and_is_thread_local():
    seen = []
    with skip_data_checks():
        with skip_data_checks():
            assert not data_checks_enabled()
        assert not data_checks_enabled()
        th = threading.Thread(target=lambda: seen.append(data_checks_enabled()))
        th.start()
        th.join()
    assert seen == [True] and data_checks_enabled()


def test_no_host_sync_inside_context(no_host_reads):
    with skip_data_checks():
        _run_ops("torch")


def test_host_sync_outside_context_is_detected(no_host_reads):
    with pytest.raises(AssertionError, match="host synchronisation"):
        _run_ops("torch")


def test_no_host_sync_inside_context_triton(no_host_reads):
    pytest.importorskip("triton")
    with skip_data_checks():
        x, L = _inputs()
        ops.frame_motion(x, L, backend="triton")
        ops.motion_frame_mask(x, 3, True, L, backend="triton")
        ops.motion_energy_weights(x, lengths=L, backend="triton")
