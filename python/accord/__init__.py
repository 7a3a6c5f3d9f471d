"""accord: adaptive gradient aggregation for data-parallel deep learning.

Fused CPU/CUDA kernels (``accord.ops``) driven through MPI (mpi4py) or torch.distributed:
Horovod-style collectives with Sum, Average and Adasum, adaptive consensus aggregation (ACGA),
Leader SGD and adaptive periodic averaging. torch is optional: numpy + mpi4py users can use the
kernels and the collectives without it.
"""
from . import ops
from ._C import build_info as _build_info
from .reduce_op import Adasum, Average, Consensus, Max, Min, Product, ReduceOp, Sum
from .settings import (fusion_threshold, nonfinite, set_consistency_check, set_fusion_threshold,
                       set_nonfinite, set_stall_warning, set_timeout, stall_warning, timeout)
from .compression import Compression
from .profiling import start_timeline, stop_timeline
# The top-level collectives carry Horovod's signatures (accord.api over accord.collectives).
from .api import (Handle, allgather, allgather_async, allgather_object, allreduce, allreduce_,
                  allreduce_async, allreduce_async_, barrier, broadcast, broadcast_,
                  broadcast_async, broadcast_async_, broadcast_object, broadcast_parameters,
                  ccl_built, cuda_built, ddl_built, gloo_built, gloo_enabled,
                  grouped_allreduce, grouped_allreduce_, grouped_allreduce_async,
                  grouped_allreduce_async_, join, mpi_built, mpi_enabled, mpi_threads_supported,
                  nccl_built, poll, rocm_built, synchronize)
from .collectives import nonfinite_skips
from .topology import (communicator, cross_rank, cross_size, init, is_homogeneous,
                       is_initialized, local_rank, local_size, rank, shutdown, size)
from .averaging import AdaptivePeriodicAverager, PeriodicAverager
from .leader import LeaderSGD
from .consensus import ConsensusAggregator

__version__ = _build_info()["version"]

# torch-only faces, imported on first use so that `import accord` does not need torch.
_LAZY = {"DistributedOptimizer": "optimizer", "broadcast_optimizer_state": "optimizer_state",
         "hooks": None}


def __getattr__(name):
    if name in _LAZY:
        import importlib
        module = importlib.import_module(f".{_LAZY[name] or name}", __name__)
        return module if _LAZY[name] is None else getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build_info() -> dict:
    """What this installation was compiled with: version, CUDA (on/off, archs, visible devices),
    OpenMP and its default thread count, the CPU tile size."""
    return _build_info()
