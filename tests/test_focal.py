"""AMR motion_energy_weights (eq. 3–4, multi-scale) and focal_reconstruction_loss (eq. 5):
hand-computed reference cases, Triton kernels vs reference (odd T and V, V≠25, padded sequences,
batch 1, bf16 / fp16, more than four window scales), forward and gradients, torch.library /
torch.compile registration and bad input."""
import pytest
import torch

from fastskel import ops
from fastskel.ops import reference as R

from conftest import TRITON_DEVICE, make_lengths, pad_after, requires_triton


# --------------------------------------------------------------------------- reference, by hand
def _w(k, e_t, e, eps):
    return 1.0 / (1.0 + k * e_t / (e + eps))


def test_motion_energy_weights_reference_hand():
    # N=1, C=1, T=4, V=2: joint 0 at 0, 2, 5, 5; joint 1 still at 1.
    x = torch.tensor([[0.0, 1.0], [2.0, 1.0], [5.0, 1.0], [5.0, 1.0]]).view(1, 1, 4, 2)
    k, eps = 1.0, 1e-6
    # n=2: windows {0,2} → μ=1, e=(1+1)/2=1; {5,5} → e=0; joint 1: 0, 0 → e_t = 1/4
    # n=4: joint 0 → μ=3, e=(9+1+4+4)/4=4.5; joint 1: 0 → e_t = 4.5/2 = 2.25
    w2 = lambda e: _w(k, 0.25, e, eps)
    w4 = lambda e: _w(k, 2.25, e, eps)
    j0 = [(w2(1.0) + w4(4.5)) / 2] * 2 + [(w2(0.0) + w4(4.5)) / 2] * 2
    j1 = [(w2(0.0) + w4(0.0)) / 2] * 4
    expected = torch.tensor([j0, j1]).T[None]
    torch.testing.assert_close(R.motion_energy_weights(x, (2, 4), k, eps), expected, atol=1e-7, rtol=1e-6)
    assert abs(w2(1.0) - 0.8) < 1e-6 and abs(w4(4.5) - 2 / 3) < 1e-6        # the readable values
    # single scale n=2 with L=3: windows {0,2} (e=1) and the short {5} (e=0); frame 3 padded → 0
    got = R.motion_energy_weights(x, (2,), k, eps, torch.tensor([3]))
    e_t = (1.0 + 0 + 0 + 0) / 4
    exp3 = torch.tensor([[_w(k, e_t, 1.0, eps), _w(k, e_t, 0.0, eps)]] * 2
                        + [[_w(k, e_t, 0.0, eps)] * 2, [0.0, 0.0]])[None]
    torch.testing.assert_close(got, exp3, atol=1e-7, rtol=1e-6)
    # a still sequence has e_t = 0 → every weight is 1; an empty one (L=0) is all zeros
    still = torch.ones(1, 3, 6, 2)
    assert R.motion_energy_weights(still).eq(1).all()
    assert R.motion_energy_weights(x, lengths=torch.tensor([0])).eq(0).all()


def test_focal_reconstruction_loss_reference_hand():
    pred = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]], requires_grad=True)   # (N=1, P=2, D=2)
    target = torch.zeros(1, 2, 2)
    w = torch.tensor([[1.0, 0.5]])                                          # per patch
    loss = R.focal_reconstruction_loss(pred, target, w)                     # (1·5 + 0.5·25) / 2
    assert loss.item() == 8.75
    (g,) = torch.autograd.grad(loss, pred)                                  # 2·w·(p−t)/(N·P)
    assert g.tolist() == [[[1.0, 2.0], [1.5, 2.0]]]
    # per element weights equal to the broadcast per-patch ones give the same loss
    assert R.focal_reconstruction_loss(pred, target, w[..., None].expand(1, 2, 2)).item() == 8.75
    # N=2: the mean over samples; the second sample has zero error
    pred2 = torch.cat([pred.detach(), target])
    assert R.focal_reconstruction_loss(pred2, torch.zeros(2, 2, 2), torch.ones(2, 2)).item() == (5 + 25) / 2 / 2


# --------------------------------------------------------------------------- weights: kernel vs reference
ENERGY_CASES = [  # (N, C, T, V, padded, windows)
    (1, 3, 120, 25, False, (4, 8, 12)),       # batch 1, AMR shape
    (4, 3, 37, 7, True, (4, 8, 12)),          # odd T and V, padded (lengths ≥ 0 incl. 0 and 1)
    (3, 2, 53, 5, True, (3,)),                # one scale
    (2, 3, 29, 18, True, (1, 2, 3, 5, 7, 11)),  # six scales: two chained launches
    (2, 1, 9, 3, False, (5, 50)),             # a window longer than the sequence
]


def _skeleton(shape, dtype, seed):
    n, c, t, v, padded = shape
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, t, v, generator=g) * torch.rand(1, 1, 1, v, generator=g)   # per-joint scale
    L = None
    if padded:
        L = make_lengths(n, t, lo=0, generator=g)
        L[-1] = min(1, int(L[-1]))
        x = pad_after(x, L)
    return x.to(dtype).to(TRITON_DEVICE), (None if L is None else L.to(TRITON_DEVICE))


