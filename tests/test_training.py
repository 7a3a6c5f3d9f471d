"""Short real training runs (sklearn digits, 4 ranks) for the gradient-aggregation ops."""
import pytest
from launch import requires_mpi, run_mpi

pytestmark = pytest.mark.mpi


@requires_mpi
def test_training_reaches_accuracy():
    result = run_mpi("training_worker.py", 4, timeout=240)
    assert "all methods reached" in result.output, result.output[-3000:]
