"""fastskel: fast self-supervised skeleton action recognition (ASMa, SLiM, AMR) on fused kernels."""
from ._version import __version__
from .backend import available_backends, get_backend, set_backend
from .graph import SkeletonGraph
from . import ops

__all__ = ["__version__", "SkeletonGraph", "available_backends", "get_backend", "set_backend", "ops"]
