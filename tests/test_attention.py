"""fastskel.ops.attention: the fused Triton kernel (forward and backward) against the float32
reference, on fresh random inputs: the three methods' shapes scaled down, odd lengths, shared
queries (Bq = 1), key padding (with fully masked rows), RoPE with unrotated tokens, fp32/bf16/fp16.

Under ``TRITON_INTERPRET=1`` on CPU a representative subset runs (B·H tiny); on CUDA the full matrix.
"""
import itertools
import math

import pytest
import torch

import fastskel
from fastskel.backend import BackendUnavailableError
from fastskel.ops import Rope, attention, reference

from conftest import CUDA, TRITON_DEVICE, requires_cuda, requires_triton

# (atol, rtol) of the output and of the gradients, per dtype, against the float32 reference.
TOL = {
    torch.float32: ((1e-5, 1e-4), (5e-5, 1e-3)),
    torch.float16: ((2e-3, 5e-3), (5e-3, 1e-2)),
    torch.bfloat16: ((1.5e-2, 2e-2), (4e-2, 5e-2)),
}
BF16, FP16, FP32 = torch.bfloat16, torch.float16, torch.float32


def _kernel():
    from fastskel.kernels import attention as kernel

    return kernel


def make_inputs(bq, b, h, lq, lk, d, dtype, mask=False, rope=False, seed=0, device=None):
    """Random q, k, v (leaves), an optional mask with one fully masked batch row, optional RoPE."""
    device = device or TRITON_DEVICE or "cpu"
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(bq, h, lq, d, generator=g).to(device, dtype).requires_grad_()
    k = torch.randn(b, h, lk, d, generator=g).to(device, dtype).requires_grad_()
    v = torch.randn(b, h, lk, d, generator=g).to(device, dtype).requires_grad_()
    kpm = None
    if mask:
        kpm = torch.rand(b, lk, generator=g) < 0.35
        kpm[:, 0] = False                      # every row keeps a key ...
        kpm[0] = True                          # ... except batch 0: all its keys are padding
        kpm = kpm.to(device)
    pos = None
    if rope:
        # tokens without a position (cls / registers) first, then temporal positions; ints for q
        qp = torch.arange(lq) // 2 - min(lq - 1, 2)
        kp = (torch.arange(lk, dtype=torch.float32) * 0.75 - min(lk - 1, 3)).to(device)
        pos = Rope(qp, kp, 500.0 if lq % 2 else 10000.0)
    return q, k, v, kpm, pos


def check_against_reference(q, k, v, kpm, pos, scale=None, backend="triton", seed=1):
    out = attention(q, k, v, scale, kpm, pos, backend=backend)
    ref = reference.attention(q, k, v, scale, kpm, pos)
    assert out.shape == ref.shape and out.dtype == q.dtype
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed)).to(out.device, out.dtype)
    grads = torch.autograd.grad(out, (q, k, v), g)
    ref_grads = torch.autograd.grad(ref, (q, k, v), g)
    (oa, orr), (ga, gr) = TOL[q.dtype]
    torch.testing.assert_close(out.float(), ref.float(), atol=oa, rtol=orr)
    for name, a, r, t in zip("qkv", grads, ref_grads, (q, k, v)):
        assert a.shape == t.shape and a.dtype == t.dtype, name
        torch.testing.assert_close(a.float(), r.float(), atol=ga, rtol=gr, msg=lambda m: f"d{name}: {m}")
    if kpm is not None and bool(kpm[0].all()):
        assert torch.all(out[0] == 0)          # fully masked rows give zeros
        assert torch.all(grads[1][0] == 0) and torch.all(grads[2][0] == 0)
    return out, grads


# ----------------------------------------------------------------------------------------------
# the representative subset (runs in the interpreter on CPU, and on CUDA)
# id: (Bq, B, H, Lq, Lk, d, dtype, mask, rope)
CASES = {
    "amr_shared_queries": (1, 3, 1, 125, 75, 32, BF16, True, False),
    "amr_per_sample": (2, 2, 1, 125, 75, 32, FP32, False, False),
    "asma_13x13": (3, 3, 1, 13, 13, 64, FP16, True, False),
    "slim_205_rope": (2, 2, 1, 205, 205, 32, FP32, True, True),
    "tiled_bwd_shared_rope": (1, 2, 1, 75, 205, 64, BF16, False, True),
    "odd_1x7": (2, 2, 2, 1, 7, 16, FP32, False, False),
    "odd_7x1_shared": (1, 2, 1, 7, 1, 16, FP16, True, True),
    "odd_1x1_batch1": (1, 1, 1, 1, 1, 16, BF16, False, True),
    "d128_7x75": (2, 2, 1, 7, 75, 128, FP32, True, True),
    "fp16_205x125": (2, 2, 1, 205, 125, 16, FP16, False, False),
}


