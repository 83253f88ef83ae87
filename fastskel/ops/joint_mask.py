"""Degree-guided joint masking (ASMa eq. 1–2: HDSM / LDSM) by Gumbel-top-k.

Backends: "triton" (:mod:`fastskel.kernels.joint_mask`: keys, per-sample top-n and zeroing in one
launch; CUDA, or CPU under ``TRITON_INTERPRET=1``) and "torch" (:mod:`fastskel.ops.reference`).
Both consume the same uniforms from :func:`joint_mask_noise`, so a generator fixes the joints
whatever the backend.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch

from fastskel.backend import resolve
from fastskel.graph import SkeletonGraph
from . import _checks as chk
from . import reference

IMPLEMENTED = ("triton", "torch")

_LOG_P_CACHE: Dict[tuple, torch.Tensor] = {}


def _log_p(graph: SkeletonGraph, high: bool, device: torch.device) -> torch.Tensor:
    """``log p`` of the degree rule on ``device``, cached per (degrees, rule, device): building it
    costs a host→device copy that would otherwise dominate the op on a GPU. Degrees are counted from
    the edge list in plain Python (``graph.degrees`` goes through NumPy, which ``torch.compile``
    would trace as data-dependent)."""
    deg = [0] * graph.V
    for i, j in graph.edges:
        deg[i] += 1
        deg[j] += 1
    degrees = tuple(deg)
    key = (degrees, high, str(device))
    log_p = _LOG_P_CACHE.get(key)
    if log_p is None:
        log_p = reference.degree_log_probs(torch.tensor(degrees, device=device), high)
        _LOG_P_CACHE[key] = log_p
    return log_p


def joint_mask_noise(n: int, v: int, device: torch.device,
                     generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """The uniforms ``(N, V)`` every backend turns into Gumbel keys: same generator, same joints."""
    return torch.rand(n, v, generator=generator, device=device, dtype=torch.float32)


def degree_joint_mask(x: torch.Tensor, n: int, high: bool = True, graph: Optional[SkeletonGraph] = None,
                      generator: Optional[torch.Generator] = None,
                      backend: Optional[str] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per sample, zero ``n`` distinct joints in all frames, drawn without replacement with
    probability ∝ ``d_v / Σd`` (``high=True``, HDSM) or ∝ ``1 − d_v / Σd`` (LDSM).

    ``graph`` defaults to the built-in graph with V joints (NTU-25 for V=25). ``generator`` seeds
    the draw (on ``x``'s device). Returns ``(x_masked, mask)``, ``mask`` bool ``(N, V)``;
    gradients flow to the kept joints (``∂x = g · keep``).

    Gumbel-top-n: the n largest ``log p_v + G_v`` (``G = −log(−log u)``, ``u`` from
    :func:`joint_mask_noise`) are a draw of n joints without replacement ∝ p (ties → lower index).
    Triton and reference pick identical joints from identical uniforms on CUDA; under the CPU
    interpreter the logarithms may differ in the last ulp (see :mod:`fastskel.kernels.joint_mask`).
    """
    chk.skeleton(x)
    v = x.shape[3]
    graph = SkeletonGraph.for_joints(v) if graph is None else graph
    if not isinstance(graph, SkeletonGraph):
        raise TypeError(f"graph: expected a SkeletonGraph or None, got {type(graph).__name__}")
    graph.check_num_joints(v)
    n = chk.integer(n, "n", 0, v, what=f"(at most V={v} joints)")
    if not isinstance(high, bool):
        raise TypeError(f"high: expected a bool, got {type(high).__name__}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator: expected a torch.Generator or None, got {type(generator).__name__}")
    if generator is not None and generator.device.type != x.device.type:
        raise ValueError(f"generator: expected a generator on {x.device.type} like x, got one on {generator.device}")
    impl = resolve("degree_joint_mask", backend, x.device, IMPLEMENTED)
    log_p = _log_p(graph, high, x.device)
    u = joint_mask_noise(x.shape[0], v, x.device, generator)
    if impl == "triton":
        from fastskel.kernels import joint_mask as kernels

        return kernels.degree_joint_mask(x, n, log_p, u)
    return reference.degree_joint_mask(x, n, log_p, u)
