"""No host synchronisation in the methods' training steps (issue 15).

A CPU cannot observe a real CUDA synchronisation, so :class:`SyncDetector` (``tests/_sync_detector.py``) records every operation
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
``train_step_context``) must record none beyond the explicit ``ENGINE_ALLOW`` / ``METHOD_ALLOW`` lists below, each entry
with its reason. The first step only warms caches (constant tables, tube tables) and is not checked.
On CUDA, :func:`test_cuda_sync_debug_mode` repeats this with ``torch.cuda.set_sync_debug_mode``.
"""
from __future__ import annotations

import warnings
from typing import List, Optional

import pytest
import torch

from fastskel.data import SkeletonDataset
from fastskel.data._checks import data_checks_enabled as data_checks_on
from fastskel.engine.trainer import TrainOptions, Trainer, train_step_context
from fastskel.ops import data_checks_enabled as ops_checks_on

from _sync_detector import Allow, Event, SyncDetector
from conftest import TRITON_DEVICE, requires_cuda

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