@requires_triton
@pytest.mark.parametrize("case", list(CASES))
def test_matches_reference(case):
    bq, b, h, lq, lk, d, dtype, mask, rope = CASES[case]
    check_against_reference(*make_inputs(bq, b, h, lq, lk, d, dtype, mask, rope, seed=len(case)))


@requires_triton
def test_custom_scale_and_strided_inputs():
    """q, k, v as views of a fused (B, L, 3, H, d) projection, plus a non-unit last stride."""
    b, h, l, d = 2, 2, 9, 16
    dev = TRITON_DEVICE
    qkv = torch.randn(b, l, 3, h, d, device=dev, requires_grad=True)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
    v = v.transpose(-1, -2).contiguous().transpose(-1, -2)          # last-dim stride != 1
    assert v.stride(-1) != 1
    out = attention(q, k, v, scale=0.3, backend="triton")
    ref = reference.attention(q, k, v, scale=0.3)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)
    g = torch.randn_like(out)
    (ga,) = torch.autograd.grad(out, qkv, g)
    (gr,) = torch.autograd.grad(ref, qkv, g)
    torch.testing.assert_close(ga, gr, atol=5e-5, rtol=1e-3)
    # the output is stored (B, Lq, H, d): merging heads is a view
    assert out.transpose(1, 2).is_contiguous()


@requires_triton
def test_shared_queries_sum_gradients_over_batch():
    """Bq = 1 equals expanding q to the batch: same output, dq = Σ_b dq_b (atomics in the kernel)."""
    q, k, v, kpm, pos = make_inputs(1, 5, 2, 7, 13, 32, FP32, mask=True, rope=True, seed=3)
    out = attention(q, k, v, None, kpm, pos, backend="triton")
    qe = q.detach().expand(5, -1, -1, -1).contiguous().requires_grad_()
    out_e = attention(qe, k, v, None, kpm, pos, backend="triton")
    torch.testing.assert_close(out, out_e, atol=1e-6, rtol=1e-6)
    g = torch.randn_like(out)
    (dq,) = torch.autograd.grad(out, q, g)
    (dq_e,) = torch.autograd.grad(out_e, qe, g)
    torch.testing.assert_close(dq, dq_e.sum(0, keepdim=True), atol=1e-5, rtol=1e-5)


@requires_triton
@pytest.mark.parametrize("cfg", [dict(BLOCK_M=16, BLOCK_N=16, PAIRS=4), dict(BLOCK_M=16, BLOCK_N=16, PAIRS=8)])
def test_pairs_per_program(monkeypatch, cfg):
    """Several (batch, head) pairs per program, with a ragged last group (B·H = 7)."""
    kernel = _kernel()
    monkeypatch.setattr(kernel, "CONFIG_OVERRIDE", {"fwd": cfg, "bwd_fused": cfg})
    check_against_reference(*make_inputs(1, 7, 1, 13, 13, 16, FP32, mask=True, rope=True, seed=11))


@requires_triton
def test_tiled_backward_matches_fused(monkeypatch):
    """The two-pass (dk/dv, dq) backward and the fused one agree with the reference on one input."""
    kernel = _kernel()
    inputs = make_inputs(2, 2, 1, 40, 70, 32, FP32, mask=True, rope=True, seed=5)
    _, fused = check_against_reference(*inputs)
    monkeypatch.setattr(kernel, "MAX_FUSED_KEYS", 0)
    monkeypatch.setattr(kernel, "CONFIG_OVERRIDE", {"fwd": dict(BLOCK_M=16, BLOCK_N=32, PAIRS=1),
                                                    "bwd_tiled": dict(BLOCK_M=16, BLOCK_N=32)})
    _, tiled = check_against_reference(*inputs)
    for a, b in zip(fused, tiled):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


