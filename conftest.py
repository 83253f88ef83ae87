"""Root pytest configuration: the ``--benchmark`` option (SPEC §7).

- ``pytest``: the test suite; benchmark functions are deselected.
- ``pytest --benchmark``: only the benchmark suites (like ``--benchmark-only``), timed.
- ``pytest benchmarks --benchmark-only``: the same, pytest-benchmark's own spelling.
- ``pytest benchmarks --benchmark-disable``: every benchmark body runs once, untimed (CI smoke).
"""


def pytest_addoption(parser):
    parser.addoption("--benchmark", action="store_true", default=False,
                     help="run the benchmark suites in benchmarks/ (timed) instead of the tests")


def _wants_benchmarks(config) -> bool:
    opt = config.option
    explicit = any(str(a).split("::")[0].rstrip("/").endswith("benchmarks") or "/benchmarks/" in str(a)
                   or str(a).startswith("benchmarks") for a in config.args)
    return bool(opt.benchmark or getattr(opt, "benchmark_only", False) or explicit)


def pytest_configure(config):
    if config.option.benchmark:
        config.option.benchmark_only = True


def pytest_collection_modifyitems(config, items):
    wanted = _wants_benchmarks(config)
    keep, drop = [], []
    for item in items:
        is_bench = "benchmark" in getattr(item, "fixturenames", ())
        (keep if is_bench == wanted else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
