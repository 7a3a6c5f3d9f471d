"""Process-wide communicator and the rank/size queries built on it.

``accord.init()`` picks the communicator once per process; ``rank()``, ``size()``,
``local_rank()`` and ``local_size()`` then answer from it without further communication.
Node-local ranks come from the communicator's ``local_split()`` (ranks sharing memory), never
from launcher environment variables, so they are right under any launcher.
"""

from __future__ import annotations

from typing import Callable

from . import launch_env, profiling
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


def _make_communicator(comm, backend=None, timeout=None) -> Communicator:
    if isinstance(comm, Communicator):
        return comm
    if comm is not None:
        if backend is not None:
            raise ValueError("accord.init(comm, backend=...): give a communicator or a backend, "
                             "not both")
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
    if backend is not None and (not isinstance(backend, str) or not backend):
        raise ValueError(f"accord.init(backend=...): expected 'mpi', 'gloo', 'nccl' or a torch "
                         f"backend string such as 'cpu:gloo,cuda:nccl', got {backend!r}")
    info = launch_env.detect()
    timeout = launch_env.init_timeout(timeout)
    # Only look at torch.distributed if the program already imported it (launch_env does not
    # import torch): if it did not, it cannot have initialised it.
    already = launch_env.torch_distributed_initialized()
    if backend != "mpi" and (backend is not None or already or info.torch_env):
        created = False
        if not already:
            launch_env.init_torch_distributed(backend, timeout, info)
            created = True
        from .comm.torch_dist import TorchCommunicator

        c = TorchCommunicator()
        if created:  # a group the program made itself may legitimately differ from WORLD_SIZE
            launch_env.check_size(c.size, "torch.distributed", info)
        return c
    try:
        from mpi4py import MPI
    except ImportError:
        raise RuntimeError(
            "accord.init(): torch.distributed is not initialised, no torchrun variables are set "
            f"({info.describe()}) and mpi4py is not installed; launch with torchrun, install "
            "mpi4py (and launch with mpirun), or pass a communicator to accord.init(comm)"
        ) from None
    from .comm.mpi import MPICommunicator

    launch_env.check_size(MPI.COMM_WORLD.Get_size(), "mpi", info)
    # A private duplicate keeps accord's messages apart from the program's own traffic; accord
    # owns it, so shutdown() frees it.
    return MPICommunicator(MPI.COMM_WORLD.Dup(), owned=True)


def init(comm=None, *, backend: str | None = None, timeout: float | None = None
         ) -> Communicator:
    """Set the process-wide communicator and return it. Collective over its ranks.

    ``comm`` may be:

    * ``None``: chosen from the launcher (see :mod:`accord.launch_env`): torch.distributed's
      default group if the program initialised it; under torchrun (``RANK``, ``WORLD_SIZE``,
      ``MASTER_ADDR``, ``MASTER_PORT`` set) torch.distributed initialised here (gloo; gloo +
      NCCL when ``LOCAL_RANK`` names a visible GPU); otherwise a duplicate of mpi4py's
      ``MPI.COMM_WORLD``. ``backend=`` forces the choice: ``"mpi"``, or a torch backend
      (``"gloo"``, ``"nccl"``, ``"cpu:gloo,cuda:nccl"``). If the launcher announced N processes
      and the communicator has another size, or the rendezvous does not complete within
      ``timeout`` seconds (default ``ACCORD_INIT_TIMEOUT`` or 300), RuntimeError names the
      variables found;
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
    c = _make_communicator(comm, backend, timeout)
    local = c.local_split()
    _state = (c, local.rank, local.size, c is not comm)
    _set_cross(c, local)
    profiling.set_rank(c.rank)
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
    profiling.flush_timeline()
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


# (cross_rank, cross_size, homogeneous) while initialised: see cross_rank().
_cross: tuple | None = None


def _set_cross(comm: Communicator, local: Communicator) -> None:
    """Node index among the nodes hosting this local rank, from one allgather at init (the
    queries must not communicate: they may be called on some ranks only)."""
    global _cross
    leader = local.allgather_object(comm.rank)[0] if local.size > 1 else comm.rank
    every = comm.allgather_object((leader, local.rank, local.size))
    peers = sorted(ld for ld, lr, _ in every if lr == local.rank)
    _cross = (peers.index(leader), len(peers), len({ls for _, _, ls in every}) == 1)


def cross_rank() -> int:
    """Index of this process's node among the nodes that have a process with this
    :func:`local_rank` (Horovod's cross rank: the rank in the group of processes sharing this
    local rank, one per node, ordered by node)."""
    _require()
    return _cross[0]


def cross_size() -> int:
    """Number of nodes that have a process with this :func:`local_rank` (the node count when
    every node runs the same number of processes)."""
    _require()
    return _cross[1]


def is_homogeneous() -> bool:
    """Whether every node runs the same number of processes."""
    _require()
    return _cross[2]
