"""Buffers and layers past the 32-bit limits (issue: "layers larger than 2^31 elements and buffers
larger than 2 GiB work"). The job needs about 13 GiB (rank 0: two 4 GiB float16 arrays for the
kernel check; then per rank a 4 GiB buffer and Adasum's 2 GiB receive scratch), so it is skipped
where the machine has less memory available."""
import pytest
from launch import requires_mpi, run_mpi

NEEDED_GIB = 14


def available_gib() -> float:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return 0.0


@pytest.mark.mpi
@requires_mpi
@pytest.mark.skipif(available_gib() < NEEDED_GIB,
                    reason=f"needs {NEEDED_GIB} GiB of available memory")
def test_layer_over_2_31_elements_and_4_gib_buffers():
    result = run_mpi("large_buffer_worker.py", 2, timeout=600)
    assert "large buffers OK" in result.output
