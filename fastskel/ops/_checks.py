"""Argument checks shared by the public ops: clear ``TypeError``/``ValueError`` naming the argument,
the expectation and what was given (docs/design.md §2).

Data-dependent checks (finite values, ``lengths``/``index`` ranges, ``k`` against valid lengths)
synchronise with the device; they are skipped while ``torch.compile`` traces, where they would break
the graph, and inside :func:`skip_data_checks` (the internal fast path of the training loops).
Structural checks (type, rank, shape, dtype, device) always run.
"""
from __future__ import annotations

import contextlib
import threading
from typing import Iterable, Iterator, Optional

import torch

_state = threading.local()


@contextlib.contextmanager
def skip_data_checks() -> Iterator[None]:
    """Within this block (this thread only) the public ops skip their data-dependent checks, the
    ones that read tensor values back to the host (NaN/inf scans, value ranges of ``lengths`` and
    ``index``, ``k`` against the shortest valid length). Nests; shape/dtype/device checks still run.
    Invalid values then give unspecified results instead of a ``ValueError``."""
    depth = getattr(_state, "skip", 0)
    _state.skip = depth + 1
    try:
        yield
    finally:
        _state.skip = depth


def data_checks_enabled() -> bool:
    """False while tracing with ``torch.compile`` or inside :func:`skip_data_checks`."""
    return not (getattr(_state, "skip", 0) or torch.compiler.is_compiling())

FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)


def compiling() -> bool:
    return torch.compiler.is_compiling()


def tensor(x, name: str, ndim: Optional[int] = None, dtypes: Iterable[torch.dtype] = FLOAT_DTYPES,
           shape_hint: str = "") -> torch.Tensor:
    """Check type, rank and dtype of a tensor argument."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor{' ' + shape_hint if shape_hint else ''}, got {type(x).__name__}")
    if ndim is not None and x.dim() != ndim:
        raise ValueError(f"{name}: expected a {ndim}-D tensor {shape_hint}, got shape {tuple(x.shape)}")
    dtypes = tuple(dtypes)
    if dtypes and x.dtype not in dtypes:
        raise TypeError(f"{name}: expected dtype in {[str(d) for d in dtypes]}, got {x.dtype}")
    return x


def skeleton(x, name: str = "x") -> torch.Tensor:
    """A batch of single-body skeletons ``(N, C, T, V)`` with at least one sample, frame and joint."""
    tensor(x, name, 4, shape_hint="(N, C, T, V)")
    if min(x.shape) == 0:
        raise ValueError(f"{name}: expected a non-empty (N, C, T, V) tensor, got shape {tuple(x.shape)}")
    return x


def same_device(name: str, t: torch.Tensor, ref: torch.Tensor, ref_name: str) -> None:
    if t.device != ref.device:
        raise ValueError(f"{name}: expected a tensor on {ref.device} like {ref_name}, got {t.device}")


def lengths(lengths, x: torch.Tensor, name: str = "lengths") -> Optional[torch.Tensor]:
    """Valid frames per sample: int ``(N,)`` in ``[0, T]``; ``None`` means every frame is valid."""
    if lengths is None:
        return None
    n, t = x.shape[0], x.shape[2]
    if not isinstance(lengths, torch.Tensor):
        raise TypeError(f"{name}: expected an integer torch.Tensor of shape ({n},) or None, got {type(lengths).__name__}")
    if lengths.dtype.is_floating_point or lengths.dtype == torch.bool or lengths.dtype.is_complex:
        raise TypeError(f"{name}: expected an integer dtype, got {lengths.dtype}")
    if lengths.shape != (n,):
        raise ValueError(f"{name}: expected shape ({n},) to match x, got {tuple(lengths.shape)}")
    # contiguous: the kernels read lengths[n] at offset n (a strided view would be misread)
    lengths = lengths.to(device=x.device, dtype=torch.int64).contiguous()
    if data_checks_enabled() and n > 0:
        lo, hi = int(lengths.min()), int(lengths.max())
        if lo < 0 or hi > t:
            raise ValueError(f"{name}: expected values in [0, T={t}], got min {lo}, max {hi}")
    return lengths


def integer(v, name: str, lo: int, hi: Optional[int] = None, what: str = "") -> int:
    """A Python int in ``[lo, hi]``."""
    if isinstance(v, bool) or not isinstance(v, int):
        if isinstance(v, torch.Tensor) and v.dim() == 0 and not v.dtype.is_floating_point:
            v = int(v)
        else:
            raise TypeError(f"{name}: expected an int, got {type(v).__name__}")
    if v < lo or (hi is not None and v > hi):
        rng = f"[{lo}, {hi}]" if hi is not None else f">= {lo}"
        raise ValueError(f"{name}: expected an int in {rng}{' ' + what if what else ''}, got {v}")
    return v


def finite(x: torch.Tensor, name: str, why: str) -> None:
    if data_checks_enabled() and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name}: expected finite values ({why}), got NaN or inf")


def positive_float(v, name: str, allow_zero: bool = False) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeError(f"{name}: expected a float, got {type(v).__name__}")
    if not (v > 0 or (allow_zero and v == 0)) or v != v or v == float("inf"):
        raise ValueError(f"{name}: expected a finite float {'>= 0' if allow_zero else '> 0'}, got {v}")
    return float(v)


def choice(v, name: str, options: Iterable[str]) -> str:
    options = tuple(options)
    if v not in options:
        raise ValueError(f"{name}: expected one of {options}, got {v!r}")
    return v
