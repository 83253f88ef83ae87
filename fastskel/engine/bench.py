"""``fastskel bench``: run the pytest-benchmark suites and write a results table.

Runs ``python -m pytest <benchmarks> --benchmark-only --benchmark-json=<tmp>`` in a subprocess,
then prints the table and, with ``--out`` (default: ``benchmarks/results`` when run from a fastskel
checkout, else nothing is written), writes ``<out>/<device>-<date>.json`` (the raw pytest-benchmark JSON plus a ``fastskel``
block: device, torch, triton, CUDA versions, date) and ``<out>/<device>-<date>.md``: one row per
benchmark with its shape, dtype, median and the ratio to the reference of its group.

Grouping and reference, from what each benchmark records:

- group: ``benchmark.group`` (``@pytest.mark.benchmark(group=...)``), else
  ``extra_info["group"]``, else the test function's name without its parameters;
- the reference rows of a group have ``extra_info["backend"]`` (or ``"impl"``) equal to
  ``"torch"``/``"reference"``, else a parameter id saying ``torch``/``reference``/``ref``; a row is
  compared with the reference of the same parameters but the implementation (``impl``/``backend``/
  ``variant``), else of the same shape and dtype; ratio = reference median / row median (> 1: faster).
A row whose ``extra_info["fast_path_is_reference"]`` is true says "fast path = reference on this
device" instead of a ratio (e.g. backend "auto" resolving to the reference ops on a CPU).
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

__all__ = ["BenchError", "SAME_AS_REFERENCE", "find_benchmarks_dir", "run_benchmarks", "summarize", "format_table",
           "format_markdown", "pytest_session_rows"]

REF_NAMES = ("torch", "reference", "ref", "eager")


class BenchError(RuntimeError):
    """The benchmark run itself failed (its output above says why)."""


def find_benchmarks_dir(path: Optional[str] = None) -> Path:
    """``path``, else ``./benchmarks``, else the ``benchmarks/`` beside the installed package."""
    if path:
        p = Path(path)
        if not p.is_dir():
            raise FileNotFoundError(f"benchmarks: no such directory: {p}")
        return p
    for cand in (Path.cwd() / "benchmarks", Path(__file__).resolve().parents[2] / "benchmarks"):
        if cand.is_dir():
            return cand
    raise FileNotFoundError("benchmarks: no benchmarks/ directory in the current directory or beside the "
                            "fastskel package; pass --benchmarks DIR (a source checkout has one)")


def _device() -> Tuple[str, str]:
    import torch

    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
    else:
        name = f"cpu-{platform.machine()}"
    tag = re.sub(r"-+", "-", "".join(ch if ch.isalnum() else "-" for ch in name.lower())).strip("-")
    return name, tag


def _versions() -> Dict[str, str]:
    from .profile import versions

    return versions()


def _info(b: Dict[str, Any]) -> Dict[str, Any]:
    return b.get("extra_info") or {}


def _group(b: Dict[str, Any]) -> str:
    return b.get("group") or _info(b).get("group") or b.get("name", "").split("[")[0]


def _is_ref(b: Dict[str, Any]) -> bool:
    info = _info(b)
    impl = str(info.get("backend", info.get("impl", ""))).lower()
    if impl:
        return impl in REF_NAMES
    pid = str(b.get("param") or "")
    toks = set(re.split(r"[-_\[\]/ ]", pid.lower() or b.get("name", "").lower()))
    return bool(toks & set(REF_NAMES))


SHAPE_KEYS = ("B", "N", "C", "T", "V", "M", "L", "D", "batch", "tokens")


def _shape(b: Dict[str, Any]) -> str:
    """``extra_info["shape"]`` as ``AxBxC``, else the shape-like keys it records (``B=128 D=6144``)."""
    info = _info(b)
    s = info.get("shape")
    if s is not None:
        return "x".join(map(str, s)) if isinstance(s, (list, tuple)) else str(s)
    return " ".join(f"{k}={info[k]}" for k in SHAPE_KEYS if k in info)


IMPL_KEYS = ("impl", "backend", "variant")


def _match_ref(b: Dict[str, Any], refs: List[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    """``extra_info["reference"]`` (the reference's ``variant`` or parameter id) when given, else the
    reference with the same parameters but the implementation (e.g. same shape/dtype/options,
    ``impl="reference"``), else the same shape and dtype, else the group's first reference."""
    want = _info(b).get("reference")   # a benchmark may name its reference's variant / parameter id
    if want:
        for r in refs:
            if want in (r.get("param"), _info(r).get("variant")):
                return r
    params = {k: v for k, v in (b.get("params") or {}).items() if k not in IMPL_KEYS}
    for r in refs:
        if params and {k: v for k, v in (r.get("params") or {}).items() if k not in IMPL_KEYS} == params:
            return r
    for r in refs:
        if _shape(r) == _shape(b) and _info(r).get("dtype") == _info(b).get("dtype"):
            return r
    return refs[0] if refs else None


SAME_AS_REFERENCE = "fast path = reference on this device"


def summarize(data: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Rows ``{benchmark, group, shape, dtype, device, median_ms, reference_ms, ratio, note, reference}``
    from pytest-benchmark JSON. A benchmark whose ``extra_info["fast_path_is_reference"]`` is true
    (e.g. backend "auto" resolving to the reference ops on a CPU) gets no ratio and ``note`` says so."""
    benches = data.get("benchmarks", [])
    groups: Dict[str, List[Dict[str, Any]]] = {}
    for b in benches:
        groups.setdefault(_group(b), []).append(b)
    rows = []
    for g, items in groups.items():
        refs = [b for b in items if _is_ref(b)]
        for b in items:
            is_ref = b in refs
            ref = b if is_ref else _match_ref(b, refs)
            med = float(b["stats"]["median"])
            ref_med = float(ref["stats"]["median"]) if ref is not None else None
            same = bool(_info(b).get("fast_path_is_reference")) and not is_ref
            ratio = ref_med / med if ref_med is not None and med > 0 and not same else None
            note = "reference" if is_ref else (SAME_AS_REFERENCE if same else ("" if ref else "no reference"))
            rows.append({"benchmark": b.get("name"), "group": g, "shape": _shape(b),
                         "dtype": str(_info(b).get("dtype", "")), "device": str(_info(b).get("device", "")),
                         "median_ms": med * 1e3, "reference_ms": None if ref_med is None else ref_med * 1e3,
                         "ratio": ratio, "note": note, "reference": ref.get("name") if ref else None})
    return rows


def format_table(rows: List[Dict[str, Any]]) -> str:
    """One Markdown row per benchmark: its reference's median, its own, ratio = reference / this."""
    lines = ["| benchmark | group | shape | dtype | reference (ms) | median (ms) | ratio (reference / this) |",
             "|---|---|---|---|---:|---:|---:|"]
    for r in rows:
        ref = "—" if r.get("reference_ms") is None else f"{r['reference_ms']:.4g}"
        if r["ratio"] is None:
            ratio = r.get("note") or "—"
        else:
            ratio = f"{r['ratio']:.2f}x" + (" (reference)" if r.get("note") == "reference" else "")
        lines.append(f"| {r['benchmark']} | {r['group']} | {r['shape']} | {r['dtype']} | {ref} | "
                     f"{r['median_ms']:.4g} | {ratio} |")
    return "\n".join(lines)


def format_markdown(rows: List[Dict[str, Any]], meta: Dict[str, Any]) -> str:
    lines = [f"# fastskel benchmarks — {meta['device']}, {meta['date']}", "",
             f"torch {meta['torch']}, triton {meta['triton']}, CUDA {meta['cuda']}, fastskel {meta['fastskel']}, "
             f"python {meta['python']}", "",
             "Ratio = median of the group's reference / median of the row (> 1: faster than the reference); "
             f"\"{SAME_AS_REFERENCE}\": the row runs the reference ops here, no speedup to report.", "",
             format_table(rows)]
    return "\n".join(lines) + "\n"


def run_benchmarks(benchmarks: Optional[str] = None, out: Optional[str] = None, small: bool = False,
                   keyword: Optional[str] = None, extra_args: Sequence[str] = (),
                   timeout: Optional[float] = None
                   ) -> Tuple[Optional[Path], Optional[Path], List[Dict[str, Any]], str]:
    """Run the suites; return ``(json path, md path, rows, markdown)``. With ``out`` the results go
    to ``<out>/<device>-<date>.json`` + ``.md``; without it nothing is written (paths ``None``)."""
    bdir = find_benchmarks_dir(benchmarks).resolve()
    env = dict(os.environ)
    if small:
        env["FASTSKEL_BENCH_SMALL"] = "1"
    with tempfile.TemporaryDirectory() as td:
        js = Path(td) / "bench.json"
        cmd = [sys.executable, "-m", "pytest", str(bdir), "--benchmark-only", f"--benchmark-json={js}",
               "-q", "-p", "no:cacheprovider", "-o", "python_files=bench_*.py test_*.py"]
        if keyword:
            cmd += ["-k", keyword]
        cmd += [a for a in extra_args if a != "--"]
        proc = subprocess.run(cmd, cwd=str(bdir.parent), env=env, timeout=timeout)
        if proc.returncode == 5:
            raise ValueError(f"bench: no benchmark was selected in {bdir}"
                             + (f" by -k {keyword!r}" if keyword else ""))
        if proc.returncode != 0 or not js.exists():
            raise BenchError(f"bench: `{' '.join(cmd)}` failed with exit code {proc.returncode}"
                             + ("" if js.exists() else " and wrote no results"))
        data = json.loads(js.read_text())
    name, tag = _device()
    date = _dt.date.today().isoformat()
    meta = {"device": name, "date": date, "small": small, **_versions()}
    data["fastskel"] = meta
    rows = summarize(data)
    text = format_markdown(rows, meta)
    if out is None:
        return None, None, rows, text
    outdir = Path(out)
    outdir.mkdir(parents=True, exist_ok=True)
    stem = outdir / f"{tag}-{date}"
    jpath, mpath = stem.with_suffix(".json"), stem.with_suffix(".md")
    jpath.write_text(json.dumps(data, indent=1))
    mpath.write_text(text)
    return jpath, mpath, rows, text


def pytest_session_rows(config) -> List[Dict[str, Any]]:
    """:func:`summarize` rows of the benchmarks timed in this pytest session (none when
    pytest-benchmark is absent or ``--benchmark-disable``): the root conftest prints them."""
    bs = getattr(config, "_benchmarksession", None)
    if bs is None or getattr(bs, "disabled", True):
        return []
    benches = []
    for b in getattr(bs, "benchmarks", []):
        if getattr(b, "has_error", False) or not getattr(b, "stats", None):
            continue
        d = b.as_dict(include_data=False)
        if d.get("stats", {}).get("median") is not None:
            benches.append(d)
    return summarize({"benchmarks": benches})
