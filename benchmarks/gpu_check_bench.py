"""The bench stage of ``benchmarks/gpu_check.py``: the step benchmarks (``fastskel.engine.bench``),
the op profile (``fastskel.engine.profile``) and torch.compile of two references, within its limit."""
from __future__ import annotations

import os
import subprocess
import tempfile
import traceback
from pathlib import Path
from typing import Any, Dict, List

from gpu_check_util import ROOT, Deadline, _device, _partial

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
