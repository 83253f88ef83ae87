"""fastskel.nn attention modules: equal to torch.nn.MultiheadAttention with the same weights, shared
queries, RoPE, state-dict names, and the Triton path equal to the reference path."""
import pytest
import torch
from torch import nn

from fastskel.nn.attention import CrossAttention, MultiheadAttention, MultiheadCrossAttention
from fastskel.ops import Rope, reference

from conftest import TRITON_DEVICE, requires_triton

DIM, HEADS = 32, 2          # head dim 16: a size the Triton kernel takes


def _torch_mha(dim, heads, kdim=None):
    return nn.MultiheadAttention(dim, heads, batch_first=True, kdim=kdim, vdim=kdim)


def _copy_cross(mine: MultiheadCrossAttention, ref: nn.MultiheadAttention):
    dim = mine.q.out_features
    with torch.no_grad():
        if ref._qkv_same_embed_dim:
            w = ref.in_proj_weight
            mine.q.weight.copy_(w[:dim])
            mine.kv.weight.copy_(w[dim:])
        else:
            mine.q.weight.copy_(ref.q_proj_weight)
            mine.kv.weight.copy_(torch.cat([ref.k_proj_weight, ref.v_proj_weight]))
        mine.q.bias.copy_(ref.in_proj_bias[:dim])
        mine.kv.bias.copy_(ref.in_proj_bias[dim:])
        mine.proj.weight.copy_(ref.out_proj.weight)
        mine.proj.bias.copy_(ref.out_proj.bias)


def _backends():
    return ["torch"] + (["triton"] if TRITON_DEVICE else [])


@pytest.mark.parametrize("backend", _backends())
@pytest.mark.parametrize("kv_dim", [None, 24])
def test_cross_attention_equals_torch_mha(backend, kv_dim):
    torch.manual_seed(0)
    dev = TRITON_DEVICE if backend == "triton" else "cpu"
    ref = _torch_mha(DIM, HEADS, kv_dim).to(dev)
    mine = MultiheadCrossAttention(DIM, HEADS, kv_dim=kv_dim, backend=backend).to(dev)
    _copy_cross(mine, ref)
    b, lq, lk = 3, 11, 7
    query = torch.randn(b, lq, DIM, device=dev)
    context = torch.randn(b, lk, kv_dim or DIM, device=dev)
    kpm = torch.zeros(b, lk, dtype=torch.bool, device=dev)
    kpm[1, 3:] = True
    kpm[2, :2] = True
    want, _ = ref(query, context, context, key_padding_mask=kpm, need_weights=False)
    got = mine(query, context, key_padding_mask=kpm)
    assert got.shape == (b, lq, DIM)
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("backend", _backends())
def test_self_attention_equals_torch_mha(backend):
    torch.manual_seed(1)
    dev = TRITON_DEVICE if backend == "triton" else "cpu"
    ref = _torch_mha(DIM, HEADS).to(dev)
    mine = MultiheadAttention(DIM, HEADS, backend=backend).to(dev)
    with torch.no_grad():
        mine.qkv.weight.copy_(ref.in_proj_weight)
        mine.qkv.bias.copy_(ref.in_proj_bias)
        mine.proj.weight.copy_(ref.out_proj.weight)
        mine.proj.bias.copy_(ref.out_proj.bias)
    x = torch.randn(2, 13, DIM, device=dev, requires_grad=True)
    want, _ = ref(x, x, x, need_weights=False)
    got = mine(x)
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-4)
    g = torch.randn_like(got)
    (gx,) = torch.autograd.grad(got, x, g)
    (gx_ref,) = torch.autograd.grad(want, x, g)
    torch.testing.assert_close(gx, gx_ref, atol=5e-5, rtol=1e-3)


@requires_triton
def test_triton_module_matches_reference_module_with_shared_queries_and_rope():
    """AMR decoder style: one learnable query set (batch 1) against per-sample context, RoPE with
    unrotated tokens; outputs and every parameter gradient equal across backends."""
    torch.manual_seed(2)
    dev = TRITON_DEVICE
    fast = MultiheadCrossAttention(DIM, HEADS, backend="triton").to(dev)
    slow = MultiheadCrossAttention(DIM, HEADS, backend="torch").to(dev)
    slow.load_state_dict(fast.state_dict())
    queries = nn.Parameter(torch.randn(1, 9, DIM, device=dev))
    context = torch.randn(4, 6, DIM, device=dev)
    rope = Rope(torch.arange(9) - 1, torch.arange(6) - 2)
    outs, grads = [], []
    for mod in (fast, slow):
        out = mod(queries, context, rope=rope)
        assert out.shape == (4, 9, DIM)
        params = [queries] + list(mod.parameters())
        grads.append(torch.autograd.grad(out.square().sum(), params))
        outs.append(out)
    torch.testing.assert_close(outs[0], outs[1], atol=2e-5, rtol=1e-4)
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-3)


def test_shared_queries_equal_expanded_queries():
    torch.manual_seed(3)
    mod = CrossAttention(DIM, HEADS, backend="torch")
    q = torch.randn(1, 5, DIM)
    ctx = torch.randn(3, 4, DIM)
    torch.testing.assert_close(mod(q, ctx), mod(q.expand(3, -1, -1), ctx))


def test_self_attention_rope_matches_reference_formula():
    torch.manual_seed(4)
    mod = MultiheadAttention(DIM, HEADS, backend="torch")
    x = torch.randn(2, 8, DIM)
    pos = torch.cat([torch.full((2,), -1.0), torch.arange(6.0)])
    rope = Rope(pos, pos)
    qkv = mod.qkv(x).view(2, 8, 3, HEADS, DIM // HEADS).permute(2, 0, 3, 1, 4)
    att = reference.attention(qkv[0], qkv[1], qkv[2], rope=rope)
    want = mod.proj(att.transpose(1, 2).reshape(2, 8, DIM))
    torch.testing.assert_close(mod(x, rope=rope), want)
    assert not torch.allclose(mod(x), want)          # RoPE changes the result


def test_state_dict_names_and_alias():
    assert CrossAttention is MultiheadCrossAttention
    assert set(MultiheadAttention(DIM, HEADS).state_dict()) == {"qkv.weight", "qkv.bias", "proj.weight", "proj.bias"}
    assert set(MultiheadCrossAttention(DIM, HEADS, kv_dim=8).state_dict()) == {
        "q.weight", "q.bias", "kv.weight", "kv.bias", "proj.weight", "proj.bias"}
    assert MultiheadCrossAttention(DIM, HEADS, kv_dim=8).kv.in_features == 8
    assert "qkv.bias" not in MultiheadAttention(DIM, HEADS, qkv_bias=False).state_dict()


@pytest.mark.parametrize("cls", [MultiheadAttention, MultiheadCrossAttention])
def test_heads_must_divide_dim(cls):
    with pytest.raises(ValueError, match="heads: expected a divisor of dim=30, got 4"):
        cls(30, 4)
