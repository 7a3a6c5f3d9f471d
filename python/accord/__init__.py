"""accord: adaptive gradient aggregation for data-parallel deep learning.

Fused CPU/CUDA kernels (``accord.ops``) driven through MPI (mpi4py) or torch.distributed.
"""
from . import ops
from ._C import build_info as _build_info

__version__ = _build_info()["version"]


def build_info() -> dict:
    """What this installation was compiled with: version, CUDA (on/off, archs, visible devices),
    OpenMP and its default thread count, the CPU tile size."""
    return _build_info()
