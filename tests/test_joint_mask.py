"""degree_joint_mask (ASMa eq. 1–2, HDSM / LDSM by Gumbel-top-n): hand-computed reference cases,
Triton kernel vs reference (same generator → same joints), gradients, the sampling law
(exact subset probabilities of sampling without replacement, chi-square), torch.library /
torch.compile registration and bad input."""
import itertools
import math

import pytest
import torch

from fastskel import ops
from fastskel.graph import SkeletonGraph
from fastskel.ops import reference as R
from fastskel.ops.joint_mask import joint_mask_noise

from conftest import TRITON_DEVICE, requires_triton

# a small tree with degrees [3, 1, 1, 2, 2, 1] (Σ = 10): HDSM p = [.3, .1, .1, .2, .2, .1]
SMALL = SkeletonGraph([(0, 1), (0, 2), (0, 3), (3, 4), (4, 5)], 0, name="small6")
PATH7 = SkeletonGraph([(i, i + 1) for i in range(6)], 3, name="path7")


# --------------------------------------------------------------------------- reference, by hand
def test_degree_log_probs_hand():
    d = torch.tensor([1, 2, 1])                                  # path 0-1-2
    torch.testing.assert_close(R.degree_log_probs(d, True), torch.tensor([0.25, 0.5, 0.25]).log())
    torch.testing.assert_close(R.degree_log_probs(d, False), torch.tensor([0.75, 0.5, 0.75]).log())


def test_gumbel_from_uniform_hand():
    u = torch.tensor([math.exp(-1.0), math.exp(-math.exp(-2.0)), 0.0, 1.0])
    g = R.gumbel_from_uniform(u)
    torch.testing.assert_close(g[:2], torch.tensor([0.0, 2.0]), atol=1e-6, rtol=0)
    assert torch.isfinite(g).all()                               # 0 and 1 are clamped


def test_degree_joint_mask_reference_hand():
    x = torch.arange(1.0, 7.0).view(1, 1, 2, 3)                  # (N=1, C=1, T=2, V=3)
    log_p = R.degree_log_probs(torch.tensor([1, 2, 1]), True)    # log [.25, .5, .25]
    # G = [2, 0, 0]: keys [log .25 + 2, log .5, log .25] = [0.61, -0.69, -1.39]
    u = torch.tensor([[math.exp(-math.exp(-2.0)), math.exp(-1.0), math.exp(-1.0)]])
    xm, m = R.degree_joint_mask(x, 1, log_p, u)
    assert m.tolist() == [[True, False, False]]
    assert xm.tolist() == [[[[0.0, 2.0, 3.0], [0.0, 5.0, 6.0]]]]
    assert R.degree_joint_mask(x, 2, log_p, u)[1].tolist() == [[True, True, False]]
    # G = 0 everywhere: keys [-1.39, -0.69, -1.39]; n=2 takes joint 1, then the tie 0 vs 2 → joint 0
    u0 = torch.full((1, 3), math.exp(-1.0))
    assert R.degree_joint_mask(x, 1, log_p, u0)[1].tolist() == [[False, True, False]]
    assert R.degree_joint_mask(x, 2, log_p, u0)[1].tolist() == [[True, True, False]]
    assert R.degree_joint_mask(x, 0, log_p, u0)[1].tolist() == [[False, False, False]]
    assert R.degree_joint_mask(x, 3, log_p, u0)[0].abs().sum() == 0


