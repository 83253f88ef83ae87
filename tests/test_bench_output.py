"""Benchmark output a person can read (issue 15 item 4): labels from the shapes actually used,
"fast path = reference on this device" instead of a ≈1.0× speedup, timed Triton skipped under the
interpreter, one reference-vs-fast table after ``pytest --benchmark``, nothing written into the cwd."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from conftest import HAS_C
from fastskel.engine import bench, profile
from fastskel.cli import main

REPO = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")


def _case(op, name):
    return next(c for c in profile.CASES if c.op == op and c.name == name)


def test_small_labels_state_the_small_shapes():
    args, kw = _case("barlow_twins_loss", "asma").build(True, CPU, torch.float32)
    assert _case("barlow_twins_loss", "asma").label(args, kw) == "asma B=8 D=64"
    args, kw = _case("attention", "amr-decoder").build(True, CPU, torch.float32)
    label = _case("attention", "amr-decoder").label(args, kw)
    assert "q=2x2x5x16 kv=2x2x7x16" in label and "125" not in label
    args, kw = _case("attention", "amr-decoder").build(False, CPU, torch.float32)
    assert "q=256x8x125x32 kv=256x8x75x32" in _case("attention", "amr-decoder").label(args, kw)
    args, kw = _case("motion_frame_mask", "asma").build(True, CPU, torch.float32)
    assert _case("motion_frame_mask", "asma").label(args, kw) == "asma 4x3x16x25 k=3"


def test_profile_marks_the_reference_fast_path():
    rows = profile.profile_op("barlow_twins_loss", small=True, device="cpu", min_run_time=0.01, backward=False)
    (row,) = rows
    assert row["case"] == "asma B=8 D=64" and "6144" not in row["case"]
    assert row["backend"] == "torch" and row["fast_ms"] is None and row["ratio"] is None
    assert row["note"] == profile.SAME_AS_REFERENCE
    table = profile.format_table(rows)
    assert "fast path = reference on this device" in table and "1.00x" not in table


@pytest.mark.skipif(not HAS_C, reason="fastskel._C not built: graph_conv's fast path is the reference")
def test_profile_times_a_real_fast_path():
    rows = profile.profile_op("graph_conv", small=True, device="cpu", min_run_time=0.01, backward=False)
    for r in rows:
        assert r["backend"] == "cpp" and r["fast_ms"] > 0 and r["note"] == ""
        assert r["ratio"] == pytest.approx(r["reference_ms"] / r["fast_ms"])
    assert "C_out=8" in rows[0]["case"] and "64" not in rows[0]["case"].split()[0]


def _bench(name, param, median, **info):
    return {"name": f"{name}[{param}]", "param": param, "params": {"impl": param}, "group": "g",
            "extra_info": {"shape": [4, 8], "dtype": "float32", "impl": param, **info}, "stats": {"median": median}}


def test_bench_table_pairs_reference_and_fast_path():
    data = {"benchmarks": [_bench("t", "reference", 0.004), _bench("t", "triton", 0.001),
                           _bench("t", "auto", 0.0039, fast_path_is_reference=True)]}
    rows = {r["benchmark"]: r for r in bench.summarize(data)}
    assert rows["t[triton]"]["ratio"] == pytest.approx(4.0) and rows["t[triton]"]["reference_ms"] == pytest.approx(4.0)
    assert rows["t[auto]"]["ratio"] is None and rows["t[auto]"]["note"] == bench.SAME_AS_REFERENCE
    table = bench.format_table(list(rows.values()))
    assert "| t[triton] | g | 4x8 | float32 | 4 | 1 | 4.00x |" in table
    assert "| t[auto] | g | 4x8 | float32 | 4 | 3.9 | fast path = reference on this device |" in table


def test_bench_reference_named_by_the_benchmark():
    data = {"benchmarks": [_bench("s", "amr-torch", 0.002), _bench("s", "mamp-torch", 0.008),
                           _bench("s", "amr-fast", 0.001, reference="amr-torch")]}
    data["benchmarks"][0]["extra_info"]["backend"] = data["benchmarks"][1]["extra_info"]["backend"] = "torch"
    rows = {r["benchmark"]: r for r in bench.summarize(data)}
    assert rows["s[amr-fast]"]["reference"] == "s[amr-torch]" and rows["s[amr-fast]"]["ratio"] == pytest.approx(2.0)


def _pytest(args, cwd, **env):
    e = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "FASTSKEL_BENCH"))}
    e.update(OMP_NUM_THREADS="1", **env)
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args], cwd=cwd,
                          env=e, capture_output=True, text=True, timeout=300)


def test_pytest_benchmark_prints_the_reference_table(tmp_path):
    (tmp_path / "conftest.py").write_text((REPO / "conftest.py").read_text())   # the repo's hooks
    (tmp_path / "bench_toy.py").write_text(textwrap.dedent("""
        import pytest

        @pytest.mark.parametrize("impl", ["reference", "fast", "auto"])
        def test_toy(benchmark, impl):
            x = list(range(2000))
            benchmark.group = "toy"
            benchmark.extra_info.update(shape=[8, 64], dtype="float32", impl=impl,
                                        fast_path_is_reference=impl == "auto")
            fn = (lambda: x[:10]) if impl == "fast" else (lambda: sorted(x, reverse=True))
            benchmark.pedantic(fn, rounds=3, iterations=1)
    """))
    res = _pytest(["--benchmark", "bench_toy.py"], tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "reference vs fast path" in res.stdout
    fast = next(l for l in res.stdout.splitlines() if l.startswith("| test_toy[fast] |"))
    assert fast.startswith("| test_toy[fast] | toy | 8x64 | float32 |") and fast.rstrip(" |").endswith("x")
    assert "| test_toy[auto] |" in res.stdout and "fast path = reference on this device" in res.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="the interpreter skip is for CPU runs")
def test_timed_triton_skipped_under_the_interpreter():
    res = _pytest(["--benchmark", "benchmarks/bench_barlow.py", "-k", "triton and 8-64", "-rs"], REPO,
                  TRITON_INTERPRET="1", FASTSKEL_BENCH_SMALL="1")
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert "1 skipped" in res.stdout and "would time the interpreter" in res.stdout


def test_profile_writes_nothing_into_the_cwd_by_default(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["profile", "frame_motion", "--small", "--device", "cpu", "--min-time", "0.01",
                 "--no-backward"]) == 0
    out = capsys.readouterr().out
    assert "| frame_motion | asma 4x3x16x25 |" in out and "wrote" not in out
    assert list(tmp_path.iterdir()) == []
    out_dir = tmp_path / "mine"
    assert main(["profile", "frame_motion", "--small", "--device", "cpu", "--min-time", "0.01",
                 "--no-backward", "--out", str(out_dir)]) == 0
    assert len(list(out_dir.glob("profile-frame_motion-*.md"))) == 1


def test_results_dir_only_in_a_checkout(tmp_path):
    assert profile.repo_results_dir(tmp_path) is None
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "fastskel"\n')
    assert profile.repo_results_dir(tmp_path) is None            # no benchmarks/results: not created
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    assert profile.repo_results_dir(tmp_path) == tmp_path / "benchmarks" / "results"
    assert profile.repo_results_dir(REPO) == REPO / "benchmarks" / "results"
