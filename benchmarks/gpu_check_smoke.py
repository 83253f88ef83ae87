"""The smoke stage of ``benchmarks/gpu_check.py``: every op of ``fastskel.ops`` with each fast backend
it has, once, at the method shapes, against its reference (forward and gradients, fp32 and bf16)."""
from __future__ import annotations

import os
import time
from typing import Any, Dict, List, Tuple

from gpu_check_util import Deadline, _device, _fmt, _partial

_MODULE = {"frame_motion": "motion", "motion_frame_mask": "motion", "degree_joint_mask": "joint_mask",
           "motion_energy_weights": "focal", "focal_reconstruction_loss": "focal", "barlow_twins_loss": "barlow",
           "attention": "attention", "graph_conv": "graph_conv", "dropout_add_relu": "dropout",
           "sinkhorn_knopp": "prototype", "prototype_cross_entropy": "prototype"}
NO_KERNEL = {"patchify": "a view/reshape (no kernel)", "unpatchify": "a view/reshape (no kernel)"}
# max |fast − ref| / max |ref|; bf16 inputs are compared with the float32 reference of the same values
TOL = {"float32": 5e-3, "bfloat16": 5e-2}
MASK_TOL = {"float32": 1e-3, "bfloat16": 2e-2}          # fraction of differing mask entries (ties)


def _tensors(out) -> List[Any]:
    import torch

    from fastskel.ops import SinkhornTargets

    if isinstance(out, SinkhornTargets):
        return [out.materialize()]
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in _tensors(o)]
    return []


def _prototype_cases(small: bool):
    """SLiM's prototype ops (chunked "torch" fast path vs the dense reference), 65536 prototypes."""
    import torch
    import torch.nn.functional as F

    from fastskel import ops
    from fastskel.ops.prototype import prototype_cross_entropy_reference, sinkhorn_reference

    def build(small_, device, dtype):
        g = torch.Generator().manual_seed(0)
        n, k, d = (6, 40, 8) if small_ else (256, 65536, 256)
        z = F.normalize(torch.randn(n, d, generator=g), dim=1).to(device=device, dtype=dtype)
        w = F.normalize(torch.randn(k, d, generator=g), dim=1).to(device=device, dtype=dtype)
        return (z, w), {}

    def sk_fast(z, w, backend):
        return ops.sinkhorn_knopp(z, w, 0.05, 3, backend=backend, distributed=False)

    def sk_ref(z, w):
        return sinkhorn_reference((z @ w.T).float(), 0.05, 3)

    def ce_fast(z, w, backend):
        t = ops.sinkhorn_knopp(z.detach(), w.detach(), 0.05, 3, distributed=False)
        return ops.prototype_cross_entropy(z, w, t, 0.1, backend=backend)

    def ce_ref(z, w):
        t = sinkhorn_reference((z.detach() @ w.detach().T).float(), 0.05, 3)
        return prototype_cross_entropy_reference((z @ w.T).float(), t, 0.1)

    return [("sinkhorn_knopp", "slim teacher 65536 prototypes", build, (), sk_fast, sk_ref),
            ("prototype_cross_entropy", "slim student 65536 prototypes", build, (0, 1), ce_fast, ce_ref)]


def _smoke_cases(small: bool):
    """``(op, case, build, grad_args, fast(*a, backend=...), ref(*a))`` for every op."""
    from fastskel import ops
    from fastskel.engine.profile import CASES

    cases = []
    for c in CASES:
        fn = getattr(ops, c.op)
        cases.append((c.op, c.name, c.build, c.grad_args,
                      lambda *a, backend, _fn=fn, _c=c, **kw: _fn(*a, backend=backend, **kw),
                      lambda *a, _fn=fn, **kw: _fn(*a, backend="torch", **kw)))
    return cases + _prototype_cases(small)


def _one(build, grad_args, call, small, dev, dtype, upcast: bool = False) -> Tuple[List[Any], List[Any], float, str]:
    """Outputs and input gradients of ``call`` on the case's inputs (``upcast``: the same values in
    float32, the reference's exact answer for low-precision inputs), its ms and the input shape."""
    import torch

    torch.manual_seed(0)
    args, kw = build(small, dev, dtype)
    shape = "x".join(map(str, args[0].shape))
    if upcast:
        args = tuple(t.float() if isinstance(t, torch.Tensor) and t.is_floating_point() else t for t in args)
    args = [t.detach().clone().requires_grad_(True) if i in grad_args else t for i, t in enumerate(args)]
    t0 = time.perf_counter()
    outs = _tensors(call(*args, **kw))
    grads: List[Any] = []
    floats = [o for o in outs if o.is_floating_point() and o.requires_grad]
    if grad_args and floats:
        g = torch.Generator().manual_seed(1)
        loss = sum((o.float() * torch.randn(o.shape, generator=g).to(o.device)).sum() for o in floats)
        grads = list(torch.autograd.grad(loss, [args[i] for i in grad_args], allow_unused=True))
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return [o.detach() for o in outs], grads, (time.perf_counter() - t0) * 1e3, shape


