"""An endless, resumable stream of training batches over the passes of a loader.

An epoch of the schedule need not be one pass over the data (``iters_per_epoch``: DINOv2 /
official SLiM ``OFFICIAL_EPOCH_LENGTH`` = 1,250 iterations). Global iteration ``k`` (0-based)
reads batch ``k mod n`` of data pass ``⌊k / n⌋`` (``n = len(loader)``), the pass reshuffled by
``set_loader_epoch(loader, pass)``, so the batch order is a function of the iteration alone and a
run resumed at any iteration continues the same stream.
"""
from __future__ import annotations

from typing import Callable, Iterator, Optional

__all__ = ["batch_stream"]


def batch_stream(loader, start: int = 0, on_start: Optional[Callable[[], None]] = None) -> Iterator:
    """Batches of ``loader`` from global iteration ``start`` on, pass after pass, without end.

    ``on_start()`` runs once, where the RNG state saved at iteration ``start`` was taken: before
    the pass's ``iter(loader)`` (which draws the loader's seed) when ``start`` is at a pass
    boundary, else after ``iter`` and the ``start mod n`` skipped batches."""
    from fastskel.data import set_loader_epoch

    n = len(loader)
    if n < 1:
        raise ValueError("loader: expected at least one batch per pass, got none")
    p, skip = divmod(int(start), n)
    first = True
    while True:
        if first and skip == 0 and on_start is not None:
            on_start()
        set_loader_epoch(loader, p)
        it = iter(loader)
        if first:
            for _ in range(skip):
                next(it)
            if skip and on_start is not None:
                on_start()
            first = False
        yield from it
        p += 1
