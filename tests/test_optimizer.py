"""accord.DistributedOptimizer (Average, Sum, Adasum, Consensus) and broadcast_optimizer_state
under mpirun (N = 1, 2, 3, 4) and torch gloo (N = 2): every check of
tests/mpi/optimizer_worker.py runs in one launch per rank count."""
import pytest
from launch import requires_mpi, requires_torch_dist, run_mpi, run_torch

pytestmark = pytest.mark.mpi


@requires_mpi
@pytest.mark.parametrize("nprocs", [1, 2, 3, 4])
def test_optimizer_mpi(nprocs):
    result = run_mpi("optimizer_worker.py", nprocs, timeout=240)
    assert f"all checks passed on {nprocs} ranks (mpi)" in result.output


@requires_torch_dist
def test_optimizer_gloo():
    result = run_torch("optimizer_worker.py", 2, timeout=240)
    assert "all checks passed on 2 ranks (gloo)" in result.output
