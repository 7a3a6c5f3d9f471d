"""init/shutdown cycles free every communicator accord created and keep memory flat."""
import pytest
from launch import requires_mpi, requires_torch_dist, run_mpi, run_torch

pytestmark = pytest.mark.mpi


@requires_mpi
@pytest.mark.parametrize("nprocs", [1, 3])
def test_init_shutdown_cycles_mpi(nprocs):
    result = run_mpi("lifecycle_worker.py", nprocs, args=("1000",), timeout=300)
    assert f"lifecycle_worker OK: 1000 cycles, backend=mpi size={nprocs}" in result.output


@requires_torch_dist
def test_init_shutdown_cycles_gloo():
    # every cycle creates (and must destroy) process groups: fewer cycles, same checks
    result = run_torch("lifecycle_worker.py", 2, args=("30",), timeout=300)
    assert "lifecycle_worker OK: 30 cycles, backend=gloo size=2" in result.output
