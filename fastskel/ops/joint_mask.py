"""Degree-guided joint masking (ASMa eq. 1–2: HDSM / LDSM) by Gumbel-top-k."""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from fastskel.backend import resolve
from fastskel.graph import SkeletonGraph
from . import _checks as chk
from . import reference

IMPLEMENTED = ("torch",)


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
    the draw (on ``x``'s device). Returns ``(x_masked, mask)``, ``mask`` bool ``(N, V)``.
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
    degrees = torch.as_tensor(graph.degrees, device=x.device)
    log_p = reference.degree_log_probs(degrees, high)
    u = joint_mask_noise(x.shape[0], v, x.device, generator)
    impl = resolve("degree_joint_mask", backend, x.device, IMPLEMENTED)
    return reference.degree_joint_mask(x, n, log_p, u)
