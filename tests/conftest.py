"""Shared test helpers: devices, backend availability, tolerances."""
import math

import pytest
import torch
import torch.nn.functional as F

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


def class_motion_data(n, classes=4, t=24, v=13, seed=0):
    """``(x (n, 3, t, v, 2), lengths, labels)`` of seeded class-structured motion (the AMR and SLiM
    "pretraining beats random init" tests): each class swings its own group of 6 joints along its own
    axis at its own frequency (shared prototypes across seeds); per sample: amplitude, phase, valid
    length U[t/2, t], a yaw rotation, scale, offset and sensor noise as nuisances; body 2 is empty."""
    g = torch.Generator().manual_seed(seed)
    gc = torch.Generator().manual_seed(1234)                             # class prototypes
    rest = torch.randn(v, 3, generator=gc) * 0.3
    group = torch.zeros(classes, v)
    for c in range(classes):
        group[c, torch.randperm(v, generator=gc)[:6]] = 1
    axis = F.normalize(torch.randn(classes, 3, generator=gc), dim=1)
    freq = 1.0 + 2.0 * torch.rand(classes, generator=gc)
    y = torch.arange(n) % classes
    tt = torch.arange(t, dtype=torch.float32)
    L = torch.randint(t // 2, t + 1, (n,), generator=g)
    amp = 0.5 * (0.7 + 0.6 * torch.rand(n, generator=g))
    phase = 2 * math.pi * torch.rand(n, generator=g)
    s = amp[:, None] * torch.sin(2 * math.pi * freq[y][:, None] * tt / L[:, None] + phase[:, None])   # (n, t)
    pos = rest + s[:, :, None, None] * group[y][:, None, :, None] * axis[y][:, None, None, :]         # (n, t, v, 3)
    a = (torch.rand(n, generator=g) - 0.5) * 0.6
    rot = torch.zeros(n, 3, 3)
    rot[:, 0, 0], rot[:, 0, 2], rot[:, 1, 1], rot[:, 2, 0], rot[:, 2, 2] = a.cos(), a.sin(), 1, -a.sin(), a.cos()
    scale = 0.8 + 0.4 * torch.rand(n, generator=g)
    pos = torch.einsum("ntvc,ndc->ntvd", pos, rot) * scale[:, None, None, None]
    pos = pos + 0.1 * torch.randn(n, 1, 1, 3, generator=g) + 0.01 * torch.randn(pos.shape, generator=g)
    pos = pos * (tt[None, :, None, None] < L[:, None, None, None])
    x = torch.zeros(n, 3, t, v, 2)
    x[..., 0] = pos.permute(0, 3, 1, 2)
    return x, L, y


def pretrain_on_class_motion(make_model, method_name, n=256, **data_kw):
    """Seeded pretraining through the engine on :func:`class_motion_data` (train seed 1, test seed
    2), one thread. Returns ``(model, init_state_dict, result, train_ds, test_ds)``."""
    import copy

    from fastskel.data import SkeletonDataset
    from fastskel.engine.trainer import TrainOptions, Trainer

    n_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        x, L, y = class_motion_data(n, seed=1, **data_kw)
        xt, Lt, yt = class_motion_data(n, seed=2, **data_kw)
        torch.manual_seed(0)
        model = make_model()
        init = copy.deepcopy(model.state_dict())
        opts = TrainOptions(out=None, device="cpu", seed=0, progress=False, tensorboard=False,
                            handle_signals=False, log_every=8)
        result = Trainer(model, SkeletonDataset(x, y, L), opts, method_name=method_name).fit()
        return model, init, result, SkeletonDataset(x, y, L), SkeletonDataset(xt, yt, Lt)
    finally:
        torch.set_num_threads(n_threads)


def probe_pretrained_vs_random(model, init, train, test):
    """Linear-probe top-1 of ``model`` and of the same architecture at its initial weights ``init``
    (same probe, seed 0): ``{"pretrained": …, "random": …}``."""
    from fastskel.engine.evaluate import extract_features, linear_probe

    random_model = type(model)(model.config)
    random_model.load_state_dict(init)
    acc = {}
    for name, m in (("pretrained", model), ("random", random_model)):
        ftr, ytr = extract_features(m, train)
        fte, yte = extract_features(m, test)
        acc[name] = linear_probe(ftr, ytr, fte, yte, seed=0).top1
    return acc


@pytest.fixture
def one_thread():
    """Run the test on one torch thread: small models train several times faster on one thread on a
    shared 2-core CI box (modules use it with ``pytestmark = pytest.mark.usefixtures("one_thread")``)."""
    from fastskel.engine.latency import torch_threads

    with torch_threads(1):
        yield
