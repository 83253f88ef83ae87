"""barlow_twins_loss: the Gram-form paths (PyTorch op, Triton) against the materialised reference.

Tolerances: losses fp32 rtol 1e-4. Gradients rtol 1e-4 with atol 1e-4 × the gradient's natural
scale ``max_i r_i · max_b |∂L/∂zₙ[b,i]|`` (``r_i`` the normalisation's 1/σ or 1/‖z_i‖): at B = 2
batchnorm the true gradient is suppressed by ~eps/σ² and what remains is cancellation that the
fp32 reference carries too, so an atol relative to the gradient itself would test noise.
"""
import pytest
import torch

import fastskel
from fastskel.backend import BackendUnavailableError
from fastskel.ops import barlow_twins_loss, reference

from conftest import TRITON_DEVICE, requires_cuda, requires_triton

NORMS = ["batchnorm", "cosine"]
LAMBD = 2e-4


def _inputs(b, d, dtype=torch.float32, seed=0, device="cpu", corr=0.8):
    """Two correlated views with per-feature scales and offsets (exercises the normalisation)."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(b, d, generator=g)
    scale = torch.rand(d, generator=g) * 2 + 0.5
    shift = torch.randn(d, generator=g) * 3
    z1 = base * scale + shift
    z2 = (corr * base + (1 - corr ** 2) ** 0.5 * torch.randn(b, d, generator=g)) * scale + shift
    return (z1.to(device=device, dtype=dtype).requires_grad_(), z2.to(device=device, dtype=dtype).requires_grad_())


def _loss_and_grads(fn, z1, z2):
    loss = fn(z1, z2)
    g1, g2 = torch.autograd.grad(loss, (z1, z2))
    return loss, g1, g2


def _grad_scale(z, z_other, normalize, which):
    """max_i r_i · max_b |∂L/∂zₙ[b, i]| for side ``which`` (Gram identity in float64: no D×D)."""
    a = reference.normalize_embeddings(z.detach(), normalize).double().requires_grad_()
    c = reference.normalize_embeddings(z_other.detach(), normalize).double()
    s = z.shape[0] if normalize == "batchnorm" else 1
    dg = (a * c).sum(0) / s
    loss = (1 - dg).pow(2).sum() + LAMBD * (((a @ a.T) * (c @ c.T)).sum() / s ** 2 - dg.pow(2).sum())
    (ga,) = torch.autograd.grad(loss, a)
    zf = z.detach().double()
    r = (torch.rsqrt(zf.var(0, unbiased=False) + 1e-5) if normalize == "batchnorm"
         else 1 / zf.norm(dim=0).clamp(min=1e-12))
    return float((ga.abs().amax(0) * r).max())


def _check_against_reference(fn, z1, z2, normalize, grad_rtol=1e-4, grad_atol_rel=1e-4):
    ref = _loss_and_grads(lambda a, b: reference.barlow_twins_loss(a, b, LAMBD, normalize), z1, z2)
    out = _loss_and_grads(fn, z1, z2)
    assert out[0].dtype == torch.float32 and out[0].shape == ()
    torch.testing.assert_close(out[0], ref[0], rtol=1e-4, atol=0.0)
    for side, (got, want, z, zo) in enumerate(((out[1], ref[1], z1, z2), (out[2], ref[2], z2, z1))):
        assert got.dtype == z.dtype and got.shape == z.shape
        atol = grad_atol_rel * _grad_scale(z, zo, normalize, side)
        torch.testing.assert_close(got.float(), want.float(), rtol=grad_rtol, atol=atol)


def _gram_op(normalize):
    return lambda a, b: torch.ops.fastskel.barlow_twins_gram(a, b, LAMBD, normalize == "cosine")[0]


# --------------------------------------------------------------------------- Gram form, PyTorch op
def _normalize64(z, normalize):
    z = z.double()
    if normalize == "batchnorm":
        return (z - z.mean(0)) / torch.sqrt(z.var(0, unbiased=False) + 1e-5)
    return z / z.norm(dim=0).clamp(min=1e-12)


def _reference64(z1, z2, lambd, normalize):
    """The reference's materialised formula in float64 (ground truth for the cancellation tests)."""
    c = _normalize64(z1, normalize).T @ _normalize64(z2, normalize)
    if normalize == "batchnorm":
        c = c / z1.shape[0]
    dg = torch.diagonal(c)
    return (1 - dg).pow(2).sum() + lambd * (c.pow(2).sum() - dg.pow(2).sum())


