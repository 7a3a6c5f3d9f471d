#!/bin/sh
# Runs the four convergence studies in sequence (what `make studies` runs). Each writes
# results/studies/<name>.json and .png and prints its table and wall time. PYTHON defaults to
# the interpreter on PATH; accord must be importable by it (installed, or PYTHONPATH=python).
set -e
PYTHON=${PYTHON:-python}
cd "$(dirname "$0")/../.."
for study in adasum_scaling consensus leader adpsgd; do
    echo "== $study"
    "$PYTHON" "benchmarks/studies/$study.py"
done
