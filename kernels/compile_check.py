"""Ahead-of-time compile check of every Triton kernel with Triton's real compiler (no GPU needed).

1. **Record**: each launcher is called on CPU tensors at the methods' shapes with
   ``JITFunction.run`` and ``Autotuner.run`` patched to record the launch (kernel, arguments,
   constexprs, ``num_warps``, ``num_stages``) instead of running it; an autotuned kernel records
   every config its pruner keeps for that shape.
2. **Compile**: each recorded launch is bound the way ``JITFunction.run`` binds it (Triton's own
   specialisation: dtypes, 16-byte divisibility, ints equal to 1) for ``GPUTarget("cuda", 80|90, 32)``
   and compiled with ``triton.compile(ASTSource(fn, signature, constexprs, attrs))``; ptxas's ``-v``
   log gives registers and spill bytes, ``metadata.shared`` the shared memory.
3. **Judge**: a compile error, shared memory over the per-block limit (sm_80 166912 B, sm_90
   232448 B), or spills in a *default* config (the one the launcher picks without autotuning) for
   bf16/fp16 is a failure. fp32 attention spills are recorded (see kernels/attention.py).

The launchers are imported with ``TRITON_INTERPRET`` unset (the interpreter replaces JITFunctions),
so :func:`run` re-executes this module in a subprocess without it when the variable is set.
CLI: ``python -m fastskel.kernels.compile_check [--full] [--out DIR]``.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional

SMEM_LIMIT = {80: 166912, 90: 232448}
TARGETS = (80, 90)


@dataclass
class Launch:
    kernel: str
    fn: object
    args: tuple
    kwargs: dict
    config: str            # "default" or "autotune i"
    case: str = ""
    dtype: str = ""


@dataclass
class Row:
    kernel: str
    case: str
    target: str
    dtype: str
    config: str
    meta: str
    registers: Optional[int] = None
    spills: Optional[int] = None
    shared: Optional[int] = None
    error: str = ""
    failures: List[str] = field(default_factory=list)


# --------------------------------------------------------------------------- recording
@contextlib.contextmanager
def recording(out: List[Launch]):
    """Patch the Triton launch entry points to append a :class:`Launch` instead of running."""
    from triton.runtime import autotuner, jit

    orig_run, orig_tune = jit.JITFunction.run, autotuner.Autotuner.run

    def run(self, *args, grid, warmup, **kwargs):
        out.append(Launch(self.fn.__name__, self, args, kwargs, "default"))

    def tune(self, *args, **kwargs):
        self.nargs = dict(zip(self.arg_names, args))
        try:
            configs = self.prune_configs(kwargs)
        finally:
            self.nargs = None
        kwargs = {k: v for k, v in kwargs.items() if k not in ("grid", "warmup")}
        for i, c in enumerate(configs):
            kw = {**kwargs, **c.kwargs, "num_warps": c.num_warps, "num_stages": c.num_stages}
            out.append(Launch(self.fn.fn.__name__, self.fn, args, kw,
                              "default" if len(self.configs) == 1 else f"autotune {i}"))
        self.best_config = configs[0]

    jit.JITFunction.run, autotuner.Autotuner.run = run, tune
    try:
        yield out
    finally:
        jit.JITFunction.run, autotuner.Autotuner.run = orig_run, orig_tune


def _cases(full: bool) -> Dict[str, Callable[[object], None]]:
    """Method-shape launcher calls, by case name; each takes a torch dtype."""
    import torch

    from fastskel.kernels import attention as ka, barlow as kb, focal as kf, joint_mask as kj, motion as km

    e = lambda *s, dt=torch.float32: torch.empty(s, dtype=dt)   # noqa: E731 - never read
    lens = lambda n, t: torch.full((n,), t, dtype=torch.int64)  # noqa: E731

    def attn(b, bq, h, lq, lk, d, mask, rope):
        def call(dt):
            q, k, v = e(bq, h, lq, d, dt=dt), e(b, h, lk, d, dt=dt), e(b, h, lk, d, dt=dt)
            m = torch.zeros((b, lk), dtype=torch.bool) if mask else None
            qp = torch.arange(lq, dtype=torch.float32) if rope else None
            kp = torch.arange(lk, dtype=torch.float32) if rope else None
            f = ka.inv_freq(d, 10000.0, q.device) if rope else None
            o, lse = ka._fwd_impl(q, k, v, m, qp, kp, f, d ** -0.5, traced=False)
            o = e(b, h, lq, d, dt=dt)
            ka._bwd_impl(e(b, h, lq, d, dt=dt), q, k, v, o, e(b, h, lq), m, qp, kp, f, d ** -0.5, traced=False)
        return call

    def barlow(b, d):
        def call(dt):
            z = e(b, d, dt=dt)
            for cos in (True, False):
                loss, ac, g, dg, inv, beta = kb.barlow_twins_triton(z, z, 2e-4, cos)
                kb.barlow_twins_triton_backward(torch.ones(()), ac, g, dg, inv, beta, 2e-4, cos, dt)
        return call

    def motion(n, t, v):
        def call(dt):
            x = e(n, 3, t, v, dt=dt)
            km._launch(x, lens(n, t), 0, True, False)
            km._launch(x, lens(n, t), 10, True, True)
            km._frame_mask_backward(x, torch.zeros((n, t), dtype=torch.bool))
            kf._motion_energy_weights(x, [4, 8, 12], 0.01, 1e-6, lens(n, t))
            kj._degree_joint_mask(x, 5, e(v), e(n, v))
            kj._joint_mask_backward(x, torch.zeros((n, v), dtype=torch.bool))
        return call

    def focal(n, p, d):
        def call(dt):
            x = e(n, p, d, dt=dt)
            for w in (e(n, p), e(n, p, d)):
                kf._focal_loss(x, x, w)
                kf._focal_loss_backward(torch.ones(()), x, x, w, True)
        return call

    cases = {
        "AMR encoder 256x8 L=75 d=32 mask": attn(256, 256, 8, 75, 75, 32, True, False),
        "AMR decoder 256x8 Lq=125 Lk=75 d=32 (Bq=1)": attn(256, 1, 8, 125, 75, 32, True, False),
        "MAMP decoder 16x8 L=750 d=32": attn(16, 16, 8, 750, 750, 32, False, False),
        "ASMa aligner 128x4 L=13 d=64": attn(128, 128, 4, 13, 13, 64, False, False),
        "SLiM 64x8 L=205 d=32 RoPE": attn(64, 64, 8, 205, 205, 32, False, True),
        "ASMa Barlow B=128 D=6144": barlow(128, 6144),
        "motion/masking N=8192 T=50 V=25": motion(8192, 50, 25),
        "focal N=8192 P=10 D=75": focal(8192, 10, 75),
    }
    return cases


DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def record(full: bool) -> List[Launch]:
    """Every launch of every case and dtype (defaults; autotune configs on the attention kernels)."""
    import torch

    from fastskel.kernels import attention as ka

    launches: List[Launch] = []
    for case, call in _cases(full).items():
        for short, name in DTYPES.items():
            for tune in ((False, True) if case.split()[0] in ("AMR", "MAMP", "ASMa", "SLiM")
                         and "Barlow" not in case else (False,)):
                ka.AUTOTUNE, ka._BEST = tune, {}
                start = len(launches)
                with recording(launches):
                    call(getattr(torch, name))
                for ln in launches[start:]:
                    ln.case, ln.dtype = case, short
                if tune:   # the autotune pass re-records the non-tuned delta kernel: keep one copy
                    launches[start:] = [ln for ln in launches[start:] if ln.config != "default"]
    ka.AUTOTUNE = True
    return launches


# --------------------------------------------------------------------------- compiling
_PTXAS_LOG: List[str] = []
_PTXAS_SEEN: dict = {}   # compiled kernel hash -> (registers, spill bytes)


@contextlib.contextmanager
def ptxas_log():
    """Keep the ``ptxas -v`` log that Triton's nvidia backend writes to a temporary file."""
    from triton.backends.nvidia import compiler as nv

    real = nv.subprocess.run

    def run(cmd, *a, **kw):
        res = real(cmd, *a, **kw)
        f = kw.get("stderr")
        if isinstance(cmd, list) and "-v" in cmd and hasattr(f, "name"):
            f.flush()
            with open(f.name) as fh:
                _PTXAS_LOG.append(fh.read())
        return res

    class Proxy:
        def __getattr__(self, name):
            return run if name == "run" else getattr(subprocess, name)

    nv.subprocess = Proxy()
    try:
        yield
    finally:
        nv.subprocess = subprocess


