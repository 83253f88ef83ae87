#!/usr/bin/env bash
# The one prepared GPU run (issue 15), on the lent GPU machine's python3 (no network, nothing
# installed from an index): env, build of _C for sm_90, smoke pass vs the references, CUDA tests,
# method-shape benchmarks; at most 8 minutes (the stage limits are in benchmarks/gpu_check.py).
#   bash benchmarks/gpu_check.sh             # results: benchmarks/results/<device>-<date>.{json,md,log}, and $OUT
#   bash benchmarks/gpu_check.sh --dry-run   # the same stages on the CPU at tiny shapes (CI)
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
exec "${PYTHON:-python3}" benchmarks/gpu_check.py "$@"
