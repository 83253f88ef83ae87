"""``fastskel profile OP``: an op's fast path (backend "auto") against its reference ("torch").

Shapes are the papers' (docs/design.md §4.14): ASMa B=128 actions × 2 bodies, T=50, V=25, D=6144; AMR 128 × 2
bodies, T=120, 750 tokens, 75 visible, 125 queries, d=32 × 8 heads; SLiM 205 tokens. ``small=True``
gives tiny shapes (a smoke run). Each case is timed forward, and forward + backward where the op
is differentiable, with :class:`torch.utils.benchmark.Timer` (``blocked_autorange``: warm-up, CUDA
synchronisation, the median of blocks). Ratio = reference median / fast-path median (> 1: faster).
Where "auto" resolves to the reference on the device (e.g. an op without a ``_C`` kernel on a CPU)
the fast path is not timed again: the row says "fast path = reference on this device".
Row labels are the case's method plus the shapes actually built (``--small`` rows say their size).
Results are printed; they are written only to ``--out DIR``, or to ``benchmarks/results`` when run
from a fastskel source checkout (:func:`repo_results_dir`).
"""
from __future__ import annotations

import datetime as _dt
import importlib
import json
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

__all__ = ["CASES", "SAME_AS_REFERENCE", "profile_op", "profile_ops", "format_table", "device_tag", "versions",
           "repo_results_dir", "resolved_backend", "write_results"]


def _dims(t: torch.Tensor) -> str:
    return "x".join(map(str, t.shape))


@dataclass
class Case:
    """``name``: the method/layer the case stands for; the row's label adds the shapes actually built
    (:meth:`label`), so ``--small`` rows never carry the paper shapes' numbers."""
    op: str
    name: str
    build: Callable[[bool, torch.device, torch.dtype], Tuple[tuple, dict]]
    grad_args: Tuple[int, ...] = ()          # positional args that get requires_grad for fwd+bwd
    dtypes: Tuple[torch.dtype, ...] = (torch.float32,)
    describe: Optional[Callable[[tuple, dict], str]] = None   # (args, kwargs) -> shape text

    def label(self, args: tuple, kw: dict) -> str:
        return f"{self.name} {(self.describe or (lambda a, k: _dims(a[0])))(args, kw)}"


