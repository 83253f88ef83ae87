"""In-memory skeleton dataset and the DataLoader recipe yielding ``(x, lengths, label)`` batches.

The recipe (``make_loader``) fetches whole batches by fancy indexing (one tensor gather per batch,
no per-sample Python collation), is seeded, and shards with ``DistributedSampler`` under DDP.
Augmentation is meant to run *after* the loader, batched on the training device (see
``fastskel.data.transforms``); a per-batch ``transform`` hook is offered for convenience.
"""
from __future__ import annotations

from typing import Callable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, Sampler, SequentialSampler

from .core import valid_lengths

__all__ = ["SkeletonDataset", "make_loader", "set_loader_epoch"]

Index = Union[int, Sequence[int], torch.Tensor, np.ndarray, slice]


class SkeletonDataset(Dataset):
    """Skeleton sequences held as tensors.

    Args:
        x: float ``(N, C, T, V, M)`` (or ``(N, C, T, V)``, taken as M=1).
        y: int labels ``(N,)``.
        lengths: valid frames ``(N,)``; ``valid_lengths(x)`` when omitted.
        names: optional sample names.
        transform: optional callable ``(x, lengths) -> x`` applied to every fetched item/batch
            (batched transforms from ``fastskel.data.transforms`` fit directly).
        class_names: optional names of the classes, index = label (NTU's action names, a PYSKL
            file's ``label_names``, OpenPose class folders); evaluation tables show them.

    ``ds[i]`` → ``(x[i], lengths[i], y[i])``; ``ds[list_or_tensor]`` → the same three, batched.
    """

    def __init__(self, x, y, lengths=None, names: Optional[List[str]] = None,
                 transform: Optional[Callable] = None, class_names: Optional[List[str]] = None):
        x = torch.as_tensor(x)
        if x.dim() == 4:
            x = x.unsqueeze(-1)
        if x.dim() != 5:
            raise ValueError(f"x: expected (N, C, T, V, M), got shape {tuple(x.shape)}")
        if not x.dtype.is_floating_point:
            raise TypeError(f"x: expected a floating dtype, got {x.dtype}")
        y = torch.as_tensor(y, dtype=torch.int64).reshape(-1)
        if y.shape[0] != x.shape[0]:
            raise ValueError(f"y: expected {x.shape[0]} labels to match x, got {y.shape[0]}")
        lengths = valid_lengths(x) if lengths is None else torch.as_tensor(lengths, dtype=torch.int64).reshape(-1)
        if lengths.shape[0] != x.shape[0]:
            raise ValueError(f"lengths: expected {x.shape[0]} values to match x, got {lengths.shape[0]}")
        self.x, self.y, self.lengths = x, y, lengths
        self.names = list(names) if names is not None else None
        self.transform = transform
        self.class_names = [str(c) for c in class_names] if class_names is not None else None

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def num_classes(self) -> int:
        return int(self.y.max()) + 1 if len(self) else 0

    def __getitem__(self, index: Index) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if isinstance(index, (list, tuple, np.ndarray)):
            index = torch.as_tensor(np.asarray(index), dtype=torch.int64)
        x, lengths, y = self.x[index], self.lengths[index], self.y[index]
        if self.transform is not None:
            if x.dim() == 4:
                x = self.transform(x.unsqueeze(0), lengths.reshape(1)).squeeze(0)
            else:
                x = self.transform(x, lengths)
        return x, lengths, y

    def subset(self, index) -> "SkeletonDataset":
        idx = torch.as_tensor(np.asarray(index), dtype=torch.int64).reshape(-1)
        names = [self.names[i] for i in idx.tolist()] if self.names is not None else None
        return SkeletonDataset(self.x[idx], self.y[idx], self.lengths[idx], names, self.transform,
                               class_names=self.class_names)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(x={tuple(self.x.shape)}, classes={self.num_classes})"


class _EpochSeededRandomSampler(Sampler[int]):
    """A shuffling sampler whose order depends only on (seed, epoch): reproducible and resumable."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self) -> int:
        return self.n


def make_loader(dataset: Dataset, batch_size: int, shuffle: bool = True, seed: int = 0,
                distributed: bool = False, drop_last: bool = False, num_workers: int = 0,
                pin_memory: bool = False) -> DataLoader:
    """A DataLoader yielding ``(x, lengths, label)`` batches.

    - With a :class:`SkeletonDataset` (incl. ``SyntheticSkeletons``) batches are gathered with one
      fancy index per batch (``batch_size=None`` + a ``BatchSampler``), no per-sample collation.
      Any other map-style dataset whose items are ``(x, length, label)`` uses default collation.
    - ``shuffle`` order is a function of ``(seed, epoch)``: call
      ``set_loader_epoch(loader, e)`` every epoch; the same seed and epoch give the same order
      (exact resume).
    - ``distributed=True`` shards with ``DistributedSampler`` (needs an initialised process group);
      each rank sees ``ceil(N / world)`` samples per epoch, as DistributedSampler pads.
    """
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size: expected an int >= 1, got {batch_size!r}")
    n = len(dataset)
    if distributed:
        from torch.utils.data.distributed import DistributedSampler

        sampler: Sampler = DistributedSampler(dataset, shuffle=shuffle, seed=seed, drop_last=drop_last)
    elif shuffle:
        sampler = _EpochSeededRandomSampler(n, seed)
    else:
        sampler = SequentialSampler(range(n))
    if isinstance(dataset, SkeletonDataset):
        return DataLoader(dataset, sampler=BatchSampler(sampler, batch_size, drop_last), batch_size=None,
                          num_workers=num_workers, pin_memory=pin_memory)
    return DataLoader(dataset, sampler=sampler, batch_size=batch_size, drop_last=drop_last,
                      num_workers=num_workers, pin_memory=pin_memory)


def set_loader_epoch(loader: DataLoader, epoch: int) -> None:
    """Tell a loader from :func:`make_loader` which epoch starts (reshuffles deterministically)."""
    s = getattr(loader, "sampler", None)
    while s is not None:
        if hasattr(s, "set_epoch"):
            s.set_epoch(epoch)
            return
        s = getattr(s, "sampler", None)
