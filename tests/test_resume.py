"""Checkpoint mid-training and resume: bitwise the uninterrupted trajectory for Average, Adasum,
Consensus, Leader SGD, CPSGD and ADPSGD (tests/mpi/resume_worker.py)."""
import pytest
from launch import requires_mpi, run_mpi

pytestmark = pytest.mark.mpi


@requires_mpi
def test_resume_is_bitwise_for_every_method():
    result = run_mpi("resume_worker.py", 3, timeout=300)
    assert "resume_worker OK: 6 methods, size=3" in result.output
