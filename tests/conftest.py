"""Shared test helpers: devices, backend availability, tolerances."""
import pytest
import torch

from fastskel import _ext
from fastskel.backend import triton_status

CUDA = torch.cuda.is_available()
DEVICES = ["cpu"] + (["cuda"] if CUDA else [])
# Where Triton kernels run in this process: CUDA, else CPU under TRITON_INTERPRET=1, else nowhere.
TRITON_DEVICE = "cuda" if CUDA and triton_status("cuda")[0] else ("cpu" if triton_status("cpu")[0] else None)
HAS_C = _ext.load() is not None

requires_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
requires_triton = pytest.mark.skipif(TRITON_DEVICE is None,
                                     reason="Triton cannot run here (no CUDA and TRITON_INTERPRET != 1)")
requires_C = pytest.mark.skipif(not HAS_C, reason=f"fastskel._C not built: {_ext.error()}")


def make_lengths(n, t, lo=2, generator=None, device="cpu"):
    """Random valid lengths in [lo, t] with at least one full-length sequence."""
    L = torch.randint(lo, t + 1, (n,), generator=generator)
    L[0] = t
    return L.to(device)


def pad_after(x, lengths):
    """Zero every frame at or after each sample's valid length (N, C, T, V)."""
    t = x.shape[2]
    keep = torch.arange(t, device=x.device)[None, :] < lengths.to(x.device)[:, None]
    return x * keep[:, None, :, None].to(x.dtype)
