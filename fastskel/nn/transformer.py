"""Pre-norm transformer blocks on :func:`fastskel.ops.attention`, and separable positional embeddings.

The skeleton MAEs (MAMP, AMR; seed 004 App. B.1) use a standard pre-norm ViT block::

    x = x + Attn(LN(x))
    x = x + MLP(LN(x))          MLP = Linear(dim → hidden) · GELU · Linear(hidden → dim)

and learnable *separable* spatio-temporal positional embeddings: one vector per temporal block
plus one per joint, summed, ``pos[t, v] = temporal[t] + joint[v]`` (MAMP's ``temp_embed`` +
``pos_embed``). Module and parameter names follow timm / MAMP (``blocks.i.norm1``,
``attn.qkv``, ``attn.proj``, ``norm2``, ``mlp.fc1``, ``mlp.fc2``, final ``norm``) so their
checkpoints map by name (see :func:`fastskel.methods.amr.mamp_state_dict_to_fastskel`).

Limitations: no dropout / stochastic depth (MAMP and AMR pretrain with 0); attention always runs
through ``fastskel.ops.attention`` (Triton on CUDA when available, else the reference).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from fastskel.ops import Rope
from .attention import MultiheadAttention

__all__ = ["Block", "Mlp", "SeparablePosEmbed", "SwiGLUFFN", "TransformerEncoder", "init_vit_weights", "swiglu_hidden"]


def init_vit_weights(module: nn.Module) -> None:
    """MAE/MAMP initialisation: xavier-uniform Linear weights, zero biases, LayerNorm (1, 0)."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class Mlp(nn.Module):
    """``fc2(GELU(fc1(x)))``: ``dim → hidden → out`` (timm ``Mlp`` names)."""

    def __init__(self, dim: int, hidden: int, out: Optional[int] = None):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, out or dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def swiglu_hidden(hidden: int) -> int:
    """SwiGLU width for a nominal MLP width: ``(int(2/3 · hidden) + 7) // 8 · 8`` (1024 → 688), so the
    three matrices hold about as many weights as a two-matrix MLP of width ``hidden`` (DINOv2)."""
    return (int(hidden * 2 / 3) + 7) // 8 * 8


class SwiGLUFFN(nn.Module):
    """SwiGLU feed-forward (Shazeer 2020), packed as DINOv2's fused variant / SLiM's encoder::

        [a | g] = x W12ᵀ + b12        (W12: (2h, dim), first h rows = a, next h = g)
        y       = (SiLU(a) ⊙ g) W3ᵀ + b3

    with ``h = swiglu_hidden(hidden)`` (688 for SLiM's nominal 1024). Keys ``w12``, ``w3``.
    """

    def __init__(self, dim: int, hidden: int, out: Optional[int] = None, bias: bool = True):
        super().__init__()
        self.hidden = swiglu_hidden(hidden)
        self.w12 = nn.Linear(dim, 2 * self.hidden, bias=bias)
        self.w3 = nn.Linear(self.hidden, out or dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, g = self.w12(x).chunk(2, dim=-1)
        return self.w3(nn.functional.silu(a) * g)


class Block(nn.Module):
    """Pre-norm self-attention block: ``x += Attn(LN(x)); x += MLP(LN(x))``.

    Args:
        dim: token width; heads: attention heads (``dim % heads == 0``); mlp_ratio: hidden width
        ``int(dim · mlp_ratio)``; qkv_bias: bias on the fused qkv projection; eps: LayerNorm eps;
        backend: passed to ``fastskel.ops.attention``.
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 eps: float = 1e-6, backend: Optional[str] = None):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = MultiheadAttention(dim, heads, qkv_bias=qkv_bias, backend=backend)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, key_padding_mask: Optional[torch.Tensor] = None,
                rope: Optional[Rope] = None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), key_padding_mask=key_padding_mask, rope=rope)
        return x + self.mlp(self.norm2(x))


class TransformerEncoder(nn.Module):
    """A stack of ``depth`` pre-norm :class:`Block` s and a final LayerNorm: ``(B, L, dim) → (B, L, dim)``."""

    def __init__(self, dim: int, depth: int, heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 eps: float = 1e-6, backend: Optional[str] = None):
        super().__init__()
        if depth < 0:
            raise ValueError(f"depth: expected an int >= 0, got {depth}")
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio, qkv_bias, eps, backend) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=eps)

    def forward(self, x: torch.Tensor, key_padding_mask: Optional[torch.Tensor] = None,
                rope: Optional[Rope] = None) -> torch.Tensor:
        for blk in self.blocks:
            x = blk(x, key_padding_mask=key_padding_mask, rope=rope)
        return self.norm(x)


class SeparablePosEmbed(nn.Module):
    """Learnable separable positional embedding over a ``(T_blocks, V)`` token grid.

    ``pos[t·V + v] = temporal[t] + joint[v]`` (token order t-block major, then joint, as
    :func:`fastskel.ops.patchify`); both tables trunc-normal(0, std) initialised (MAMP: std 0.02,
    cut at ±2 absolute as timm's ``trunc_normal_``).
    """

    def __init__(self, t_blocks: int, joints: int, dim: int, std: float = 0.02):
        super().__init__()
        self.t_blocks, self.joints = t_blocks, joints
        self.temporal = nn.Parameter(torch.empty(t_blocks, dim))
        self.joint = nn.Parameter(torch.empty(joints, dim))
        nn.init.trunc_normal_(self.temporal, std=std)
        nn.init.trunc_normal_(self.joint, std=std)

    def forward(self) -> torch.Tensor:
        """The full table ``(T_blocks · V, dim)``."""
        return (self.temporal[:, None, :] + self.joint[None, :, :]).reshape(self.t_blocks * self.joints, -1)

    def gather(self, index: torch.Tensor) -> torch.Tensor:
        """Embeddings of the tokens ``index`` (int ``(B, K)`` flat positions) → ``(B, K, dim)``,
        without building the full table per sample."""
        return self.temporal[index // self.joints] + self.joint[index % self.joints]
