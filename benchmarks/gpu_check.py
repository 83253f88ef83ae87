"""The one prepared GPU run (issue 15): ``bash benchmarks/gpu_check.sh`` on the lent GPU machine.

One command, at most 8 minutes (the stage limits below add up to 470 s), on the image's python3
(torch 2.11 + cu130, Triton 3.6, nvcc 13; no network: nothing is installed from an index). Each
stage runs in its own process with its own time limit, is never skipped because an earlier one
failed, and records ``ok`` / ``fail`` / ``skipped`` (with the reason), its seconds and the tail
of its output:

=========  ======  =================================================================================
stage      limit   what
=========  ======  =================================================================================
env          10 s  python, torch, triton, CUDA, nvcc, driver and GPU (nvidia-smi and torch)
build       110 s  ``TORCH_CUDA_ARCH_LIST=9.0 pip install --no-build-isolation --no-deps --no-index
                   -e .``, then ``fastskel._C`` must load with its CUDA kernels
smoke        60 s  every op of ``fastskel.ops`` with each fast backend it has ("triton", "cpp") at the
                   method shapes (``fastskel.engine.profile.CASES`` + SLiM's prototype ops) against
                   ``fastskel.ops.reference``: forward and gradients, fp32 and bf16, max abs diff
tests       200 s  ``pytest -q -n 8 -p no:cacheprovider --timeout 120 tests`` with TRITON_INTERPRET
                   unset (the CUDA-only tests run for real, Triton compiles for the GPU)
bench        90 s  the step benchmarks through ``fastskel.engine.bench`` (AMR vs MAMP-5 in bf16 at
                   128 × 2 bodies, ASMa and SLiM steps), then ``fastskel.engine.profile`` (fast path vs
                   reference, op by op) and torch.compile of two references while time is left
=========  ======  =================================================================================

Attention runs at the launcher's default configs in smoke and bench (``FASTSKEL_ATTN_AUTOTUNE=0``:
autotuning each shape costs seconds that the 8 minutes do not have); the tests stage autotunes.

Writes ``benchmarks/results/<device>-<date>.json`` and ``.md`` (and ``.log``, every stage's whole
output), copied to ``$OUT`` when it is set. ``--dry-run``: the same stages on the CPU at tiny
shapes (fp32), no build (the installed ``_C`` is checked), CUDA-only parts skipped with the
reason; results go to a temporary folder unless ``--out`` is given (CI runs it:
``tests/test_gpu_check_dry_run.py``).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = "fastskel-gpu-check/1"
STAGES: List[Tuple[str, int]] = [("env", 10), ("build", 110), ("smoke", 60), ("tests", 200), ("bench", 90)]
TOTAL_LIMIT_S = 480                      # the lent machine's one command: 8 minutes
assert sum(s for _, s in STAGES) <= TOTAL_LIMIT_S
STATUSES = ("ok", "fail", "skipped")
TAIL = 3000


# ============================================================================ helpers
def _run(cmd: List[str], timeout: float, env: Optional[dict] = None) -> Tuple[int, str]:
    """``(returncode, stdout+stderr)``; its process group is killed at ``timeout`` (rc 124)."""
    p = subprocess.Popen(cmd, cwd=str(ROOT), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, start_new_session=True)
    try:
        out, _ = p.communicate(timeout=max(timeout, 1))
        return p.returncode, out
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, _ = p.communicate()
        return 124, (out or "") + f"\n[gpu_check] killed after {timeout:.0f}s\n"


def _env_no_interpret() -> dict:
    env = dict(os.environ)
    env.pop("TRITON_INTERPRET", None)
    return env


def _device(dry: bool):
    import torch

    return torch.device("cuda" if torch.cuda.is_available() and not dry else "cpu")


_RESULT_PATH: Optional[Path] = None       # a stage process's result file (partial results survive a kill)


def _partial(details: Dict[str, Any], what: str) -> None:
    if _RESULT_PATH is not None:
        _RESULT_PATH.write_text(json.dumps({"status": "fail", "reason": f"stopped during {what}",
                                            "details": details}, default=str))


class Deadline:
    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()


# ============================================================================ stages (each in its own process)
def stage_env(dry: bool, limit: float) -> Dict[str, Any]:
    info: Dict[str, Any] = {"python": platform.python_version(), "executable": sys.executable,
                            "platform": platform.platform(), "cpus": os.cpu_count()}
    import torch

    info.update(torch=torch.__version__, torch_cuda=torch.version.cuda or "none",
                cuda_available=torch.cuda.is_available())
    try:
        import triton
        info["triton"] = triton.__version__
    except Exception as exc:                                   # noqa: BLE001
        info["triton"] = f"unavailable ({type(exc).__name__})"
    if torch.cuda.is_available():
        info.update(gpu=torch.cuda.get_device_name(0), capability=".".join(map(str, torch.cuda.get_device_capability(0))),
                    gpu_memory_gib=round(torch.cuda.get_device_properties(0).total_memory / 2 ** 30, 1),
                    cudnn=torch.backends.cudnn.version())
    for key, cmd in (("nvidia_smi", ["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                                     "--format=csv,noheader"]), ("nvcc", ["nvcc", "--version"])):
        if shutil.which(cmd[0]) is None:
            info[key] = "not found"
            continue
        rc, out = _run(cmd, 10)
        lines = [ln.strip() for ln in out.splitlines() if ln.strip()]
        info[key] = (next((ln for ln in lines if "release" in ln), lines[-1] if lines else "") if key == "nvcc"
                     else "; ".join(lines)) if rc == 0 else f"failed (rc {rc})"
    rc, out = _run(["git", "rev-parse", "--short", "HEAD"], 5) if shutil.which("git") else (1, "")
    info["commit"] = out.strip() if rc == 0 else "unknown"
    info["TRITON_INTERPRET"] = os.environ.get("TRITON_INTERPRET", "")
    print(json.dumps(info, indent=1))
    return {"status": "ok", "details": info}


def _c_status() -> Dict[str, Any]:
    rc, out = _run([sys.executable, "-c", "import json; from fastskel import _ext; m = _ext.load(); "
                    "print(json.dumps({'loaded': m is not None, 'error': _ext.error(), "
                    "'cuda_compiled': _ext.cuda_compiled(), 'ops': list(_ext.compiled_ops())}))"], 60)
    try:
        return json.loads(out.strip().splitlines()[-1])
    except Exception:                                          # noqa: BLE001
        return {"loaded": False, "error": f"import failed (rc {rc}): {out[-500:]}", "cuda_compiled": False, "ops": []}


def stage_build(dry: bool, limit: float) -> Dict[str, Any]:
    if dry:
        from fastskel import _ext

        m = _ext.load()
        st = {"loaded": m is not None, "error": _ext.error(), "cuda_compiled": _ext.cuda_compiled(),
              "ops": list(_ext.compiled_ops())}
        print(json.dumps(st))
        return {"status": "skipped", "reason": "dry run: no build; checked the installed fastskel._C "
                f"(loaded={st['loaded']}, cuda={st['cuda_compiled']})", "details": {"c": st}}
    env = dict(os.environ, TORCH_CUDA_ARCH_LIST="9.0", MAX_JOBS=str(os.cpu_count() or 8))
    cmd = [sys.executable, "-m", "pip", "install", "--no-build-isolation", "--no-deps", "--no-index", "-e", "."]
    print("$ TORCH_CUDA_ARCH_LIST=9.0 " + " ".join(cmd[2:]), flush=True)
    rc, out = _run(cmd, limit - 25, env)
    print(out[-TAIL:])
    st = _c_status()
    print(json.dumps(st))
    ok = rc == 0 and st["loaded"] and st["cuda_compiled"]
    why = "" if ok else (f"pip exited {rc}" if rc else
                         f"fastskel._C {'has no CUDA kernels' if st['loaded'] else 'does not load: ' + str(st['error'])}")
    return {"status": "ok" if ok else "fail", "reason": why, "details": {"pip_rc": rc, "c": st}}


# -- smoke ---------------------------------------------------------------------------------------
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


# -- tests ---------------------------------------------------------------------------------------
def _pytest_summary(out: str) -> Dict[str, int]:
    last = [ln for ln in out.splitlines() if re.search(r"\d+ (passed|failed|skipped|error)", ln)]
    counts = {}
    for n, what in re.findall(r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed|deselected)", last[-1] if last else ""):
        counts[what.rstrip("s") if what.startswith("error") else what] = int(n)
    return counts


def stage_tests(dry: bool, limit: float) -> Dict[str, Any]:
    import importlib.util

    have = {m: importlib.util.find_spec(m) is not None for m in ("xdist", "pytest_timeout")}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfE"]
    if have["xdist"]:
        cmd += ["-n", "8"]
    if not dry:
        cmd += ["--durations", "15"]
    if have["pytest_timeout"]:
        cmd += ["--timeout", "120"]
    if dry:   # the stage's machinery on a small real selection: CUDA-only tests skip on the CPU
        cmd += ["tests/test_engine_device.py"]
        env = dict(os.environ)
    else:
        cmd += ["tests"]
        env = _env_no_interpret()
    print("$ " + " ".join(cmd[2:]), flush=True)
    rc, out = _run(cmd, limit - 5, env)
    print(out[-TAIL:])
    counts = _pytest_summary(out)
    missing = [m for m, ok in have.items() if not ok]
    reason = ("" if rc == 0 else f"pytest exited {rc}") + (f"; plugins missing: {missing}" if missing else "")
    if dry:
        reason = (reason + "; " if reason else "") + "dry run: a small selection on the CPU (CUDA-only tests skip)"
    return {"status": "ok" if rc == 0 else "fail", "reason": reason.strip("; "),
            "details": {"command": " ".join(cmd[2:]), "returncode": rc, "counts": counts}}


# -- bench ---------------------------------------------------------------------------------------
def _compile_rows(dev, deadline: Deadline) -> List[Dict[str, Any]]:
    """Eager reference vs torch.compile(reference) vs fastskel's fast path, forward, for two ops."""
    import torch

    from torch.utils.benchmark import Timer

    from fastskel import ops
    from fastskel.engine.profile import CASES

    def _time(fn, min_run_time):       # the median of blocks after a warm-up call (compilation)
        fn()
        return float(Timer(stmt="fn()", globals={"fn": fn}).blocked_autorange(min_run_time=min_run_time).median)

    rows = []
    for c in [c for c in CASES if c.op in ("focal_reconstruction_loss", "motion_energy_weights")]:
        for dtype in (torch.float32, torch.bfloat16) if c.op == "focal_reconstruction_loss" else (torch.float32,):
            row = {"op": c.op, "case": c.name, "dtype": str(dtype).replace("torch.", ""), "device": dev.type}
            rows.append(row)
            if deadline.left() < 20:
                row.update(status="skipped", reason="stage time limit reached")
                continue
            args, kw = c.build(False, dev, dtype)
            fn = getattr(ops, c.op)
            try:
                ref = lambda: fn(*args, backend="torch", **kw)                          # noqa: E731
                comp = torch.compile(lambda *a: fn(*a, backend="torch", **kw), dynamic=False)
                row.update(reference_ms=_time(ref, 0.1) * 1e3, compiled_ms=_time(lambda: comp(*args), 0.1) * 1e3,
                           fast_ms=_time(lambda: fn(*args, backend="auto", **kw), 0.1) * 1e3, status="ok")
            except Exception as exc:                           # noqa: BLE001
                row.update(status="fail", reason=f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
    return rows


def stage_bench(dry: bool, limit: float) -> Dict[str, Any]:
    import torch

    dev = _device(dry)
    if not dry and dev.type != "cuda":
        return {"status": "fail", "reason": "CUDA is not available", "details": {}}
    deadline = Deadline(limit - 5)
    details: Dict[str, Any] = {}
    fails, notes = [], []
    if not dry:   # autotuning every attention shape (seconds each) does not fit the 8-minute run
        os.environ.setdefault("FASTSKEL_ATTN_AUTOTUNE", "0")
        notes.append(f"attention at the launcher's default configs (FASTSKEL_ATTN_AUTOTUNE="
                     f"{os.environ['FASTSKEL_ATTN_AUTOTUNE']}): a floor for the autotuned speed")
    # 1. the step benchmarks (the headline: AMR vs MAMP-5), at most ~60 % of the stage
    steps = "test_train_step and amr" if dry else \
        "test_train_step or (test_slim_step and not peak) or (test_asma_pretrain_step and cuda)"
    with tempfile.TemporaryDirectory() as td:
        try:
            from fastskel.engine.bench import run_benchmarks

            _, md, rows, _md_text = run_benchmarks(str(ROOT / "benchmarks"), out=td, small=dry, keyword=steps,
                                                    timeout=max(min(deadline.left() - 25, 0.6 * limit), 5))
            details["steps"] = rows
            details["steps_md"] = Path(md).read_text()
            print(details["steps_md"], flush=True)
        except subprocess.TimeoutExpired:
            fails.append("step benchmarks: their share of the stage time was reached")
        except Exception as exc:                               # noqa: BLE001
            fails.append(f"step benchmarks: {type(exc).__name__}: {exc}")
    _partial(details, "the op profile")
    # 2. every op's fast path vs its reference (fastskel profile), op by op while time is left
    try:
        from fastskel.engine.profile import op_names, profile_op

        details["profile"] = []
        for op in op_names():
            if deadline.left() < (5 if dry else 15):
                notes.append(f"profile: stopped before {op} (stage time limit)")
                break
            details["profile"] += profile_op(op, small=dry, device=dev, min_run_time=0.02 if dry else 0.1,
                                             dtypes=["float32"] if dry else None)
            _partial(details, f"the op profile after {op}")
        print(f"profile: {len(details['profile'])} rows ({deadline.left():.0f}s left)", flush=True)
    except Exception as exc:                                   # noqa: BLE001
        fails.append(f"profile: {type(exc).__name__}: {exc}")
        traceback.print_exc()
    # 3. torch.compile of two references, if time is left
    if dry:
        notes.append("torch.compile skipped: dry run (its compile time is for the GPU run)")
    else:
        try:
            details["torch_compile"] = _compile_rows(dev, deadline)
            fails += [f"torch.compile {r['op']}: {r['reason']}" for r in details["torch_compile"]
                      if r["status"] == "fail"]
        except Exception as exc:                               # noqa: BLE001
            fails.append(f"torch.compile: {type(exc).__name__}: {exc}")
    if dev.type == "cuda":
        details["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2 ** 30, 2)
    return {"status": "fail" if fails else "ok", "reason": "; ".join(fails + notes), "details": details}


STAGE_FUNCS: Dict[str, Callable[[bool, float], Dict[str, Any]]] = {
    "env": stage_env, "build": stage_build, "smoke": stage_smoke, "tests": stage_tests, "bench": stage_bench}


# ============================================================================ driver
def _run_stage_here(name: str, limit: int) -> Tuple[Dict[str, Any], str]:
    """A dry-run stage in this process (no torch import per stage: the dry run stays fast), with
    its time limit enforced by SIGALRM."""
    import contextlib
    import io

    def _alarm(*_):
        raise TimeoutError(f"time limit {limit}s reached")

    buf = io.StringIO()
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(limit)
    t0 = time.monotonic()
    try:
        with contextlib.redirect_stdout(buf):
            res = STAGE_FUNCS[name](True, limit)
    except Exception as exc:                                   # noqa: BLE001
        buf.write(traceback.format_exc())
        res = {"status": "fail", "reason": f"{type(exc).__name__}: {exc}"}
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    secs, out = time.monotonic() - t0, buf.getvalue()
    res = json.loads(json.dumps(res, default=str))
    if res.get("status") not in STATUSES:
        res["status"] = "fail"
    return {"name": name, "status": res["status"], "reason": res.get("reason", ""), "seconds": round(secs, 1),
            "limit_s": limit, "output_tail": out[-TAIL:], "details": res.get("details", {})}, out


def _run_stage(name: str, limit: int, dry: bool) -> Tuple[Dict[str, Any], str]:
    with tempfile.TemporaryDirectory() as td:
        res_path = Path(td) / "result.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--stage", name, "--result", str(res_path)]
        env = dict(os.environ)
        if not dry:
            env.pop("TRITON_INTERPRET", None)
        t0 = time.monotonic()
        rc, out = _run(cmd + (["--dry-run"] if dry else []), limit, env)
        secs = time.monotonic() - t0
        res: Dict[str, Any] = {}
        if res_path.exists():
            try:
                res = json.loads(res_path.read_text())
            except ValueError:
                res = {}
    if rc == 124:
        res = {**res, "status": "fail", "reason": f"time limit {limit}s reached"}
    elif not res:
        res = {"status": "fail", "reason": f"the stage process exited {rc} without a result"}
    if res.get("status") not in STATUSES:
        res["status"] = "fail"
    return {"name": name, "status": res["status"], "reason": res.get("reason", ""), "seconds": round(secs, 1),
            "limit_s": limit, "output_tail": out[-TAIL:], "details": res.get("details", {})}, out


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return "" if v is None else str(v)


def to_markdown(report: Dict[str, Any]) -> str:
    env = next((s["details"] for s in report["stages"] if s["name"] == "env"), {})
    lines = [f"# fastskel GPU check — {report['device']}, {report['date']}{' (dry run)' if report['dry_run'] else ''}",
             "", f"torch {env.get('torch')}, CUDA {env.get('torch_cuda')}, triton {env.get('triton')}, "
             f"nvcc {env.get('nvcc')}, driver/GPU: {env.get('nvidia_smi')}, python {env.get('python')}, "
             f"commit {env.get('commit')}", "",
             f"Total {report['seconds']:.0f} s of the {report['total_limit_s']} s allowed.", "",
             "| stage | status | seconds | limit (s) | note |", "|---|---|---:|---:|---|"]
    for s in report["stages"]:
        lines.append(f"| {s['name']} | {s['status']} | {s['seconds']:.1f} | {s['limit_s']} | "
                     f"{s['reason'].replace('|', '/')[:300]} |")
    st = {s["name"]: s for s in report["stages"]}
    smoke = st.get("smoke", {}).get("details", {}).get("rows", [])
    if smoke:
        lines += ["", "## Smoke: fast path vs reference (max abs diff; relative to max |ref|)", "",
                  "| op | case | shape | dtype | backend | status | fwd | fwd rel | grad | grad rel | note |",
                  "|---|---|---|---|---|---|---:|---:|---:|---:|---|"]
        for r in smoke:
            lines.append(f"| {r['op']} | {r['case']} | {r.get('shape', '')} | {r['dtype']} | {r['backend']} | {r['status']} | "
                         f"{_fmt(r.get('fwd_max_abs'))} | {_fmt(r.get('fwd_rel'))} | {_fmt(r.get('grad_max_abs'))} | "
                         f"{_fmt(r.get('grad_rel'))} | {r.get('reason', '')[:120]} |")
    tests = st.get("tests", {}).get("details", {})
    if tests:
        lines += ["", f"## Tests\n\n`{tests.get('command')}`: {tests.get('counts')}"]
    bench = st.get("bench", {}).get("details", {})
    if bench.get("profile"):
        from fastskel.engine.profile import format_table

        lines += ["", "## Ops: fast path vs reference (`fastskel.engine.profile`)", "", format_table(bench["profile"])]
    if bench.get("torch_compile"):
        lines += ["", "## torch.compile of the reference (forward, ms)", "",
                  "| op | case | dtype | reference | compiled | fast path | note |", "|---|---|---|---:|---:|---:|---|"]
        for r in bench["torch_compile"]:
            lines.append(f"| {r['op']} | {r['case']} | {r['dtype']} | {_fmt(r.get('reference_ms'))} | "
                         f"{_fmt(r.get('compiled_ms'))} | {_fmt(r.get('fast_ms'))} | {r.get('reason', '')} |")
    if bench.get("steps_md"):
        lines += ["", "## Training steps (`fastskel.engine.bench`)", "",
                  "\n".join(bench["steps_md"].splitlines()[2:])]
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dry-run", action="store_true", help="tiny shapes on the CPU, no build, CUDA parts skipped")
    ap.add_argument("--out", help="results folder (default: benchmarks/results; dry run: a temporary folder)")
    ap.add_argument("--stages", help="comma-separated subset (default: all)")
    ap.add_argument("--stage", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    if args.stage:                                             # one stage, in its own process
        global _RESULT_PATH
        _RESULT_PATH = Path(args.result)
        limit = dict(STAGES)[args.stage]
        try:
            res = STAGE_FUNCS[args.stage](args.dry_run, limit)
        except Exception as exc:                               # noqa: BLE001
            traceback.print_exc()
            res = {"status": "fail", "reason": f"{type(exc).__name__}: {exc}", "details": {}}
        Path(args.result).write_text(json.dumps(res, default=str))
        return 0
    chosen = [s for s in args.stages.split(",")] if args.stages else [n for n, _ in STAGES]
    unknown = [s for s in chosen if s not in dict(STAGES)]
    if unknown:
        ap.error(f"--stages: expected names from {[n for n, _ in STAGES]}, got {unknown}")
    out = Path(args.out) if args.out else (Path(tempfile.mkdtemp(prefix="gpu-check-")) if args.dry_run
                                            else ROOT / "benchmarks" / "results")
    if args.dry_run:
        import torch  # noqa: F401  (the in-process stages share one import; it is not a stage's time)
    t0 = time.monotonic()
    started = _dt.datetime.now(_dt.timezone.utc)
    stages, logs = [], []
    for name, limit in STAGES:
        if name not in chosen:
            continue
        print(f"[gpu_check] stage {name} (limit {limit}s) ...", flush=True)
        res, log = _run_stage_here(name, limit) if args.dry_run else _run_stage(name, limit, args.dry_run)
        stages.append(res)
        logs.append(f"===== {name}: {res['status']} in {res['seconds']}s (limit {limit}s) {res['reason']}\n{log}")
        print(f"[gpu_check] stage {name}: {res['status']} in {res['seconds']}s {res['reason'][:300]}", flush=True)
    env = next((s["details"] for s in stages if s["name"] == "env"), {})
    device = (None if args.dry_run else env.get("gpu")) or f"cpu-{platform.machine()}"   # a dry run is a CPU run
    tag = re.sub(r"-+", "-", "".join(ch if ch.isalnum() else "-" for ch in device.lower())).strip("-")
    date = started.date().isoformat()
    report = {"schema": SCHEMA, "dry_run": args.dry_run, "date": date, "started": started.isoformat(),
              "device": device, "versions": {k: env.get(k) for k in ("python", "torch", "torch_cuda", "triton",
                                                                       "nvcc", "nvidia_smi", "commit")},
              "limits_s": {n: s for n, s in STAGES}, "total_limit_s": TOTAL_LIMIT_S,
              "seconds": round(time.monotonic() - t0, 1), "stages": stages}
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"{tag}-{date}{'-dry-run' if args.dry_run else ''}"
    paths = [stem.with_suffix(".json"), stem.with_suffix(".md"), stem.with_suffix(".log")]
    paths[0].write_text(json.dumps(report, indent=1, default=str))
    paths[1].write_text(to_markdown(report))
    paths[2].write_text("\n".join(logs))
    if os.environ.get("OUT"):
        for p in paths:
            shutil.copy(p, Path(os.environ["OUT"]) / p.name)
    print(to_markdown(report).split("\n## ")[0])
    print(f"[gpu_check] wrote {', '.join(map(str, paths))}" + (f" (and copied to $OUT)" if os.environ.get("OUT") else ""))
    return 0 if all(s["status"] != "fail" for s in stages) else 1


if __name__ == "__main__":
    sys.exit(main())
