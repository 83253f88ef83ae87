"""SLiM's skeleton ViT encoder (seed 002 §3.1, App. A): skeletal-temporal patches, a learnable
joint positional embedding, cls + register tokens, and 1-D temporal RoPE inside every attention.

::

    X (B, C, T, V) → patches (B, N, P_T·P_J·C), N = (T/P_T)·(V/P_J), token = t-block major, then
                     joint group; features (frame, joint-in-group, channel)
    Z_p = patches·E  [masked tokens ← e_mask]  + E_skel (joint embedding broadcast over time)
    Z_0 = [z_cls | z_reg,1..R | Z_p]
    Z'_l = MSA_RoPE(LN(Z_{l−1})) + Z_{l−1};  Z_l = FFN(LN(Z'_l)) + Z'_l      (pre-norm)
    FFN = GELU MLP (``ffn="mlp"``) or SwiGLU of width swiglu_hidden(mlp_dim) (``ffn="swiglu"``, the
    official SLiM code: 1024 → 688)

``cls_pos=True`` adds a learnable positional slot to the cls token (the official code's
``pos_embed[:, 0]``; ``pos_embed[:, 1:]`` is the joint embedding), registers get none.
    W = LN(Z_L)

RoPE (:class:`fastskel.ops.Rope`, rotate-half, base 10000) rotates q and k of each patch token by
its temporal block index ``t`` (0 … T/P_T − 1); cls and registers get position −1 (unrotated), so
they attend position-free. Because positions are relative, the same weights encode the 64-, 32-,
16- and 8-frame views of SLiM without interpolating a temporal embedding.

Decisions where the paper is silent (documented for users):

- The mask token replaces the patch *projection* and the joint embedding is added afterwards (as
  iBOT/DINOv2 do), so a masked token still knows which joint it stands for; Eq. 3 read literally
  would also drop ``E_skel``, leaving a masked token without joint identity.
- ``P_J > 1`` groups consecutive joint *indices* (SLiM uses ``P_J = 1``).
- Initialisation: truncated normal (std 0.02) for linear weights, the joint embedding, cls and
  registers; zero biases; mask token zeros; LayerNorm eps 1e-6 (DINOv2).
- Sequences are fixed-length (SLiM resamples every view), so there is no key padding mask.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from fastskel.ops import Rope, patchify

from .attention import MultiheadAttention
from .transformer import SwiGLUFFN

__all__ = ["SkeletonViT", "ViTBlock"]


class ViTBlock(nn.Module):
    """Pre-norm transformer block with RoPE self-attention and a GELU MLP (``mlp.0``/``mlp.2``) or a
    SwiGLU FFN (``mlp.w12``/``mlp.w3``)."""

    def __init__(self, dim: int, heads: int, mlp_dim: int, qkv_bias: bool = True, norm_eps: float = 1e-6,
                 backend: Optional[str] = None, ffn: str = "mlp"):
        super().__init__()
        if ffn not in ("mlp", "swiglu"):
            raise ValueError(f"ffn: expected 'mlp' or 'swiglu', got {ffn!r}")
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = MultiheadAttention(dim, heads, qkv_bias=qkv_bias, backend=backend)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        if ffn == "swiglu":
            self.mlp = SwiGLUFFN(dim, mlp_dim)
        else:
            self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), nn.GELU(), nn.Linear(mlp_dim, dim))

    def forward(self, x: torch.Tensor, rope: Optional[Rope] = None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), rope=rope)
        return x + self.mlp(self.norm2(x))


class SkeletonViT(nn.Module):
    """ViT over skeletal-temporal patches with joint embedding, cls + registers and temporal RoPE.

    Args:
        in_channels: C (3 for xyz).
        num_joints: V.
        frames_per_patch: P_T (8 in SLiM); every input T must be a multiple.
        joints_per_patch: P_J (1 in SLiM); must divide V.
        dim, depth, heads, mlp_dim: width 256, 8 layers, 8 heads, MLP 1024 in SLiM.
        ffn: "mlp" (GELU, hidden mlp_dim) or "swiglu" (hidden swiglu_hidden(mlp_dim), official SLiM).
        cls_pos: a learnable positional slot added to the cls token (official SLiM).
        num_registers: register tokens after cls (4 in SLiM, Darcet et al.).
        qkv_bias: bias of the fused qkv projection.
        norm_eps: LayerNorm epsilon.
        rope_base: RoPE frequency base.
        backend: passed to :func:`fastskel.ops.attention`.

    ``forward(x, mask=None)`` → the normalised tokens ``(B, 1 + R + N, dim)``: cls at 0, registers
    at ``1..R``, patches from ``num_prefix_tokens``.
    """

    def __init__(self, in_channels: int = 3, num_joints: int = 25, frames_per_patch: int = 8,
                 joints_per_patch: int = 1, dim: int = 256, depth: int = 8, heads: int = 8,
                 mlp_dim: int = 1024, num_registers: int = 4, qkv_bias: bool = True,
                 norm_eps: float = 1e-6, rope_base: float = 10000.0, backend: Optional[str] = None,
                 ffn: str = "mlp", cls_pos: bool = False):
        super().__init__()
        if ffn not in ("mlp", "swiglu"):
            raise ValueError(f"ffn: expected 'mlp' or 'swiglu', got {ffn!r}")
        for name, v in (("in_channels", in_channels), ("num_joints", num_joints), ("frames_per_patch", frames_per_patch),
                        ("joints_per_patch", joints_per_patch), ("dim", dim), ("depth", depth), ("heads", heads),
                        ("mlp_dim", mlp_dim)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}: expected an int >= 1, got {v!r}")
        if num_joints % joints_per_patch:
            raise ValueError(f"joints_per_patch: expected a divisor of num_joints={num_joints}, got {joints_per_patch}")
        if (dim // heads) % 2 or dim % heads:
            raise ValueError(f"heads: expected a divisor of dim={dim} with an even head dim (RoPE), got {heads}")
        if isinstance(num_registers, bool) or not isinstance(num_registers, int) or num_registers < 0:
            raise ValueError(f"num_registers: expected an int >= 0, got {num_registers!r}")
        self.in_channels, self.num_joints = in_channels, num_joints
        self.frames_per_patch, self.joints_per_patch = frames_per_patch, joints_per_patch
        self.dim, self.num_registers, self.rope_base = dim, num_registers, float(rope_base)
        self.ffn, self.cls_pos, self.mlp_dim = ffn, bool(cls_pos), mlp_dim
        self.num_prefix_tokens = 1 + num_registers
        self.patch_embed = nn.Linear(frames_per_patch * joints_per_patch * in_channels, dim)
        self.joint_embed = nn.Parameter(torch.zeros(1, num_joints // joints_per_patch, dim))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.register_tokens = nn.Parameter(torch.zeros(1, num_registers, dim))
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        if self.cls_pos:
            self.cls_pos_embed = nn.Parameter(torch.zeros(1, 1, dim))
        self.blocks = nn.ModuleList(ViTBlock(dim, heads, mlp_dim, qkv_bias, norm_eps, backend, ffn)
                                    for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=norm_eps)
        self._init_weights()

    def _init_weights(self) -> None:
        for p in (self.joint_embed, self.cls_token, self.register_tokens):
            nn.init.trunc_normal_(p, std=0.02)
        if self.cls_pos:
            nn.init.trunc_normal_(self.cls_pos_embed, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    # ----------------------------------------------------------------- tokens
    def num_patches(self, frames: int) -> int:
        return (frames // self.frames_per_patch) * (self.num_joints // self.joints_per_patch)

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, T, V)`` → ``(B, N, P_T·P_J·C)``, tokens t-block major then joint group."""
        if x.dim() != 4 or x.shape[1] != self.in_channels or x.shape[3] != self.num_joints:
            raise ValueError(f"x: expected (B, {self.in_channels}, T, {self.num_joints}), got shape {tuple(x.shape)}")
        t = x.shape[2]
        if t == 0 or t % self.frames_per_patch:
            raise ValueError(f"x: expected T a positive multiple of frames_per_patch={self.frames_per_patch}, got T={t}")
        if self.joints_per_patch == 1:
            return patchify(x, self.frames_per_patch)
        b, c, _, v = x.shape
        lt, lj = self.frames_per_patch, self.joints_per_patch
        x = x.reshape(b, c, t // lt, lt, v // lj, lj).permute(0, 2, 4, 3, 5, 1)
        return x.reshape(b, (t // lt) * (v // lj), lt * lj * c)

    def positions(self, frames: int, device: torch.device) -> torch.Tensor:
        """RoPE positions ``(1 + R + N,)``: −1 for cls/registers, the temporal block of each patch."""
        tb, vg = frames // self.frames_per_patch, self.num_joints // self.joints_per_patch
        patch = torch.arange(tb, device=device, dtype=torch.float32).repeat_interleave(vg)
        return torch.cat([torch.full((self.num_prefix_tokens,), -1.0, device=device), patch])

    def embed(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Input tokens ``Z_0`` ``(B, 1 + R + N, dim)``; ``mask`` bool ``(B, N)``, True = masked."""
        p = self.patch_embed(self.patchify(x))
        b, n, _ = p.shape
        if mask is not None:
            if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
                raise TypeError(f"mask: expected a bool tensor (B, N), got {getattr(mask, 'dtype', type(mask).__name__)}")
            if mask.shape != (b, n):
                raise ValueError(f"mask: expected shape ({b}, {n}), got {tuple(mask.shape)}")
            p = torch.where(mask[..., None], self.mask_token.to(p.dtype), p)
        tb = n // self.joint_embed.shape[1]
        p = p + self.joint_embed.repeat(1, tb, 1)
        cls = self.cls_token + self.cls_pos_embed if self.cls_pos else self.cls_token
        prefix = torch.cat([cls, self.register_tokens], 1).expand(b, -1, -1).to(p.dtype)
        return torch.cat([prefix, p], 1)

    def forward_layers(self, x: torch.Tensor, n: int = 1) -> list:
        """The final-LayerNorm outputs of each of the last ``n`` blocks (DINOv2
        ``get_intermediate_layers(x, n, norm=True)``), a list of ``(B, 1 + R + N, dim)``."""
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= len(self.blocks):
            raise ValueError(f"n: expected an int in [1, {len(self.blocks)}], got {n!r}")
        z = self.embed(x)
        pos = self.positions(x.shape[2], z.device)
        rope = Rope(pos, pos, self.rope_base)
        out = []
        for i, blk in enumerate(self.blocks):
            z = blk(z, rope=rope)
            if i >= len(self.blocks) - n:
                out.append(self.norm(z))
        return out

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Normalised output tokens ``W = LN(Z_L)`` ``(B, 1 + R + N, dim)`` of ``x`` ``(B, C, T, V)``."""
        z = self.embed(x, mask)
        pos = self.positions(x.shape[2], z.device)
        rope = Rope(pos, pos, self.rope_base)
        for blk in self.blocks:
            z = blk(z, rope=rope)
        return self.norm(z)
