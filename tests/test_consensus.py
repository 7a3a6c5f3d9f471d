"""ACGA (accord.consensus) under mpirun (N = 1..5) and torch gloo (N = 2): every check of
tests/mpi/consensus_worker.py (both weightings x both granularities, momentum and state
round-trips, the inverse permutation, degenerate and non-finite inputs, every dtype, bitwise
identity across ranks, mismatched calls) runs in one launch per rank count."""
import pytest
from launch import requires_mpi, requires_torch_dist, run_mpi, run_torch

pytestmark = pytest.mark.mpi


@requires_mpi
@pytest.mark.parametrize("nprocs", [1, 2, 3, 4, 5])
def test_consensus_mpi(nprocs):
    # torch (bfloat16, tensors through MPI) on 1 to 3 ranks; the gloo run covers it at 2
    args = ("--no-torch",) if nprocs > 3 else ()
    result = run_mpi("consensus_worker.py", nprocs, args=args, timeout=180)
    assert f"all checks passed on {nprocs} ranks (mpi)" in result.output


@requires_torch_dist
@pytest.mark.parametrize("nprocs", [2])
def test_consensus_gloo(nprocs):
    result = run_torch("consensus_worker.py", nprocs, timeout=180)
    assert f"all checks passed on {nprocs} ranks (gloo)" in result.output
