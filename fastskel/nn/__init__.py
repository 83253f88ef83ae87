"""Modules built on :mod:`fastskel.ops`: GraphConv, STGCN, transformer blocks, cross-attention, heads."""
