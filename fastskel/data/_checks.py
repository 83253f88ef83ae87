"""``skip_data_checks()``: a thread-local switch for the data-dependent checks of ``fastskel.data``.

The transforms check ``lengths`` against ``[0, T]``. For a CPU tensor that is free; for a tensor on
an accelerator it reads values back to the host (a synchronisation that stalls the device queue).
A training step whose ``lengths`` come from a validated dataset enters :func:`skip_data_checks` to
skip those reads; everything else (shapes, dtypes, arguments) is still checked.
"""
from __future__ import annotations

import contextlib
import threading

__all__ = ["data_checks_enabled", "skip_data_checks"]

_state = threading.local()


def data_checks_enabled() -> bool:
    """``False`` inside :func:`skip_data_checks` (in this thread), ``True`` otherwise."""
    return getattr(_state, "depth", 0) == 0


@contextlib.contextmanager
def skip_data_checks():
    """Skip the host-syncing value checks of ``fastskel.data`` in this thread (re-entrant)."""
    _state.depth = getattr(_state, "depth", 0) + 1
    try:
        yield
    finally:
        _state.depth -= 1
