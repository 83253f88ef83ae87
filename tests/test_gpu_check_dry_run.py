"""``benchmarks/gpu_check.py --dry-run`` (issue 15): the prepared GPU run's stages, on the CPU at tiny
shapes, so the script cannot rot between the rare GPU loans. One dry run (~30 s) is shared by the
checks of its report; the driver's parts that decide pass/fail are tested directly."""
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import fastskel.ops as ops
from conftest import HAS_C
from fastskel.backend import triton_status

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"


def _load():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


check = _load()


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu-check")
    env = dict(os.environ, OUT=str(out / "copied"))
    (out / "copied").mkdir()
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--out", str(out)], cwd=str(ROOT), env=env,
                          capture_output=True, text=True, timeout=400)
    wall = time.monotonic() - t0
    files = sorted(out.glob("*-dry-run.json"))
    assert proc.returncode == 0 and len(files) == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(files[0].read_text()), files[0], out, wall


def test_stage_limits_fit_the_eight_minute_command():
    limits = dict(check.STAGES)
    assert list(limits) == ["env", "build", "smoke", "tests", "bench"]
    assert sum(limits.values()) <= 480 == check.TOTAL_LIMIT_S
    assert all(v > 0 for v in limits.values())


def test_report_schema_and_stages(dry_run):
    rep, path, out, wall = dry_run
    assert rep["schema"] == check.SCHEMA and rep["dry_run"] is True
    assert set(rep) >= {"date", "started", "device", "versions", "limits_s", "total_limit_s", "seconds", "stages"}
    assert rep["limits_s"] == dict(check.STAGES) and sum(rep["limits_s"].values()) <= 480
    assert [s["name"] for s in rep["stages"]] == [n for n, _ in check.STAGES]
    for s in rep["stages"]:
        assert set(s) >= {"name", "status", "reason", "seconds", "limit_s", "output_tail", "details"}
        assert s["status"] in check.STATUSES and s["status"] != "fail", s
        assert 0 <= s["seconds"] <= s["limit_s"]
        if s["status"] == "skipped":
            assert "dry run" in s["reason"]
    assert rep["versions"]["torch"] == torch.__version__
    assert rep["device"].startswith("cpu")
    st = {s["name"]: s for s in rep["stages"]}
    assert st["build"]["status"] == "skipped" and st["build"]["details"]["c"]["loaded"] in (True, False)
    assert st["tests"]["details"]["counts"].get("passed", 0) > 0
    # the three files, and their copies in $OUT
    for suffix in (".json", ".md", ".log"):
        assert path.with_suffix(suffix).exists() and (out / "copied" / path.with_suffix(suffix).name).exists()
    md = path.with_suffix(".md").read_text()
    assert "| stage | status | seconds | limit (s) | note |" in md and "## Smoke" in md
    assert wall < 300


def test_smoke_covers_every_public_op(dry_run):
    rep = dry_run[0]
    rows = next(s for s in rep["stages"] if s["name"] == "smoke")["details"]["rows"]
    not_ops = {"Rope", "SinkhornTargets", "data_checks_enabled", "skip_data_checks", "reference"}
    assert {r["op"] for r in rows} == set(ops.__all__) - not_ops
    can = {"triton": triton_status("cpu")[0], "cpp": HAS_C, "torch": True}   # what runs on this CPU
    for r in rows:
        if r["backend"] in can:
            assert (r["status"] == "ok") == can[r["backend"]], r
    ran = [r for r in rows if r["status"] == "ok"]
    for r in ran:
        assert r["fwd_rel"] <= check.TOL[r["dtype"]] and r["device"] == "cpu"
        assert r["grad_rel"] is None or r["grad_rel"] <= check.TOL[r["dtype"]]
    for r in rows:
        assert r["status"] != "fail", r
        assert r["status"] == "ok" or r["reason"]


def test_bench_stage_calls_profile_and_step_benchmarks(dry_run):
    bench = next(s for s in dry_run[0]["stages"] if s["name"] == "bench")["details"]
    assert bench["profile"] and {"reference_ms", "fast_ms", "ratio"} <= set(bench["profile"][0])
    assert any("train_step" in r["benchmark"] for r in bench["steps"])


def test_compare_fails_a_wrong_result():
    a = torch.randn(50, 7)
    assert check._compare([a], [a.clone()], "float32")[2]
    bad = a.clone()
    bad[3, 4] += 0.1 * a.abs().max()
    assert not check._compare([bad], [a], "float32")[2]
    assert check._compare([bad.bfloat16()], [a], "bfloat16")[2] is False
    mask = torch.rand(1000) > 0.5
    flipped = mask.clone()
    flipped[:5] = ~flipped[:5]
    assert not check._compare([flipped], [mask], "float32")[2]              # 0.5 % of a mask differs
    assert not check._compare([a[:, :3]], [a], "float32")[2]                # wrong shape
    assert not check._compare([a], [a, a], "float32")[2]                    # missing output


def test_a_stage_over_its_limit_fails_and_the_rest_still_run(monkeypatch):
    monkeypatch.setitem(check.STAGE_FUNCS, "env", lambda dry, limit: time.sleep(5))
    res, _ = check._run_stage_here("env", 1)
    assert res["status"] == "fail" and "time limit 1s" in res["reason"] and res["seconds"] < 4
    monkeypatch.setitem(check.STAGE_FUNCS, "env", lambda dry, limit: 1 / 0)
    res, log = check._run_stage_here("env", 5)
    assert res["status"] == "fail" and "ZeroDivisionError" in res["reason"] and "ZeroDivisionError" in log


def test_pytest_summary_parsing():
    out = "....\n=========== 3 failed, 950 passed, 41 skipped, 2 errors in 170.2s ===========\n"
    assert check._pytest_summary(out) == {"failed": 3, "passed": 950, "skipped": 41, "error": 2}


def test_shell_wrapper_runs_the_driver():
    sh = (ROOT / "benchmarks" / "gpu_check.sh").read_text()
    assert "benchmarks/gpu_check.py" in sh and "python3" in sh
    assert subprocess.run(["bash", "-n", str(ROOT / "benchmarks" / "gpu_check.sh")]).returncode == 0
