"""frame_motion and motion_frame_mask (ASMa eq. 3–4, HMTM / LMTM): hand-computed reference cases,
the fused Triton kernel vs the reference (odd T and V, V≠25, padded sequences, batch 1, bf16 /
fp16, T up to 300), gradients, torch.library / torch.compile registration and bad input."""
import pytest
import torch

from fastskel import ops
from fastskel.ops import reference as R

from conftest import TRITON_DEVICE, make_lengths, pad_after, requires_triton


def _hand_x():
    # N=1, C=1, T=4, V=2: frames (0,0) (1,3) (1,3) (4,3)
    return torch.tensor([[0.0, 0.0], [1.0, 3.0], [1.0, 3.0], [4.0, 3.0]]).view(1, 1, 4, 2)


# --------------------------------------------------------------------------- reference, by hand
def test_frame_motion_reference_hand():
    x = _hand_x()
    # |Δ| summed over joints / (C·V=2): (1+3)/2 = 2, 0, (3+0)/2 = 1.5, then a_3 = a_2
    assert R.frame_motion(x).tolist() == [[2.0, 0.0, 1.5, 1.5]]
    L = lambda *v: torch.tensor(v)
    assert R.frame_motion(x, L(3)).tolist() == [[2.0, 0.0, 0.0, 0.0]]    # a_2 = a_1 = 0, frame 3 padded
    assert R.frame_motion(x, L(2)).tolist() == [[2.0, 2.0, 0.0, 0.0]]
    assert R.frame_motion(x, L(1)).tolist() == [[0.0, 0.0, 0.0, 0.0]]    # L ≤ 1: no motion
    assert R.frame_motion(x, L(0)).tolist() == [[0.0, 0.0, 0.0, 0.0]]
    # the mean runs over channels too: a second channel moving by 2 every frame adds 2·2/4 = 1
    x2 = torch.cat([x, torch.tensor([0.0, 2.0, 4.0, 6.0]).view(1, 1, 4, 1).expand(1, 1, 4, 2)], 1)
    assert R.frame_motion(x2).tolist() == [[(4 + 4) / 4, (0 + 4) / 4, (3 + 4) / 4, (3 + 4) / 4]]


def test_motion_frame_mask_reference_hand_ties():
    x = _hand_x()                                                  # a = [2, 0, 1.5, 1.5]
    mask = lambda k, largest, L=None: R.motion_frame_mask(x, k, largest, L)[1][0].tolist()
    assert mask(1, True) == [True, False, False, False]
    assert mask(2, True) == [True, False, True, False]             # tie 2 vs 3 → lower index
    assert mask(3, True) == [True, False, True, True]
    assert mask(1, False) == [False, True, False, False]
    assert mask(2, False) == [False, True, True, False]            # tie 2 vs 3 → lower index
    # L=3: a = [2, 0, 0]; frame 3 is padded and never chosen, even by LMTM where it scores 0
    assert mask(2, False, torch.tensor([3])) == [False, True, True, False]
    assert mask(2, True, torch.tensor([3])) == [True, True, False, False]
    xm, m = R.motion_frame_mask(x, 2, True)
    assert xm[0, 0].tolist() == [[0.0, 0.0], [1.0, 3.0], [0.0, 0.0], [4.0, 3.0]]


# --------------------------------------------------------------------------- kernel vs reference
SHAPES = [  # (N, C, T, V, padded)
    (1, 3, 50, 25, False),     # batch 1, ASMa shape
    (4, 3, 37, 7, True),       # odd T and V, padded
    (3, 2, 300, 5, True),      # T = 300
    (5, 3, 2, 3, True),        # T = 2 (lengths 2 only)
    (6, 1, 9, 18, True),       # V = 18
]
DTYPES = [(torch.float32, 1e-6, 1e-5), (torch.bfloat16, 1e-6, 1e-5), (torch.float16, 1e-6, 1e-5)]


def _inputs(shape, dtype, seed, integer=False):
    n, c, t, v, padded = shape
    g = torch.Generator().manual_seed(seed)
    if integer:  # small integers: every sum is exact in fp32, so both implementations agree bit for bit
        x = torch.randint(-6, 7, (n, c, t, v), generator=g).float()
        x[:, :, 1::5] = x[:, :, 0::5][:, :, : x[:, :, 1::5].shape[2]]   # repeated frames → motion ties
    else:
        x = torch.randn(n, c, t, v, generator=g)
    L = make_lengths(n, t, lo=2, generator=g) if padded else None
    if L is not None:
        x = pad_after(x, L)
    return x.to(dtype).to(TRITON_DEVICE), (None if L is None else L.to(TRITON_DEVICE))


