"""Triton kernels of fastskel, installed as ``fastskel.kernels`` (setup.py ``package_dir``).

An optional-Triton shim: importing this package never fails. ``HAS_TRITON`` says whether triton
imported; kernel modules are imported only by the ops that launch them. ``INTERPRET`` mirrors
``TRITON_INTERPRET=1`` (read when triton decorates the kernels, so set it before importing fastskel),
under which the kernels run on CPU tensors.
"""
import os

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
try:
    import triton  # noqa: F401
    import triton.language  # noqa: F401

    HAS_TRITON = True
    IMPORT_ERROR = ""
except Exception as exc:  # ImportError, or a broken install raising anything else
    HAS_TRITON = False
    IMPORT_ERROR = f"{type(exc).__name__}: {exc}"

if HAS_TRITON and INTERPRET:  # Triton 3.6's interpreter + NumPy >= 2.4: runtime loop bounds fail
    from ._interpreter_compat import install as _install_interpreter_compat

    _install_interpreter_compat()


def device_guard(t):
    """Context for a launch on ``t``'s device: Triton launches on the *current* CUDA device, so
    without it a tensor on ``cuda:1`` would be launched on GPU 0 with GPU 1 pointers. A no-op for
    CPU tensors (interpreter) and while ``torch.compile`` traces (Inductor emits its own guards)."""
    import contextlib

    import torch

    if t.device.type != "cuda" or torch.compiler.is_compiling():
        return contextlib.nullcontext()
    return torch.cuda.device(t.device)


def wrap_triton(kernel):
    """``torch.library.wrap_triton(kernel)``; under the interpreter the kernel itself, as torch ≥ 2.12
    does (torch 2.11 raises "wrap_triton only works on functions annotated with triton.jit" for the
    interpreter's ``InterpretedFunction``; nothing is traced there)."""
    if INTERPRET:
        return kernel
    from torch.library import wrap_triton as _wrap

    return _wrap(kernel)


def register_op(name: str, launcher, fake):
    """Register a Triton launcher as ``torch.ops.fastskel.<name>`` (same schema either way).

    On real Triton: ``torch.library.triton_op`` (its body, launched through ``wrap_triton``, doubles
    as the fake implementation, so ``torch.compile`` traces into the kernels). Under
    ``TRITON_INTERPRET=1`` that cannot work — the interpreter would read the fake tensors' data — so
    the launcher is a ``torch.library.custom_op`` with the explicit ``fake`` instead.
    """
    import torch

    qualname = f"fastskel::{name}"
    if INTERPRET:
        op = torch.library.custom_op(qualname, launcher, mutates_args=())
        op.register_fake(fake)
        return op
    return torch.library.triton_op(qualname, launcher, mutates_args=())


__all__ = ["HAS_TRITON", "IMPORT_ERROR", "INTERPRET", "device_guard", "register_op", "wrap_triton"]
