"""fastskel.ops.dropout_add_relu: the _C kernel vs the reference (same mask bit for bit, forward and
gradients), the law of the mask, seeding, opcheck / torch.compile, errors, and STGCN's fused tail."""
import math

import pytest
import torch

from fastskel import _ext, ops
from fastskel.nn.stgcn import STGCN, STGCNBlock
from fastskel.ops import reference as R

HAS_C = _ext.has_op("dropout_add_relu", torch.device("cpu"))[0]
needs_c = pytest.mark.skipif(not HAS_C, reason="fastskel._C without dropout_add_relu")

DTYPES = [(torch.float32, 0.0), (torch.float64, 0.0), (torch.bfloat16, 0.0), (torch.float16, 0.0)]
SHAPES = [(1,), (7,), (3, 5, 7, 5), (2, 16, 13, 18), (1, 3, 1, 25), (4097,)]


def _pair(shape, dtype, seed=0, res=True):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g).to(dtype).requires_grad_()
    r = torch.randn(shape, generator=g).to(dtype).requires_grad_() if res else None
    return x, r


def _run(backend, x, r, p, relu, seed):
    return ops.dropout_add_relu(x, r, p, relu=relu, generator=torch.Generator().manual_seed(seed), backend=backend)


@needs_c
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype,atol", DTYPES)
@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
@pytest.mark.parametrize("relu,res", [(True, True), (True, False), (False, True), (False, False)])
def test_cpp_equals_reference_forward_and_grads(shape, dtype, atol, p, relu, res):
    x, r = _pair(shape, dtype, seed=hash((shape, p)) % 1000, res=res)
    y_c = _run("cpp", x, r, p, relu, 3)
    y_t = _run("torch", x, r, p, relu, 3)
    assert y_c.dtype == dtype and y_c.shape == x.shape
    torch.testing.assert_close(y_c, y_t, atol=atol, rtol=0)
    gy = torch.randn(shape).to(dtype)
    ins = (x, r) if res else (x,)
    for a, b in zip(torch.autograd.grad(y_c, ins, gy), torch.autograd.grad(y_t, ins, gy)):
        torch.testing.assert_close(a, b, atol=atol, rtol=0)


@needs_c
def test_formula_by_hand_and_gradients():
    x, r = _pair((5, 6, 7), torch.float64)
    p, seed = 0.4, 12345
    m = R.dropout_keep_mask(x.numel(), p, seed).view(x.shape)
    want = torch.relu(x * m / (1 - p) + r)
    got = torch.ops.fastskel.dropout_add_relu(x, r, p, torch.tensor([seed]), True)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-12)
    gy = torch.randn_like(x)
    gx, gr = torch.autograd.grad(got, (x, r), gy)
    pos = (want > 0).double()
    torch.testing.assert_close(gr, gy * pos)
    torch.testing.assert_close(gx, gy * pos * m / (1 - p), rtol=1e-6, atol=1e-12)


@needs_c
def test_non_contiguous_input_uses_logical_order():
    base, rb = _pair((6, 8, 10), torch.float32)
    x, r = base.detach().transpose(0, 2), rb.detach().transpose(0, 2)
    y = _run("cpp", x, r, 0.5, True, 7)
    torch.testing.assert_close(y, _run("cpp", x.contiguous(), r.contiguous(), 0.5, True, 7), atol=0, rtol=0)
    torch.testing.assert_close(y, _run("torch", x, r, 0.5, True, 7), atol=0, rtol=0)


@pytest.mark.parametrize("p", [0.2, 0.5, 0.75])
def test_mask_law_keep_rate_and_pair_independence(p):
    n = 1 << 20
    m = R.dropout_keep_mask(n, p, seed=2024).double()
    q = 1 - p
    sd = math.sqrt(q * p / n)
    assert abs(m.mean().item() - q) < 5 * sd, m.mean().item()
    # neighbours (same hash input block) and a stride that hits every lane: no correlation
    for lag in (1, 2, 1024, 4096):
        c = ((m[:-lag] - q) * (m[lag:] - q)).mean().item() / (q * p)
        assert abs(c) < 5 / math.sqrt(n), (lag, c)
    # a different seed gives a (nearly) independent mask
    m2 = R.dropout_keep_mask(n, p, seed=2025).double()
    c = ((m - q) * (m2 - q)).mean().item() / (q * p)
    assert abs(c) < 5 / math.sqrt(n)