def _bind(ln: Launch, target):
    """Signature, constexprs, attrs and options exactly as ``JITFunction.run`` would build them."""
    from triton.compiler import make_backend
    from triton.runtime.jit import create_function_from_signature

    backend = make_backend(target)
    binder = create_function_from_signature(ln.fn.signature, ln.fn.params, backend)
    bound, spec, options = binder(*ln.args, **ln.kwargs)
    return ln.fn._pack_args(backend, dict(ln.kwargs), bound, spec, options)


def compile_one(ln: Launch, arch: int) -> Row:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    meta = {k: v for k, v in ln.kwargs.items() if k.isupper() or k in ("num_warps", "num_stages")}
    row = Row(ln.kernel, ln.case, f"sm_{arch}", ln.dtype, ln.config, json.dumps(meta, default=str))
    target = GPUTarget("cuda", arch, 32)
    try:
        options, signature, constexprs, attrs = _bind(ln, target)
        _PTXAS_LOG.clear()
        k = triton.compile(ASTSource(ln.fn, signature, constexprs, attrs), target=target, options=options.__dict__)
    except Exception as exc:   # a compile error is a result
        row.error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}"[:300]
        row.failures.append("compile error")
        return row
    row.shared = int(k.metadata.shared)
    log = "\n".join(_PTXAS_LOG)
    key = getattr(k.metadata, "hash", None)
    if not log and key in _PTXAS_SEEN:   # an identical launch compiled earlier: Triton's cache ran no ptxas
        row.registers, row.spills = _PTXAS_SEEN[key]
        return judge(row)
    regs = re.findall(r"Used (\d+) registers", log)
    row.registers = max(map(int, regs)) if regs else None
    sp = re.findall(r"(\d+) bytes spill stores", log)
    row.spills = max(map(int, sp)) if sp else (None if not log else 0)
    if log and key is not None:
        _PTXAS_SEEN[key] = (row.registers, row.spills)
    return judge(row)