def _compare(fast: List[Any], ref: List[Any], dname: str) -> Tuple[float, float, bool]:
    """``(max abs diff, relative, ok)`` over matching tensors (masks: the fraction that differs)."""
    if len(fast) != len(ref):
        return float("inf"), float("inf"), False
    worst_abs, worst_rel, ok = 0.0, 0.0, True
    for a, b in zip(fast, ref):
        if a is None or b is None:
            ok = ok and a is None and b is None
            continue
        if a.shape != b.shape:
            return float("inf"), float("inf"), False
        if not b.is_floating_point():
            frac = float((a != b).float().mean()) if b.numel() else 0.0
            worst_rel = max(worst_rel, frac)
            ok = ok and frac <= MASK_TOL[dname]
            continue
        d = float((a.float() - b.float()).abs().max()) if b.numel() else 0.0
        scale = float(b.float().abs().max()) if b.numel() else 0.0
        rel = d / max(scale, 1e-6)
        worst_abs, worst_rel = max(worst_abs, d), max(worst_rel, rel)
        ok = ok and rel <= TOL[dname] and d == d
    return worst_abs, worst_rel, ok


def stage_smoke(dry: bool, limit: float) -> Dict[str, Any]:
    import importlib

    import torch

    from fastskel.backend import BackendUnavailableError

    dev, small = _device(dry), dry
    if not dry and dev.type != "cuda":
        return {"status": "fail", "reason": "CUDA is not available", "details": {}}
    if not dry:   # correctness of the default configs here; the tests and benchmarks autotune
        os.environ.setdefault("FASTSKEL_ATTN_AUTOTUNE", "0")
    dtypes = (torch.float32,) if dry else (torch.float32, torch.bfloat16)
    deadline = Deadline(limit - 10)
    rows = []
    for op, case, build, grad_args, fast, ref in _smoke_cases(small):
        impl = importlib.import_module(f"fastskel.ops.{_MODULE[op]}").IMPLEMENTED
        backends = [b for b in ("triton", "cpp") if b in impl] or ["torch"]   # "torch": a chunked fast path
        for dtype in dtypes:
            dname = str(dtype).replace("torch.", "")
            try:
                ref_out, ref_grad, ref_ms, shape = _one(build, grad_args, ref, small, dev, dtype,
                                                        upcast=dtype != torch.float32)
                ref_err = None
            except Exception as exc:                           # noqa: BLE001
                ref_err, shape = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}", "?"
            for backend in backends:
                row = {"op": op, "case": case, "shape": shape, "dtype": dname, "backend": backend, "device": dev.type,
                       "grad": bool(grad_args)}
                rows.append(row)
                _partial({"rows": rows}, f"{op} {case} {dname} {backend}")
                if deadline.left() < 0:
                    row.update(status="skipped", reason="stage time limit reached")
                    continue
                try:
                    out, grad, ms, _ = _one(build, grad_args, lambda *a, **k: fast(*a, backend=backend, **k),
                                         small, dev, dtype)
                except BackendUnavailableError as exc:
                    row.update(status="skipped", reason=str(exc).splitlines()[0][:200])
                    continue
                except Exception as exc:                       # noqa: BLE001
                    msg = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
                    # an input dtype the op rejects on every backend is not a fast-path failure
                    unsupported = ref_err is not None and isinstance(exc, TypeError)
                    row.update(status="skipped" if unsupported else "fail", reason=msg)
                    continue
                if ref_err is not None:
                    row.update(status="fail", reason=f"reference failed: {ref_err}")
                    continue
                fa, fr, fok = _compare(out, ref_out, dname)
                ga, gr, gok = _compare(grad, ref_grad, dname) if grad_args else (None, None, True)
                row.update(status="ok" if fok and gok else "fail", fwd_max_abs=fa, fwd_rel=fr, grad_max_abs=ga,
                           grad_rel=gr, fast_ms=ms, reference_ms=ref_ms,
                           reason="" if fok and gok else f"over tolerance {TOL[dname]:g}")
                print(f"{row['status']:7s} {op:26s} {case:32s} {dname:8s} {backend:6s} fwd {fa:.3g} ({fr:.2g}) "
                      f"grad {_fmt(ga)} ({_fmt(gr)})", flush=True)
    for op, why in NO_KERNEL.items():
        rows.append({"op": op, "case": "-", "shape": "-", "dtype": "-", "backend": "-", "device": dev.type, "grad": False,
                     "status": "skipped", "reason": why})
    n_fail = sum(r["status"] == "fail" for r in rows)
    n_ok = sum(r["status"] == "ok" for r in rows)
    notes = ["attention: the launcher's default configs (FASTSKEL_ATTN_AUTOTUNE=0; the tests stage and the "
             "benchmarks autotune)"] if not dry else \
        ["dry run: fp32 only at tiny shapes on the CPU (bf16 and the CUDA backends need the GPU)"]
    status = "fail" if n_fail else ("ok" if n_ok else "skipped")
    return {"status": status, "reason": f"{n_fail} of {len(rows)} rows failed" if n_fail else "; ".join(notes),
            "details": {"rows": rows, "tolerance": TOL, "mask_tolerance": MASK_TOL, "notes": notes}}