@requires_triton
@pytest.mark.parametrize("dtype, atol, rtol", [(torch.float32, 1e-6, 1e-5), (torch.bfloat16, 1e-6, 1e-5),
                                               (torch.float16, 1e-6, 1e-5)])
@pytest.mark.parametrize("n, c, t, v, padded, windows", ENERGY_CASES)
def test_motion_energy_weights_kernel(n, c, t, v, padded, windows, dtype, atol, rtol):
    if dtype != torch.float32 and len(windows) > 3:
        pytest.skip("the chained-launch case runs in fp32")
    x, L = _skeleton((n, c, t, v, padded), dtype, seed=t * v)
    w = ops.motion_energy_weights(x, windows, lengths=L, backend="triton")
    assert w.dtype == torch.float32 and w.shape == (n, t, v)
    # both compute from the same (upcast) input values: only fp32 summation order differs
    torch.testing.assert_close(w, R.motion_energy_weights(x, windows, lengths=L), atol=atol, rtol=rtol)
    if L is not None:
        assert w[torch.arange(t, device=w.device)[None] >= L[:, None]].eq(0).all()


@requires_triton
def test_motion_energy_weights_k_eps():
    x, L = _skeleton((3, 3, 25, 7, True), torch.float32, seed=9)
    for k, eps in ((0.5, 1e-3), (3.0, 1e-8)):
        torch.testing.assert_close(ops.motion_energy_weights(x, (4, 6), k, eps, L, backend="triton"),
                                   R.motion_energy_weights(x, (4, 6), k, eps, L), atol=1e-6, rtol=1e-5)
    assert not ops.motion_energy_weights(x.requires_grad_(), backend="triton").requires_grad


# --------------------------------------------------------------------------- loss: kernel vs reference
LOSS_SHAPES = [(1, 125, 72), (3, 7, 5), (2, 1, 1), (5, 13, 9)]
LOSS_DTYPES = [(torch.float32, 1e-6, 1e-5), (torch.bfloat16, 1e-2, 1e-2), (torch.float16, 1e-3, 1e-3)]


@requires_triton
@pytest.mark.parametrize("dtype, atol, rtol", LOSS_DTYPES)
@pytest.mark.parametrize("per_patch", [False, True])
@pytest.mark.parametrize("shape", LOSS_SHAPES)
def test_focal_loss_kernel(shape, per_patch, dtype, atol, rtol):
    g = torch.Generator().manual_seed(shape[1] * 10 + per_patch)
    pred = torch.randn(shape, generator=g).to(dtype).to(TRITON_DEVICE)
    target = torch.randn(shape, generator=g).to(dtype).to(TRITON_DEVICE)
    weight = torch.rand(shape[:2] if per_patch else shape, generator=g).to(TRITON_DEVICE)
    pk, tk = pred.clone().requires_grad_(), target.clone().requires_grad_()
    pr, tr = pred.clone().requires_grad_(), target.clone().requires_grad_()
    lk = ops.focal_reconstruction_loss(pk, tk, weight, backend="triton")
    lr = ops.focal_reconstruction_loss(pr, tr, weight, backend="torch")
    assert lk.dtype == torch.float32 and lk.shape == ()
    # the loss is computed in fp32 from the same input values in both: fp32 tolerance for any dtype
    torch.testing.assert_close(lk, lr, atol=1e-6, rtol=1e-5)
    up = torch.tensor(0.37, device=TRITON_DEVICE)
    gk = torch.autograd.grad(lk * up, (pk, tk))
    gr = torch.autograd.grad(lr * up, (pr, tr))
    for a, b in zip(gk, gr):
        assert a.dtype == dtype
        torch.testing.assert_close(a, b, atol=atol, rtol=rtol)
    torch.testing.assert_close(gk[1], -gk[0])


@requires_triton
def test_focal_loss_grad_only_where_needed():
    g = torch.Generator().manual_seed(1)
    pred = torch.randn(2, 5, 3, generator=g).to(TRITON_DEVICE).requires_grad_()
    target = torch.randn(2, 5, 3, generator=g).to(TRITON_DEVICE)
    weight = torch.rand(2, 5, generator=g).to(TRITON_DEVICE).requires_grad_()
    loss = ops.focal_reconstruction_loss(pred, target, weight, backend="triton")
    loss.backward()
    assert weight.grad is None and target.grad is None
    expected = 2 * weight.detach()[..., None] * (pred.detach() - target) / (2 * 5)
    torch.testing.assert_close(pred.grad, expected, atol=1e-7, rtol=1e-6)
    # non-contiguous inputs are fine
    p2 = pred.detach().transpose(0, 1).contiguous().transpose(0, 1)
    torch.testing.assert_close(ops.focal_reconstruction_loss(p2, target, weight, backend="triton"), loss.detach())


# --------------------------------------------------------------------------- registration
OPCHECK = ("test_schema", "test_autograd_registration", "test_faketensor")


