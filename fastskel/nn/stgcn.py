"""``STGCN``: the st-gcn backbone (Yan et al. 2018) as used by PSTL and ASMa, on :class:`GraphConv`.

Architecture (identical to st-gcn's ``net/st_gcn.py`` and PSTL's ``module/gcn/st_gcn.py``, same
parameter names so their checkpoints load):

- ``data_bn``: ``BatchNorm1d(C·V)`` over ``(N·M, V·C, T)`` (per joint and coordinate, bodies share it);
- ``st_gcn_networks``: ``depth`` blocks ``GraphConv → BN → ReLU → Conv(9×1, stride) → BN → Dropout``
  plus a residual (none in block 0, identity when shape is kept, else 1×1 conv + BN), then ReLU;
  the default 10-block widths are ``h,h,h,h,2h,2h,2h,4h,4h,out_dim`` with stride 2 entering 2h and 4h;
- ``edge_importance``: one learnable ``(K, V, V)`` mask per block multiplying the graph ``A``;
- pooling: mean over frames and joints, then over bodies → ``(N, out_dim)``.

Parameter counts (no classifier, edge importance on, NTU-25 spatial graph): 821,380 with
``hidden_channels=16, out_dim=256`` (PSTL / ASMa encoder), 3,083,412 with ``hidden_channels=64,
out_dim=256`` (st-gcn's NTU trunk without its ``fcn``).

``depth != 10`` (e.g. ASMa's 5-block student) samples the 10-block template at evenly spaced
positions, keeping both stride-2 stages: depth 5 → ``h, h, 2h/2, 4h/2, out_dim``. Blocks beyond 10 are
extra ``4h`` blocks before the last. ``channels=``/``strides=`` set any other layout explicitly.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from fastskel.graph import SkeletonGraph
from fastskel.ops.dropout import dropout_add_relu, fused_tail_available
from .graph_conv import GraphConv

__all__ = ["STGCN", "STGCNBlock", "stgcn_schedule"]


class STGCNBlock(nn.Module):
    """st-gcn's ``st_gcn`` unit: spatial GraphConv, temporal conv, residual (same state-dict keys).

    Args:
        in_channels, out_channels: channel counts.
        kernel_size: ``(temporal kernel, K partitions)``; temporal kernel odd.
        stride: temporal stride of the temporal conv (and of the residual conv).
        dropout: dropout after the temporal conv.
        residual: whether the block has a residual connection.
        backend: backend of the graph convolution and of the block tail
            ``ReLU(Dropout(·) + residual)``: unless the backend is "torch", where ``_C`` has
            :func:`fastskel.ops.dropout_add_relu` (CPU) the tail is that one fused pass (its own
            counter-based random stream); elsewhere ("torch", CUDA) st-gcn's ``Dropout``, ``+``
            and ``ReLU`` modules run.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Tuple[int, int] = (9, 3), stride: int = 1,
                 dropout: float = 0.0, residual: bool = True, backend: Optional[str] = None):
        super().__init__()
        self.backend = backend
        t_kernel, k = kernel_size
        if t_kernel < 1 or t_kernel % 2 != 1:
            raise ValueError(f"kernel_size: expected an odd temporal kernel, got {t_kernel}")
        if stride < 1:
            raise ValueError(f"stride: expected an int >= 1, got {stride}")
        self.gcn = GraphConv(in_channels, out_channels, k, backend=backend)
        self.tcn = nn.Sequential(
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, (t_kernel, 1), (stride, 1), ((t_kernel - 1) // 2, 0)),
            nn.BatchNorm2d(out_channels),
            nn.Dropout(dropout, inplace=True),
        )
        if not residual:
            self.residual_mode = "none"
        elif in_channels == out_channels and stride == 1:
            self.residual_mode = "identity"
        else:
            self.residual_mode = "conv"
            self.residual = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=(stride, 1)),
                nn.BatchNorm2d(out_channels),
            )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor, A: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        if self.residual_mode == "conv":
            res = self.residual(x)
        elif self.residual_mode == "identity":
            res = x
        else:
            res = None
        y, A = self.gcn(x, A)
        bn1, relu1, conv, bn2, drop = self.tcn
        y = bn2(conv(relu1(bn1(y))))
        if fused_tail_available(self.backend, y.device):
            return dropout_add_relu(y, res, drop.p, self.training, relu=True, backend="cpp"), A
        y = drop(y)
        if res is not None:
            y = y + res
        return self.relu(y), A