def test_mask_law_detects_a_wrong_rate():
    # the check above can fail: a mask drawn with the wrong probability is rejected
    n = 1 << 20
    m = R.dropout_keep_mask(n, 0.52, seed=2024).double()
    assert abs(m.mean().item() - 0.5) > 5 * math.sqrt(0.25 / n)


def test_p_zero_keeps_everything_and_eval_is_identity():
    x, r = _pair((3, 4, 5, 6), torch.float32)
    assert bool(R.dropout_keep_mask(100, 0.0, 1).all())
    for backend in ("auto", "torch"):
        y = ops.dropout_add_relu(x, r, 0.5, training=False, backend=backend)
        torch.testing.assert_close(y, torch.relu(x + r), atol=0, rtol=0)
        y = ops.dropout_add_relu(x, None, 0.0, relu=False, backend=backend)
        torch.testing.assert_close(y, x, atol=0, rtol=0)


@needs_c
def test_seeded_by_generator_and_global_rng():
    x, r = _pair((4, 8, 9, 25), torch.float32)
    a = _run("cpp", x, r, 0.5, True, 11)
    assert torch.equal(a, _run("cpp", x, r, 0.5, True, 11))
    assert not torch.equal(a, _run("cpp", x, r, 0.5, True, 12))
    torch.manual_seed(5)
    b = ops.dropout_add_relu(x, r, 0.5)
    torch.manual_seed(5)
    assert torch.equal(b, ops.dropout_add_relu(x, r, 0.5))


@needs_c
def test_result_does_not_depend_on_thread_count():
    x, r = _pair((64, 16, 50, 25), torch.float32)
    n = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        a = _run("cpp", x, r, 0.5, True, 9)
        torch.set_num_threads(max(2, n))
        b = _run("cpp", x, r, 0.5, True, 9)
    finally:
        torch.set_num_threads(n)
    assert torch.equal(a, b)


@needs_c
def test_opcheck():
    x, r = _pair((3, 5, 7, 4), torch.float32)
    seed = torch.tensor([42])
    for args in ((x, r, 0.3, seed, True), (x, None, 0.6, seed, False), (x, r, 0.5, seed, False)):
        torch.library.opcheck(torch.ops.fastskel.dropout_add_relu, args)
    g = torch.randn(3, 5, 7, 4)
    y = torch.ops.fastskel.dropout_add_relu(x.detach(), r.detach(), 0.3, seed, True)
    torch.library.opcheck(torch.ops.fastskel.dropout_add_relu_backward, (g, y, 0.3, seed, True, True))


@needs_c
def test_torch_compile_fullgraph():
    x, r = _pair((2, 6, 9, 25), torch.float32)
    seed = torch.tensor([77])

    def f(x, r):
        return torch.ops.fastskel.dropout_add_relu(x, r, 0.5, seed, True).square().sum()

    eager = torch.autograd.grad(f(x, r), (x, r))
    comp = torch.compile(f, fullgraph=True, backend="aot_eager")
    out = comp(x, r)
    torch.testing.assert_close(out, f(x, r))
    for a, b in zip(torch.autograd.grad(out, (x, r)), eager):
        torch.testing.assert_close(a, b)
    # the public op (seed drawn inside the graph) traces without a break too
    pub = torch.compile(lambda x, r: ops.dropout_add_relu(x, r, 0.5), fullgraph=True, backend="aot_eager")
    y = pub(x, r)
    assert y.shape == x.shape and bool((y >= 0).all())