@requires_triton
def test_opcheck():
    x, L = _skeleton((3, 3, 10, 5, True), torch.float32, seed=3)
    torch.library.opcheck(torch.ops.fastskel.motion_energy_weights.default, (x, [4, 8], 0.01, 1e-6, L),
                          test_utils=OPCHECK)
    p = torch.randn(2, 3, 4, device=TRITON_DEVICE, requires_grad=True)
    t = torch.randn(2, 3, 4, device=TRITON_DEVICE, requires_grad=True)
    for w in (torch.rand(2, 3, device=TRITON_DEVICE), torch.rand(2, 3, 4, device=TRITON_DEVICE)):
        torch.library.opcheck(torch.ops.fastskel.focal_reconstruction_loss.default, (p, t, w), test_utils=OPCHECK)
    g = torch.tensor(1.5, device=TRITON_DEVICE)
    for need in (True, False):
        torch.library.opcheck(torch.ops.fastskel.focal_reconstruction_loss_backward.default,
                              (g, p.detach(), t.detach(), w, need), test_utils=OPCHECK)


@requires_triton
def test_torch_compile_fullgraph():
    """The AMR loss path (weights → patchified weights → focal loss) traces without graph breaks,
    forward and backward. CPU: aot_eager (no C++ toolchain needed); CUDA: inductor."""
    backend = "inductor" if TRITON_DEVICE == "cuda" else "aot_eager"
    x, L = _skeleton((2, 3, 12, 5, True), torch.float32, seed=5)
    pred = torch.randn(2, 15, 12, device=TRITON_DEVICE, requires_grad=True)

    def f(x, pred, L):
        w = ops.motion_energy_weights(x, lengths=L, backend="triton")            # (N, T, V)
        wp = ops.patchify(w[:, None].expand(-1, 3, -1, -1), 4)                   # (N, 15, 12)
        return ops.focal_reconstruction_loss(pred, ops.patchify(x, 4), wp, backend="triton")

    got = torch.compile(f, fullgraph=True, backend=backend)(x, pred, L)
    ref = f(x, pred, L)
    torch.testing.assert_close(got, ref)
    (gc,) = torch.autograd.grad(got, pred)
    (ge,) = torch.autograd.grad(ref, pred)
    torch.testing.assert_close(gc, ge)


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=requires_triton)])
def test_bad_input(backend):
    dev = TRITON_DEVICE if backend == "triton" else "cpu"
    x = torch.randn(2, 3, 12, 25, device=dev)
    mew = lambda *a, **k: ops.motion_energy_weights(*a, backend=backend, **k)
    with pytest.raises(ValueError, match="x: expected a 4-D"):
        mew(x[0])
    with pytest.raises(TypeError, match="x: expected dtype"):
        mew(x.int())
    with pytest.raises(ValueError, match=r"lengths: expected shape \(2,\)"):
        mew(x, lengths=torch.tensor([3, 4, 5], device=dev))
    with pytest.raises(ValueError, match=r"lengths: expected values in \[0, T=12\]"):
        mew(x, lengths=torch.tensor([13, 4], device=dev))
    with pytest.raises(TypeError, match="lengths: expected an integer dtype"):
        mew(x, lengths=torch.tensor([3.0, 4.0], device=dev))
    with pytest.raises(ValueError, match=r"windows: expected at least one window size"):
        mew(x, windows=())
    with pytest.raises(TypeError, match="windows: expected a sequence of ints, got int"):
        mew(x, windows=4)
    with pytest.raises(ValueError, match="windows: expected an int in >= 1, got 0"):
        mew(x, windows=(4, 0))
    with pytest.raises(TypeError, match="windows: expected an int, got float"):
        mew(x, windows=(4.0,))
    with pytest.raises(ValueError, match="k: expected a finite float > 0, got 0"):
        mew(x, k=0)
    with pytest.raises(ValueError, match="eps: expected a finite float > 0"):
        mew(x, eps=-1e-6)
    with pytest.raises(TypeError, match="k: expected a float, got str"):
        mew(x, k="0.01")

    fl = lambda *a: ops.focal_reconstruction_loss(*a, backend=backend)
    p = torch.randn(2, 5, 4, device=dev)
    with pytest.raises(ValueError, match="pred: expected a 3-D"):
        fl(p[0], p[0], p[0])
    with pytest.raises(ValueError, match=r"target: expected shape \(2, 5, 4\) like pred"):
        fl(p, p[:, :4], p)
    with pytest.raises(ValueError, match=r"weight: expected shape \(2, 5, 4\) or \(2, 5\)"):
        fl(p, p, p[:, :, 0:1])
    with pytest.raises(TypeError, match="weight: expected dtype"):
        fl(p, p, torch.ones(2, 5, dtype=torch.long, device=dev))
    with pytest.raises(TypeError, match="target: expected a torch.Tensor"):
        fl(p, 1.0, p)
    with pytest.raises(ValueError, match="pred: expected a non-empty"):
        fl(p[:0], p[:0], p[:0])
