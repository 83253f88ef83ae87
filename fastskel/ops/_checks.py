"""Argument checks shared by the public ops: clear ``TypeError``/``ValueError`` naming the argument,
the expectation and what was given (SPEC §2).

Data-dependent checks (finite values, ``k`` against valid lengths) synchronise with the device;
they are skipped while ``torch.compile`` traces, where they would break the graph.
"""
from __future__ import annotations

from typing import Iterable, Optional

import torch

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
    lengths = lengths.to(device=x.device, dtype=torch.int64)
    if not compiling() and n > 0:
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
    if not compiling() and not bool(torch.isfinite(x).all()):
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
