"""DINO projection head with weight-normed prototypes (DINO/iBOT/DINOv2; SLiM App. A: h_CL, h_MAE).

::

    z = normalize(Linear(d→2048) → GELU → Linear(2048→2048) → GELU → Linear(2048→256))
    logits = z · Wᵀ,   W_k = g_k · v_k / ‖v_k‖   (K = 65,536 prototypes)

The head is split so the prototype objectives never need the ``(tokens × K)`` logits:
:meth:`DINOHead.embed` gives ``z`` and :meth:`DINOHead.prototypes` gives ``W`` ``(K, 256)``, which
:func:`fastskel.ops.prototype.prototype_cross_entropy` and
:func:`~fastskel.ops.prototype.sinkhorn_knopp` consume block by block. :meth:`forward` still
returns the materialised logits (small K, references, export).

The weight norm is written out (parameters ``last_layer.weight_g`` ``(K, 1)`` and
``last_layer.weight_v`` ``(K, 256)``, the key names of ``torch.nn.utils.weight_norm`` and of DINO
checkpoints). ``norm_last_layer=True`` (DINO/iBOT default) freezes ``g = 1``, so the logits are
cosine similarities in [−1, 1].
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DINOHead", "WeightNormPrototypes"]


class WeightNormPrototypes(nn.Module):
    """``W = g · v / ‖v‖`` row-wise: ``K`` prototypes of width ``dim`` (bias-free linear layer)."""

    def __init__(self, dim: int, num_prototypes: int, norm_last_layer: bool = True):
        super().__init__()
        self.weight_v = nn.Parameter(torch.empty(num_prototypes, dim))
        self.weight_g = nn.Parameter(torch.ones(num_prototypes, 1), requires_grad=not norm_last_layer)
        nn.init.trunc_normal_(self.weight_v, std=0.02)

    def weight(self) -> torch.Tensor:
        return self.weight_g * self.weight_v / torch.linalg.vector_norm(self.weight_v, dim=1, keepdim=True)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z @ self.weight().T


class DINOHead(nn.Module):
    """``Linear-GELU-Linear-GELU-Linear`` → L2 norm → weight-normed prototypes.

    Args:
        in_dim: encoder width (256).
        num_prototypes: K (65,536 in SLiM).
        hidden_dim: MLP width (2,048).
        bottleneck_dim: width of the normalised embedding (256).
        norm_last_layer: freeze the prototype norms at 1 (cosine logits).
    """

    def __init__(self, in_dim: int = 256, num_prototypes: int = 65536, hidden_dim: int = 2048,
                 bottleneck_dim: int = 256, norm_last_layer: bool = True):
        super().__init__()
        for name, v in (("in_dim", in_dim), ("num_prototypes", num_prototypes), ("hidden_dim", hidden_dim),
                        ("bottleneck_dim", bottleneck_dim)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}: expected an int >= 1, got {v!r}")
        self.mlp = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, hidden_dim),
                                 nn.GELU(), nn.Linear(hidden_dim, bottleneck_dim))
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        self.last_layer = WeightNormPrototypes(bottleneck_dim, num_prototypes, norm_last_layer)
        self.num_prototypes = num_prototypes

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The L2-normalised bottleneck embedding ``(..., bottleneck_dim)``."""
        return F.normalize(self.mlp(x), dim=-1, eps=1e-12)

    def prototypes(self) -> torch.Tensor:
        """The weight-normed prototypes ``(K, bottleneck_dim)``."""
        return self.last_layer.weight()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Materialised logits ``(..., K)`` (no temperature)."""
        return self.last_layer(self.embed(x))