def _assert_valid_topk(mask, a_ref, k, largest, L, tol):
    """``mask`` picks exactly k valid frames and is a top-k (bottom-k) of the reference motion up to
    ``tol``: no unchosen valid frame beats a chosen one by more than the rounding tolerance."""
    n, t = mask.shape
    valid = torch.arange(t, device=mask.device)[None] < (L[:, None] if L is not None else t)
    assert not (mask & ~valid).any(), "a padded frame was chosen"
    assert (mask.sum(1) == k).all()
    key = a_ref if largest else -a_ref
    worst_chosen = torch.where(mask, key, torch.inf).min(1).values
    best_left = torch.where(valid & ~mask, key, -torch.inf).max(1).values
    assert (best_left <= worst_chosen + tol).all()


@requires_triton
@pytest.mark.parametrize("dtype, atol, rtol", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_frame_motion_kernel(shape, dtype, atol, rtol):
    x, L = _inputs(shape, dtype, seed=shape[2] * 7 + shape[3])
    a = ops.frame_motion(x, L, backend="triton")
    assert a.dtype == torch.float32 and a.shape == (shape[0], shape[2])
    torch.testing.assert_close(a, R.frame_motion(x, L), atol=atol, rtol=rtol)


@requires_triton
@pytest.mark.parametrize("largest", [True, False])
@pytest.mark.parametrize("shape", SHAPES)
def test_motion_frame_mask_kernel_exact(shape, largest):
    """Integer-valued inputs with repeated frames: many exact motion ties, identical arithmetic in
    both implementations, so the masks and outputs must match bit for bit (tie → lower index)."""
    x, L = _inputs(shape, torch.float32, seed=shape[2] + int(largest), integer=True)
    kmax = shape[2] - 1 if L is None else int(L.min()) - 1
    for k in sorted({1, kmax}):
        xk, mk = ops.motion_frame_mask(x, k, largest, L, backend="triton")
        xr, mr = ops.motion_frame_mask(x, k, largest, L, backend="torch")
        assert torch.equal(mk, mr), f"k={k}"
        assert torch.equal(xk, xr)


RANDOM_CASES = [(s, d) for s in SHAPES for d in (torch.float32, torch.bfloat16)] + [(SHAPES[1], torch.float16)]


@requires_triton
@pytest.mark.parametrize("largest", [True, False])
@pytest.mark.parametrize("shape, dtype", RANDOM_CASES)
def test_motion_frame_mask_kernel_random(shape, dtype, largest):
    """Random inputs: motions agree to rounding, so the kernel's mask must be a valid top-k of the
    reference motion (rounding-level near-ties may order differently) and zero exactly its frames."""
    x, L = _inputs(shape, dtype, seed=3 * shape[2] + shape[0])
    k = max(1, (shape[2] if L is None else int(L.min())) // 3)
    xk, mk = ops.motion_frame_mask(x, k, largest, L, backend="triton")
    _assert_valid_topk(mk, R.frame_motion(x, L), k, largest, L, tol=1e-5)
    assert xk.dtype == dtype
    assert torch.equal(xk, x * (~mk)[:, None, :, None].to(dtype))
    xr, mr = ops.motion_frame_mask(x, k, largest, L, backend="torch")
    assert (mk == mr).all(1).float().mean() >= 0.5        # near-ties are rare, not the rule


@requires_triton
def test_motion_frame_mask_k0_and_lengths_none():
    x, _ = _inputs((3, 3, 11, 5, False), torch.float32, seed=1)
    xk, mk = ops.motion_frame_mask(x, 0, True, None, backend="triton")
    assert not mk.any() and torch.equal(xk, x)
    xk, mk = ops.motion_frame_mask(x, 10, False, None, backend="triton")   # k = T − 1
    assert (mk.sum(1) == 10).all()


@requires_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_motion_frame_mask_gradient(dtype):
    x, L = _inputs((4, 3, 13, 7, True), dtype, seed=5, integer=True)
    x.requires_grad_()
    r = torch.randn(x.shape, generator=torch.Generator().manual_seed(6)).to(dtype).to(x.device)
    xm, m = ops.motion_frame_mask(x, 1, True, L, backend="triton")
    assert not m.requires_grad
    (gx,) = torch.autograd.grad((xm * r).sum(), x)
    xr = x.detach().clone().requires_grad_()
    xmr, mr = ops.motion_frame_mask(xr, 1, True, L, backend="torch")
    (gr,) = torch.autograd.grad((xmr * r).sum(), xr)
    assert gx.dtype == dtype
    assert torch.equal(gx, gr)
    assert torch.equal(gx, r * (~m)[:, None, :, None].to(dtype))


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=requires_triton)])
def test_frame_motion_not_differentiable(backend):
    dev = TRITON_DEVICE if backend == "triton" else "cpu"
    x = torch.randn(2, 3, 6, 5, device=dev, requires_grad=True)
    assert not ops.frame_motion(x, backend=backend).requires_grad


