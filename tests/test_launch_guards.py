"""Every Triton launch runs under a guard to its input's CUDA device; attention's size limits and
autotune key (checked on CPU: the guard is mocked, the size check needs no data)."""
import contextlib

import pytest
import torch

import fastskel.ops as ops
from fastskel import kernels
from fastskel.kernels import INTERPRET

triton_only = pytest.mark.skipif(not INTERPRET, reason="Triton on CPU needs TRITON_INTERPRET=1")


def test_device_guard_enters_the_tensors_cuda_device(monkeypatch):
    seen = []

    @contextlib.contextmanager
    def fake_device(dev):
        seen.append(dev)
        yield

    monkeypatch.setattr(torch.cuda, "device", fake_device)

    class T:
        device = torch.device("cuda", 1)

    with kernels.device_guard(T()):
        pass
    with kernels.device_guard(torch.zeros(1)):    # CPU: no CUDA call
        pass
    assert seen == [torch.device("cuda", 1)]


@triton_only
def test_every_launcher_is_guarded(monkeypatch):
    from fastskel.kernels import attention, barlow, focal, joint_mask, motion

    seen = []

    def record(t):
        seen.append(t.device)
        return contextlib.nullcontext()

    for mod in (attention, barlow, focal, joint_mask, motion):
        monkeypatch.setattr(mod, "device_guard", record)
    x = torch.randn(2, 3, 6, 25, requires_grad=True)
    calls = {
        "frame_motion": lambda: ops.frame_motion(x, backend="triton"),
        "motion_frame_mask": lambda: ops.motion_frame_mask(x, 1, backend="triton")[0].sum().backward(),
        "motion_energy_weights": lambda: ops.motion_energy_weights(x, (2,), backend="triton"),
        "degree_joint_mask": lambda: ops.degree_joint_mask(x, 2, backend="triton")[0].sum().backward(),
        "focal": lambda: ops.focal_reconstruction_loss(x[:, 0], x[:, 1], x[:, 2, :, 0], backend="triton").backward(),
        "barlow": lambda: ops.barlow_twins_loss(x.flatten(1)[:, :8], x.flatten(1)[:, 8:16],
                                               backend="triton").backward(),
        "attention": lambda: ops.attention(*(torch.randn(1, 2, 5, 16, requires_grad=True) for _ in range(3)),
                                           backend="triton").sum().backward(),
    }
    want = {"frame_motion": 1, "motion_frame_mask": 2, "motion_energy_weights": 1, "degree_joint_mask": 2,
            "focal": 2, "barlow": 2, "attention": 2}
    for name, call in calls.items():
        seen.clear()
        call()
        assert seen == [torch.device("cpu")] * want[name], name


@triton_only
def test_attention_rejects_slices_past_32bit_offsets():
    from fastskel.kernels import attention as ka

    big = torch.empty((1, 1, 2, 32), device="meta").as_strided((1, 1, 2, 32), (1, 1, 2 ** 31, 1))  # no data
    small = torch.zeros(1, 1, 2, 32, device="meta")
    with pytest.raises(ValueError, match="2\\*\\*31"):
        ka.attention(big, small, small)


def test_attention_autotune_key_buckets_batch():
    pytest.importorskip("triton")
    from fastskel.kernels import attention as ka

    assert "B" not in ka._KEY and "H" not in ka._KEY and "BH_BUCKET" in ka._KEY
    assert [ka._bucket(n) for n in (1, 200 * 8, 256 * 8, 257 * 8)] == [1, 2048, 2048, 4096]
