"""A host-synchronisation detector for CPU test runs (``tests/test_no_host_sync.py``).

:class:`SyncDetector` records, while armed, every call that would make the host wait for the
device: aten-level (a ``TorchDispatchMode``) ``_local_scalar_dense``, ``nonzero``, boolean-mask
indexing, ``masked_select``, ``unique*``, ``repeat_interleave`` without ``output_size``,
``bincount``, ``equal``, blocking cross-device copies; Python-level ``Tensor.item/tolist/numpy/cpu/
__bool__/__int__/__float__/__index__``, ``torch.tensor``/``torch.as_tensor`` with ``device=``,
``torch.cuda.synchronize``. Each :class:`Event` names the innermost fastskel (or test) source line.
"""
from __future__ import annotations

import linecache
import os
import traceback
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import torch
from torch.utils._python_dispatch import TorchDispatchMode

import fastskel

PKG = os.path.dirname(fastskel.__file__) + os.sep
ROOT = os.path.dirname(os.path.dirname(fastskel.__file__)) + os.sep
OWN = (PKG, os.path.dirname(os.path.abspath(__file__)) + os.sep)      # fastskel and the tests


# ============================================================================ the detector
@dataclass
class Event:
    kind: str                  # e.g. "aten.nonzero", "Tensor.item", "torch.tensor(device=)"
    where: str                 # "fastskel/methods/amr.py:321": the innermost fastskel (or test) frame
    code: str                  # that line's source
    stack: Tuple[str, ...] = field(repr=False)    # every frame's filename (for "via" rules)

    def __str__(self) -> str:
        return f"{self.kind} at {self.where}: {self.code}"


@dataclass(frozen=True)
class Allow:
    """An accepted synchronisation: innermost fastskel frame in ``where`` whose line contains
    ``code`` (and, if given, a frame whose file path contains ``via``), with the reason."""
    where: str
    code: str
    reason: str
    via: Optional[str] = None

    def matches(self, e: Event) -> bool:
        return (e.where.startswith(self.where) and self.code in e.code
                and (self.via is None or any(self.via in f for f in e.stack)))


_INDEX_OPS = {"index", "index_put", "index_put_", "_index_put_impl", "_index_put_impl_", "_unsafe_index"}
_ALWAYS = {"_local_scalar_dense", "nonzero", "masked_select", "_unique", "_unique2", "unique_dim",
           "unique_consecutive", "unique_dim_consecutive", "bincount", "equal"}


def _is_mask(t) -> bool:
    return isinstance(t, torch.Tensor) and t.dtype in (torch.bool, torch.uint8)


def _aten_sync(func, args, kwargs) -> Optional[str]:
    """Why this aten call synchronises with the host, or None."""
    name = func.overloadpacket.__name__
    if name in _ALWAYS:
        return f"aten.{name}"
    if name in _INDEX_OPS and len(args) > 1 and any(_is_mask(i) for i in (args[1] or ())):
        return f"aten.{name} with a boolean mask"
    if name == "repeat_interleave" and isinstance(args[0], torch.Tensor) and kwargs.get("output_size") is None \
            and (len(args) < 2 or isinstance(args[1], torch.Tensor) or func._overloadname == "Tensor"):
        return "aten.repeat_interleave with tensor repeats and no output_size"
    if name == "_to_copy" and isinstance(args[0], torch.Tensor) and "device" in kwargs:
        src, dst = args[0].device, torch.device(kwargs["device"])
        if src != dst and dst.type == "cpu" and not kwargs.get("non_blocking", False):
            return "aten._to_copy device→host"
        if src != dst and src.type == "cpu" and not kwargs.get("non_blocking", False):
            return "aten._to_copy host→device (blocking)"
    if name == "copy_" and len(args) > 1 and isinstance(args[1], torch.Tensor):
        dst, src = args[0].device, args[1].device
        blocking = not (args[2] if len(args) > 2 else kwargs.get("non_blocking", False))
        if dst != src and blocking:
            return "aten.copy_ across devices (blocking)"
    return None


class SyncDetector:
    """Records host-synchronising calls while ``armed`` (see the module docstring)."""

    PY_METHODS = ("item", "tolist", "numpy", "cpu", "__bool__", "__int__", "__float__", "__index__")

    def __init__(self, armed: bool = True):
        self.armed = armed
        self.events: List[Event] = []
        self._nested = 0
        self._saved: list = []
        self._mode = None

    # -- recording -----------------------------------------------------------------
    def record(self, kind: str) -> None:
        if not self.armed or self._nested:
            return
        frames = traceback.extract_stack()[:-2]
        files = tuple(f.filename for f in frames)
        own = [f for f in frames if f.filename.startswith(OWN)]
        if own:
            f = own[-1]
            where = os.path.relpath(f.filename, ROOT).replace(os.sep, "/") + f":{f.lineno}"
            code = (linecache.getline(f.filename, f.lineno) or f.line or "").strip()
        else:
            where, code = "<outside>", (frames[-1].line or "") if frames else ""
        self.events.append(Event(kind, where, code, files))

    def _wrap_method(self, name):
        orig = getattr(torch.Tensor, name)
        det = self

        def wrapper(t, *a, **k):
            det.record(f"Tensor.{name}")
            det._nested += 1           # the aten call underneath is the same event
            try:
                return orig(t, *a, **k)
            finally:
                det._nested -= 1
        return orig, wrapper

    def _wrap_factory(self, name):
        orig = getattr(torch, name)
        det = self

        def factory(*a, **k):
            dev = k.get("device", a[2] if name == "as_tensor" and len(a) > 2 else None)
            if dev is not None:
                det.record(f"torch.{name}(device=)")
            return orig(*a, **k)
        return orig, factory

    # -- context -------------------------------------------------------------------
    def __enter__(self) -> "SyncDetector":
        for name in self.PY_METHODS:
            orig, new = self._wrap_method(name)
            self._saved.append((torch.Tensor, name, orig))
            setattr(torch.Tensor, name, new)
        for name in ("tensor", "as_tensor"):
            orig, new = self._wrap_factory(name)
            self._saved.append((torch, name, orig))
            setattr(torch, name, new)
        orig_sync = torch.cuda.synchronize
        self._saved.append((torch.cuda, "synchronize", orig_sync))

        def synchronize(*a, **k):
            self.record("torch.cuda.synchronize")
            return orig_sync(*a, **k)
        torch.cuda.synchronize = synchronize
        det = self

        class _Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                kwargs = kwargs or {}
                why = _aten_sync(func, args, kwargs)
                if why:
                    det.record(why)
                return func(*args, **kwargs)

        self._mode = _Mode()
        self._mode.__enter__()
        return self

    def __exit__(self, *exc) -> bool:
        self._mode.__exit__(*exc)
        for owner, name, orig in reversed(self._saved):
            setattr(owner, name, orig)
        self._saved.clear()
        return False

    def unexplained(self, allow) -> List[Event]:
        return [e for e in self.events if not any(a.matches(e) for a in allow)]
