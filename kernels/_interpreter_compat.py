"""Triton-interpreter compatibility shim (``TRITON_INTERPRET=1`` only; compiled kernels are untouched).

Triton 3.6's interpreter hands every scalar kernel argument to the kernel as a one-element NumPy
array and converts it back for Python's ``range`` with ``int(array)``. NumPy 2.4 made converting an
array with ``ndim > 0`` to a scalar a ``TypeError`` ("only 0-dimensional arrays can be converted to
Python scalars"), so every loop whose bound is a runtime argument (``for b0 in range(0, B, BLOCK)``)
fails there. Triton 3.9's interpreter squeezes the array first; :func:`install` gives older
interpreters that same ``__index__`` (``int(data.squeeze())``: still a ``TypeError`` for a block
of more than one element, exactly as in 3.9).
"""
from __future__ import annotations

import functools
import inspect


def _index(self):
    return int(self.handle.data.squeeze())


def needs_patch(interpreter) -> bool:
    """Whether ``interpreter`` (``triton.runtime.interpreter``) converts scalars without squeezing."""
    patch = getattr(interpreter, "_patch_lang_tensor", None)
    if patch is None:
        return False
    try:
        src = inspect.getsource(patch)
    except (OSError, TypeError):
        return False
    return "__index__" in src and "squeeze" not in src


def install() -> bool:
    """Wrap the interpreter's per-launch tensor patching so ``__index__`` squeezes; idempotent.
    Returns whether the shim is active."""
    try:
        from triton.runtime import interpreter
    except Exception:  # noqa: BLE001 — no interpreter, nothing to fix
        return False
    if getattr(interpreter._patch_lang_tensor, "_fastskel_compat", False):
        return True
    if not needs_patch(interpreter):
        return False
    original = interpreter._patch_lang_tensor

    @functools.wraps(original)
    def patched(tensor, scope):
        original(tensor, scope)
        scope.set_attr(tensor, "__index__", _index)  # restored with the rest after the launch

    patched._fastskel_compat = True
    interpreter._patch_lang_tensor = patched
    return True
