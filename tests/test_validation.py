"""Bad input is an error on every rank before anything is written, and the collectives' numerics
(16-bit Average, NaN/Inf policy): tests/mpi/validation_worker.py on MPI and on gloo. A check
that fails on one rank alone used to leave the other ranks waiting: the timeout makes that a
failure here."""
import pytest
from launch import requires_mpi, requires_torch_dist, run_mpi, run_torch

pytestmark = pytest.mark.mpi


@requires_mpi
def test_bad_input_and_numerics_mpi():
    result = run_mpi("validation_worker.py", 3, timeout=240)
    assert "validation_worker OK: backend=mpi size=3" in result.output


@requires_torch_dist
def test_bad_input_and_numerics_gloo():
    result = run_torch("validation_worker.py", 2, timeout=240)
    assert "validation_worker OK: backend=gloo size=2" in result.output
