"""st-gcn spatial graph convolution as a registered operator ``torch.ops.fastskel.graph_conv``.

``y[n,c,t,w] = Σ_k Σ_v (W_k x + b_k)[n,c,t,v] · A[k,v,w]`` (st-gcn ``ConvTemporalGraphical`` with
temporal kernel 1). The C++ op (``csrc/``) has a fake (meta) implementation and autograd registered
here, so ``torch.compile(fullgraph=True)`` traces it; without ``_C`` the reference runs.
"""
from __future__ import annotations

from typing import Optional

import torch

from fastskel import _ext
from fastskel.backend import resolve
from . import _checks as chk
from . import reference

IMPLEMENTED = ("cpp", "torch")


def _register() -> None:
    @torch.library.register_fake("fastskel::graph_conv")
    def _(x, A, weight, bias):
        n, _, t, v = x.shape
        return x.new_empty((n, weight.shape[0] // A.shape[0], t, v))

    def setup_context(ctx, inputs, output):
        x, A, weight, bias = inputs
        ctx.save_for_backward(x, A, weight, bias)

    def backward(ctx, gy):
        x, A, weight, bias = ctx.saved_tensors
        kk, v = A.shape[0], A.shape[1]
        n, c_out, t, _ = gy.shape
        # gh[n,k,c,t,v] = Σ_w gy[n,c,t,w] A[k,v,w]
        gh = torch.einsum("nctw,kvw->nkctv", gy, A).reshape(n, kk * c_out, t, v)
        gA = gx = gw = gb = None
        if ctx.needs_input_grad[1]:
            h = reference.graph_conv_channel_mix(x, weight, bias)
            gA = torch.einsum("nkctv,nctw->kvw", h.view(n, kk, c_out, t, v), gy)
        if ctx.needs_input_grad[0]:
            gx = torch.einsum("oc,notv->nctv", weight, gh)
        if ctx.needs_input_grad[2]:
            gw = torch.einsum("notv,nctv->oc", gh, x)
        if bias is not None and ctx.needs_input_grad[3]:
            gb = gh.sum(dim=(0, 2, 3))
        return gx, gA, gw, gb

    torch.library.register_autograd("fastskel::graph_conv", backward, setup_context=setup_context)


if _ext.load() is not None and "graph_conv" in _ext.compiled_ops():
    _register()


def graph_conv(x: torch.Tensor, A: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
               backend: Optional[str] = None) -> torch.Tensor:
    """st-gcn graph convolution; ``x`` ``(N, C_in, T, V)``, ``A`` ``(K, V, V)``, ``weight``
    ``(K·C_out, C_in)`` k-major, ``bias`` ``(K·C_out,)`` → ``(N, C_out, T, V)``.

    Differentiable in x, A (edge importance), weight and bias.
    """
    chk.skeleton(x)
    chk.tensor(A, "A", 3, shape_hint="(K, V, V)")
    chk.tensor(weight, "weight", 2, shape_hint="(K*C_out, C_in)")
    n, c_in, t, v = x.shape
    kk = A.shape[0]
    if A.shape[1:] != (v, v) or kk == 0:
        raise ValueError(f"A: expected shape (K, {v}, {v}) with K >= 1 to match x's V={v}, got {tuple(A.shape)}")
    if weight.shape[1] != c_in or weight.shape[0] % kk or weight.shape[0] == 0:
        raise ValueError(f"weight: expected shape (K*C_out, {c_in}) with K={kk}, got {tuple(weight.shape)}")
    if bias is not None:
        chk.tensor(bias, "bias", 1, shape_hint=f"({weight.shape[0]},)")
        if bias.shape[0] != weight.shape[0]:
            raise ValueError(f"bias: expected shape ({weight.shape[0]},), got {tuple(bias.shape)}")
    for name, tns in (("A", A), ("weight", weight), ("bias", bias)):
        if tns is not None:
            chk.same_device(name, tns, x, "x")
            if tns.dtype != x.dtype:
                raise TypeError(f"{name}: expected dtype {x.dtype} like x, got {tns.dtype}")
    impl = resolve("graph_conv", backend, x.device, IMPLEMENTED)
    if impl == "cpp":
        return torch.ops.fastskel.graph_conv(x, A, weight, bias)
    return reference.graph_conv(x, A, weight, bias)
