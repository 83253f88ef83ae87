"""The strict-load steps shared by the public-checkpoint loaders (MAMP, official SLiM)."""
from __future__ import annotations

from typing import Callable, Dict, List, Mapping, Tuple

import torch

__all__ = ["take_matching", "require_all"]


def take_matching(mapped: Mapping[str, torch.Tensor], own: Mapping[str, torch.Tensor],
                  keep: Callable[[str], bool]) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """``(use, rejected)``: the entries of ``mapped`` whose key passes ``keep``, each with the shape
    of ``own[key]`` (else ``ValueError`` naming the key); the keys that did not pass, in order."""
    use: Dict[str, torch.Tensor] = {}
    rejected: List[str] = []
    for k, v in mapped.items():
        if not keep(k):
            rejected.append(k)
            continue
        if tuple(v.shape) != tuple(own[k].shape):
            raise ValueError(f"checkpoint[{k!r}]: expected shape {tuple(own[k].shape)} for this model's config, "
                             f"got {tuple(v.shape)}")
        use[k] = v
    return use, rejected


def require_all(missing: List[str]) -> None:
    """``ValueError`` listing (up to 6 of) the encoder parameters a strict load did not get."""
    if missing:
        raise ValueError(f"checkpoint: expected every encoder parameter, missing {missing[:6]}"
                         f"{' …' if len(missing) > 6 else ''}")
