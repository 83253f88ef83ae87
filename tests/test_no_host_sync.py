"""No host synchronisation in the methods' training steps (issue 15).

A CPU cannot observe a real CUDA synchronisation, so :class:`SyncDetector` records every operation
that *would* make the host wait for the device, at two levels:

- aten level (a ``TorchDispatchMode``): ``_local_scalar_dense`` (``.item()``, ``bool``/``int``/
  ``float`` of a tensor), ``nonzero``, boolean-mask ``index``/``index_put_``, ``masked_select``,
  ``unique*``, ``repeat_interleave`` with tensor repeats and no ``output_size``, ``bincount``,
  ``equal``, and blocking device↔host copies;
- Python level (patched for the block): ``Tensor.item/tolist/numpy/cpu/__bool__/__int__/__float__/
  __index__``, ``torch.tensor``/``torch.as_tensor`` with a ``device=`` argument (a synchronous
  host→device copy on CUDA), ``torch.cuda.synchronize``.

Each event names the innermost fastskel source line that caused it. One engine step of AMR, MAMP,
ASMa and SLiM (tiny configs, :class:`~fastskel.engine.trainer.Trainer`, so inside the engine's
``train_step_context``) must record none beyond the explicit :data:`ALLOW` list below, each entry
with its reason. The first step only warms caches (constant tables, tube tables) and is not checked.
On CUDA, :func:`test_cuda_sync_debug_mode` repeats this with ``torch.cuda.set_sync_debug_mode``.
"""
from __future__ import annotations

import linecache
import os
import traceback
import warnings
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import fastskel
from fastskel.data import SkeletonDataset
from fastskel.data._checks import data_checks_enabled as data_checks_on
from fastskel.engine.trainer import TrainOptions, Trainer, train_step_context
from fastskel.ops import data_checks_enabled as ops_checks_on

from conftest import TRITON_DEVICE, requires_cuda

PKG = os.path.dirname(fastskel.__file__) + os.sep
ROOT = os.path.dirname(os.path.dirname(fastskel.__file__)) + os.sep
OWN = (PKG, os.path.dirname(os.path.abspath(__file__)) + os.sep)      # fastskel and these tests


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


# ============================================================================ what is accepted, and why
ENGINE_ALLOW = (
    Allow("fastskel/engine/trainer.py", "optimizer.step()", via="torch/optim/",
          reason="torch.optim's Adam/AdamW (capturable=False) read their step counters, which stay CPU "
                 "tensors also when the parameters are on CUDA: a host read, no device sync"),
    Allow("fastskel/data/transforms.py", "torch.aminmax(lengths)",
          reason="the lengths range check of fastskel.data runs only for CPU tensors (free on the host); "
                 "for device tensors it is skipped inside fastskel.data.skip_data_checks() "
                 "(test_transforms_lengths_check_skipped_off_cpu)"),
)
# Data-dependent shapes inherent to the method (the number of non-empty bodies / masked tokens is
# only known on the device): one nonzero per step each. Removing them would mean padding every step
# to the worst case (all bodies, all tokens), i.e. giving up the compute they save.
METHOD_ALLOW = {
    "amr": (Allow("fastskel/methods/amr.py", "bodies[valid]",
                  reason="skip_empty_bodies: the all-zero bodies are dropped before the encoder (AMR's "
                         "speed-up over MAMP); how many remain is data"),),
    "mamp": (),
    "asma": (Allow("fastskel/ops/dropout.py", "return s.cpu()",
                   reason="the fused dropout tail of the ST-GCN blocks is CPU-only (fused_tail_available; "
                          "on CUDA the blocks use nn.Dropout): its seed is a CPU tensor already"),),
    "slim": (Allow("fastskel/methods/slim.py", "keep = valid.nonzero()",
                   reason="skip_empty_bodies: empty bodies dropped (their count is data)"),
             Allow("fastskel/methods/slim.py", "flat = m_anchor.flatten().nonzero()",
                   reason="L_MFM runs the heads on the masked patch tokens only; the tube masks' token "
                          "count varies per view (one nonzero; the gathers and their backward use its "
                          "integer indices)"),),
}


