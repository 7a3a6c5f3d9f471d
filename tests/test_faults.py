"""A fault on one rank ends the whole job with a clear error, never a hang (docs/reliability.md).

Each case runs tests/mpi/faults_worker.py (which uses accord.init() but not _worker.worker_main,
so only accord's own fault handling can end the job) with a launcher timeout far above the
expected time: a hang fails the test through ``timed_out`` instead of hanging the session.
"""
import re
import time

import pytest
from launch import requires_mpi, requires_torch_dist, run_mpi, run_torch

pytestmark = pytest.mark.mpi

# Seconds a faulty job may take to end after the fault (it takes a few; the machine may be
# loaded). Start-up (importing torch on every rank) is not counted.
BOUND = 60
# Short limits for the stall cases (the defaults are 60 s / 300 s).
SHORT = {"ACCORD_TIMEOUT": "6", "ACCORD_STALL_WARNING": "3"}


def _launch(backend, mode, nprocs=4, env=None, timeout=BOUND + 180):
    start = time.time()
    r = _run(backend, mode, nprocs, env, timeout)
    r.ended_at = start + r.wall_s
    return r


def _run(backend, mode, nprocs, env, timeout):
    if backend == "mpi":
        return run_mpi("faults_worker.py", nprocs, args=(mode,), timeout=timeout, check=False,
                       env=env)
    return run_torch("faults_worker.py", nprocs, args=(mode,), timeout=timeout, check=False,
                     env=env)


def _ended_with(result, *needles):
    out = result.output[-12000:]
    assert not result.timed_out, f"the job hung; output tail:\n{out}"
    assert result.returncode != 0, out
    faults = [float(m) for m in re.findall(r"FAULT_AT=([0-9.]+)", result.output)]
    assert faults, out
    took = result.ended_at - min(faults)
    assert took < BOUND, f"the job took {took:.0f} s to end after the fault\n{out}"
    for needle in needles:
        assert needle in result.output, f"{needle!r} not in output:\n{out}"


BACKENDS = [pytest.param("mpi", marks=requires_mpi),
            pytest.param("gloo", marks=requires_torch_dist)]


@pytest.mark.parametrize("backend", BACKENDS)
def test_exception_in_adasum_loop_ends_job(backend):
    r = _launch(backend, "raise-adasum")
    _ended_with(r, "RuntimeError: deliberate failure on rank 3",
                "accord: rank 3", "uncaught RuntimeError")


@requires_mpi
def test_exception_in_optimizer_loop_ends_job():
    pytest.importorskip("torch")
    r = _launch("mpi", "raise-optimizer")
    _ended_with(r, "accord: rank 3", "uncaught RuntimeError: deliberate failure on rank 3")


@pytest.mark.parametrize("backend", BACKENDS)
def test_exception_in_thread_ends_job(backend):
    r = _launch(backend, "raise-thread")
    _ended_with(r, "accord: rank 3", "uncaught ValueError", "in thread 'helper'")


@pytest.mark.parametrize("backend", BACKENDS)
def test_rank_exiting_early_is_named(backend):
    r = _launch(backend, "early-exit")
    _ended_with(r, "rank(s) 3 left the program", "rank 3 (", "EXITED the program")


@pytest.mark.parametrize("backend", BACKENDS)
def test_stalled_rank_times_out_naming_it(backend):
    r = _launch(backend, "stall", env=SHORT)
    _ended_with(r, "STALL WARNING", "TIMEOUT after", "ranks that did not arrive: [3]",
                "allreduce_[adasum](float32[1024])")


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_threads_on_one_communicator_refused(backend):
    r = _launch(backend, "threads")
    _ended_with(r, "ConcurrentCallError", "Two threads must not run collectives")
    assert "double free" not in r.output and "wrong" not in r.output, r.output[-8000:]


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_threads_on_own_communicators_correct(backend):
    r = _launch(backend, "threads-split")
    assert not r.timed_out and r.returncode == 0, r.output[-8000:]
    assert r.output.count("threads OK") == 4


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_fault_exits_cleanly(backend):
    r = _launch(backend, "ok")
    assert not r.timed_out and r.returncode == 0, r.output[-8000:]
    assert r.output.count("loop done") == 4
    assert "accord: rank" not in r.output