@requires_triton
def test_autotuned_launch_caches_the_pick(monkeypatch):
    """The CUDA launch path: the first call of a shape autotunes, later calls reuse its pick."""
    kernel = _kernel()
    calls = []

    class FakeTuner:          # stands in for triton.autotune: runs and reports one config
        def __init__(self, raw, space_fn):
            self.raw, self.space_fn = raw, space_fn

        def __getitem__(self, grid):
            def run(*args, **kwargs):
                calls.append(self.raw.__name__)
                cfg = dict(self.space_fn(args[-2], args[-1], kwargs["D"])[-1])
                self.best_config = type("Cfg", (), dict(kwargs={k: v for k, v in cfg.items() if "num_" not in k},
                                                        num_warps=cfg["num_warps"], num_stages=cfg["num_stages"]))
                self.raw[grid](*args, **kwargs, **cfg)
            return run

    monkeypatch.setattr(kernel, "INTERPRET", False)       # the raw kernels stay interpreted
    monkeypatch.setattr(kernel, "AUTOTUNE", True)
    monkeypatch.setattr(kernel, "_BEST", {})
    monkeypatch.setattr(kernel, "_fwd_tuned", FakeTuner(kernel._attn_fwd, kernel._fwd_space))
    monkeypatch.setattr(kernel, "_bwd_fused_tuned", FakeTuner(kernel._attn_bwd_fused, kernel._bwd_fused_space))
    for seed in (0, 1):
        check_against_reference(*make_inputs(1, 3, 1, 13, 9, 16, FP32, mask=True, seed=seed))
    assert calls == ["_attn_fwd", "_attn_bwd_fused"]      # tuned once per kernel, then cached
    assert len(kernel._BEST) == 2


# ----------------------------------------------------------------------------------------------
# the full matrix (CUDA only): every length pair × dtype, head dims / Bq / mask / RoPE cycled
LENGTHS = (1, 7, 75, 125, 205)
FULL = [(lq, lk, dt, i) for i, (lq, lk, dt) in enumerate(itertools.product(LENGTHS, LENGTHS, (FP32, BF16, FP16)))]


@pytest.fixture
def no_autotune(monkeypatch):
    """Heuristic configs: the matrix would otherwise autotune every one of its 75 shapes."""
    monkeypatch.setattr(_kernel(), "AUTOTUNE", False)


