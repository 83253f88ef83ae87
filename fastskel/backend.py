"""Which implementation of an op runs: "auto" | "triton" | "cpp" | "torch" (docs/design.md §2).

- "triton": the fused Triton kernels in ``fastskel.kernels``; runs on CUDA tensors, and on CPU
  tensors when ``TRITON_INTERPRET=1`` was set before fastskel was imported (how CI tests them).
- "cpp": the ``fastskel._C`` extension (ops registered with ``TORCH_LIBRARY``), CPU and CUDA.
- "torch": the readable references in ``fastskel.ops.reference``.
- "auto": Triton for CUDA tensors, else ``_C`` where the op has it, else the reference; falls back
  silently. An explicitly requested backend that cannot run raises ``BackendUnavailableError``.

The process default comes from ``set_backend()``, else the env ``FASTSKEL_BACKEND``, else "auto".
"""
from __future__ import annotations

import os
from typing import Iterable, List, Optional

import torch

__all__ = [
    "BACKENDS", "BackendUnavailableError", "available_backends", "cpp_status", "get_backend",
    "resolve", "set_backend", "triton_status",
]

BACKENDS = ("auto", "triton", "cpp", "torch")
_default: Optional[str] = None


class BackendUnavailableError(RuntimeError):
    """An explicitly requested backend cannot run this op on these tensors."""


def _check_name(name: str, arg: str = "backend") -> str:
    if not isinstance(name, str) or name not in BACKENDS:
        raise ValueError(f"{arg}: expected one of {BACKENDS}, got {name!r}")
    return name


def set_backend(name: Optional[str]) -> None:
    """Set the process-wide default backend; ``None`` returns to env/"auto"."""
    global _default
    _default = None if name is None else _check_name(name)


def get_backend() -> str:
    """The process default: ``set_backend()``, else env ``FASTSKEL_BACKEND``, else "auto"."""
    if _default is not None:
        return _default
    env = os.environ.get("FASTSKEL_BACKEND")
    if env:
        return _check_name(env, "FASTSKEL_BACKEND")
    return "auto"


def triton_status(device: torch.device | str = "cpu") -> tuple[bool, str]:
    """Whether Triton kernels can run on ``device`` and, if not, why."""
    from fastskel.kernels import HAS_TRITON, IMPORT_ERROR, INTERPRET

    if not HAS_TRITON:
        return False, f"triton is not importable ({IMPORT_ERROR})"
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            return False, "CUDA is not available"
        return True, ""
    if INTERPRET:
        return True, ""
    return False, f"Triton needs CUDA tensors (got {dev.type}); set TRITON_INTERPRET=1 before importing fastskel to run it on CPU"


def cpp_status(op: str, device: torch.device | str = "cpu") -> tuple[bool, str]:
    """Whether ``fastskel._C`` provides ``op`` on ``device`` and, if not, why."""
    from fastskel import _ext

    return _ext.has_op(op, torch.device(device))


def available_backends(op: Optional[str] = None, device: torch.device | str = "cpu",
                       implemented: Iterable[str] = ("triton", "cpp", "torch")) -> List[str]:
    """Backends that can run on ``device`` (for ``op`` when given: only those it implements)."""
    out = []
    for b in ("triton", "cpp", "torch"):
        if b not in implemented:
            continue
        if b == "torch":
            out.append(b)
        elif b == "triton" and triton_status(device)[0]:
            out.append(b)
        elif b == "cpp" and (cpp_status(op, device)[0] if op else _any_cpp()):
            out.append(b)
    return out


def _any_cpp() -> bool:
    from fastskel import _ext

    return _ext.load() is not None


def resolve(op: str, backend: Optional[str], device: torch.device,
            implemented: Iterable[str] = ("torch",)) -> str:
    """Pick the backend that runs ``op`` on ``device``.

    Args:
        op: the op's name (for messages and the ``_C`` lookup).
        backend: the caller's request; ``None`` means the process default.
        device: the device of the op's inputs.
        implemented: the backends this op has (always includes "torch").
    """
    name = _check_name(backend) if backend is not None else get_backend()
    implemented = tuple(implemented)
    if name == "auto":
        if device.type == "cuda" and "triton" in implemented and triton_status(device)[0]:
            return "triton"
        if "cpp" in implemented and cpp_status(op, device)[0]:
            return "cpp"
        return "torch"
    if name == "torch":
        return name
    if name not in implemented:
        raise BackendUnavailableError(
            f"backend: '{name}' was requested for {op}, which implements {implemented}")
    ok, why = triton_status(device) if name == "triton" else cpp_status(op, device)
    if not ok:
        raise BackendUnavailableError(f"backend: '{name}' was requested for {op} on {device}, but {why}")
    return name
