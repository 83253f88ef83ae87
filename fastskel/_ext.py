"""Loading of the compiled extension ``fastskel._C`` (C++ always, CUDA when built with it).

The package works without it (or with ``FASTSKEL_DISABLE_C=1``): ``load()`` returns ``None`` and every op falls back to its reference
(or Triton). The first failure is remembered and shown by ``fastskel info`` and in the error of an
explicit ``backend="cpp"`` request.
"""
from __future__ import annotations

import importlib
import os
from typing import Optional, Tuple

import torch

_module = None
_error: Optional[str] = None
_tried = False


def load():
    """Import ``fastskel._C`` once; the module, or ``None`` when it is missing or broken."""
    global _module, _error, _tried
    if not _tried:
        _tried = True
        if os.environ.get("FASTSKEL_DISABLE_C", "0") == "1":
            _module, _error = None, "disabled by FASTSKEL_DISABLE_C=1"
            return None
        try:
            _module = importlib.import_module("fastskel._C")
        except Exception as exc:  # missing build, ABI mismatch, missing CUDA runtime …
            _module, _error = None, f"{type(exc).__name__}: {exc}"
    return _module


def error() -> Optional[str]:
    """Why ``fastskel._C`` could not be loaded, or ``None``."""
    load()
    return _error


_ops_cache: Optional[Tuple[str, ...]] = None
_cuda_cache: Optional[bool] = None


def compiled_ops() -> Tuple[str, ...]:
    """Names of the ops the extension registers under ``torch.ops.fastskel`` (asked once: a
    pybind11 call is opaque to torch.compile, a cached tuple is a constant)."""
    global _ops_cache
    if _ops_cache is None:
        mod = load()
        _ops_cache = tuple(mod.compiled_ops()) if mod is not None else ()
    return _ops_cache


def cuda_compiled() -> bool:
    """Whether ``_C`` was built with its CUDA kernels (asked once)."""
    global _cuda_cache
    if _cuda_cache is None:
        mod = load()
        _cuda_cache = bool(mod is not None and mod.cuda_compiled())
    return _cuda_cache


# The _C ops a public op needs: a stale build with graph_conv but not graph_conv_backward would
# run without gradients, so it counts as not having graph_conv at all.
_NEEDS = {"graph_conv": ("graph_conv", "graph_conv_backward"),
          "dropout_add_relu": ("dropout_add_relu", "dropout_add_relu_backward")}
# Ops whose _C kernels exist for the CPU only (on CUDA, "auto" takes the fused torch/Triton path).
_CPU_ONLY = frozenset({"dropout_add_relu"})


def has_op(op: Optional[str], device: torch.device) -> Tuple[bool, str]:
    """Whether ``_C`` runs ``op`` on ``device``; the reason when it does not."""
    if load() is None:
        return False, f"fastskel._C is not built or failed to load ({_error}); reinstall with `pip install --no-build-isolation -e .`"
    missing = [o for o in _NEEDS.get(op, (op,)) if o not in compiled_ops()]
    if missing:
        return False, f"fastskel._C has no op '{missing[0]}' (it has {compiled_ops()}); rebuild it if it is stale"
    if device.type == "cuda" and op in _CPU_ONLY:
        return False, f"fastskel._C implements '{op}' for the CPU only"
    if device.type == "cuda" and not cuda_compiled():
        return False, "fastskel._C was built without CUDA (torch without CUDA, nvcc missing, or FASTSKEL_FORCE_CPU=1)"
    if device.type not in ("cpu", "cuda"):
        return False, f"fastskel._C has no kernels for device type '{device.type}'"
    return True, ""


def forbid_double_backward(backward_op: str) -> None:
    """Register autograd for the ``_C`` backward op ``fastskel::<backward_op>`` that raises a clear
    error when differentiated again (the ``_C`` ops give first-order gradients only)."""
    def _raise(ctx, *grads):
        raise RuntimeError(f"fastskel::{backward_op}: double backward is not implemented; "
                           "use backend='torch' for higher-order gradients")

    torch.library.register_autograd(f"fastskel::{backward_op}", _raise, setup_context=lambda ctx, inputs, output: None)