# --------------------------------------------------------------------------- kernel vs reference
def _same_joints(mask_k, mask_r, x, n, graph, high, seed):
    """Same uniforms → same joints, except where two Gumbel keys are a last-ulp near-tie: under the
    CPU interpreter the kernel's ``log`` is NumPy's, which differs from torch's in the last ulp for
    about a third of all inputs (on CUDA both are the CUDA math library's ``logf``, so no row is
    expected to differ there, but the same bound is applied)."""
    assert mask_k.shape == mask_r.shape and mask_k.dtype == torch.bool
    assert (mask_k.sum(1) == n).all()
    diff = (mask_k != mask_r).any(1).cpu()
    if diff.any():
        u = joint_mask_noise(x.shape[0], x.shape[3], x.device, torch.Generator(x.device).manual_seed(seed))
        log_p = R.degree_log_probs(torch.tensor(graph.degrees), high).to(x.device)
        keys = (log_p[None] + R.gumbel_from_uniform(u)).sort(dim=1, descending=True).values.cpu()
        gap = keys[:, n - 1] - keys[:, n]
        assert (gap[diff] < 1e-5).all(), "a row differs where the keys are not a near-tie"
        assert int(diff.sum()) <= max(1, x.shape[0] // 100)


CASES = [  # (N, C, T, graph, n)
    (1, 3, 50, SkeletonGraph.ntu25(), 9),         # batch 1, ASMa shape
    (6, 2, 7, SkeletonGraph.openpose18(), 5),     # V=18
    (5, 3, 9, PATH7, 1),                          # odd T and V
    (4, 1, 3, PATH7, 6),                          # n = V − 1
    (3, 3, 5, SMALL, 0),                          # nothing masked
    (2, 3, 5, SMALL, 6),                          # everything masked
    (300, 1, 1, SMALL, 3),                        # many samples per program
]


@requires_triton
@pytest.mark.parametrize("high", [True, False])
@pytest.mark.parametrize("n_, c, t, graph, n", CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_kernel_matches_reference(n_, c, t, graph, n, high, dtype):
    if dtype != torch.float32 and n_ > 10:
        pytest.skip("one large case per dtype is enough")
    seed = 1000 * n_ + 10 * n + int(high)
    x = torch.randn(n_, c, t, graph.V, generator=torch.Generator().manual_seed(seed)).to(dtype).to(TRITON_DEVICE)
    xk, mk = ops.degree_joint_mask(x, n, high, graph, torch.Generator(x.device).manual_seed(seed), backend="triton")
    xr, mr = ops.degree_joint_mask(x, n, high, graph, torch.Generator(x.device).manual_seed(seed), backend="torch")
    _same_joints(mk, mr, x, n, graph, high, seed)
    assert xk.dtype == dtype and xk.shape == x.shape
    # zeroing: exactly x · keep for the kernel's own mask (bit for bit)
    assert torch.equal(xk, x * (~mk)[:, None, None, :].to(dtype))
    if torch.equal(mk, mr):
        assert torch.equal(xk, xr)


@requires_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_kernel_gradient(dtype):
    g = torch.Generator().manual_seed(7)
    x = torch.randn(4, 3, 11, 7, generator=g).to(dtype).to(TRITON_DEVICE).requires_grad_()
    r = torch.randn(x.shape, generator=g).to(dtype).to(TRITON_DEVICE)
    xm, m = ops.degree_joint_mask(x, 3, False, PATH7, torch.Generator(x.device).manual_seed(1), backend="triton")
    (gx,) = torch.autograd.grad((xm * r).sum(), x)
    assert gx.dtype == dtype
    assert torch.equal(gx, r * (~m)[:, None, None, :].to(dtype))
    xr = x.detach().clone().requires_grad_()
    xm2, m2 = ops.degree_joint_mask(xr, 3, False, PATH7, torch.Generator(x.device).manual_seed(1), backend="torch")
    if torch.equal(m, m2):
        (gr,) = torch.autograd.grad((xm2 * r).sum(), xr)
        assert torch.equal(gx, gr)


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=requires_triton)])
def test_generator_determinism(backend):
    dev = TRITON_DEVICE if backend == "triton" else "cpu"
    x = torch.randn(16, 3, 5, 25, device=dev)
    a = ops.degree_joint_mask(x, 9, generator=torch.Generator(dev).manual_seed(5), backend=backend)[1]
    b = ops.degree_joint_mask(x, 9, generator=torch.Generator(dev).manual_seed(5), backend=backend)[1]
    c = ops.degree_joint_mask(x, 9, generator=torch.Generator(dev).manual_seed(6), backend=backend)[1]
    assert torch.equal(a, b) and not torch.equal(a, c)