@requires_cuda
@pytest.mark.parametrize("lq,lk,dtype,i", FULL, ids=[f"{a}x{b}-{str(t)[6:]}" for a, b, t, _ in FULL])
def test_full_matrix_cuda(no_autotune, lq, lk, dtype, i):
    d = (16, 32, 64, 128)[i % 4]
    bq, b = (1, 4) if i % 3 == 0 else (4, 4)
    mask, rope = bool(i % 2), bool((i // 2) % 2)
    check_against_reference(*make_inputs(bq, b, 3, lq, lk, d, dtype, mask, rope, seed=i, device="cuda"))


@requires_cuda
@pytest.mark.parametrize("name,shape", [("amr", (1, 256, 8, 125, 75, 32)), ("amr_layers", (256, 256, 8, 125, 75, 32)),
                                        ("asma", (256, 256, 4, 13, 13, 64)), ("slim", (64, 64, 8, 205, 205, 32))])
def test_method_shapes_cuda(name, shape):
    bq, b, h, lq, lk, d = shape
    check_against_reference(*make_inputs(bq, b, h, lq, lk, d, BF16, mask=name == "amr", rope=name == "slim",
                                         seed=7, device="cuda"))


def _spaces():
    k = _kernel()
    # (kernel name, space function, shape (Bq, B, H, Lq, Lk, d), mask, rope)
    return [("fwd", k._fwd_space, (1, 8, 3, 125, 75, 32), True, False),
            ("bwd_fused", k._bwd_fused_space, (1, 8, 3, 125, 75, 32), True, False),
            ("fwd", k._fwd_space, (8, 8, 3, 13, 13, 64), True, True),
            ("bwd_fused", k._bwd_fused_space, (8, 8, 3, 13, 13, 64), True, True),
            ("fwd", k._fwd_space, (8, 8, 3, 205, 205, 32), False, True),
            ("bwd_tiled", k._bwd_tiled_space, (1, 8, 3, 205, 205, 32), False, True)]


@pytest.mark.slow
@requires_cuda
@pytest.mark.parametrize("which", range(6))
def test_every_autotune_config_cuda(monkeypatch, which):
    """Each config the autotuner may pick at the methods' shapes gives the reference's result."""
    name, space_fn, (bq, b, h, lq, lk, d), mask, rope = _spaces()[which]
    kernel = _kernel()
    for cfg in space_fn(lq, lk, d):
        monkeypatch.setattr(kernel, "CONFIG_OVERRIDE", {name: cfg})
        check_against_reference(*make_inputs(bq, b, h, lq, lk, d, BF16, mask, rope, seed=9, device="cuda"))


# ----------------------------------------------------------------------------------------------
# registration: opcheck, torch.compile
def _op_args(device):
    q, k, v, kpm, pos = make_inputs(1, 3, 2, 7, 5, 16, FP32, mask=True, rope=True, seed=2, device=device)
    kernel = _kernel()
    qp, kp = pos.q_pos.float().to(device), pos.k_pos.float().to(device)
    return q, k, v, kpm, qp, kp, kernel.inv_freq(16, pos.base, torch.device(device)), 0.25


@requires_triton
def test_opcheck_forward_and_backward():
    args = _op_args(TRITON_DEVICE)
    torch.library.opcheck(torch.ops.fastskel.attention_fwd.default, args)
    q, k, v, kpm, qp, kp, f, s = args
    o, lse = torch.ops.fastskel.attention_fwd(*args)
    bwd_args = (torch.randn_like(o), q.detach(), k.detach(), v.detach(), o.detach(), lse, kpm, qp, kp, f, s)
    torch.library.opcheck(torch.ops.fastskel.attention_bwd.default, bwd_args)


@requires_triton
def test_torch_compile_fullgraph():
    """fullgraph trace of forward + backward through the registered ops. On CPU the interpreter path
    is an opaque custom op, traced with the aot_eager backend (no C++ toolchain needed); on CUDA
    Inductor compiles the triton_op."""
    q, k, v, kpm, pos = make_inputs(1, 3, 2, 7, 5, 16, FP32, mask=True, rope=True, seed=4)

    def f(q, k, v):
        return attention(q, k, v, key_padding_mask=kpm, rope=pos, backend="triton").square().sum()

    compiled = torch.compile(f, fullgraph=True, backend="inductor" if CUDA else "aot_eager")
    out_c = compiled(q, k, v)
    grads_c = torch.autograd.grad(out_c, (q, k, v))
    out = f(q, k, v)
    grads = torch.autograd.grad(out, (q, k, v))
    torch.testing.assert_close(out_c, out, atol=1e-5, rtol=1e-5)
    for a, b in zip(grads_c, grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------------------------
# dispatch
def test_torch_and_auto_on_cpu_run_the_reference():
    q, k, v, kpm, pos = make_inputs(2, 2, 2, 5, 6, 8, FP32, mask=True, rope=True, device="cpu")
    ref = reference.attention(q, k, v, None, kpm, pos)
    assert torch.equal(attention(q, k, v, None, kpm, pos, backend="torch"), ref)
    assert torch.equal(attention(q, k, v, None, kpm, pos, backend="auto"), ref)
    assert torch.equal(attention(q, k, v, None, kpm, pos), ref)


def test_reference_matches_sdpa():
    """The reference itself against PyTorch's SDPA (boolean mask: True = attend)."""
    q, k, v, kpm, _ = make_inputs(2, 2, 2, 9, 11, 16, FP32, device="cpu")
    kpm = torch.zeros(2, 11, dtype=torch.bool)
    kpm[1, 4:] = True
    want = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=~kpm[:, None, None, :])
    torch.testing.assert_close(reference.attention(q, k, v, None, kpm), want, atol=1e-6, rtol=1e-5)


@requires_triton
def test_explicit_triton_rejects_unsupported_head_dim():
    q, k, v, _, _ = make_inputs(1, 2, 1, 4, 4, 24, FP32)
    with pytest.raises(BackendUnavailableError, match="head dim d=24"):
        attention(q, k, v, backend="triton")


@requires_cuda
def test_auto_falls_back_on_cuda_for_unsupported_dtype_and_dim():
    for d, dtype in ((24, FP32), (32, torch.float64)):
        q, k, v, _, _ = make_inputs(2, 2, 1, 4, 4, d, dtype, device="cuda")
        torch.testing.assert_close(attention(q, k, v, backend="auto"), reference.attention(q, k, v))


# ----------------------------------------------------------------------------------------------
# bad input: TypeError / ValueError naming the argument, expected and got
def _good():
    return dict(q=torch.randn(1, 2, 5, 16), k=torch.randn(3, 2, 7, 16), v=torch.randn(3, 2, 7, 16))


BAD = [
    ("q not a tensor", dict(q=[1.0]), TypeError, r"q: expected a torch.Tensor"),
    ("q 3-D", dict(q=torch.randn(2, 5, 16)), ValueError, r"q: expected a 4-D tensor"),
    ("q int", dict(q=torch.ones(1, 2, 5, 16, dtype=torch.int64)), TypeError, r"q: expected dtype"),
    ("v unlike k", dict(v=torch.randn(3, 2, 6, 16)), ValueError, r"v: expected shape \(3, 2, 7, 16\)"),
    ("q batch", dict(q=torch.randn(2, 2, 5, 16)), ValueError, r"q: expected shape \(\{1 or 3\}, 2, Lq, 16\)"),
    ("q heads", dict(q=torch.randn(1, 3, 5, 16)), ValueError, r"q: expected shape"),
    ("q head dim", dict(q=torch.randn(1, 2, 5, 8)), ValueError, r"q: expected shape .* got \(1, 2, 5, 8\)"),
    ("mixed dtypes", dict(k=torch.randn(3, 2, 7, 16, dtype=BF16)), TypeError, r"q, k, v: expected one dtype"),
    ("empty Lq", dict(q=torch.randn(1, 2, 0, 16)), ValueError, r"non-empty lengths"),
    ("scale <= 0", dict(scale=0.0), ValueError, r"scale: expected a finite float > 0, got 0.0"),
    ("scale type", dict(scale="big"), TypeError, r"scale: expected a float, got str"),
    ("mask dtype", dict(key_padding_mask=torch.zeros(3, 7)), TypeError,
     r"key_padding_mask: expected dtype in \['torch.bool'\], got torch.float32"),
    ("mask shape", dict(key_padding_mask=torch.zeros(3, 5, dtype=torch.bool)), ValueError,
     r"key_padding_mask: expected shape \(3, 7\), got \(3, 5\)"),
    ("mask rank", dict(key_padding_mask=torch.zeros(3, 1, 7, dtype=torch.bool)), ValueError,
     r"key_padding_mask: expected a 2-D tensor"),
    ("rope type", dict(rope=[torch.arange(5), torch.arange(7)]), TypeError, r"rope: expected Rope"),
    ("rope q_pos length", dict(rope=Rope(torch.arange(4), torch.arange(7))), ValueError,
     r"rope.q_pos: expected shape \(5,\), got \(4,\)"),
    ("rope k_pos rank", dict(rope=Rope(torch.arange(5), torch.zeros(7, 1))), ValueError,
     r"rope.k_pos: expected a 1-D tensor"),
    ("rope bool", dict(rope=Rope(torch.zeros(5, dtype=torch.bool), torch.arange(7))), TypeError,
     r"rope.q_pos: expected integer or floating positions, got torch.bool"),
    ("rope base", dict(rope=Rope(torch.arange(5), torch.arange(7), -1.0)), ValueError, r"rope.base"),
    ("rope odd d", dict(q=torch.randn(1, 2, 5, 15), k=torch.randn(3, 2, 7, 15), v=torch.randn(3, 2, 7, 15),
                        rope=Rope(torch.arange(5), torch.arange(7))), ValueError,
     r"rope: expected an even head dim, got d=15"),
    ("backend", dict(backend="cuda"), ValueError, r"backend: expected one of"),
]


@pytest.mark.parametrize("what,change,exc,match", BAD, ids=[b[0] for b in BAD])
def test_bad_input(what, change, exc, match):
    args = {**_good(), "backend": "torch", **change}
    with pytest.raises(exc, match=match):
        attention(**args)


def test_explicit_triton_without_triton_device_raises():
    if TRITON_DEVICE == "cpu":
        pytest.skip("the interpreter runs Triton on CPU in this process")
    with pytest.raises(BackendUnavailableError, match="backend: 'triton'"):
        attention(**_good(), backend="triton")


def test_public_namespace():
    assert fastskel.ops.attention is attention
    assert math.isclose(Rope(torch.zeros(1), torch.zeros(1)).base, 10000.0)