def _gram64(z1, z2, lambd, normalize):
    """The same loss through the Gram identity in float64, with autograd: a cheap oracle at large D
    (float64 makes the total-minus-diagonal subtraction harmless); checked against _reference64."""
    a, c = _normalize64(z1, normalize), _normalize64(z2, normalize)
    s = z1.shape[0] if normalize == "batchnorm" else 1
    dg = (a * c).sum(0) / s
    return (1 - dg).pow(2).sum() + lambd * (((a @ a.T) * (c @ c.T)).sum() / s ** 2 - dg.pow(2).sum())


@pytest.mark.parametrize("normalize", NORMS)
@pytest.mark.parametrize("d", [16, 100])
@pytest.mark.parametrize("b", [2, 3, 17, 128, 512])
def test_gram_op_matches_reference_fp32(b, d, normalize):
    z1, z2 = _inputs(b, d, seed=b * 7 + d)
    _check_against_reference(_gram_op(normalize), z1, z2, normalize)


# The materialised reference costs seconds per call at D = 6144 (several 151 MB D×D buffers), so
# the D = 6144 matrix is split: these cases against it, the rest against the float64 oracle below.
@pytest.mark.parametrize("b, normalize, dtype", [(128, "batchnorm", torch.float32), (17, "cosine", torch.float32),
                                                 (128, "cosine", torch.bfloat16)])
def test_gram_op_matches_reference_d6144(b, normalize, dtype):
    z1, z2 = _inputs(b, 6144, dtype=dtype, seed=b)
    tol = dict() if dtype == torch.float32 else dict(grad_rtol=1e-2, grad_atol_rel=1e-2)
    _check_against_reference(_gram_op(normalize), z1, z2, normalize, **tol)


@pytest.mark.parametrize("b, normalize", [(2, "batchnorm"), (2, "cosine"), (3, "batchnorm"), (3, "cosine"),
                                          (17, "batchnorm"), (128, "batchnorm"), (128, "cosine"), (512, "batchnorm")])
def test_gram_op_matches_float64_d6144(b, normalize):
    z1, z2 = _inputs(b, 6144, seed=b + 1)
    want = _loss_and_grads(lambda a, c: _gram64(a, c, LAMBD, normalize), z1, z2)
    got = _loss_and_grads(_gram_op(normalize), z1, z2)
    torch.testing.assert_close(got[0].double(), want[0], rtol=1e-5, atol=0.0)
    for side, (g, w) in enumerate(zip(got[1:], want[1:])):
        # tiny batches: the batchnorm-suppressed regime needs the natural scale; else |grad| is it
        scale = (_grad_scale(z1 if side == 0 else z2, z2 if side == 0 else z1, normalize, side) if b < 17
                 else float(w.abs().max()))
        atol = 1e-4 * scale
        torch.testing.assert_close(g.double(), w.double(), rtol=1e-4, atol=atol)


@pytest.mark.parametrize("normalize", NORMS)
def test_float64_oracle_is_the_reference(normalize):
    z1, z2 = _inputs(5, 70, seed=2)
    z1, z2 = z1.detach().double().requires_grad_(), z2.detach().double().requires_grad_()
    for g, w in zip(_loss_and_grads(lambda a, c: _gram64(a, c, LAMBD, normalize), z1, z2),
                    _loss_and_grads(lambda a, c: _reference64(a, c, LAMBD, normalize), z1, z2)):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("normalize", NORMS)
@pytest.mark.parametrize("b, d", [(2, 16), (3, 100), (17, 100), (128, 16), (512, 100)])
def test_gram_op_matches_reference_bf16(b, d, normalize):
    # bf16 in, fp32 inside both: loss to fp32 rtol, gradients to one bf16 rounding
    z1, z2 = _inputs(b, d, dtype=torch.bfloat16, seed=b + d)
    _check_against_reference(_gram_op(normalize), z1, z2, normalize, grad_rtol=1e-2, grad_atol_rel=1e-2)


@pytest.mark.parametrize("normalize", NORMS)
def test_degenerate_columns(normalize):
    # a constant feature (batchnorm: var 0 → zₙ = 0) and an all-zero feature (cosine: clamped norm)
    z1, z2 = _inputs(9, 40, seed=3)
    with torch.no_grad():
        z1[:, 5] = 0.0 if normalize == "cosine" else 2.5
        z2[:, 7] = 0.0 if normalize == "cosine" else -1.0
    _check_against_reference(_gram_op(normalize), z1, z2, normalize)
    if TRITON_DEVICE == "cpu":
        _check_against_reference(lambda a, b: barlow_twins_loss(a, b, LAMBD, normalize, backend="triton"),
                                 z1, z2, normalize)


