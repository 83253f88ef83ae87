"""The transforms build no per-call Python-value tensors (constants cached) and honour skip_data_checks."""
import torch

from fastskel.data import skip_data_checks
from fastskel.data import transforms as T
from fastskel.data._checks import data_checks_enabled


def test_no_python_value_tensors_per_call(monkeypatch):
    x = torch.randn(3, 3, 12, 25, 2)
    L = torch.tensor([12, 7, 3])
    g = torch.Generator().manual_seed(0)
    T.pstl_augment(x, L, generator=g), T.bone_scale(x, p=1.0, generator=g), T.slim_mirror(x, generator=g)
    T.to_bone(x)  # warm the constant cache

    def boom(*a, **k):
        raise AssertionError("torch.tensor called inside a transform")

    monkeypatch.setattr(torch, "tensor", boom)
    for fn in (lambda: T.pstl_augment(x, L, generator=g), lambda: T.bone_scale(x, p=1.0, generator=g),
               lambda: T.slim_mirror(x, generator=g), lambda: T.slim_rotate(x, generator=g),
               lambda: T.crop_resize(x, L, size=8, min_frames=2, generator=g),
               lambda: T.hierarchical_views(x, L, global_frames=8, generator=g), lambda: T.to_bone(x)):
        fn()


def test_skip_data_checks_is_thread_local_and_reentrant():
    assert data_checks_enabled()
    with skip_data_checks():
        with skip_data_checks():
            assert not data_checks_enabled()
        assert not data_checks_enabled()
    assert data_checks_enabled()
