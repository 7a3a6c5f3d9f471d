"""Leader SGD under mpirun (N = 1, 2, 3, 4) and torch gloo (N = 2): every check of
tests/mpi/leader_worker.py (numpy reference of the pulls, leader selection, ties, groups,
common-batch mode, broadcast-only traffic, state round trip, bad input) in one launch per rank
count; the 4-rank MPI launch also trains an MLP on sklearn digits to >= 85% test accuracy."""
import pytest
from launch import requires_mpi, requires_torch_dist, run_mpi, run_torch

pytestmark = pytest.mark.mpi


@requires_mpi
@pytest.mark.parametrize("nprocs", [1, 2, 3, 4])
def test_leader_mpi(nprocs):
    args = ("--train",) if nprocs == 4 else ()
    result = run_mpi("leader_worker.py", nprocs, args=args, timeout=180)
    assert f"all checks passed on {nprocs} ranks (mpi)" in result.output
    if nprocs == 4:
        assert "lsgd digits:" in result.output


@requires_torch_dist
def test_leader_gloo():
    result = run_torch("leader_worker.py", 2, timeout=180)
    assert "all checks passed on 2 ranks (gloo)" in result.output