def test_errors_name_the_argument():
    x, r = _pair((2, 3, 4, 5), torch.float32)
    with pytest.raises(ValueError, match="p: expected a float in \\[0, 1\\)"):
        ops.dropout_add_relu(x, r, 1.0)
    with pytest.raises(ValueError, match="p:"):
        ops.dropout_add_relu(x, r, -0.1)
    with pytest.raises(ValueError, match="residual: expected shape"):
        ops.dropout_add_relu(x, r[:1], 0.5)
    with pytest.raises(TypeError, match="residual: expected dtype"):
        ops.dropout_add_relu(x, r.double(), 0.5)
    with pytest.raises(TypeError, match="training: expected a bool"):
        ops.dropout_add_relu(x, r, 0.5, training=1)
    with pytest.raises(TypeError, match="x: expected a torch.Tensor"):
        ops.dropout_add_relu([1.0], None, 0.5)
    with pytest.raises(TypeError, match="x: expected dtype"):
        ops.dropout_add_relu(torch.ones(3, dtype=torch.int64), None, 0.5)


@needs_c
def test_cpu_only_kernel_reports_cuda():
    ok, why = _ext.has_op("dropout_add_relu", torch.device("cuda"))
    assert not ok and "CPU only" in why


# ---------------------------------------------------------------------------- STGCN block tail
@needs_c
def test_stgcn_block_fused_tail_equals_module_tail():
    torch.manual_seed(0)
    blk = STGCNBlock(8, 16, (9, 3), stride=2, dropout=0.5, backend="auto").train()
    x = torch.randn(6, 8, 20, 25, requires_grad=True)
    A = torch.rand(3, 25, 25)
    torch.manual_seed(1)
    y, _ = blk(x, A)
    # the same block tail by hand: st-gcn's modules up to the dropout, then the reference op with the
    # seed the block drew from the global generator
    bn1, relu1, conv, bn2, drop = blk.tcn
    h, _ = blk.gcn(x, A)
    h = bn2(conv(relu1(bn1(h))))
    torch.manual_seed(1)
    want = ops.dropout_add_relu(h, blk.residual(x), 0.5, backend="torch")
    torch.testing.assert_close(y, want, atol=1e-6, rtol=1e-6)
    g = torch.randn_like(y)
    torch.testing.assert_close(torch.autograd.grad(y, x, g)[0], torch.autograd.grad(want, x, g)[0],
                               atol=1e-5, rtol=1e-5)


@needs_c
def test_stgcn_backends_agree_without_dropout_and_in_eval():
    torch.manual_seed(0)
    net = STGCN(3, 8, 32, depth=4, dropout=0.5, backend="auto")
    x = torch.randn(3, 3, 16, 25, 2)
    net.eval()
    fast = net(x)
    for m in net.modules():
        if hasattr(m, "backend"):
            m.backend = "torch"
    torch.testing.assert_close(net(x), fast, atol=1e-5, rtol=1e-5)
    torch.manual_seed(0)
    a = STGCN(3, 8, 32, depth=4, dropout=0.0, backend="auto").train()
    b = STGCN(3, 8, 32, depth=4, dropout=0.0, backend="torch").train()
    b.load_state_dict(a.state_dict())
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = a(xa), b(xb)
    torch.testing.assert_close(ya, yb, atol=1e-5, rtol=1e-5)
    ya.sum().backward()
    yb.sum().backward()
    torch.testing.assert_close(xa.grad, xb.grad, atol=1e-5, rtol=1e-4)


@needs_c
def test_double_backward_raises():
    x, r = _pair((2, 3, 4, 5), torch.float32)
    y = _run("cpp", x, r, 0.5, True, 1)
    (gx,) = torch.autograd.grad(y.square().sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="double backward"):
        gx.sum().backward()


def test_fused_tail_follows_the_module_backend():
    from fastskel.backend import set_backend
    from fastskel.ops.dropout import fused_tail_available

    cpu = torch.device("cpu")
    assert not fused_tail_available("torch", cpu)
    assert fused_tail_available("auto", cpu) == HAS_C
    assert fused_tail_available("cpp", cpu) == HAS_C        # explicit cpp: the tail joins in
    assert not fused_tail_available("cpp", torch.device("cuda"))   # CPU-only kernel: never raises
    try:
        set_backend("torch")
        assert not fused_tail_available(None, cpu)
    finally:
        set_backend(None)
