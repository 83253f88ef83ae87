"""The dropout random streams (issue 18): ``STGCN(backend="torch")`` draws st-gcn's exact masks
(``torch.nn.functional.dropout`` from torch's default generator); the fused CPU tail
(:func:`fastskel.ops.dropout_add_relu`, the default backend) draws its own counter-based stream,
the same law with other masks, identical on "cpp" and the reference."""
import copy

import pytest
import torch
import torch.nn.functional as F

import fastskel
from fastskel import _ext
from fastskel.nn.stgcn import STGCN, STGCNBlock
from fastskel.ops import dropout_add_relu
from fastskel.ops.reference import dropout_keep_mask

HAS_FUSED = _ext.has_op("dropout_add_relu", torch.device("cpu"))[0]
needs_fused = pytest.mark.skipif(not HAS_FUSED, reason="fastskel._C has no dropout_add_relu")


def _seeded(seed, fn):
    torch.manual_seed(seed)
    return fn()


def test_torch_backend_block_draws_torch_dropout_masks():
    torch.manual_seed(0)
    block = STGCNBlock(4, 4, (3, 3), dropout=0.4, backend="torch").train()
    A = torch.rand(3, 7, 7)
    x = torch.randn(2, 4, 9, 7)
    y = _seeded(11, lambda: block(x, A)[0])

    def st_gcn_tail():  # st-gcn's code: tcn (… → BN → Dropout) + residual, then ReLU
        z = block.gcn(x, A)[0]
        bn1, relu1, conv, bn2, _ = block.tcn
        z = bn2(conv(relu1(bn1(z))))
        return torch.relu(F.dropout(z, 0.4, training=True) + x)

    expect = _seeded(11, st_gcn_tail)
    torch.testing.assert_close(y, expect, rtol=0, atol=0)
    assert not torch.equal(y, _seeded(12, lambda: block(x, A)[0]))  # the mask really is random


@needs_fused
def test_stgcn_default_and_torch_backend_differ_only_in_the_dropout_stream():
    torch.manual_seed(0)
    fused = STGCN(3, 4, 8, depth=3, dropout=0.5)
    ref = copy.deepcopy(fused)
    for b in ref.st_gcn_networks:
        b.backend = b.gcn.backend = "torch"
    x = torch.randn(3, 3, 12, 25, 2)
    evals = [copy.deepcopy(m).eval()(x) for m in (fused, ref)]
    torch.testing.assert_close(evals[0], evals[1])  # same weights, same function
    a = _seeded(1, lambda: fused.train()(x))
    b = _seeded(1, lambda: ref.train()(x))
    assert (a - b).abs().max() > 1e-3  # same seed, different masks
    torch.testing.assert_close(a, _seeded(1, lambda: copy.deepcopy(fused).train()(x)))  # but reproducible
    fastskel.set_backend("torch")  # the process default reaches a model built with backend=None
    try:
        c = _seeded(1, lambda: copy.deepcopy(fused).train()(x))
    finally:
        fastskel.set_backend(None)
    torch.testing.assert_close(c, b, rtol=0, atol=0)


@needs_fused
@pytest.mark.parametrize("p", [0.3, 0.5])
def test_fused_stream_has_the_keep_rate_but_not_torch_masks(p):
    n = 200_000
    x = torch.ones(n)
    y = _seeded(7, lambda: dropout_add_relu(x, None, p, relu=False, backend="cpp"))
    kept = y != 0
    assert abs(kept.float().mean().item() - (1 - p)) < 5 * ((p * (1 - p) / n) ** 0.5)
    torch.testing.assert_close(y[kept], torch.full_like(y[kept], 1 / (1 - p)))
    torch_mask = _seeded(7, lambda: F.dropout(x, p, training=True)) != 0
    assert (kept != torch_mask).float().mean() > 0.2  # independent streams disagree on ~2p(1-p)
    # "cpp" and the reference ("torch") are the same stream, bit for bit
    torch.testing.assert_close(_seeded(7, lambda: dropout_add_relu(x, None, p, relu=False, backend="torch")), y,
                               rtol=0, atol=0)
    # ... namely dropout_keep_mask of the one int64 seed drawn from the generator
    g = torch.Generator().manual_seed(3)
    seed = int(torch.randint(-(2 ** 63), 2 ** 63 - 1, (1,), dtype=torch.int64,
                             generator=torch.Generator().manual_seed(3)))
    got = dropout_add_relu(x, None, p, relu=False, generator=g, backend="cpp") != 0
    assert torch.equal(got, dropout_keep_mask(n, p, seed))
