"""Strided inputs and lengths give the reference result for every Triton-backed op (interpreter).

Was: ``lengths`` views were read with stride 1 by kernels/motion.py and kernels/focal.py
(``frame_motion(x, L[::2])`` off by 1.27, ``motion_energy_weights`` by 0.996)."""
import pytest
import torch

import fastskel.ops as ops
from fastskel.kernels import INTERPRET

pytestmark = pytest.mark.skipif(not INTERPRET, reason="Triton on CPU needs TRITON_INTERPRET=1")


def _x(n=4, c=3, t=11, v=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(n, c, v, t * 2, generator=g)
    return base[..., ::2].transpose(2, 3)          # (n, c, t, v), neither contiguous nor dense


def _lengths(n=4, t=11):
    return torch.tensor([t, 3, t, 5, 8, 9, 2, 6][: 2 * n - 1])[::2] if n <= 4 else None  # L[::2]: [t, t, 8, 2]


def test_views_are_strided():
    assert not _x().is_contiguous() and not _lengths().is_contiguous()


def test_frame_motion_strided():
    x, L = _x(), _lengths()
    torch.testing.assert_close(ops.frame_motion(x, L, backend="triton"), ops.frame_motion(x, L, backend="torch"))


def test_motion_frame_mask_strided():
    x, L = _x().requires_grad_(), _lengths()
    out_t, m_t = ops.motion_frame_mask(x, 1, True, L, backend="triton")
    out_r, m_r = ops.motion_frame_mask(x, 1, True, L, backend="torch")
    assert torch.equal(m_t, m_r)
    torch.testing.assert_close(out_t, out_r)
    g = torch.randn_like(out_t).transpose(2, 3).contiguous().transpose(2, 3)   # strided upstream grad
    gt, = torch.autograd.grad(out_t, x, g)
    gr, = torch.autograd.grad(out_r, x, g)
    torch.testing.assert_close(gt, gr)


def test_motion_energy_weights_strided():
    x, L = _x(), _lengths()
    torch.testing.assert_close(ops.motion_energy_weights(x, (2, 4), lengths=L, backend="triton"),
                               ops.motion_energy_weights(x, (2, 4), lengths=L, backend="torch"))


@pytest.mark.parametrize("per_patch", [True, False])
def test_focal_loss_strided(per_patch):
    g = torch.Generator().manual_seed(1)
    pred = torch.randn(6, 10, 5, generator=g)[::2].requires_grad_()        # (3, 10, 5) strided view leaf
    target = torch.randn(3, 5, 10, generator=g).transpose(1, 2)
    weight = torch.rand(3, 20, generator=g)[:, ::2] if per_patch else torch.rand(3, 5, 10, generator=g).transpose(1, 2)
    lt = ops.focal_reconstruction_loss(pred, target, weight, backend="triton")
    lr = ops.focal_reconstruction_loss(pred, target, weight, backend="torch")
    torch.testing.assert_close(lt, lr)
    torch.testing.assert_close(torch.autograd.grad(lt, pred)[0], torch.autograd.grad(lr, pred)[0])


def test_degree_joint_mask_strided():
    x = _x(v=25)
    gen = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    out_t, m_t = ops.degree_joint_mask(x, 4, generator=gen(), backend="triton")
    out_r, m_r = ops.degree_joint_mask(x, 4, generator=gen(), backend="torch")
    assert torch.equal(m_t, m_r)
    torch.testing.assert_close(out_t, out_r)


@pytest.mark.parametrize("normalize", ["batchnorm", "cosine"])
def test_barlow_strided(normalize):
    g = torch.Generator().manual_seed(2)
    z1 = torch.randn(40, 12, generator=g).T[:, ::2]       # (12, 20) transposed and strided
    z2 = torch.randn(12, 40, generator=g)[:, ::2]
    torch.testing.assert_close(ops.barlow_twins_loss(z1, z2, 5e-3, normalize, backend="triton"),
                               ops.barlow_twins_loss(z1, z2, 5e-3, normalize, backend="torch"))


def test_attention_strided():
    g = torch.Generator().manual_seed(4)
    q = torch.randn(2, 9, 3, 32, generator=g).transpose(1, 2)          # (2, 3, 9, 32) (B, L, H, d) storage
    k = torch.randn(2, 3, 32, 14, generator=g).transpose(2, 3)[:, :, ::2]  # last dim strided, L=7
    v = torch.randn(2, 3, 7, 64, generator=g)[..., ::2]
    torch.testing.assert_close(ops.attention(q, k, v, backend="triton"), ops.attention(q, k, v, backend="torch"),
                               atol=1e-5, rtol=1e-5)