# --------------------------------------------------------------------------- the sampling law
def _subset_law(w, n):
    """Exact P(subset) of drawing n of len(w) items one by one without replacement ∝ w; subsets
    keyed by their bit code Σ 2^v."""
    w = [x / sum(w) for x in w]
    law = {}
    for seq in itertools.permutations(range(len(w)), n):
        pr, rest = 1.0, 1.0
        for s in seq:
            pr *= w[s] / rest
            rest -= w[s]
        key = sum(1 << s for s in seq)
        law[key] = law.get(key, 0.0) + pr
    return law


def _chi2(masks, law):
    """Pearson chi-square of the drawn subsets against ``law`` and the bound it must stay under:
    df + 10·sqrt(2·df), whose exceedance probability under the correct law is < 1e-6 for
    df ≥ 5 (≈1.4e-9 at df = 19), so a correct sampler cannot fail it by chance."""
    m, v = masks.shape
    codes = (masks.cpu().long() << torch.arange(v)).sum(1)
    counts = torch.bincount(codes, minlength=1 << v).double()
    expected = torch.zeros(1 << v, dtype=torch.float64)
    for key, p in law.items():
        expected[key] = m * p
    assert counts[expected == 0].sum() == 0, "drew a subset of the wrong size"
    sel = expected > 0
    stat = float(((counts[sel] - expected[sel]) ** 2 / expected[sel]).sum())
    df = len(law) - 1
    return stat, df + 10 * math.sqrt(2 * df)


M_DRAWS = 50_000


@pytest.mark.parametrize("high", [True, False])
@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=requires_triton)])
def test_selection_law_without_replacement(backend, high):
    """Drawn subsets follow successive sampling without replacement ∝ d_v/Σd (HDSM) or
    ∝ 1 − d_v/Σd (LDSM): chi-square over all C(6,3)=20 subsets, and the marginal inclusion
    probabilities within 6 standard errors."""
    dev = TRITON_DEVICE if backend == "triton" else "cpu"
    p = [d / 10 for d in SMALL.degrees]
    w = p if high else [1 - q for q in p]
    law = _subset_law(w, 3)
    x = torch.ones(M_DRAWS, 1, 1, 6, device=dev)
    _, masks = ops.degree_joint_mask(x, 3, high, SMALL, torch.Generator(dev).manual_seed(11), backend=backend)
    stat, bound = _chi2(masks, law)
    assert stat < bound, f"chi2 = {stat:.1f} ≥ {bound:.1f}"
    incl = [sum(q for s, q in law.items() if s >> v & 1) for v in range(6)]
    freq = masks.float().mean(0).cpu()
    se = torch.tensor([math.sqrt(q * (1 - q) / M_DRAWS) for q in incl])
    assert ((freq - torch.tensor(incl)).abs() < 6 * se).all(), (freq, incl)


def test_selection_law_test_has_power():
    """The chi-square above accepts an independent correct sampler (torch.multinomial without
    replacement) and rejects wrong laws: uniform, the other degree rule, Gumbel noise at half scale,
    and "top-n of p·u" — and the exact laws of the alternatives sit far beyond the bound."""
    gen = torch.Generator().manual_seed(3)
    p = torch.tensor([d / 10 for d in SMALL.degrees])
    law = _subset_law(p.tolist(), 3)

    def as_mask(idx):
        return torch.zeros(M_DRAWS, 6, dtype=torch.bool).scatter_(1, idx, True)

    good = torch.multinomial(p.expand(M_DRAWS, 6), 3, replacement=False, generator=gen)
    stat, bound = _chi2(as_mask(good), law)
    assert stat < bound
    u = torch.rand(M_DRAWS, 6, generator=gen)
    wrong = {
        "uniform": torch.rand(M_DRAWS, 6, generator=gen).topk(3, dim=1).indices,
        "other rule": (torch.log(1 - p) + R.gumbel_from_uniform(u)).topk(3, dim=1).indices,
        "half-scale Gumbel": (p.log() + 0.5 * R.gumbel_from_uniform(u)).topk(3, dim=1).indices,
        "p·u": (p * u).topk(3, dim=1).indices,
    }
    for name, idx in wrong.items():
        stat, bound = _chi2(as_mask(idx), law)
        assert stat > 3 * bound, f"{name}: chi2 {stat:.1f} would not be caught"
    # with replacement the mask can hold fewer than n joints, which _chi2 rejects outright
    with_repl = torch.multinomial(p.expand(M_DRAWS, 6), 3, replacement=True, generator=gen)
    with pytest.raises(AssertionError, match="wrong size"):
        _chi2(as_mask(with_repl), law)