@pytest.mark.parametrize("b, d, corr", [(128, 6144, 0.999), (480, 512, 0.9999)])
def test_total_minus_diagonal_cancellation_vs_float64(b, d, corr):
    # views nearly identical → C_ii ≈ 1, so Σ_ij C_ij² − Σ_i C_ii² subtracts close numbers; (480, 512)
    # is the worst B < D regime (the off-diagonal share is only about (D − B)/D of the total)
    z1, z2 = _inputs(b, d, seed=11, corr=corr)
    want = _loss_and_grads(lambda a, c: _reference64(a, c, LAMBD, "batchnorm"), z1, z2)
    got = _loss_and_grads(_gram_op("batchnorm"), z1, z2)
    dg = torch.diagonal(reference.normalize_embeddings(z1.detach()).double().T
                        @ reference.normalize_embeddings(z2.detach()).double() / b)
    off = want[0] - (1 - dg).pow(2).sum()  # λ · off-diagonal part, float64
    assert off > 0.5 * want[0], "the test must be dominated by the off-diagonal term"
    torch.testing.assert_close(got[0].double(), want[0], rtol=2e-5, atol=0.0)
    for g, w in zip(got[1:], want[1:]):
        torch.testing.assert_close(g.double(), w.double(), rtol=1e-4, atol=1e-4 * float(w.abs().max()))


def test_upstream_gradient_scales():
    z1, z2 = _inputs(6, 30, seed=5)
    loss = torch.ops.fastskel.barlow_twins_gram(z1, z2, LAMBD, False)[0]
    g = torch.autograd.grad(loss, (z1, z2), grad_outputs=torch.tensor(2.5))
    ref = torch.autograd.grad(reference.barlow_twins_loss(z1, z2, LAMBD), (z1, z2), grad_outputs=torch.tensor(2.5))
    for a, r in zip(g, ref):
        torch.testing.assert_close(a, r, rtol=1e-4, atol=1e-4 * float(r.abs().max()))


def test_gram_op_ignores_autocast():
    # under AMP the Gram products must stay fp32 (autocast would run mm/bmm in bf16)
    z1, z2 = _inputs(16, 256, seed=21)
    want = _loss_and_grads(_gram_op("batchnorm"), z1, z2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = _loss_and_grads(_gram_op("batchnorm"), z1, z2)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-6, atol=1e-6 * float(w.detach().abs().max()))


# --------------------------------------------------------------------------- public op: dispatch
def _impl_of(loss):
    """Which implementation built ``loss``, read from its autograd node."""
    name = type(loss.grad_fn).__name__
    return "gram" if "barlow_twins_gram" in name else "triton" if "barlow_twins_triton" in name else "torch"


@pytest.mark.parametrize("b, d, expect", [(8, 64, "gram"), (64, 64, "torch"), (100, 12, "torch")])
def test_auto_dispatch_on_cpu(b, d, expect):
    z1, z2 = _inputs(b, d, seed=1)
    loss = barlow_twins_loss(z1, z2, backend="auto")
    assert _impl_of(loss) == expect
    assert _impl_of(barlow_twins_loss(z1, z2, backend="torch")) == "torch"
    torch.testing.assert_close(loss, reference.barlow_twins_loss(z1, z2), rtol=1e-4, atol=0.0)


@pytest.mark.parametrize("normalize", NORMS)
def test_public_auto_matches_reference(normalize):
    z1, z2 = _inputs(24, 300, seed=9)
    _check_against_reference(lambda a, b: barlow_twins_loss(a, b, LAMBD, normalize), z1, z2, normalize)


def test_process_default_backend_torch_runs_reference():
    z1, z2 = _inputs(4, 50, seed=2)
    fastskel.set_backend("torch")
    try:
        assert _impl_of(barlow_twins_loss(z1, z2)) == "torch"
    finally:
        fastskel.set_backend(None)
    assert _impl_of(barlow_twins_loss(z1, z2)) == "gram"


def test_cpp_backend_raises():
    z1, z2 = _inputs(4, 50)
    with pytest.raises(BackendUnavailableError, match="backend"):
        barlow_twins_loss(z1, z2, backend="cpp")


