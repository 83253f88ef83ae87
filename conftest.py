"""Root pytest configuration: the ``--benchmark`` option (docs/design.md §7).

- ``pytest``: the test suite; benchmark functions are deselected.
- ``pytest --benchmark``: only the benchmark suites (like ``--benchmark-only``), timed.
- ``pytest benchmarks --benchmark-only``: the same, pytest-benchmark's own spelling.
- ``pytest benchmarks --benchmark-disable``: every benchmark body runs once, untimed (CI smoke).

After timed benchmarks, a table "reference vs fast path" follows pytest-benchmark's own: per
benchmark the median of its group's reference, its own median and the ratio (reference / this),
or "fast path = reference on this device" (see ``fastskel.engine.bench``).
"""


def pytest_addoption(parser):
    parser.addoption("--benchmark", action="store_true", default=False,
                     help="run the benchmark suites in benchmarks/ (timed) instead of the tests")


def _benchmarks_named(config) -> bool:
    """Whether the command line named benchmark files/dirs (not just the ini's testpaths)."""
    from _pytest.config import Config

    if getattr(config, "args_source", None) == Config.ArgsSource.TESTPATHS:
        return False
    return any("benchmarks" in str(a).split("::")[0] for a in config.args)


def pytest_configure(config):
    if config.option.benchmark:
        config.option.benchmark_only = True


def pytest_collection_modifyitems(config, items):
    only_bench = bool(config.option.benchmark or getattr(config.option, "benchmark_only", False))
    want_bench = only_bench or _benchmarks_named(config)
    keep, drop = [], []
    for item in items:
        is_bench = "benchmark" in getattr(item, "fixturenames", ())
        wanted = want_bench if is_bench else not only_bench
        (keep if wanted else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    try:
        from fastskel.engine.bench import format_table, pytest_session_rows
    except Exception:  # noqa: BLE001 — fastskel not importable: nothing to add
        return
    rows = pytest_session_rows(config)
    if rows:
        terminalreporter.write_sep("-", "reference vs fast path (medians; ratio = reference / this)")
        for line in format_table(rows).splitlines():
            terminalreporter.write_line(line)
