"""Communicators: the transport layer accord's algorithms are written against.

``Communicator`` is the interface; ``MPICommunicator`` (mpi4py) and ``TorchCommunicator``
(torch.distributed) implement it. The implementations are imported on first access, so
``import accord.comm`` needs neither mpi4py (importing it initialises MPI) nor torch.
"""

from .base import Communicator

__all__ = ["Communicator", "MPICommunicator", "TorchCommunicator"]


def __getattr__(name):
    if name == "MPICommunicator":
        from .mpi import MPICommunicator

        return MPICommunicator
    if name == "TorchCommunicator":
        from .torch_dist import TorchCommunicator

        return TorchCommunicator
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
