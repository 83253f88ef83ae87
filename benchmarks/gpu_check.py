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

This file holds the driver and the env/build/tests stages; ``gpu_check_smoke.py`` and
``gpu_check_bench.py`` the other two, ``gpu_check_util.py`` what they share.

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
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_check_bench import stage_bench  # noqa: E402
from gpu_check_smoke import MASK_TOL, TOL, _compare, stage_smoke  # noqa: E402,F401
from gpu_check_util import RESULT, ROOT, TAIL, _env_no_interpret, _fmt, _run  # noqa: E402,F401

SCHEMA = "fastskel-gpu-check/1"
STAGES: List[Tuple[str, int]] = [("env", 10), ("build", 110), ("smoke", 60), ("tests", 200), ("bench", 90)]
TOTAL_LIMIT_S = 480                      # the lent machine's one command: 8 minutes
assert sum(s for _, s in STAGES) <= TOTAL_LIMIT_S
STATUSES = ("ok", "fail", "skipped")


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
        RESULT["path"] = Path(args.result)
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
    print(f"[gpu_check] wrote {', '.join(map(str, paths))}" + (" (and copied to $OUT)" if os.environ.get("OUT") else ""))
    return 0 if all(s["status"] != "fail" for s in stages) else 1


if __name__ == "__main__":
    sys.exit(main())
