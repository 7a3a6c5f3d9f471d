"""Process-wide communicator and the rank/size queries built on it.

``accord.init()`` picks the communicator once per process; ``rank()``, ``size()``,
``local_rank()`` and ``local_size()`` then answer from it without further communication.
Node-local ranks come from the communicator's ``local_split()`` (ranks sharing memory), never
from launcher environment variables, so they are right under any launcher.
"""

from __future__ import annotations

import sys

from .comm.base import Communicator

_NOT_INIT = "accord.init() has not been called"

# (communicator, local_rank, local_size) while initialised.
_state: tuple | None = None


def _make_communicator(comm) -> Communicator:
    if isinstance(comm, Communicator):
        return comm
    if comm is not None:
        module = type(comm).__module__
        if module.startswith("mpi4py"):
            from .comm.mpi import MPICommunicator

            return MPICommunicator(comm)
        if module.startswith("torch"):  # a torch.distributed ProcessGroup
            from .comm.torch_dist import TorchCommunicator

            return TorchCommunicator(comm)
        raise TypeError(
            "accord.init(comm): expected an accord Communicator, an mpi4py communicator or "
            f"a torch.distributed ProcessGroup, got {type(comm).__name__}"
        )
    # Only look at torch.distributed if the program already imported it: if it did not,
    # it cannot have initialised it, and importing torch here would be slow.
    tdist = sys.modules.get("torch.distributed")
    if tdist is not None and tdist.is_available() and tdist.is_initialized():
        from .comm.torch_dist import TorchCommunicator

        return TorchCommunicator()
    try:
        from mpi4py import MPI
    except ImportError:
        raise RuntimeError(
            "accord.init(): torch.distributed is not initialised and mpi4py is not installed; "
            "call torch.distributed.init_process_group() first, install mpi4py, or pass a "
            "communicator to accord.init(comm)"
        ) from None
    from .comm.mpi import MPICommunicator

    # A private duplicate keeps accord's messages apart from the program's own traffic.
    return MPICommunicator(MPI.COMM_WORLD.Dup())


def init(comm=None) -> Communicator:
    """Set the process-wide communicator and return it. Collective over its ranks.

    ``comm`` may be:

    * ``None``: torch.distributed's default group if torch.distributed is initialised,
      otherwise a duplicate of mpi4py's ``MPI.COMM_WORLD``;
    * an mpi4py communicator (wrapped in :class:`~accord.comm.MPICommunicator`, not
      duplicated);
    * a torch.distributed ProcessGroup (wrapped in :class:`~accord.comm.TorchCommunicator`);
    * an :class:`~accord.comm.Communicator`, used as is.

    Calling ``init`` again replaces the communicator (every rank must do so); the previous
    one is simply dropped. MPI and torch.distributed themselves are neither initialised
    beyond what the choice above implies, nor finalised by :func:`shutdown`.
    """
    global _state
    c = _make_communicator(comm)
    local = c.local_split()
    _state = (c, local.rank, local.size)
    return c


def shutdown() -> None:
    """Forget the process-wide communicator. MPI / torch.distributed stay initialised."""
    global _state
    _state = None


def is_initialized() -> bool:
    """Whether :func:`init` has been called (and not undone by :func:`shutdown`)."""
    return _state is not None


def _require() -> tuple:
    if _state is None:
        raise RuntimeError(_NOT_INIT)
    return _state


def communicator() -> Communicator:
    """The active communicator."""
    return _require()[0]


def rank() -> int:
    """This process's rank in the active communicator."""
    return _require()[0].rank


def size() -> int:
    """Number of ranks in the active communicator."""
    return _require()[0].size


def local_rank() -> int:
    """Rank among the processes of the active communicator on this node."""
    return _require()[1]


def local_size() -> int:
    """Number of processes of the active communicator on this node."""
    return _require()[2]