@pytest.mark.skipif(TRITON_DEVICE == "cpu", reason="under TRITON_INTERPRET=1 Triton runs on CPU tensors")
def test_triton_backend_on_cpu_raises_without_interpreter():
    z1, z2 = _inputs(4, 50)
    with pytest.raises(BackendUnavailableError, match="triton"):
        barlow_twins_loss(z1, z2, backend="triton")


@pytest.mark.parametrize("args, exc, match", [
    ((torch.randn(4, 8, 2), torch.randn(4, 8, 2)), ValueError, "z1: expected a 2-D"),
    ((torch.randn(4, 8), torch.randn(4, 9)), ValueError, "z2: expected shape"),
    ((torch.randn(4, 8), torch.randn(4, 8, dtype=torch.float64)), TypeError, "z2: expected dtype"),
    ((torch.randn(1, 8), torch.randn(1, 8)), ValueError, "B >= 2"),
    ((torch.randint(0, 3, (4, 8)), torch.randint(0, 3, (4, 8))), TypeError, "z1: expected dtype"),
    (([1.0], torch.randn(4, 8)), TypeError, "z1: expected a torch.Tensor"),
])
def test_bad_inputs(args, exc, match):
    with pytest.raises(exc, match=match):
        barlow_twins_loss(*args)


@pytest.mark.parametrize("kw, exc, match", [
    (dict(lambd=-1.0), ValueError, "lambd"), (dict(lambd="x"), TypeError, "lambd"),
    (dict(normalize="l2"), ValueError, "normalize"), (dict(backend="cuda"), ValueError, "backend"),
])
def test_bad_arguments(kw, exc, match):
    z1, z2 = _inputs(4, 8)
    with pytest.raises(exc, match=match):
        barlow_twins_loss(z1, z2, **kw)


# --------------------------------------------------------------------------- registration / compile
@pytest.mark.parametrize("cosine", [False, True])
def test_opcheck_gram(cosine):
    z1, z2 = _inputs(5, 12, seed=4)
    torch.library.opcheck(torch.ops.fastskel.barlow_twins_gram.default, (z1, z2, LAMBD, cosine))
    out = torch.ops.fastskel.barlow_twins_gram(z1, z2, LAMBD, cosine)
    torch.library.opcheck(torch.ops.fastskel.barlow_twins_gram_backward.default,
                          (torch.tensor(1.5), *(t.detach() for t in out[1:]), LAMBD, cosine, torch.float32))


def test_torch_compile_fullgraph_cpu():
    z1, z2 = _inputs(6, 40, seed=8)

    def step(a, b):
        return barlow_twins_loss(a, b, LAMBD, "batchnorm") * 1.0

    try:
        compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
        got = _loss_and_grads(compiled, z1, z2)
    except Exception as exc:  # a broken compile toolchain is not this op's failure
        if "fastskel" in repr(exc):
            raise
        pytest.skip(f"torch.compile unavailable on this CPU: {type(exc).__name__}: {exc}")
    want = _loss_and_grads(step, z1, z2)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-7)


# --------------------------------------------------------------------------- Triton (interpreter / CUDA)
def _triton(normalize):
    return lambda a, b: barlow_twins_loss(a, b, LAMBD, normalize, backend="triton")


@requires_triton
@pytest.mark.parametrize("normalize", NORMS)
@pytest.mark.parametrize("b, d", [(2, 16), (3, 100), (17, 16), (17, 100), (70, 20)])
def test_triton_matches_reference_fp32(b, d, normalize):
    # (70, 20): B ≥ D, two row tiles of 64 → the mirrored off-diagonal Gram tile is exercised
    z1, z2 = _inputs(b, d, seed=b * 3 + d, device=TRITON_DEVICE)
    _check_against_reference(_triton(normalize), z1, z2, normalize)


@requires_triton
@pytest.mark.parametrize("normalize", NORMS)
@pytest.mark.parametrize("b, d", [(3, 100), (17, 16)])
def test_triton_matches_reference_bf16(b, d, normalize):
    z1, z2 = _inputs(b, d, dtype=torch.bfloat16, seed=b + 5 * d, device=TRITON_DEVICE)
    _check_against_reference(_triton(normalize), z1, z2, normalize, grad_rtol=1e-2, grad_atol_rel=1e-2)


