"""The data containers shared by every reader: :class:`SkeletonData` and :func:`valid_lengths`.

Conventions (docs/design.md §2): a dataset is ``x`` float32 ``(N, C, T, V, M)`` (M bodies, zero-padded in
time and in bodies), ``y`` int64 ``(N,)``, ``lengths`` int64 ``(N,)`` valid frames per sample.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
import torch

__all__ = ["SkeletonData", "valid_lengths"]

ArrayLike = Union[torch.Tensor, np.ndarray]


def valid_lengths(x: ArrayLike) -> ArrayLike:
    """Valid frames per sample: the last frame with any non-zero coordinate, +1 (0 if all zero).

    ``x`` is ``(N, C, T, V, M)`` or ``(N, C, T, V)``; returns int64 ``(N,)`` of the same kind
    (torch tensor on ``x``'s device, or numpy array). Zero frames *inside* a sequence (a dropped
    detection) do not shorten it; only trailing all-zero frames are padding. NaN counts as
    non-zero, so it is never silently hidden in the padding.
    """
    if isinstance(x, np.ndarray):
        return valid_lengths(torch.from_numpy(x)).numpy()
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x: expected a torch.Tensor or numpy array (N, C, T, V[, M]), got {type(x).__name__}")
    if x.dim() not in (4, 5):
        raise ValueError(f"x: expected a 4-D (N, C, T, V) or 5-D (N, C, T, V, M) tensor, got shape {tuple(x.shape)}")
    n, _, t = x.shape[:3]
    if n == 0 or t == 0:
        return torch.zeros(n, dtype=torch.int64, device=x.device)
    nz = (x != 0).transpose(1, 2).reshape(n, t, -1).any(-1)  # (N, T) frame has data
    idx = torch.arange(1, t + 1, device=x.device, dtype=torch.int64)
    return (nz.to(torch.int64) * idx).amax(1)


def _as_tensor(a, dtype, name):
    if isinstance(a, torch.Tensor):
        return a.to(dtype)
    return torch.as_tensor(np.asarray(a), dtype=dtype)


@dataclass
class SkeletonData:
    """A loaded skeleton dataset (one split).

    Attributes:
        x: float32 ``(N, C, T, V, M)``, zero-padded frames and bodies.
        y: int64 ``(N,)`` 0-based labels (``-1`` where a format carries no label).
        lengths: int64 ``(N,)`` valid frames, ``valid_lengths(x)`` unless the format stores them.
        names: ``N`` sample names (file stems for NTU, the stored names otherwise).
        meta: format-specific extras (``"format"``, subject/camera/setup arrays for NTU,
            ``"class_names"`` where the data names its classes, …).
    """

    x: torch.Tensor
    y: torch.Tensor
    lengths: Optional[torch.Tensor] = None
    names: List[str] = field(default_factory=list)
    meta: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        self.x = _as_tensor(self.x, torch.float32, "x")
        if self.x.dim() == 4:  # (N, C, T, V) single body
            self.x = self.x.unsqueeze(-1)
        if self.x.dim() != 5:
            raise ValueError(f"x: expected (N, C, T, V, M), got shape {tuple(self.x.shape)}")
        self.y = _as_tensor(self.y, torch.int64, "y").reshape(-1)
        n = self.x.shape[0]
        if self.y.shape[0] != n:
            raise ValueError(f"y: expected {n} labels to match x, got {self.y.shape[0]}")
        if self.lengths is None:
            self.lengths = valid_lengths(self.x)
        else:
            self.lengths = _as_tensor(self.lengths, torch.int64, "lengths").reshape(-1)
            if self.lengths.shape[0] != n:
                raise ValueError(f"lengths: expected {n} values to match x, got {self.lengths.shape[0]}")
        self.names = [str(s) for s in self.names] if self.names else [str(i) for i in range(n)]
        if len(self.names) != n:
            raise ValueError(f"names: expected {n} names to match x, got {len(self.names)}")

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def num_classes(self) -> int:
        return int(self.y.max()) + 1 if len(self) else 0

    def subset(self, index: Union[Sequence[int], torch.Tensor, np.ndarray]) -> "SkeletonData":
        """The samples at ``index`` (meta arrays of length N are indexed too)."""
        idx = torch.as_tensor(np.asarray(index), dtype=torch.int64).reshape(-1)
        meta = {}
        for k, v in self.meta.items():
            if isinstance(v, (np.ndarray, torch.Tensor)) and len(v) == len(self):
                meta[k] = v[idx.numpy()] if isinstance(v, np.ndarray) else v[idx]
            else:
                meta[k] = v
        return SkeletonData(self.x[idx], self.y[idx], self.lengths[idx],
                            [self.names[i] for i in idx.tolist()], meta)

    def dataset(self, transform=None):
        """This split as a :class:`~fastskel.data.dataset.SkeletonDataset`."""
        from .dataset import SkeletonDataset

        return SkeletonDataset(self.x, self.y, self.lengths, names=self.names, transform=transform,
                               class_names=self.meta.get("class_names"))

    def __repr__(self) -> str:
        return (f"SkeletonData(x={tuple(self.x.shape)}, classes={self.num_classes}, "
                f"format={self.meta.get('format', '?')!r})")