# --------------------------------------------------------------------------- registration
OPCHECK = ("test_schema", "test_autograd_registration", "test_faketensor")


@requires_triton
def test_opcheck():
    x, L = _inputs((3, 3, 9, 5, True), torch.float32, seed=2)
    torch.library.opcheck(torch.ops.fastskel.frame_motion.default, (x, L), test_utils=OPCHECK)
    torch.library.opcheck(torch.ops.fastskel.frame_motion.default, (x, None), test_utils=OPCHECK)
    torch.library.opcheck(torch.ops.fastskel.motion_frame_mask.default,
                          (x.clone().requires_grad_(), 1, False, L), test_utils=OPCHECK)
    torch.library.opcheck(torch.ops.fastskel.frame_mask_backward.default,
                          (x, torch.rand(3, 9, device=x.device) > 0.5), test_utils=OPCHECK)


@requires_triton
def test_torch_compile_fullgraph():
    """Both public ops trace without graph breaks, forward and backward. CPU: the aot_eager backend
    (tracing + fake kernels, no C++ toolchain needed); CUDA: inductor."""
    backend = "inductor" if TRITON_DEVICE == "cuda" else "aot_eager"
    x, L = _inputs((3, 3, 9, 5, True), torch.float32, seed=4, integer=True)
    x.requires_grad_()

    def f(x, L):
        xm, m = ops.motion_frame_mask(x, 2, False, L, backend="triton")
        return xm, m, ops.frame_motion(x, L, backend="triton")

    xm, m, a = torch.compile(f, fullgraph=True, backend=backend)(x, L)
    xr, mr = R.motion_frame_mask(x.detach(), 2, False, L)
    assert torch.equal(m, mr) and torch.equal(xm.detach(), xr)
    torch.testing.assert_close(a, R.frame_motion(x.detach(), L))
    xm.sum().backward()
    assert torch.equal(x.grad, (~m)[:, None, :, None].expand_as(x).float())


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=requires_triton)])
def test_bad_input(backend):
    dev = TRITON_DEVICE if backend == "triton" else "cpu"
    x = torch.randn(2, 3, 8, 25, device=dev)
    L = torch.tensor([8, 5], device=dev)
    for fn in (lambda *a, **k: ops.frame_motion(*a, backend=backend),
               lambda x, lengths=None: ops.motion_frame_mask(x, 2, lengths=lengths, backend=backend)):
        with pytest.raises(ValueError, match="x: expected a 4-D"):
            fn(x[0])
        with pytest.raises(TypeError, match="x: expected dtype"):
            fn(x.long())
        with pytest.raises(TypeError, match="x: expected a torch.Tensor"):
            fn(x.tolist())
        with pytest.raises(ValueError, match="x: expected a non-empty"):
            fn(x[:, :, :0])
        with pytest.raises(ValueError, match=r"lengths: expected shape \(2,\)"):
            fn(x, torch.tensor([8], device=dev))
        with pytest.raises(TypeError, match="lengths: expected an integer dtype"):
            fn(x, L.float())
        with pytest.raises(TypeError, match="lengths: expected an integer torch.Tensor"):
            fn(x, [8, 5])
        with pytest.raises(ValueError, match=r"lengths: expected values in \[0, T=8\], got min 5, max 9"):
            fn(x, torch.tensor([9, 5], device=dev))
        with pytest.raises(ValueError, match="lengths: expected values.*got min -1"):
            fn(x, torch.tensor([-1, 5], device=dev))
    mfm = lambda *a, **k: ops.motion_frame_mask(*a, backend=backend, **k)
    with pytest.raises(ValueError, match=r"k: expected an int in \[0, 7\] \(below T=8\), got 8"):
        mfm(x, 8)
    with pytest.raises(ValueError, match="k: expected an int.*got -1"):
        mfm(x, -1)
    with pytest.raises(TypeError, match="k: expected an int, got float"):
        mfm(x, 2.0)
    with pytest.raises(TypeError, match="k: expected an int, got bool"):
        mfm(x, True)
    with pytest.raises(ValueError, match="k: expected k < every valid length.*k=5 with a sequence of 5"):
        mfm(x, 5, lengths=L)
    with pytest.raises(ValueError, match="k: expected k < every valid length.*k=1 with a sequence of 1"):
        mfm(x, 1, lengths=torch.tensor([8, 1], device=dev))
    with pytest.raises(TypeError, match="largest: expected a bool"):
        mfm(x, 2, largest=1)
    bad = x.clone()
    bad[1, 0, 3, 4] = float("nan")
    with pytest.raises(ValueError, match="x: expected finite values"):
        mfm(bad, 2)
    bad[1, 0, 3, 4] = float("inf")
    with pytest.raises(ValueError, match="x: expected finite values"):
        mfm(bad, 2)
    mfm(x, 4, lengths=L)                                    # k = L − 1 is fine
