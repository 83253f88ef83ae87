"""``GraphConv``: a drop-in for st-gcn's ``ConvTemporalGraphical`` on :func:`fastskel.ops.graph_conv`.

``y[n,c,t,w] = Σ_k Σ_v (W_k x + b_k)[n,c,t,v] · A[k,v,w]`` (st-gcn, Yan et al. 2018, eq. 10 with the
``K`` spatial partitions). Same constructor arguments and state-dict keys (``conv.weight`` of shape
``(K·C_out, C_in, t_kernel_size, 1)``, ``conv.bias``) as st-gcn, so its checkpoints load unchanged,
and the same ``forward(x, A) -> (y, A)``.

Paths:
- ``t_kernel_size == 1``, ``t_stride == 1``, ``t_padding == 0`` (every st-gcn model): the registered
  op ``torch.ops.fastskel.graph_conv`` (or its reference, by ``backend``), which never builds the
  ``(N, K·C_out, T, V)`` intermediate on the ``_C`` path.
- while exporting (ONNX, ``torch.export``, ``torch.jit.trace``) or for a temporal kernel > 1: st-gcn's
  own formulation, ``Conv2d`` then ``einsum('nkctv,kvw->nctw')``, which every exporter understands.

Under ``torch.autocast`` the op's inputs are cast to the autocast dtype (like ``Conv2d``).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import nn

from fastskel.ops import graph_conv

__all__ = ["GraphConv"]


def exporting() -> bool:
    """True while an exporter traces the model (ONNX, ``torch.export``, ``torch.jit.trace``)."""
    return bool(torch.onnx.is_in_onnx_export() or torch.jit.is_tracing() or torch.compiler.is_exporting())


class GraphConv(nn.Module):
    """st-gcn ``ConvTemporalGraphical(in_channels, out_channels, kernel_size, t_kernel_size=1, ...)``.

    Args:
        in_channels: C_in.
        out_channels: C_out.
        kernel_size: K, the number of graph partitions (``A.size(0)``).
        t_kernel_size, t_stride, t_padding, t_dilation: temporal conv of the 1×1 projection (st-gcn
            default 1, 1, 0, 1; other values take the Conv2d + einsum path).
        bias: whether ``conv`` has a bias.
        backend: backend of :func:`fastskel.ops.graph_conv` (None = process default).

    Shape: x ``(N, C_in, T, V)``, A ``(K, V, V)`` → ``((N, C_out, T_out, V), A)``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, t_kernel_size: int = 1,
                 t_stride: int = 1, t_padding: int = 0, t_dilation: int = 1, bias: bool = True,
                 backend: Optional[str] = None):
        super().__init__()
        for name, val in (("in_channels", in_channels), ("out_channels", out_channels),
                          ("kernel_size", kernel_size), ("t_kernel_size", t_kernel_size)):
            if isinstance(val, bool) or not isinstance(val, int) or val < 1:
                raise ValueError(f"{name}: expected an int >= 1, got {val!r}")
        self.kernel_size = kernel_size
        self.backend = backend
        self.conv = nn.Conv2d(in_channels, out_channels * kernel_size, kernel_size=(t_kernel_size, 1),
                              padding=(t_padding, 0), stride=(t_stride, 1), dilation=(t_dilation, 1), bias=bias)
        self._pointwise = t_kernel_size == 1 and t_stride == 1 and t_padding == 0

    def forward(self, x: torch.Tensor, A: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        if A.dim() != 3 or A.shape[0] != self.kernel_size:
            raise ValueError(f"A: expected shape ({self.kernel_size}, V, V), got {tuple(A.shape)}")
        if not self._pointwise or exporting():
            h = self.conv(x)
            n, kc, t, v = h.shape
            h = h.view(n, self.kernel_size, kc // self.kernel_size, t, v)
            return torch.einsum("nkctv,kvw->nctw", h, A).contiguous(), A
        weight = self.conv.weight.view(self.conv.out_channels, self.conv.in_channels)
        bias = self.conv.bias
        dev = x.device.type
        if torch.is_autocast_enabled(dev):
            dt = torch.get_autocast_dtype(dev)
            x, A_op, weight = x.to(dt), A.to(dt), weight.to(dt)
            bias = bias.to(dt) if bias is not None else None
        else:
            A_op = A
        return graph_conv(x, A_op, weight, bias, backend=self.backend), A

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, backend={self.backend!r}"
