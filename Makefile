# The two entry points (README): `make demo` and `make test`. Each creates .venv on a fresh
# machine, installs the dev requirements and builds accord into it.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
NP ?= 4
# Open MPI refuses to run as root without these; harmless otherwise.
export OMPI_ALLOW_RUN_AS_ROOT := 1
export OMPI_ALLOW_RUN_AS_ROOT_CONFIRM := 1
export OMPI_MCA_rmaps_base_oversubscribe := 1
MPIRUN := $(BIN)/mpirun --oversubscribe --bind-to none -x OMP_NUM_THREADS=1 -x PYTHONUNBUFFERED=1
SOURCES := $(shell find csrc cmake python -type f \( -name '*.cpp' -o -name '*.cu' -o -name '*.cuh' -o -name '*.h' -o -name '*.py' -o -name '*.cmake' \)) CMakeLists.txt setup.py pyproject.toml

.PHONY: demo test sanitize-test studies gpu-test bench install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.deps: requirements-dev.txt | $(BIN)/python
	$(BIN)/pip install -q -r requirements-dev.txt
	touch $@

$(VENV)/.installed: $(VENV)/.deps $(SOURCES)
	$(BIN)/pip install -q --no-build-isolation --no-deps .
	touch $@

install: $(VENV)/.installed

demo: install
	$(MPIRUN) -np $(NP) $(BIN)/python -m accord.demo --json results/demo.json

test: install
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q -rfE --durations=15 -n 2 --dist loadgroup tests

# The kernel tests and a 2-rank Adasum job against an AddressSanitizer + UBSan build of the
# kernels (built in build/sanitize; the installed module is not touched). `make test` runs it
# too, as tests/test_sanitize.py, beside the distributed jobs.
sanitize-test: $(VENV)/.deps
	PYTHON=$(BIN)/python PATH=$(BIN):$$PATH bash tests/sanitize/run.sh

# The four convergence studies (docs/results.md): JSON and PNG under results/studies/.
studies: install
	PYTHON=$(BIN)/python PATH=$(BIN):$$PATH sh benchmarks/studies/run_all.sh

# On a machine with an NVIDIA GPU: CUDA build, single-process GPU tests, MPI ranks sharing a
# GPU, NCCL, compute-sanitizer, the kernel benchmark on the GPU (tests/gpu/run_gpu_tests.sh).
gpu-test: $(VENV)/.deps
	bash tests/gpu/run_gpu_tests.sh $(BIN)

bench: install
	$(BIN)/python benchmarks/kernels.py --json results/kernels_cpu.json

clean:
	rm -rf build $(VENV) python/*.egg-info
