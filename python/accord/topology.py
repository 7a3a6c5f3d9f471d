"""Process-wide communicator and the rank/size queries built on it.

``accord.init()`` picks the communicator once per process; ``rank()``, ``size()``,
``local_rank()`` and ``local_size()`` then answer from it without further communication.
Node-local ranks come from the communicator's ``local_split()`` (ranks sharing memory), never
from launcher environment variables, so they are right under any launcher.
"""

from __future__ import annotations

import sys
from typing import Callable

from .comm import watchdog
from .comm.base import Communicator

_NOT_INIT = "accord.init() has not been called"

# (communicator, local_rank, local_size, whether accord made the communicator) while initialised.
_state: tuple | None = None

# Process-wide caches of the layers above (fusion scratch, hook communicators) register here
# to be dropped by shutdown(), without this module importing them.
_RELEASE_HOOKS: list = []


def on_shutdown(release: Callable[[], None]) -> None:
    """Call ``release()`` at every :func:`shutdown` (and re-:func:`init`)."""
    if release not in _RELEASE_HOOKS:
        _RELEASE_HOOKS.append(release)


def _make_communicator(comm) -> Communicator:
    if isinstance(comm, Communicator):
        return comm
    if comm is not None:
        module = type(comm).__module__
        if module.startswith("mpi4py"):
            from .comm.mpi import MPICommunicator

            return MPICommunicator(comm)  # raises a clear error for MPI.COMM_NULL
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

    # A private duplicate keeps accord's messages apart from the program's own traffic; accord
    # owns it, so shutdown() frees it.
    return MPICommunicator(MPI.COMM_WORLD.Dup(), owned=True)


def init(comm=None) -> Communicator:
    """Set the process-wide communicator and return it. Collective over its ranks.

    ``comm`` may be:

    * ``None``: torch.distributed's default group if torch.distributed is initialised,
      otherwise a duplicate of mpi4py's ``MPI.COMM_WORLD``;
    * an mpi4py communicator (wrapped in :class:`~accord.comm.MPICommunicator`, not
      duplicated);
    * a torch.distributed ProcessGroup (wrapped in :class:`~accord.comm.TorchCommunicator`);
    * an :class:`~accord.comm.Communicator`, used as is.

    Calling ``init`` again replaces the communicator (every rank must do so), releasing the
    previous one as :func:`shutdown` does.

    From here until :func:`shutdown`, faults end the job with an error instead of a hang
    (``accord.comm.watchdog``): an uncaught exception on any rank, in any thread, aborts the job
    naming the rank; a rank that exits while others still wait for it is named; an operation
    that does not complete within ``accord.settings.timeout()`` aborts the job naming it and the
    ranks that did not arrive. MPI and torch.distributed themselves are neither
    initialised beyond what the choice above implies, nor finalised by :func:`shutdown`.
    """
    global _state
    if _state is not None:
        shutdown()
    c = _make_communicator(comm)
    local = c.local_split()
    _state = (c, local.rank, local.size, c is not comm)
    # Faults end the job with an error instead of a hang: exception hooks, exit notice, the
    # cross-rank stall report (accord.comm.watchdog).
    watchdog.install(c)
    return c


def shutdown() -> None:
    """Release the process-wide communicator and everything accord built on it: the duplicate
    of COMM_WORLD that ``init()`` made, sub-communicators and process groups accord created,
    cached reducers and fusion scratch. A communicator the program passed to :func:`init`
    stays the program's (only what accord derived from it is freed). Collective. MPI and
    torch.distributed stay initialised."""
    global _state
    state, _state = _state, None
    if state is not None:
        watchdog.uninstall()
    for release in _RELEASE_HOOKS:
        release()
    if state is not None:
        comm, _, _, made_here = state
        if made_here:
            comm.close()
        else:  # a Communicator the program passed in stays usable: only accord's state goes
            comm.release()


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
