"""accord: adaptive gradient aggregation for data-parallel deep learning.

Fused CPU/CUDA kernels (``accord.ops``) driven through MPI (mpi4py) or torch.distributed:
Horovod-style collectives with Sum, Average and Adasum, adaptive consensus aggregation (ACGA),
Leader SGD and adaptive periodic averaging. torch is optional: numpy + mpi4py users can use the
kernels and the collectives without it.
"""
from . import ops
from ._C import build_info as _build_info
from .collectives import (Adasum, Average, ReduceOp, Sum, allgather, allreduce, allreduce_,
                          broadcast, broadcast_, broadcast_parameters, fusion_threshold,
                          grouped_allreduce, grouped_allreduce_, set_consistency_check,
                          set_fusion_threshold)
from .topology import (communicator, init, is_initialized, local_rank, local_size, rank,
                       shutdown, size)

__version__ = _build_info()["version"]


def build_info() -> dict:
    """What this installation was compiled with: version, CUDA (on/off, archs, visible devices),
    OpenMP and its default thread count, the CPU tile size."""
    return _build_info()
