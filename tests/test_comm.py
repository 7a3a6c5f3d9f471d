"""Communicator conformance: tests/mpi/comm_worker.py under mpirun and torch.distributed."""

import pytest
from launch import requires_mpi, requires_torch_dist, run_mpi, run_torch

pytestmark = pytest.mark.mpi


@requires_mpi
@pytest.mark.parametrize("nprocs", [1, 2, 3, 4])
def test_mpi_communicator(nprocs):
    result = run_mpi("comm_worker.py", nprocs, timeout=90)
    assert f"comm_worker OK: backend=mpi size={nprocs}" in result.output


@requires_torch_dist
@pytest.mark.parametrize("nprocs", [2, 4])
def test_torch_gloo_communicator(nprocs):
    result = run_torch("comm_worker.py", nprocs, timeout=90)
    assert f"comm_worker OK: backend=gloo size={nprocs}" in result.output


@requires_mpi
def test_mpi_failure_aborts_job():
    result = run_mpi("comm_worker.py", 3, args=("fail",), timeout=60, check=False)
    assert not result.timed_out, result.output[-4000:]
    assert result.returncode != 0
    assert "[rank 2] RuntimeError: deliberate failure" in result.output


@requires_torch_dist
def test_torch_failure_kills_job():
    result = run_torch("comm_worker.py", 3, args=("fail",), timeout=60, check=False)
    assert not result.timed_out, result.output[-4000:]
    assert result.returncode != 0
    assert "[rank 2] RuntimeError: deliberate failure" in result.output
