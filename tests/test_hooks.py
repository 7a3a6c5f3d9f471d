"""accord.hooks (adasum_hook, consensus_hook, with torch's fp16/bf16 compression wrappers) in
DistributedDataParallel on gloo, N = 2 and 3: one launch of tests/mpi/hooks_worker.py each."""
import pytest
from launch import requires_torch_dist, run_torch

pytestmark = pytest.mark.mpi


@requires_torch_dist
@pytest.mark.parametrize("nprocs", [2, 3])
def test_hooks_gloo(nprocs):
    result = run_torch("hooks_worker.py", nprocs, timeout=240)
    assert f"all checks passed on {nprocs} ranks (gloo)" in result.output
