"""Hand-computed cases for the references of barlow_twins_loss, attention, RoPE and graph_conv.

(motion / masking / focal references are pinned in test_motion_kernels.py, test_joint_mask.py and
test_focal.py.)
"""
import math

import torch

from fastskel.ops import reference as R


def test_barlow_cosine_hand():
    # B=2, D=2. Columns: z1 = [[1, 0], [0, 1]] → each column a unit vector; z2 = z1 → C = I.
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert R.barlow_twins_loss(z, z, lambd=0.5, normalize="cosine").item() == 0.0
    # z2 swaps the columns: C = [[0, 1], [1, 0]] → on-diag 2·(1−0)², off-diag 0.5·(1+1)
    z2 = z[:, [1, 0]]
    assert math.isclose(R.barlow_twins_loss(z, z2, lambd=0.5, normalize="cosine").item(), 3.0, rel_tol=1e-6)


def test_barlow_batchnorm_hand():
    # Each column standardises to ±1/sqrt(1+4e-5·…): z = [[1, 3], [-1, 1]] → columns [1, -1] and [1, -1]
    z = torch.tensor([[1.0, 3.0], [-1.0, 1.0]])
    s = 1.0 / math.sqrt(1.0 + 1e-5)          # var = 1 per column
    c = s * s                                 # every C_ij = (1·1 + (−1)(−1))/2 · s²
    expected = 2 * (1 - c) ** 2 + 2e-4 * 2 * c ** 2
    assert math.isclose(R.barlow_twins_loss(z, z).item(), expected, rel_tol=1e-5)


def test_attention_hand():
    # one query, two keys with scores 0 and log 3 → weights 1/4, 3/4
    q = torch.tensor([[[[1.0, 0.0]]]])
    k = torch.tensor([[[[0.0, 0.0], [math.log(3.0), 0.0]]]])
    v = torch.tensor([[[[4.0, 0.0], [0.0, 8.0]]]])
    out = R.attention(q, k, v, scale=1.0)
    torch.testing.assert_close(out, torch.tensor([[[[1.0, 6.0]]]]))
    # the second key padded → all weight on the first; all keys padded → zeros
    torch.testing.assert_close(R.attention(q, k, v, 1.0, torch.tensor([[False, True]])), torch.tensor([[[[4.0, 0.0]]]]))
    torch.testing.assert_close(R.attention(q, k, v, 1.0, torch.tensor([[True, True]])), torch.zeros(1, 1, 1, 2))


def test_attention_shared_queries_broadcast():
    q = torch.randn(1, 2, 3, 4)
    k, v = torch.randn(5, 2, 6, 4), torch.randn(5, 2, 6, 4)
    torch.testing.assert_close(R.attention(q, k, v), R.attention(q.expand(5, -1, -1, -1), k, v))


def test_rope_hand():
    # d=2: one pair rotated by pos·base^0 = pos radians; negative position unrotated
    x = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    pos = torch.tensor([math.pi / 2, -1.0, math.pi])
    out = R.apply_rope(x, pos)
    torch.testing.assert_close(out, torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, -2.0]]), atol=1e-6, rtol=0)


def test_rope_relative_positions():
    # q·k after RoPE depends only on the position difference
    q, k = torch.randn(1, 1, 1, 8), torch.randn(1, 1, 1, 8)
    s = lambda a, b: (R.apply_rope(q, torch.tensor([a])) * R.apply_rope(k, torch.tensor([b]))).sum()
    torch.testing.assert_close(s(3.0, 1.0), s(12.0, 10.0), atol=1e-5, rtol=1e-5)


def test_graph_conv_hand():
    # V=2, K=1, A = [[0, 1], [1, 0]] swaps joints; W = 2, b = 1 → y[..., w] = 2·x[..., 1−w] + 1
    x = torch.tensor([[[[1.0, 5.0]]]])              # (1, 1, 1, 2)
    A = torch.tensor([[[0.0, 1.0], [1.0, 0.0]]])
    y = R.graph_conv(x, A, torch.tensor([[2.0]]), torch.tensor([1.0]))
    torch.testing.assert_close(y, torch.tensor([[[[11.0, 3.0]]]]))
    # K=2 subsets sum: identity + swap, C_out=1 each with its own weight
    A2 = torch.stack([torch.eye(2), A[0]])
    y2 = R.graph_conv(x, A2, torch.tensor([[1.0], [10.0]]))
    torch.testing.assert_close(y2, torch.tensor([[[[1.0 + 50.0, 5.0 + 10.0]]]]))