def stgcn_schedule(hidden_channels: int, out_dim: int, depth: int) -> Tuple[List[int], List[int]]:
    """Output channels and temporal strides of the ``depth`` blocks (see the module docstring)."""
    h = hidden_channels
    chans = [h, h, h, h, 2 * h, 2 * h, 2 * h, 4 * h, 4 * h, out_dim]
    strides = [1, 1, 1, 1, 2, 1, 1, 2, 1, 1]
    if depth == 1:
        return [out_dim], [1]
    if depth > 10:
        extra = depth - 10
        return chans[:-1] + [4 * h] * extra + chans[-1:], strides[:-1] + [1] * extra + strides[-1:]
    idx = [int(i * 9 / (depth - 1) + 0.5) for i in range(depth)]
    out_c = [chans[i] for i in idx]
    out_s = [1] + [2 if any(strides[j] == 2 for j in range(idx[i - 1] + 1, idx[i] + 1)) else 1
                   for i in range(1, depth)]
    return out_c, out_s


class STGCN(nn.Module):
    """The st-gcn / PSTL backbone: ``(N, C, T, V, M)`` or ``(N, C, T, V)`` → ``(N, out_dim)``.

    Args:
        in_channels: input channels C (3 for xyz).
        hidden_channels: width h of the first stage (st-gcn 64; PSTL/ASMa 16).
        out_dim: channels of the last block = feature dimension (256 in both).
        depth: number of blocks (10; ASMa's distilled student uses 5).
        graph: a :class:`~fastskel.graph.SkeletonGraph` or built-in name (default NTU-25).
        strategy: partition of the graph ("spatial", "uniform", "distance").
        edge_importance: learnable per-block ``(K, V, V)`` edge weights (st-gcn's
            ``edge_importance_weighting``).
        dropout: dropout inside every block but the first (st-gcn / PSTL: 0.5).
        temporal_kernel: temporal kernel of the blocks (9).
        channels, strides: explicit per-block output channels / temporal strides (override the
            schedule; ``strides`` defaults to all 1 when only ``channels`` is given).
        backend: backend of the graph convolutions (None = process default).

    ``forward(x, return_sequence=True)`` returns per-frame features ``(N, T', out_dim)`` pooled over
    joints and bodies but not over time (ASMa's feature alignment input); ``T' = ceil(T / 4)`` with
    the default two stride-2 stages.

    Random stream of the dropout (train mode, ``dropout > 0``): on CPU with ``_C`` and any backend
    but "torch" (the default "auto" included) each block's tail ``ReLU(Dropout(y) + res)`` is the
    fused :func:`fastskel.ops.dropout_add_relu`, whose keep mask is a counter-based hash of one
    64-bit seed drawn from torch's default generator: the same law as ``nn.Dropout``
    (Bernoulli(1 − p) keeps, scaled by 1/(1 − p)) but other masks. So the same seed gives different
    training losses under the default backend and ``backend="torch"`` (issue 18 saw step-0 losses
    of 423.65 vs 427.53). For st-gcn's exact masks — ``torch.nn.Dropout`` drawing from torch's
    default generator, as st-gcn / PSTL do — use ``backend="torch"``: ``STGCN(..., backend="torch")``,
    a method's ``set_backend("torch")`` / ``ASMaConfig(backend="torch")``, or, for a model built
    with ``backend=None``, ``fastskel.set_backend("torch")`` / ``FASTSKEL_BACKEND=torch`` (read at
    each forward); CUDA tensors always take that path. Eval mode and ``dropout=0`` are identical on every backend.
    """

    def __init__(self, in_channels: int = 3, hidden_channels: int = 64, out_dim: int = 256, depth: int = 10,
                 graph: Union[SkeletonGraph, str, None] = None, strategy: str = "spatial",
                 edge_importance: bool = True, dropout: float = 0.5, temporal_kernel: int = 9,
                 channels: Optional[Sequence[int]] = None, strides: Optional[Sequence[int]] = None,
                 backend: Optional[str] = None):
        super().__init__()
        for name, val in (("in_channels", in_channels), ("hidden_channels", hidden_channels),
                          ("out_dim", out_dim), ("depth", depth)):
            if isinstance(val, bool) or not isinstance(val, int) or val < 1:
                raise ValueError(f"{name}: expected an int >= 1, got {val!r}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout: expected a float in [0, 1), got {dropout!r}")
        self.graph = SkeletonGraph.get(graph if graph is not None else "ntu25")
        self.register_buffer("A", self.graph.partition(strategy))
        if channels is None:
            chans, strd = stgcn_schedule(hidden_channels, out_dim, depth)
            if strides is not None:
                strd = list(strides)
        else:
            chans = [int(c) for c in channels]
            strd = [int(s) for s in strides] if strides is not None else [1] * len(chans)
        if len(strd) != len(chans) or not chans:
            raise ValueError(f"strides: expected {len(chans)} values to match channels, got {len(strd)}")
        self.in_channels = in_channels
        self.out_dim = chans[-1]
        self.feature_dim = chans[-1]
        self.strides = tuple(strd)
        K, V = self.A.shape[0], self.A.shape[1]
        self.data_bn = nn.BatchNorm1d(in_channels * V)
        blocks = []
        prev = in_channels
        for i, (c, s) in enumerate(zip(chans, strd)):
            blocks.append(STGCNBlock(prev, c, (temporal_kernel, K), s, dropout=dropout if i > 0 else 0.0,
                                     residual=i > 0, backend=backend))
            prev = c
        self.st_gcn_networks = nn.ModuleList(blocks)
        if edge_importance:
            self.edge_importance = nn.ParameterList([nn.Parameter(torch.ones(self.A.shape)) for _ in blocks])
        else:
            self.edge_importance = None

    def forward(self, x: torch.Tensor, return_sequence: bool = False) -> torch.Tensor:
        """``(N, C, T, V, M)`` (or ``(N, C, T, V)``, M = 1) → ``(N, out_dim)``, or ``(N, T', out_dim)``
        with ``return_sequence=True``."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x: expected a torch.Tensor (N, C, T, V, M), got {type(x).__name__}")
        if x.dim() == 4:
            x = x.unsqueeze(-1)
        if x.dim() != 5:
            raise ValueError(f"x: expected (N, C, T, V, M) or (N, C, T, V), got shape {tuple(x.shape)}")
        N, C, T, V, M = x.shape
        if C != self.in_channels:
            raise ValueError(f"x: expected C={self.in_channels} channels, got C={C}")
        self.graph.check_num_joints(V)
        x = x.permute(0, 4, 3, 1, 2).reshape(N * M, V * C, T)
        x = self.data_bn(x)
        x = x.view(N, M, V, C, T).permute(0, 1, 3, 4, 2).reshape(N * M, C, T, V)
        for i, block in enumerate(self.st_gcn_networks):
            A = self.A if self.edge_importance is None else self.A * self.edge_importance[i]
            x, _ = block(x, A)
        _, D, Tp, _ = x.shape
        if return_sequence:
            return x.mean(dim=3).view(N, M, D, Tp).mean(dim=1).transpose(1, 2)
        return x.mean(dim=(2, 3)).view(N, M, D).mean(dim=1)
