"""Benchmark helpers: shapes at the papers' sizes, or tiny ones with FASTSKEL_BENCH_SMALL=1 (CI smoke).

Every benchmark states its shape, dtype and device in ``benchmark.extra_info`` and times the
reference and the fast path in the same run, so ratios are read from one report.
"""
import os

import pytest
import torch

SMALL = os.environ.get("FASTSKEL_BENCH_SMALL", "0") == "1"
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


@pytest.fixture
def device():
    return DEVICE
