#!/usr/bin/env bash
# make gpu-test: the CUDA build and every GPU path on one machine with an NVIDIA GPU, within
# 8 minutes on one H200. Usage: tests/gpu/run_gpu_tests.sh [VENV_BIN]   (default .venv/bin)
# VENV_BIN holds python (with pip importable); mpirun is taken from there, else from PATH; torchrun is run as
# `python -m torch.distributed.run` (a venv made with --system-site-packages has no torchrun).
# Each part has its own time limit and prints one summary line; the script exits non-zero if
# any part failed (a part that cannot run here is SKIP, with the reason).
set -u
cd "$(dirname "$0")/../.."
BIN=${1:-.venv/bin}
PY=$BIN/python
MPIRUN=$BIN/mpirun
[ -x "$MPIRUN" ] || MPIRUN=$(command -v mpirun || echo "$BIN/mpirun")
TORCHRUN=("$PY" -m torch.distributed.run)
OUT=${ACCORD_GPU_TEST_OUT:-results/gpu-test}
mkdir -p "$OUT"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}
declare -a SUMMARY
FAILED=0
START=$(date +%s)
# the whole target's time limit (the build included); each part's own limit is cut to what is left
BUDGET=${ACCORD_GPU_TEST_BUDGET:-480}

# run NAME SECONDS CMD...: output to $OUT/NAME.log, one summary line
run() {
  local name=$1 limit=$2
  shift 2
  local t0=$(date +%s)
  local left=$(( BUDGET - (t0 - START) ))
  if [ "$left" -lt 10 ]; then
    SUMMARY+=("$(printf '%-26s %-22s' "$name" "FAIL (no time left)")"); FAILED=1
    echo "gpu-test: ${SUMMARY[-1]}"; return
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  timeout --signal=TERM --kill-after=10 "$limit" "$@" >"$OUT/$name.log" 2>&1
  local rc=$? dt=$(( $(date +%s) - t0 ))
  local verdict=PASS
  if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then verdict="FAIL (timeout ${limit}s)"; FAILED=1
  elif [ $rc -ne 0 ]; then verdict="FAIL (exit $rc)"; FAILED=1; fi
  SUMMARY+=("$(printf '%-26s %-22s %4ss  %s' "$name" "$verdict" "$dt" "$OUT/$name.log")")
  echo "gpu-test: ${SUMMARY[-1]}"
  [ "$verdict" = PASS ] || tail -n 30 "$OUT/$name.log"
}
skip() { SUMMARY+=("$(printf '%-26s SKIP: %s' "$1" "$2")"); echo "gpu-test: ${SUMMARY[-1]}"; }

NGPU=$("$PY" -c 'import torch; print(torch.cuda.device_count())' 2>/dev/null || echo 0)
if [ "$NGPU" -lt 1 ]; then
  echo "gpu-test: torch sees no GPU; nothing to do" >&2
  exit 2
fi

# 1. CUDA build (Hopper only: the H200; ACCORD_CUDA_ARCHS overrides)
run build 150 env ACCORD_WITH_CUDA=1 ACCORD_CUDA_ARCHS="${ACCORD_CUDA_ARCHS:-90}" \
  "$PY" -m pip install -q --no-build-isolation --no-deps --force-reinstall .
"$PY" -c 'import accord, sys; sys.exit(0 if accord.build_info()["cuda"] else 1)' ||
  { echo "gpu-test: accord was not built with CUDA" >&2; exit 1; }

# 2. single-process GPU tests
run pytest-cuda 150 "$PY" -m pytest -q -ra -m cuda -p no:cacheprovider tests

# 3. two MPI ranks sharing GPU 0: collectives (every op, dtype), grouped, hierarchical,
#    DistributedOptimizer (every op, both Adasum modes), both hooks, ConsensusAggregator
run mpi-2ranks-1gpu 120 env CUDA_VISIBLE_DEVICES=0 "$MPIRUN" --oversubscribe --bind-to none \
  -x OMP_NUM_THREADS=1 -x PYTHONUNBUFFERED -x CUDA_VISIBLE_DEVICES -np 2 \
  "$PY" tests/gpu/distributed_worker.py --device cuda

# 4. NCCL, one rank
run nccl-1rank 90 env ACCORD_TEST_BACKEND=nccl "${TORCHRUN[@]}" --standalone --nproc-per-node 1 \
  tests/gpu/distributed_worker.py --device cuda

# 5. NCCL, two ranks: one GPU each (NCCL refuses two ranks on one GPU)
if [ "$NGPU" -ge 2 ]; then
  run nccl-2ranks 90 env ACCORD_TEST_BACKEND=nccl "${TORCHRUN[@]}" --standalone \
    --nproc-per-node 2 tests/gpu/distributed_worker.py --device cuda
else
  skip nccl-2ranks "needs 2 GPUs, $NGPU visible (NCCL refuses two ranks on one GPU)"
fi

# 6. compute-sanitizer memcheck over every op
SANITIZER=$(command -v compute-sanitizer)
for d in /usr/local/cuda/bin "$(dirname "$(readlink -f "$(command -v nvcc || echo /nonexistent)")")"; do
  [ -z "$SANITIZER" ] && [ -x "$d/compute-sanitizer" ] && SANITIZER=$d/compute-sanitizer
done
if [ -n "$SANITIZER" ]; then
  run sanitizer-memcheck 100 "$SANITIZER" --tool memcheck --error-exitcode 3 \
    "$PY" tests/gpu/every_op.py
else
  skip sanitizer-memcheck "compute-sanitizer not found (CUDA toolkit bin/ not on PATH)"
fi

# 7. kernel benchmark on the GPU (full sizes: the targets are at 64 MiB): section 0 host time
#    per call beside the device time of the batch; sections 1-3 device time (CUDA events around
#    back-to-back calls) and end-to-end time of the fused kernels vs torch, with the targets
run kernels-bench 150 "$PY" benchmarks/kernels.py --device cuda --reps 5 \
  --json "$OUT/kernels_cuda.json"

echo
echo "gpu-test summary ($(( $(date +%s) - START ))s in all; logs in $OUT):"
for line in "${SUMMARY[@]}"; do echo "  $line"; done
grep -h '^# target' "$OUT/kernels-bench.log" 2>/dev/null | sed 's/^# /  kernels-bench /'
exit $FAILED