@requires_triton
@pytest.mark.parametrize("normalize", NORMS)
def test_triton_split_k(monkeypatch, normalize):
    # the CUDA launcher splits the feature axis of the Gram product (interpreter default: 1 split)
    from fastskel.kernels import barlow as kernel

    monkeypatch.setattr(kernel, "_FORCE_SPLIT", 3)
    z1, z2 = _inputs(20, 150, seed=13, device=TRITON_DEVICE)
    _check_against_reference(_triton(normalize), z1, z2, normalize)


@requires_triton
def test_triton_matches_gram_op_intermediates():
    z1, z2 = _inputs(11, 37, seed=6, device=TRITON_DEVICE)
    from fastskel.kernels import barlow as kernel

    for cosine in (False, True):
        t = kernel.barlow_twins_triton(z1, z2, LAMBD, cosine)
        r = torch.ops.fastskel.barlow_twins_gram(z1.cpu(), z2.cpu(), LAMBD, cosine)
        for name, a, b in zip(("loss", "ac", "gram", "diag", "inv", "beta"), t, r):
            torch.testing.assert_close(a.cpu(), b, rtol=1e-5, atol=1e-5, msg=lambda m: f"{name}: {m}")


@requires_triton
def test_opcheck_triton():
    import fastskel.kernels.barlow  # noqa: F401  (registers the op)

    # Under TRITON_INTERPRET=1, wrap_triton returns the interpreted kernel itself (torch cannot
    # hopify it), so the fake-tensor / AOT checks would run the interpreter on FakeTensors: CUDA only.
    utils = (("test_schema", "test_autograd_registration") if TRITON_DEVICE == "cpu"
             else ("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic"))
    for cosine in (False, True):
        z1, z2 = _inputs(5, 20, seed=4, device=TRITON_DEVICE)
        torch.library.opcheck(torch.ops.fastskel.barlow_twins_triton.default, (z1, z2, LAMBD, cosine), test_utils=utils)
        out = torch.ops.fastskel.barlow_twins_triton(z1, z2, LAMBD, cosine)
        torch.library.opcheck(torch.ops.fastskel.barlow_twins_triton_backward.default,
                              (torch.tensor(1.5, device=TRITON_DEVICE), *(t.detach() for t in out[1:]), LAMBD, cosine,
                               torch.float32), test_utils=utils)


@requires_cuda
@requires_triton
@pytest.mark.parametrize("normalize", NORMS)
@pytest.mark.parametrize("b, d", [(2, 16), (17, 100), (128, 6144), (512, 6144), (256, 8192)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_triton_cuda_full_matrix(b, d, normalize, dtype):
    z1, z2 = _inputs(b, d, dtype=dtype, seed=b + d, device="cuda")
    tol = dict() if dtype == torch.float32 else dict(grad_rtol=1e-2, grad_atol_rel=1e-2)
    _check_against_reference(_triton(normalize), z1, z2, normalize, **tol)


@requires_cuda
@requires_triton
def test_triton_cuda_auto_and_compile():
    z1, z2 = _inputs(128, 6144, device="cuda")
    want = _loss_and_grads(lambda a, b: barlow_twins_loss(a, b, backend="triton"), z1, z2)
    got = _loss_and_grads(torch.compile(lambda a, b: barlow_twins_loss(a, b), fullgraph=True), z1, z2)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)


@requires_cuda
@requires_triton
def test_triton_cuda_no_dxd_buffer():
    b, d = 128, 6144
    z1, z2 = _inputs(b, d, device="cuda")
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    _loss_and_grads(lambda a, c: barlow_twins_loss(a, c, backend="triton"), z1, z2)
    torch.cuda.synchronize()
    assert torch.cuda.max_memory_allocated() - base < d * d * 4 / 4  # one D×D fp32 would be 151 MB


# --------------------------------------------------------------------------- module
def test_module_matches_functional_and_validates():
    from fastskel.nn.losses import BarlowTwinsLoss

    z1, z2 = _inputs(6, 50, seed=12)
    mod = BarlowTwinsLoss(lambd=5e-3, normalize="cosine")
    assert "cosine" in repr(mod)
    torch.testing.assert_close(mod(z1, z2), reference.barlow_twins_loss(z1, z2, 5e-3, "cosine"), rtol=1e-4, atol=0.0)
    with pytest.raises(RuntimeError, match="distributed"):
        BarlowTwinsLoss(distributed=True)(z1, z2)
    with pytest.raises(ValueError, match="distributed"):
        BarlowTwinsLoss(distributed="yes")
    with pytest.raises(ValueError, match="normalize"):
        BarlowTwinsLoss(normalize="bn")
