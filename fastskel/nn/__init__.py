"""Modules built on :mod:`fastskel.ops`: GraphConv, STGCN, transformer blocks, cross-attention, heads."""
from .attention import CrossAttention, MultiheadAttention, MultiheadCrossAttention
from .decoder import CrossAttentionDecoder, CrossAttentionLayer, PredictionHead
from .dino_head import DINOHead, WeightNormPrototypes
from .graph_conv import GraphConv
from .losses import BarlowTwinsLoss
from .stgcn import STGCN, STGCNBlock
from .transformer import Block, Mlp, SeparablePosEmbed, TransformerEncoder
from .vit import SkeletonViT, ViTBlock

__all__ = [
    "BarlowTwinsLoss", "Block", "CrossAttention", "CrossAttentionDecoder", "CrossAttentionLayer",
    "DINOHead", "GraphConv", "Mlp", "MultiheadAttention", "MultiheadCrossAttention", "PredictionHead",
    "STGCN", "STGCNBlock", "SeparablePosEmbed", "SkeletonViT", "TransformerEncoder", "ViTBlock",
    "WeightNormPrototypes",
]
