"""Small utilities that sit beside the layers: FLOP counting in the papers' convention."""
from .flops import count_flops, flop_breakdown

__all__ = ["count_flops", "flop_breakdown"]
