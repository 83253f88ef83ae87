"""Chunked prototype cross-entropy and Sinkhorn-Knopp (fastskel.ops.prototype) vs the materialised
references: values, gradients, marginals, memory bound, opcheck, compile, DDP reduction, errors."""
import math
import os
import tempfile

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from fastskel.backend import BackendUnavailableError
from fastskel.ops.prototype import (SinkhornTargets, default_chunk_size, prototype_cross_entropy,
                                    prototype_cross_entropy_reference, sinkhorn_knopp, sinkhorn_reference)


pytestmark = pytest.mark.usefixtures("one_thread")


def _unit(*shape, gen, dtype=torch.float32):
    return F.normalize(torch.randn(*shape, generator=gen), dim=-1).to(dtype)


# --------------------------------------------------------------------------- Sinkhorn
def test_sinkhorn_hand_symmetric():
    # logits [[a, b], [b, a]] already have equal row and column sums: Q = the row softmax
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    w = torch.tensor([[0.8, 0.2], [0.2, 0.8]])
    temp = 0.5
    q = sinkhorn_knopp(z, w, temp, n_iters=3).materialize()
    ea, eb = math.exp(0.8 / temp), math.exp(0.2 / temp)
    expected = torch.tensor([[ea, eb], [eb, ea]]) / (ea + eb)
    torch.testing.assert_close(q, expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(sinkhorn_reference(z @ w.T, temp, 3), expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("n,k,d,chunk", [(1, 5, 3, None), (37, 300, 16, 64), (64, 129, 8, 7), (13, 50, 4, 50),
                                         (200, 33, 5, 1000)])
@pytest.mark.parametrize("temp", [0.04, 0.07])
def test_sinkhorn_matches_reference(n, k, d, chunk, temp):
    gen = torch.Generator().manual_seed(n * 1000 + k)
    z, w = _unit(n, d, gen=gen), _unit(k, d, gen=gen)
    t = sinkhorn_knopp(z, w, temp, n_iters=3, chunk_size=chunk)
    ref = sinkhorn_reference(z @ w.T, temp, 3)
    q = t.materialize()
    torch.testing.assert_close(q, ref, atol=2e-6, rtol=2e-4)
    torch.testing.assert_close(q.sum(1), torch.ones(n), atol=1e-5, rtol=0)      # rows exactly normalised


def test_sinkhorn_marginals_converge():
    # with enough iterations the prototype marginals approach n/K (and rows stay exactly 1)
    gen = torch.Generator().manual_seed(3)
    n, k = 48, 12
    z, w = _unit(n, 8, gen=gen), _unit(k, 8, gen=gen)
    q = sinkhorn_knopp(z, w, 0.1, n_iters=100, chunk_size=5).materialize()
    torch.testing.assert_close(q.sum(1), torch.ones(n), atol=1e-5, rtol=0)
    torch.testing.assert_close(q.sum(0), torch.full((k,), n / k), atol=1e-3 * n / k, rtol=0)
    # already after 3 iterations the columns are far closer to uniform than the plain softmax
    q3 = sinkhorn_knopp(z, w, 0.1, n_iters=3).materialize()
    soft = torch.softmax(z @ w.T / 0.1, -1)
    assert (q3.sum(0) - n / k).abs().max() < 0.5 * (soft.sum(0) - n / k).abs().max()


def test_sinkhorn_bf16_and_sharp_temperature():
    gen = torch.Generator().manual_seed(5)
    z, w = _unit(50, 16, gen=gen, dtype=torch.bfloat16), _unit(200, 16, gen=gen, dtype=torch.bfloat16)
    q = sinkhorn_knopp(z, w, 0.04, chunk_size=32).materialize()
    ref = sinkhorn_reference((z @ w.T).float(), 0.04, 3)
    assert torch.isfinite(q).all()
    torch.testing.assert_close(q, ref, atol=2e-3, rtol=2e-2)
    # unnormalised embeddings, temperature 0.01: exp would overflow without the log domain
    zf = torch.randn(20, 8, generator=gen) * 3
    wf = torch.randn(40, 8, generator=gen) * 3
    q = sinkhorn_knopp(zf, wf, 0.01).materialize()
    assert torch.isfinite(q).all()
    torch.testing.assert_close(q.sum(1), torch.ones(20), atol=1e-3, rtol=0)   # logits ~1e3: fp32 exponent rounding


def test_sinkhorn_empty_rows():
    t = sinkhorn_knopp(torch.zeros(0, 4), torch.randn(7, 4), 0.1)
    assert t.row.shape == (0,) and t.col.shape == (7,) and t.materialize().shape == (0, 7)


# --------------------------------------------------------------------------- cross-entropy
CE_CASES = [  # n, n_t, k, d, chunk, index
    (1, 1, 5, 3, None, False),
    (37, 37, 300, 16, 64, False),
    (45, 9, 129, 8, 7, True),
    (20, 20, 64, 32, 64, False),
]


@pytest.mark.parametrize("n,n_t,k,d,chunk,use_index", CE_CASES)
@pytest.mark.parametrize("dtype,atol,rtol", [(torch.float32, 2e-5, 2e-5), (torch.bfloat16, 5e-2, 5e-2)])
@pytest.mark.parametrize("kind", ["sinkhorn", "dense"])
def test_cross_entropy_matches_reference(n, n_t, k, d, chunk, use_index, dtype, atol, rtol, kind):
    gen = torch.Generator().manual_seed(n + 7 * k)
    zs = _unit(n, d, gen=gen, dtype=dtype).requires_grad_()
    ws = (torch.randn(k, d, generator=gen) * 0.5).to(dtype).requires_grad_()
    zt, wt = _unit(n_t, d, gen=gen, dtype=dtype), _unit(k, d, gen=gen, dtype=dtype)
    index = torch.randint(0, n_t, (n,), generator=gen) if use_index else None
    if kind == "sinkhorn":
        targets = sinkhorn_knopp(zt, wt, 0.05, chunk_size=chunk)
        dense = targets.materialize()
    else:
        dense = torch.softmax(torch.randn(n_t, k, generator=gen), -1)
        targets = dense
    loss = prototype_cross_entropy(zs, ws, targets, 0.1, index=index, chunk_size=chunk)
    zr, wr = zs.detach().clone().requires_grad_(), ws.detach().clone().requires_grad_()
    q = dense if index is None else dense[index]
    ref = prototype_cross_entropy_reference((zr.float() @ wr.float().T), q, 0.1)
    assert loss.dtype == torch.float32 and loss.shape == (n,)
    torch.testing.assert_close(loss, ref, atol=atol * 10, rtol=rtol)
    g = torch.randn(n, generator=gen)
    (loss * g).sum().backward()
    (ref * g).sum().backward()
    assert zs.grad.dtype == dtype and ws.grad.dtype == dtype
    torch.testing.assert_close(zs.grad.float(), zr.grad.float(), atol=atol * 10, rtol=rtol)
    torch.testing.assert_close(ws.grad.float(), wr.grad.float(), atol=atol * 10, rtol=rtol)


def test_cross_entropy_hand():
    # one row, two prototypes, logits [0, log 3]·temp → p = [1/4, 3/4]; target [1, 0] → −log(1/4)
    temp = 0.5
    z = torch.tensor([[1.0, 0.0]])
    w = torch.tensor([[0.0, 0.0], [math.log(3.0) * temp, 0.0]])
    loss = prototype_cross_entropy(z, w, torch.tensor([[1.0, 0.0]]), temp, chunk_size=1)
    torch.testing.assert_close(loss, torch.tensor([math.log(4.0)]))


class _LargestAlloc(TorchDispatchMode):
    """Records the largest tensor produced by any op while active."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in (out if isinstance(out, (tuple, list)) else (out,)):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def test_never_materialises_tokens_by_prototypes():
    gen = torch.Generator().manual_seed(2)
    n, k, d, chunk = 32, 1024, 8, 64
    zs = _unit(n, d, gen=gen).requires_grad_()
    ws = _unit(k, d, gen=gen).requires_grad_()
    zt, wt = _unit(n, d, gen=gen), _unit(k, d, gen=gen)
    with _LargestAlloc() as mode:
        t = sinkhorn_knopp(zt, wt, 0.05, chunk_size=chunk)
        prototype_cross_entropy(zs, ws, t, 0.1, chunk_size=chunk).sum().backward()
    assert mode.largest <= max(k * d, n * chunk), mode.largest      # parameters/grads of W, one block
    assert mode.largest < n * k
    with _LargestAlloc() as ref_mode:                                # and the reference does hold (n, K)
        q = sinkhorn_reference(zt @ wt.T, 0.05)
        prototype_cross_entropy_reference(zs @ ws.T, q, 0.1).sum().backward()
    assert ref_mode.largest >= n * k


def test_default_chunk_size():
    assert default_chunk_size(10, 65536) == 65536
    c = default_chunk_size(7000, 65536)
    assert c % 128 == 0 and 128 <= c < 65536 and 7000 * c <= (1 << 22)
    assert default_chunk_size(10**9, 65536) == 128


# --------------------------------------------------------------------------- registration / compile
def test_opcheck():
    gen = torch.Generator().manual_seed(4)
    z, w = _unit(6, 4, gen=gen), _unit(10, 4, gen=gen)
    zt, wt = _unit(3, 4, gen=gen), _unit(10, 4, gen=gen)
    torch.library.opcheck(torch.ops.fastskel.sinkhorn_knopp.default, (zt, wt, 0.1, 3, 4, False))
    row, col = torch.ops.fastskel.sinkhorn_knopp(zt, wt, 0.1, 3, 4, False)
    idx = torch.tensor([0, 1, 2, 2, 1, 0])
    args = (z.requires_grad_(), w.requires_grad_(), 0.1, zt, wt, 0.1, row, col, None, idx, 3)
    torch.library.opcheck(torch.ops.fastskel.prototype_cross_entropy.default, args)


def test_torch_compile_fullgraph():
    gen = torch.Generator().manual_seed(6)
    z, w = _unit(8, 4, gen=gen).requires_grad_(), _unit(12, 4, gen=gen).requires_grad_()
    zt, wt = _unit(8, 4, gen=gen), _unit(12, 4, gen=gen)

    def f(z, w, zt, wt):
        t = sinkhorn_knopp(zt, wt, 0.05, chunk_size=5)
        return prototype_cross_entropy(z, w, t, 0.1, chunk_size=5).mean()

    expected = f(z, w, zt, wt)
    try:
        compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
        got = compiled(z, w, zt, wt)
    except Exception as e:  # pragma: no cover - toolchain dependent
        pytest.skip(f"torch.compile unavailable on this CPU toolchain: {type(e).__name__}: {e}")
    torch.testing.assert_close(got, expected)
    (gz,) = torch.autograd.grad(got, z)
    (ez,) = torch.autograd.grad(f(z, w, zt, wt), z)
    torch.testing.assert_close(gz, ez)


# --------------------------------------------------------------------------- errors and backends
def test_errors_name_the_argument():
    z, w = torch.randn(4, 3), torch.randn(5, 3)
    t = sinkhorn_knopp(z, w, 0.1)
    with pytest.raises(ValueError, match="prototypes"):
        sinkhorn_knopp(z, torch.randn(5, 4), 0.1)
    with pytest.raises(TypeError, match="prototypes"):
        sinkhorn_knopp(z, w.double(), 0.1)
    with pytest.raises(ValueError, match="temp"):
        sinkhorn_knopp(z, w, 0.0)
    with pytest.raises(ValueError, match="n_iters"):
        sinkhorn_knopp(z, w, 0.1, n_iters=0)
    with pytest.raises(ValueError, match="z"):
        prototype_cross_entropy(torch.randn(4, 3, 1), w, t, 0.1)
    with pytest.raises(ValueError, match="targets"):
        prototype_cross_entropy(torch.randn(6, 3), w, t, 0.1)
    with pytest.raises(ValueError, match="index"):
        prototype_cross_entropy(torch.randn(6, 3), w, t, 0.1, index=torch.tensor([0, 1, 2, 3, 4, 5]))
    with pytest.raises(ValueError, match="targets"):
        prototype_cross_entropy(z, w, torch.rand(4, 6), 0.1)
    with pytest.raises(TypeError, match="targets"):
        prototype_cross_entropy(z, w, [1, 2], 0.1)
    with pytest.raises(ValueError, match="chunk_size"):
        prototype_cross_entropy(z, w, t, 0.1, chunk_size=0)
    with pytest.raises(BackendUnavailableError):
        prototype_cross_entropy(z, w, t, 0.1, backend="triton")


def test_targets_index_select():
    gen = torch.Generator().manual_seed(8)
    t = sinkhorn_knopp(_unit(5, 4, gen=gen), _unit(9, 4, gen=gen), 0.1)
    idx = torch.tensor([4, 0, 0, 2])
    assert isinstance(t.index_select(idx), SinkhornTargets)
    torch.testing.assert_close(t.index_select(idx).materialize(), t.materialize()[idx])


# --------------------------------------------------------------------------- distributed
def _ddp_worker(rank, world, init_file, z, w, out_file):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        shard = z.chunk(world)[rank]
        t = sinkhorn_knopp(shard, w, 0.05, n_iters=3, chunk_size=7)
        torch.save(t.materialize(), f"{out_file}.{rank}")
        dist.barrier()  # no rank tears down the group while another still uses it
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")
def test_sinkhorn_distributed_equals_single_process():
    gen = torch.Generator().manual_seed(9)
    z, w = _unit(30, 8, gen=gen), _unit(40, 8, gen=gen)
    world = 2
    with tempfile.TemporaryDirectory() as tmp:
        init, out = os.path.join(tmp, "init"), os.path.join(tmp, "q")
        # fork: the workers inherit the imported modules instead of re-importing torch (seconds each)
        torch.multiprocessing.start_processes(_ddp_worker, args=(world, init, z, w, out), nprocs=world, join=True,
                                              start_method="fork")
        got = torch.cat([torch.load(f"{out}.{r}") for r in range(world)])
    torch.testing.assert_close(got, sinkhorn_reference(z @ w.T, 0.05, 3), atol=2e-6, rtol=2e-4)
    # a rank-local Sinkhorn would differ (the prototype marginals are global)
    local = torch.cat([sinkhorn_reference(s @ w.T, 0.05, 3) for s in z.chunk(world)])
    assert (local - got).abs().max() > 1e-3