# --------------------------------------------------------------------------- registration
# opcheck's "test_aot_dispatch_dynamic" is left to test_torch_compile_fullgraph (it costs ~4 s per
# op under the interpreter); schema, autograd registration and the fake kernel are checked here.
OPCHECK = ("test_schema", "test_autograd_registration", "test_faketensor")


@requires_triton
def test_opcheck():
    x = torch.randn(3, 2, 5, 7, device=TRITON_DEVICE, requires_grad=True)
    u = torch.rand(3, 7, device=TRITON_DEVICE)
    log_p = R.degree_log_probs(torch.tensor(PATH7.degrees), True).to(TRITON_DEVICE)
    torch.library.opcheck(torch.ops.fastskel.degree_joint_mask.default, (x, 2, log_p, u), test_utils=OPCHECK)
    m = torch.rand(3, 7, device=TRITON_DEVICE) > 0.5
    torch.library.opcheck(torch.ops.fastskel.joint_mask_backward.default, (x.detach(), m), test_utils=OPCHECK)


@requires_triton
def test_torch_compile_fullgraph():
    """The public op traces without graph breaks (the generator must be None under torch.compile:
    Dynamo cannot trace ``torch.rand(generator=...)``). CPU: the aot_eager backend (checks
    tracing and the fake kernels without a C++ toolchain); CUDA: inductor."""
    backend = "inductor" if TRITON_DEVICE == "cuda" else "aot_eager"
    x = torch.randn(4, 3, 6, 7, device=TRITON_DEVICE, requires_grad=True)

    def f(x):
        xm, m = ops.degree_joint_mask(x, 2, True, PATH7, backend="triton")
        return xm, m

    torch.manual_seed(0)
    xm, m = torch.compile(f, fullgraph=True, backend=backend)(x)
    assert (m.sum(1) == 2).all()
    assert torch.equal(xm, x.detach() * (~m)[:, None, None, :])
    xm.sum().backward()
    assert torch.equal(x.grad, (~m)[:, None, None, :].expand_as(x).float())


# --------------------------------------------------------------------------- bad input
def test_bad_input():
    x = torch.randn(2, 3, 5, 25)
    with pytest.raises(ValueError, match="x: expected a 4-D"):
        ops.degree_joint_mask(x[0], 3)
    with pytest.raises(TypeError, match="x: expected dtype"):
        ops.degree_joint_mask(x.long(), 3)
    with pytest.raises(ValueError, match="x: expected a non-empty"):
        ops.degree_joint_mask(x[:0], 3)
    with pytest.raises(ValueError, match="x: expected V=7 joints.*got V=25"):
        ops.degree_joint_mask(x, 3, graph=PATH7)
    with pytest.raises(ValueError, match="graph: no built-in graph has V=7"):
        ops.degree_joint_mask(torch.randn(2, 3, 5, 7), 3)
    with pytest.raises(TypeError, match="graph: expected a SkeletonGraph"):
        ops.degree_joint_mask(x, 3, graph="ntu25")
    with pytest.raises(ValueError, match=r"n: expected an int in \[0, 25\].*got 26"):
        ops.degree_joint_mask(x, 26)
    with pytest.raises(ValueError, match="n: expected an int"):
        ops.degree_joint_mask(x, -1)
    with pytest.raises(TypeError, match="n: expected an int, got float"):
        ops.degree_joint_mask(x, 3.0)
    with pytest.raises(TypeError, match="high: expected a bool"):
        ops.degree_joint_mask(x, 3, high=1)
    with pytest.raises(TypeError, match="generator: expected a torch.Generator"):
        ops.degree_joint_mask(x, 3, generator=5)
    with pytest.raises(ValueError, match="backend"):
        ops.degree_joint_mask(x, 3, backend="cuda")
