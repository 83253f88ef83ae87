#!/usr/bin/env bash
# fastskel's two set-up commands (README):
#   bash run.sh main   — make .venv if needed, pretrain on the embedded synthetic dataset, evaluate,
#                        plot the learning curves and write the results table
#   bash run.sh test   — make .venv if needed, run the test suite (+ a one-shot run of every benchmark)
# The venv is (re)built when missing or when the build inputs (setup.py, pyproject.toml, csrc/) change.
set -euo pipefail
cd "$(dirname "$0")"
mode=${1:-}
shift || true
VENV=${FASTSKEL_VENV:-.venv}
PY=${PYTHON:-python3}

stamp=$(cat setup.py pyproject.toml $(find csrc -type f | sort) | sha256sum | cut -c1-16)
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$VENV/.fastskel-stamp" 2>/dev/null)" != "$stamp" ]; then
  echo "[run.sh] setting up $VENV (torch 2.13.0, fastskel with its C++ extension) ..."
  [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip "setuptools>=64" wheel
  "$VENV/bin/pip" install -q torch==2.13.0
  "$VENV/bin/pip" install -q --no-build-isolation -e ".[test]"
  echo "$stamp" > "$VENV/.fastskel-stamp"
fi
export PATH="$PWD/$VENV/bin:$PATH"
# Without a CUDA GPU the Triton kernels run (slowly) in the interpreter, so every kernel is tested.
if ! python -c "import torch,sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  export TRITON_INTERPRET=1
fi

case "$mode" in
  main)
    # The main job: AMR pretraining on the embedded synthetic dataset (2,000 sequences, 10
    # classes; the CPU demo model, --preset small), then a linear probe of the pretrained encoder
    # and, for comparison, of a randomly initialised one (same architecture, same probe).
    # Paper-size training: drop --preset small and run on a GPU with real data.
    DATA=synthetic:num_samples=2000
    fastskel info
    fastskel pretrain amr --preset small --data "$DATA" --out runs/amr --seed 0
    echo "== linear probe, AMR-pretrained encoder =="
    fastskel eval linear --checkpoint runs/amr/last.pt --data "$DATA" --seed 0
    echo "== linear probe, randomly initialised encoder (baseline) =="
    fastskel eval linear --method amr --preset small --data "$DATA" --seed 0 --out runs/amr-random
    echo "== learning curves and the results table =="
    # per-class accuracy + confusion matrix of each probe: runs/amr/linear_*, runs/amr-random/linear_*
    fastskel plot runs/amr --out runs/amr/curves.png             # loss and its parts, lr, samples/s
    fastskel report runs/amr runs/amr-random --out runs/results  # runs/results.md + runs/results.csv
    ;;
  test)
    python -m pytest -q "$@"
    FASTSKEL_BENCH_SMALL=1 python -m pytest -q benchmarks --benchmark-disable -p no:cacheprovider
    ;;
  *)
    echo "usage: bash run.sh main|test [pytest args]" >&2
    exit 2
    ;;
esac