def judge(row: Row) -> Row:
    """Append the failures of a compiled row: shared memory over the target's per-block limit;
    register spills in a default bf16/fp16 config (fp32 and autotune-only spills are recorded)."""
    arch = int(row.target[3:])
    if row.shared is not None and row.shared > SMEM_LIMIT[arch]:
        row.failures.append(f"shared {row.shared} B > {SMEM_LIMIT[arch]} B")
    if row.spills and row.config == "default" and row.dtype in ("bf16", "fp16"):
        row.failures.append(f"spills {row.spills} B in a default {row.dtype} config")
    return row


def plan(launches: List[Launch], full: bool) -> List[tuple]:
    """``(launch, arch)`` pairs: one compile per distinct (kernel, specialisation, dtype, config).

    ``full``: every launch for sm_80 and sm_90. The CI subset (``full=False``, ~6 min on 2 cores):
    sm_90 — every default config in every dtype, plus the autotune configs of the kernels whose
    launcher always autotunes (motion, energy, joint mask); sm_80 — the bf16 default configs.
    The attention autotune configs (fp32/bf16/fp16) are compiled by ``--full`` only."""
    seen, out = set(), []
    for ln in launches:
        sig = tuple(str(a.dtype) if hasattr(a, "dtype") else (a if isinstance(a, (bool, str)) or a is None
                    else ("one" if a == 1 else "int" if isinstance(a, int) and a % 16 else "int16"))
                    for a in ln.args)
        key = (ln.kernel, sig, json.dumps(ln.kwargs, sort_keys=True, default=str), ln.config.split()[0])
        if key in seen:
            continue
        seen.add(key)
        attn = ln.kernel.startswith("_attn")
        for arch in TARGETS:
            if full or (arch == 90 and (ln.config == "default" or not attn)) \
                    or (arch == 80 and ln.config == "default" and ln.dtype == "bf16"):
                out.append((ln, arch))
    return out


