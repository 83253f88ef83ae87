"""Modules built on :mod:`fastskel.ops`: GraphConv, STGCN, transformer blocks, cross-attention, heads."""
from .attention import MultiheadAttention, MultiheadCrossAttention

__all__ = ["MultiheadAttention", "MultiheadCrossAttention"]
