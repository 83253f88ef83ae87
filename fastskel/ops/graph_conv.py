"""st-gcn spatial graph convolution as a registered operator ``torch.ops.fastskel.graph_conv``.

``y[n,c,t,w] = Σ_k Σ_v (W_k x + b_k)[n,c,t,v] · A[k,v,w]`` (st-gcn ``ConvTemporalGraphical`` with
temporal kernel 1, docs/design.md §4.8). ``fastskel._C`` implements it (``csrc/cpu``, ``csrc/cuda``) together with
``torch.ops.fastskel.graph_conv_backward``; both have fake (meta) implementations registered here and
the forward has autograd through the backward op, so ``torch.compile(fullgraph=True)`` traces them
and ``torch.library.opcheck`` passes. Without ``_C`` the reference runs.

Limitations: first-order gradients only; differentiating the backward again (double backward,
e.g. gradient penalties) raises ``RuntimeError`` on the ``_C`` path (the ``"torch"`` backend
supports it). ``grad_bias`` is computed only when a bias is given.
"""
from __future__ import annotations

from typing import Optional

import torch

from fastskel import _ext
from fastskel.backend import resolve
from . import _checks as chk
from . import reference

IMPLEMENTED = ("cpp", "torch")
_HAS_OPS = _ext.has_op("graph_conv", torch.device("cpu"))[0]


def _register() -> None:
    @torch.library.register_fake("fastskel::graph_conv")
    def _(x, A, weight, bias):
        n, _, t, v = x.shape
        return x.new_empty((n, weight.shape[0] // A.shape[0], t, v))

    @torch.library.register_fake("fastskel::graph_conv_backward")
    def _(grad_out, x, A, weight, bias, output_mask):
        def grad(m, like):
            return like.new_empty(like.shape) if m else x.new_empty((0,))

        gb = grad(output_mask[3] and bias is not None, bias if bias is not None else x)
        return grad(output_mask[0], x), grad(output_mask[1], A), grad(output_mask[2], weight), gb

    def setup_context(ctx, inputs, output):
        x, A, weight, bias = inputs
        ctx.has_bias = bias is not None
        ctx.save_for_backward(x, A, weight, bias)

    def backward(ctx, gy):
        x, A, weight, bias = ctx.saved_tensors
        need = ctx.needs_input_grad
        mask = [bool(need[0]), bool(need[1]), bool(need[2]), bool(ctx.has_bias and need[3])]
        gx, gA, gw, gb = torch.ops.fastskel.graph_conv_backward(gy.contiguous(), x, A, weight, bias, mask)
        return (gx if mask[0] else None, gA if mask[1] else None, gw if mask[2] else None,
                gb if mask[3] else None)

    torch.library.register_autograd("fastskel::graph_conv", backward, setup_context=setup_context)

    _ext.forbid_double_backward("graph_conv_backward")


if _HAS_OPS:
    _register()


@torch.compiler.assume_constant_result
def _resolve(backend: Optional[str], device: torch.device) -> str:
    # A constant for torch.compile: the _C lookup behind resolve() calls into pybind11, which
    # dynamo cannot trace (fullgraph=True would fail).
    return resolve("graph_conv", backend, device, IMPLEMENTED)


def graph_conv(x: torch.Tensor, A: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
               backend: Optional[str] = None) -> torch.Tensor:
    """st-gcn graph convolution (docs/design.md §4.8): ``y[n,c,t,w] = Σ_k Σ_v (W_k x + b_k)[n,c,t,v] · A[k,v,w]``.

    Args:
        x: ``(N, C_in, T, V)``.
        A: ``(K, V, V)`` graph partitions (times st-gcn's edge importance; differentiable).
        weight: ``(K·C_out, C_in)``, k-major (``conv.weight.view(K·C_out, C_in)`` of st-gcn's 1×1 conv).
        bias: ``(K·C_out,)`` or None.
        backend: "auto" | "cpp" | "torch" (None = process default). "cpp" is the ``_C`` operator
            (CPU: tiled, vectorised, no ``K·C_out·T·V`` intermediate; CUDA: fused kernel).

    Returns:
        ``(N, C_out, T, V)`` in x's dtype. Differentiable in x, A, weight and bias.
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
    impl = _resolve(backend, x.device)
    if impl == "cpp":
        return torch.ops.fastskel.graph_conv(x, A, weight, bias)
    return reference.graph_conv(x, A, weight, bias)