def kernels_in_modules() -> List[str]:
    """Every ``@triton.jit`` function that no other one calls (a launchable kernel, not a helper)."""
    import inspect

    from triton.runtime.jit import JITFunction

    from fastskel.kernels import attention, barlow, focal, joint_mask, motion
    fns = {}
    for mod in (attention, barlow, focal, joint_mask, motion):
        for name, obj in vars(mod).items():
            if isinstance(obj, JITFunction):
                fns[name] = inspect.getsource(obj.fn)
    return sorted(n for n in fns if not any(re.search(rf"\b{n}\(", src) for m, src in fns.items() if m != n))


def check(full: bool = False, targets=TARGETS) -> dict:
    import torch
    import triton

    t0 = time.time()
    rows = []
    with ptxas_log():
        for ln, arch in plan(record(full), full):
            if arch in targets:
                rows.append(compile_one(ln, arch))
    covered = sorted({r.kernel for r in rows})
    return dict(triton=triton.__version__, torch=torch.__version__, date=datetime.date.today().isoformat(),
                subset="full" if full else "ci", seconds=round(time.time() - t0, 1),
                kernels=kernels_in_modules(), covered=covered, rows=[asdict(r) for r in rows])


def to_markdown(res: dict) -> str:
    head = (f"# Triton AOT compile check — Triton {res['triton']}, torch {res['torch']}, {res['date']}\n\n"
            f"Matrix: {res['subset']} ({len(res['rows'])} compiles, {res['seconds']} s on this machine's CPU). "
            f"Kernels: {len(res['covered'])}/{len(res['kernels'])} covered. Failures: "
            f"{sum(bool(r['failures']) for r in res['rows'])}.\n\n"
            "| kernel | case | target | dtype | config | meta | registers | spills (B) | shared (B) | result |\n"
            "|---|---|---|---|---|---|---|---|---|---|\n")
    lines = [f"| {r['kernel']} | {r['case']} | {r['target']} | {r['dtype']} | {r['config']} | `{r['meta']}` | "
             f"{r['registers']} | {r['spills']} | {r['shared']} | "
             f"{'; '.join(r['failures']) + (' ' + r['error'] if r['error'] else '') or 'ok'} |" for r in res["rows"]]
    return head + "\n".join(lines) + "\n"


def run(full: bool = False, out: Optional[str] = None, timeout: int = 1800) -> dict:
    """Run the check (in a subprocess without ``TRITON_INTERPRET``) and return its JSON result."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    cmd = [sys.executable, "-m", "fastskel.kernels.compile_check", "--json"] + (["--full"] if full else [])
    if out:
        cmd += ["--out", out]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if res.returncode != 0:
        raise RuntimeError(f"compile_check subprocess failed:\n{res.stderr[-4000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--full", action="store_true", help="also the fp32/fp16 autotune configs")
    p.add_argument("--out", help="directory for triton-compile-<version>-<date>.{md,json}")
    p.add_argument("--json", action="store_true", help="print the JSON result as the last line")
    a = p.parse_args(argv)
    if os.environ.get("FASTSKEL_COMPILE_CHECK_CACHE") != "1":   # a cache hit runs no ptxas: no registers
        import tempfile

        os.environ["TRITON_CACHE_DIR"] = tempfile.mkdtemp(prefix="fastskel-compile-check-")
    if os.environ.get("TRITON_INTERPRET") == "1":
        res = run(a.full, a.out)
    else:
        res = check(a.full)
        if a.out:
            os.makedirs(a.out, exist_ok=True)
            stem = os.path.join(a.out, f"triton-compile-{res['triton']}-{res['date']}" + ("" if a.full else "-ci"))
            with open(stem + ".json", "w") as f:
                json.dump(res, f, indent=1)
            with open(stem + ".md", "w") as f:
                f.write(to_markdown(res))
    bad = [r for r in res["rows"] if r["failures"]]
    if a.json:
        print(json.dumps(res))
    else:
        print(f"{len(res['rows'])} compiles in {res['seconds']} s, {len(bad)} failures; "
              f"kernels {len(res['covered'])}/{len(res['kernels'])}")
    return 1 if bad or set(res["kernels"]) - set(res["covered"]) else 0


if __name__ == "__main__":
    sys.exit(main())