# ============================================================================ tiny methods through the engine
def _data(n=16, t=20, v=25, seed=0) -> SkeletonDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, t, v, 2, generator=g) * 0.3
    lengths = torch.randint(t // 2 + 2, t + 1, (n,), generator=g)
    x = x * (torch.arange(t).view(1, 1, t, 1, 1) < lengths.view(n, 1, 1, 1, 1))
    x[::2, ..., 1] = 0                                      # half the actions have one body
    return SkeletonDataset(x, torch.arange(n) % 4, lengths)


ENGINE = dict(epochs=1, batch_size=4, warmup_epochs=0)


def make_method(name: str, backend: Optional[str] = None):
    torch.manual_seed(0)
    if name in ("amr", "mamp"):
        from fastskel.methods.amr import AMR, AMRConfig, MAMP, MAMPConfig
        tiny = dict(num_frames=16, frames_per_patch=4, dim=32, depth=1, heads=2, decoder_dim=32, decoder_depth=1,
                    decoder_heads=2, crop_min_frames=8, backend=backend, **ENGINE)
        return AMR(AMRConfig(r=2, windows=(4, 8), **tiny)) if name == "amr" else MAMP(MAMPConfig(**tiny))
    if name == "asma":
        from fastskel.methods.asma import ASMa, ASMaConfig
        return ASMa(ASMaConfig(hidden_channels=4, depth=2, out_dim=16, projector_dims=(32, 32, 32), dropout=0.5,
                               num_frames=16, joint_mask_n=5, frame_mask_k=4, backend=backend, **ENGINE))
    from fastskel.methods.slim import SLiM, SLiMConfig
    return SLiM(SLiMConfig(dim=32, depth=1, heads=4, mlp_dim=64, num_registers=2, num_prototypes=32,
                           head_hidden_dim=32, head_bottleneck_dim=16, frames=16, local_frames=(8,),
                           local_scales=((0.15, 0.4),), local_crops=1, freeze_last_layer_epochs=0,
                           backend=backend, **ENGINE))


def run_second_step(method, device: str = "cpu", detector: Optional[SyncDetector] = None) -> SyncDetector:
    """Two engine steps of ``method`` (4 in the schedule); the detector is armed from the second
    forward to the end of that step (forward, backward, optimiser, ``after_step``)."""
    det = detector or SyncDetector(armed=False)
    calls = []

    def arm(*_):
        calls.append(1)
        det.armed = len(calls) >= 2

    hook = method.register_forward_pre_hook(arm)
    opts = TrainOptions(out=None, device=device, progress=False, handle_signals=False, log_every=1000,
                        tensorboard=False)
    try:
        with det:
            Trainer(method, _data(), opts, method_name=type(method).__name__.lower()).fit(stop_after=2)
    finally:
        det.armed = False
        hook.remove()
    assert len(calls) == 2
    return det


# ============================================================================ the detector can fail
def _catch(fn) -> List[Event]:
    with SyncDetector() as det:
        fn()
    return det.events


SYNCING = {
    "item": lambda t: t.sum().item(),
    "bool": lambda t: bool(t.sum() > 0),
    "int": lambda t: int(t.sum()),
    "float": lambda t: float(t.sum()),
    "index": lambda t: list(range(4))[t.argmax()],
    "tolist": lambda t: t.tolist(),
    "cpu": lambda t: t.cpu(),
    "nonzero": lambda t: (t > 0).nonzero(),
    "where1": lambda t: torch.where(t > 0),
    "mask_index": lambda t: t[t > 0],
    "mask_assign": lambda t: t.clone().index_put_((t > 0,), torch.zeros(())),
    "unique": lambda t: torch.unique(t),
    "masked_select": lambda t: t.masked_select(t > 0),
    "repeat_interleave": lambda t: torch.arange(4).repeat_interleave(torch.tensor([1, 0, 2, 1])),
    "tensor_on_device": lambda t: torch.tensor(1.0, device=t.device),
    "as_tensor_on_device": lambda t: torch.as_tensor([1.0], device=t.device),
}


@pytest.mark.parametrize("kind", sorted(SYNCING))
def test_detector_catches_each_sync_point(kind):
    t = torch.randn(4)
    events = _catch(lambda: SYNCING[kind](t))
    assert events, f"{kind}: not detected"


def test_detector_passes_sync_free_code():
    t = torch.randn(4, 5)
    n = torch.tensor([1, 0, 2, 1])

    def clean():
        y = torch.where(t > 0, t, 0.0).softmax(-1) @ t.T
        y = y + torch.full((), 2.0) + torch.zeros(3)[:, None].sum()
        torch.arange(4).repeat_interleave(n, output_size=4)
        torch.topk(t, 2, dim=1).indices.sort(dim=1)
        t[torch.arange(2)] * t.shape[0]
        torch.nonzero_static(t > 0, size=3)
        return y
    assert _catch(clean) == []


def test_detector_catches_a_deliberate_item_in_a_method_step():
    """The same pipeline as the real checks, with one ``.item()`` planted in the forward: found, and
    attributed to the planting line."""
    method = make_method("mamp")
    fwd = method.forward

    def forward(x, lengths=None, generator=None):
        out = fwd(x, lengths, generator)
        out["loss"] = out["loss"] * (1.0 + 0.0 * out["loss"].detach().item())    # planted sync
        return out

    method.forward = forward
    det = run_second_step(method)
    planted = [e for e in det.events if e.kind == "Tensor.item"]
    assert planted and all(e.where.startswith("tests/test_no_host_sync.py") and ".item()" in e.code
                           for e in planted), det.events
    assert det.unexplained(ENGINE_ALLOW + METHOD_ALLOW["mamp"]) == planted


# ============================================================================ the engine's hot path
def test_engine_step_runs_inside_the_skip_contexts():
    """Trainer.fit runs each step with the data-dependent checks of fastskel.ops and fastskel.data
    off; the public ops keep them outside (the default)."""
    method = make_method("mamp")
    seen = []
    method.register_forward_pre_hook(lambda *_: seen.append((ops_checks_on(), data_checks_on())))
    assert ops_checks_on() and data_checks_on()
    opts = TrainOptions(out=None, device="cpu", progress=False, handle_signals=False, tensorboard=False)
    Trainer(method, _data(), opts).fit(stop_after=2)
    assert seen == [(False, False)] * 2
    assert ops_checks_on() and data_checks_on()
    with train_step_context():
        assert not ops_checks_on() and not data_checks_on()
    assert ops_checks_on() and data_checks_on()


def test_transforms_lengths_check_skipped_off_cpu():
    """ENGINE_ALLOW's transforms entry is CPU-only: for a non-CPU ``lengths`` (meta: reading it
    raises) the check reads nothing inside the skip context, and does read outside it."""
    from fastskel.data import transforms as T
    x = torch.zeros(3, 3, 8, 25, device="meta")
    L = torch.zeros(3, dtype=torch.long, device="meta")
    with pytest.raises((RuntimeError, NotImplementedError)):
        T._lengths(L, x)
    with train_step_context():
        assert T._lengths(L, x).device.type == "meta"


@pytest.mark.parametrize("name", ["amr", "mamp", "asma", "slim"])
def test_training_step_has_no_host_sync(name):
    allow = ENGINE_ALLOW + METHOD_ALLOW[name]
    det = run_second_step(make_method(name))
    bad = det.unexplained(allow)
    assert not bad, f"{name}: host synchronisation in the training step:\n" + "\n".join(map(str, bad))
    for a in METHOD_ALLOW[name]:        # a documented inherent sync that disappeared: update the list
        assert any(a.matches(e) for e in det.events), f"{name}: allowed sync no longer happens: {a}"


@pytest.mark.skipif(TRITON_DEVICE != "cpu", reason="needs the Triton interpreter on CPU (TRITON_INTERPRET=1)")
@pytest.mark.parametrize("name", ["amr", "mamp"])
def test_triton_training_step_has_no_host_sync(name):
    """The Triton launchers' Python side (autotune keys, grids, config choice) reads nothing back."""
    allow = ENGINE_ALLOW + METHOD_ALLOW[name] + (
        Allow("fastskel/", "", via="triton/runtime/interpreter",
              reason="the interpreter itself copies the arguments to the host; a compiled launch does not"),)
    det = run_second_step(make_method(name, backend="triton"))
    bad = det.unexplained(allow)
    assert not bad, f"{name} (triton): host synchronisation in the training step:\n" + "\n".join(map(str, bad))


@requires_cuda
@pytest.mark.parametrize("name", ["amr", "mamp", "asma", "slim"])
def test_cuda_sync_debug_mode(name):
    """On a GPU: the same step with ``torch.cuda.set_sync_debug_mode("warn")``; every synchronising
    CUDA call the driver-side check reports must be one the allow list explains (located by the
    Python stack at the time of the warning)."""
    det = SyncDetector(armed=False)
    allow = ENGINE_ALLOW + METHOD_ALLOW[name] + (
        Allow("fastskel/", "", via="triton/runtime/autotuner",
              reason="Triton autotuning benchmarks a new key once (B is bucketed to a power of two)"),)
    old_show, old_mode = warnings.showwarning, torch.cuda.get_sync_debug_mode()

    def show(message, category, *a, **k):
        if "synchroniz" in str(message):
            det.record("cuda sync (set_sync_debug_mode)")
        else:
            old_show(message, category, *a, **k)

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = show
        torch.cuda.set_sync_debug_mode("warn")
        try:
            run_second_step(make_method(name), device="cuda", detector=det)
        finally:
            torch.cuda.set_sync_debug_mode(old_mode)
            warnings.showwarning = old_show
    bad = det.unexplained(allow)
    assert not bad, f"{name} on CUDA:\n" + "\n".join(map(str, bad))


def test_slim_host_step_cache_follows_its_buffers():
    """SLiM reads its step counters without a device read (cached by the buffers' version), yet
    any write to the buffers (after_step, an outside fill_, load_state_dict, .to()) is seen."""
    m = make_method("slim")
    assert m._host_steps() == (0, 0)
    m.after_step(3, 10)
    with SyncDetector() as det:
        assert m._host_steps() == (3, 10) and m.teacher_temperature > 0
    assert det.events == []
    m.step.fill_(7)
    assert m._host_steps() == (7, 10)
    sd = m.state_dict()
    sd["step"] = torch.tensor(5)
    m.load_state_dict(sd)
    assert m._host_steps() == (5, 10)
    other = make_method("slim")
    other.load_state_dict(m.state_dict())
    assert other.to(torch.float64)._host_steps() == (5, 10)
