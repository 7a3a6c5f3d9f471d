#!/usr/bin/env bash
# Sanitizer run of the CPU kernels: builds accord._C with AddressSanitizer + UndefinedBehavior-
# Sanitizer into its own directory (the normal build and python/ are not touched), then runs the
# kernel tests and a 2-rank Adasum job under mpirun against that build. Exits non-zero on a test
# failure or on any sanitizer report (every report aborts the process: -fno-sanitize-recover=all,
# ASan's default; the logs are searched as well).
#
#   tests/sanitize/run.sh                 # python3 from PATH, or PYTHON=/path/to/python
#
# Environment: PYTHON, ACCORD_SANITIZE (default address,undefined), ACCORD_SANITIZE_DIR (default
# build/sanitize), CXX (the compiler whose libasan is preloaded; default c++),
# ACCORD_HYPOTHESIS_SCALE (default 0.25 here: fewer property examples), PYTEST_ARGS (extra).
# python itself is not instrumented, so the ASan runtime must be loaded first: LD_PRELOAD. libstdc++
# is preloaded with it: python does not link it, and ASan resolves its C++ exception interceptor
# at start-up (without it the first C++ throw, in torch or in accord, aborts with a CHECK failure).
# Leak detection is off: the interpreter keeps objects alive at exit by design. Reports are also
# written to files under $ACCORD_SANITIZE_DIR/reports (pytest's output capture and MPI ranks could
# swallow them); any such file fails the run.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PY=${PYTHON:-python3}
PY=$(command -v "$PY")
SANITIZE=${ACCORD_SANITIZE:-address,undefined}
WORK=${ACCORD_SANITIZE_DIR:-$ROOT/build/sanitize}
CXX=${CXX:-c++}
start=$(date +%s)

# 1. Build: a copy of python/accord (without the in-place module) receives the sanitized _C.
mkdir -p "$WORK"
rm -rf "$WORK/python"
mkdir -p "$WORK/python"
cp -r "$ROOT/python/accord" "$WORK/python/"
find "$WORK/python" \( -name '_C*.so' -o -name __pycache__ \) -prune -exec rm -rf {} +
version=$(sed -n 's/^VERSION = "\(.*\)"/\1/p' "$ROOT/setup.py")
echo "== building accord._C with -fsanitize=$SANITIZE in $WORK"
cmake -S "$ROOT" -B "$WORK/cmake" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_COMPILER="$(command -v "$CXX")" -DACCORD_WITH_CUDA=OFF \
  -DACCORD_SANITIZE="$SANITIZE" -DACCORD_VERSION="${version:-0.0.0}" \
  -DPython_EXECUTABLE="$PY" -Dpybind11_DIR="$("$PY" -c 'import pybind11; print(pybind11.get_cmake_dir())')" \
  -DCMAKE_LIBRARY_OUTPUT_DIRECTORY="$WORK/python/accord" >"$WORK/configure.log" 2>&1 \
  || { cat "$WORK/configure.log"; exit 1; }
cmake --build "$WORK/cmake" --target _C --parallel "${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}" \
  >"$WORK/build.log" 2>&1 || { tail -50 "$WORK/build.log"; exit 1; }
built=$(date +%s)

# 2. Run environment.
preload=()
if [[ ",$SANITIZE," == *",address,"* ]]; then
  preload=("$("$CXX" -print-file-name=libasan.so)")
elif [[ ",$SANITIZE," == *",undefined,"* ]]; then
  preload=("$("$CXX" -print-file-name=libubsan.so)")
fi
preload+=("$("$CXX" -print-file-name=libstdc++.so)")
reports="$WORK/reports"
rm -rf "$reports"
mkdir -p "$reports"
export LD_PRELOAD="${preload[*]}${LD_PRELOAD:+ $LD_PRELOAD}"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0:halt_on_error=1:log_path=$reports/asan}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1:log_path=$reports/ubsan}
export PYTHONPATH="$WORK/python:$ROOT/tests${PYTHONPATH:+:$PYTHONPATH}"
export ACCORD_HYPOTHESIS_SCALE=${ACCORD_HYPOTHESIS_SCALE:-0.25}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1

"$PY" - "$WORK" <<'PYEOF'
import sys
import accord
from accord import _C
assert _C.__file__.startswith(sys.argv[1]), f"imported {_C.__file__}, not the sanitized build"
print("== sanitized module:", _C.__file__)
PYEOF
grep -q -e asan -e ubsan <(ldd "$WORK"/python/accord/_C*.so) \
  || { echo "the module is not linked with a sanitizer runtime"; exit 1; }

# 3. Tests. Any report aborts the process (pytest or an MPI rank): the run fails.
status=0
log="$WORK/tests.log"
cd "$ROOT"
# shellcheck disable=SC2086
"$PY" -m pytest -q -x -p no:cacheprovider -rfE \
  tests/test_ops.py tests/test_ops_errors.py tests/test_ops_properties.py \
  "tests/test_adasum.py::test_adasum_mpi[2]" ${PYTEST_ARGS:-} 2>&1 | tee "$log" \
  || status=$?
if compgen -G "$reports/*" >/dev/null || grep -q -E \
    "ERROR: AddressSanitizer|AddressSanitizer: CHECK|runtime error:|SUMMARY: (Address|UndefinedBehavior)Sanitizer" \
    "$log"; then
  for f in "$reports"/*; do
    [[ -e $f ]] && { echo "== sanitizer report $f:"; head -40 "$f"; }
  done
  echo "== sanitizer report(s): see above and $reports, $log"
  if [[ $status == 0 ]]; then status=1; fi
fi
end=$(date +%s)
echo "== sanitize run: build $((built - start)) s, tests $((end - built)) s, total $((end - start)) s, exit $status"
exit "$status"
