"""Adasum, Sum and Average allreduce under mpirun (N = 1, 2, 3, 5, 8: one rank; one, two and
three levels; folds into cores of 2 and 4) and torch gloo (N = 2, 4): every check of
tests/mpi/adasum_worker.py runs in one launch per rank count. (Each launch costs a few seconds
of torch import per rank on a 2-core CI machine: 4 ranks, a core of two levels with no fold,
is covered by the levels of 8 and the folds of 5.)"""
import pytest
from launch import requires_mpi, requires_torch_dist, run_mpi, run_torch

pytestmark = pytest.mark.mpi


@requires_mpi
@pytest.mark.parametrize("nprocs", [1, 2, 3, 5, 8])
def test_adasum_mpi(nprocs):
    result = run_mpi("adasum_worker.py", nprocs, timeout=180)
    assert f"all checks passed on {nprocs} ranks (mpi)" in result.output


@requires_torch_dist
@pytest.mark.parametrize("nprocs", [2, 4])
def test_adasum_gloo(nprocs):
    result = run_torch("adasum_worker.py", nprocs, timeout=180)
    assert f"all checks passed on {nprocs} ranks (gloo)" in result.output