def _lengths(n: int, t: int, device, g) -> torch.Tensor:
    L = torch.randint(max(t // 2, 2), t + 1, (n,), generator=g)
    L[0] = t
    return L.to(device)


def _x(n, c, t, v, device, dtype, g):
    return torch.randn(n, c, t, v, generator=g).to(device=device, dtype=dtype)


def _motion(small, device, dtype):
    g = torch.Generator().manual_seed(0)
    n, t = (4, 16) if small else (256, 50)
    return (_x(n, 3, t, 25, device, dtype, g),), {"lengths": _lengths(n, t, device, g)}


def _frame_mask(small, device, dtype):
    (x,), kw = _motion(small, device, dtype)
    return (x, 3 if small else 10), {"largest": True, **kw}


def _joint_mask(small, device, dtype):
    g = torch.Generator().manual_seed(0)
    n, t = (4, 16) if small else (256, 50)
    return (_x(n, 3, t, 25, device, dtype, g), 3 if small else 9), {
        "high": True, "generator": torch.Generator(device=device).manual_seed(0)}


def _energy(small, device, dtype):
    g = torch.Generator().manual_seed(0)
    n, t = (4, 24) if small else (256, 120)
    return (_x(n, 3, t, 25, device, dtype, g),), {"lengths": _lengths(n, t, device, g)}


def _focal(small, device, dtype):
    g = torch.Generator().manual_seed(0)
    n, p, d = (4, 10, 12) if small else (256, 125, 72)
    mk = lambda: torch.randn(n, p, d, generator=g).to(device=device, dtype=dtype)  # noqa: E731
    return (mk(), mk(), torch.rand(n, p, d, generator=g).to(device=device, dtype=dtype)), {}


def _barlow(small, device, dtype):
    g = torch.Generator().manual_seed(0)
    b, d = (8, 64) if small else (128, 6144)
    return (torch.randn(b, d, generator=g).to(device=device, dtype=dtype),
            torch.randn(b, d, generator=g).to(device=device, dtype=dtype)), {"lambd": 2e-4}


def _attn(lq, lk, b, shared=False):
    def build(small, device, dtype):
        g = torch.Generator().manual_seed(0)
        bb, h, d = (2, 2, 16) if small else (b, 8, 32)
        q_len, k_len = (5, 7) if small else (lq, lk)
        q = torch.randn(1 if shared else bb, h, q_len, d, generator=g)
        k = torch.randn(bb, h, k_len, d, generator=g)
        v = torch.randn(bb, h, k_len, d, generator=g)
        return tuple(t.to(device=device, dtype=dtype) for t in (q, k, v)), {}
    return build


def _graph_conv(c_in, c_out):
    def build(small, device, dtype):
        from fastskel.graph import SkeletonGraph

        g = torch.Generator().manual_seed(0)
        n, t, ci, co = (4, 16, 4, 8) if small else (256, 50, c_in, c_out)
        A = SkeletonGraph.ntu25().partition("spatial").to(device=device, dtype=dtype)
        x = _x(n, ci, t, 25, device, dtype, g)
        w = (torch.randn(3 * co, ci, generator=g) / ci ** 0.5).to(device=device, dtype=dtype)
        b = torch.zeros(3 * co).to(device=device, dtype=dtype)
        return (x, A, w, b), {}
    return build


def _dropout_tail(small, device, dtype):
    g = torch.Generator().manual_seed(0)
    x = _x(4, 8, 16, 25, device, dtype, g) if small else _x(768, 16, 50, 25, device, dtype, g)
    return (x, torch.randn(x.shape, generator=g).to(device=device, dtype=dtype)), {"p": 0.5}


def _attn_label(a, k) -> str:
    q, kk = a[0], a[1]
    return f"q={_dims(q)} kv={_dims(kk)} (BxHxLxd)"


def _conv_label(a, k) -> str:
    x, w = a[0], a[2]
    n, c, t, v = x.shape
    return f"{n}x{c}x{t}x{v} C_out={w.shape[0] // a[1].shape[0]}"


BF = (torch.float32, torch.bfloat16)
CASES: List[Case] = [
    Case("frame_motion", "asma", _motion),
    Case("motion_frame_mask", "asma", _frame_mask, (0,), describe=lambda a, k: f"{_dims(a[0])} k={a[1]}"),
    Case("degree_joint_mask", "asma", _joint_mask, (0,), describe=lambda a, k: f"{_dims(a[0])} n={a[1]}"),
    Case("motion_energy_weights", "amr", _energy),
    Case("focal_reconstruction_loss", "amr", _focal, (0,), BF),
    Case("barlow_twins_loss", "asma", _barlow, (0, 1), BF, describe=lambda a, k: f"B={a[0].shape[0]} D={a[0].shape[1]}"),
    Case("attention", "amr-decoder", _attn(125, 75, 256), (0, 1, 2), BF, describe=_attn_label),
    Case("attention", "amr-decoder shared-queries", _attn(125, 75, 256, shared=True), (0, 1, 2), BF, describe=_attn_label),
    Case("attention", "amr-encoder", _attn(75, 75, 256), (0, 1, 2), BF, describe=_attn_label),
    Case("attention", "slim", _attn(205, 205, 128), (0, 1, 2), BF, describe=_attn_label),
    Case("graph_conv", "asma", _graph_conv(16, 16), (0, 2), describe=_conv_label),
    Case("graph_conv", "st-gcn", _graph_conv(64, 64), (0, 2), describe=_conv_label),
    Case("dropout_add_relu", "asma block tail", _dropout_tail, (0, 1)),
]

SAME_AS_REFERENCE = "fast path = reference on this device"


def op_names() -> List[str]:
    return sorted({c.op for c in CASES})


def device_tag(device: torch.device) -> str:
    """A filename-safe device name: the CUDA device name, else ``cpu-<arch>``."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"cpu-{platform.machine()}"
    return "".join(ch if ch.isalnum() else "-" for ch in name.lower()).strip("-").replace("--", "-")


def versions() -> Dict[str, str]:
    import fastskel

    v = {"fastskel": fastskel.__version__, "torch": torch.__version__, "python": platform.python_version(),
         "cuda": torch.version.cuda or "none"}
    try:
        import triton

        v["triton"] = triton.__version__
    except Exception:
        v["triton"] = "unavailable"
    return v


def resolved_backend(op: str, device: torch.device) -> str:
    """The backend "auto" picks for ``op`` on ``device`` ("triton" | "cpp" | "torch"; "?" if unknown)."""
    from fastskel.backend import resolve

    mod = {"frame_motion": "motion", "motion_frame_mask": "motion", "degree_joint_mask": "joint_mask",
           "motion_energy_weights": "focal", "focal_reconstruction_loss": "focal",
           "barlow_twins_loss": "barlow", "attention": "attention", "graph_conv": "graph_conv",
           "dropout_add_relu": "dropout"}.get(op)
    try:
        impl = importlib.import_module(f"fastskel.ops.{mod}").IMPLEMENTED
        return resolve(op, "auto", device, impl)
    except Exception:
        return "?"


def _time(fn: Callable[[], Any], min_run_time: float) -> float:
    from torch.utils.benchmark import Timer

    fn()  # warm-up (compilation, caches)
    m = Timer(stmt="fn()", globals={"fn": fn}).blocked_autorange(min_run_time=min_run_time)
    return float(m.median)


def _scalarize(out) -> torch.Tensor:
    if isinstance(out, (tuple, list)):
        out = out[0]
    return out.float().sum()


def profile_op(op: str, small: bool = False, device: str | torch.device = "auto",
               dtypes: Optional[Sequence[str]] = None, min_run_time: float = 0.2,
               backward: bool = True) -> List[Dict[str, Any]]:
    """Rows ``{op, case, pass, shape, dtype, device, backend, reference_ms, fast_ms, ratio, note}``;
    ``fast_ms``/``ratio`` are ``None`` (and ``note`` says so) where the fast path is the reference."""
    from fastskel import ops

    cases = [c for c in CASES if c.op == op]
    if not cases:
        raise ValueError(f"op: expected one of {op_names()} or 'all', got {op!r}")
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu") if device in (None, "auto") \
        else torch.device(device)
    fn = getattr(ops, op)
    want = None if dtypes is None else set(dtypes)
    rows = []
    for case in cases:
        for dtype in case.dtypes:
            dname = str(dtype).replace("torch.", "")
            if want is not None and dname not in want:
                continue
            if dtype == torch.bfloat16 and dev.type == "cpu" and want is None:
                continue  # bf16 rows are for GPUs unless asked for
            args, kw = case.build(small, dev, dtype)
            shape = _dims(args[0])
            resolved = resolved_backend(op, dev)
            same = resolved == "torch"   # "auto" runs the reference itself: timing it twice says nothing
            passes = [("fwd", False)] + ([("fwd+bwd", True)] if backward and case.grad_args else [])
            for pname, bwd in passes:
                res = {}
                for backend in ("torch",) if same else ("torch", "auto"):
                    a = [t.detach().clone().requires_grad_(True) if (bwd and i in case.grad_args) else t
                         for i, t in enumerate(args)]

                    def run(a=a, backend=backend, bwd=bwd):
                        out = fn(*a, backend=backend, **kw)
                        if bwd:
                            _scalarize(out).backward()
                        return out
                    res[backend] = _time(run, min_run_time) * 1e3
                fast = res.get("auto")
                rows.append({"op": op, "case": case.label(args, kw), "pass": pname, "shape": shape, "dtype": dname,
                             "device": dev.type, "backend": resolved,
                             "reference_ms": res["torch"], "fast_ms": fast,
                             "ratio": None if fast is None else (res["torch"] / fast if fast > 0 else float("nan")),
                             "note": SAME_AS_REFERENCE if same else ""})
    return rows


def profile_ops(names: Sequence[str], **kw) -> List[Dict[str, Any]]:
    ops_ = op_names() if list(names) == ["all"] else list(names)
    rows = []
    for n in ops_:
        rows += profile_op(n, **kw)
    return rows


def format_table(rows: List[Dict[str, Any]]) -> str:
    """A Markdown table of medians and ratios."""
    head = "| op | case | pass | shape | dtype | device | fast path | reference (ms) | fast (ms) | ratio |"
    sep = "|---|---|---|---|---|---|---|---:|---:|---:|"
    lines = [head, sep]
    for r in rows:
        if r.get("fast_ms") is None:   # the fast path is the reference here: no speedup to report
            fast, ratio = "= reference", r.get("note") or SAME_AS_REFERENCE
        else:
            fast, ratio = f"{r['fast_ms']:.4g}", f"{r['ratio']:.2f}x"
        lines.append(f"| {r['op']} | {r['case']} | {r['pass']} | {r['shape']} | {r['dtype']} | {r['device']} | "
                     f"{r['backend']} | {r['reference_ms']:.4g} | {fast} | {ratio} |")
    return "\n".join(lines)


def repo_results_dir(cwd: Optional[Path] = None) -> Optional[Path]:
    """``<cwd>/benchmarks/results`` when ``cwd`` is a fastskel source checkout (its pyproject.toml
    names fastskel and benchmarks/results exists), else ``None``: results are then only printed,
    unless ``--out`` names a directory (no ``benchmarks/results`` appears in a user's directory)."""
    cwd = Path.cwd() if cwd is None else Path(cwd)
    res = cwd / "benchmarks" / "results"
    try:
        named = 'name = "fastskel"' in (cwd / "pyproject.toml").read_text()
    except OSError:
        return None
    return res if named and res.is_dir() else None


def write_results(rows: List[Dict[str, Any]], out: Path, prefix: str, device: torch.device) -> Tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    date = _dt.date.today().isoformat()
    stem = f"{prefix}{device_tag(device)}-{date}"
    meta = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({platform.processor() or platform.machine()})",
            "date": date, **versions()}
    js = out / f"{stem}.json"
    md = out / f"{stem}.md"
    js.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    md.write_text(f"# fastskel profile — {meta['device']}, {date}\n\n"
                  f"torch {meta['torch']}, triton {meta['triton']}, CUDA {meta['cuda']}, fastskel {meta['fastskel']}\n\n"
                  "Ratio = reference median / fast-path median (> 1: the fast path is faster); "
                  f"\"{SAME_AS_REFERENCE}\": \"auto\" resolves to the reference, nothing to compare.\n\n"
                  + format_table(rows) + "\n")
    return js, md
