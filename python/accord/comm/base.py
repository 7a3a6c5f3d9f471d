"""The communicator interface every accord algorithm is written against.

A :class:`Communicator` is a small, synchronous set of point-to-point and collective
operations over a fixed, ordered group of processes (ranks ``0 .. size-1``). It plays the
role of the communicator abstraction in Horovod's ``adasum.h``: algorithms such as VHDD
Adasum only ever call these methods, so they run unchanged over MPI (mpi4py) or
torch.distributed.

Buffer conventions shared by every method that takes a buffer:

* A buffer is a numpy array or a torch tensor (torch is optional: it is never imported by
  this module, and numpy-only users never need it).
* Buffers are contiguous; they are treated as flat arrays of ``buf.size`` / ``buf.numel()``
  elements (a contiguous multi-dimensional buffer is accepted and handled as its flat view).
  Element counts may be zero.
* Matching buffers on different ranks have the same dtype; the element counts the call
  describes (per method, below) must agree between ranks, as in MPI.
* Every call is blocking: when it returns, send buffers may be reused and receive buffers
  hold their final contents. Implementations may stage through temporaries (e.g. CUDA ->
  host, bfloat16 -> float32) but results always land in the caller's buffer.
* Collective calls must be made by every rank of the communicator, in the same order.
* One thread at a time per communicator: a thread that calls in while another thread is inside
  gets ``ConcurrentCallError`` (``accord.comm.guard``). Different communicators may be used
  from different threads at once.
* Calls that do not complete within ``accord.settings.timeout()`` end the job with an error
  naming the call and the ranks that did not arrive (``accord.comm.watchdog``).
"""

from __future__ import annotations

import abc
import functools
from typing import Any, Callable

from .guard import Guard, Operation

_REDUCE_OPS = ("sum", "max", "min", "prod")
# The methods that communicate: each runs inside the communicator's Guard (one thread at a time,
# progress record for the stall inspector). Subclasses' definitions are wrapped automatically.
_GUARDED = ("sendrecv", "allreduce_small", "allreduce_", "allgather", "allgather_object",
            "broadcast_", "alltoall", "barrier", "split", "local_split")


def _guarded(name: str, fn):
    @functools.wraps(fn)
    def call(self, *args, **kwargs):
        g = self._guard
        if g is None:
            g = self._make_guard()
        g.enter(name, args)
        try:
            return fn(self, *args, **kwargs)
        finally:
            g.exit()

    call.__accord_guarded__ = True
    return call


def check_op(op: str) -> str:
    if op not in _REDUCE_OPS:
        raise ValueError(f"unsupported reduction op {op!r}; expected one of {_REDUCE_OPS}")
    return op


def check_scale(scale, is_float: bool):
    """``scale`` of :meth:`Communicator.allreduce_`: None or a number, floating buffers only."""
    if scale is None or scale == 1.0:
        return None
    if not is_float:
        raise TypeError("allreduce_(scale=...) needs a floating-point buffer; an integer "
                        "buffer cannot hold the scaled values")
    return float(scale)


class Communicator(abc.ABC):
    """Abstract communicator over an ordered group of ``size`` ranks.

    Subclasses: :class:`accord.comm.MPICommunicator` (mpi4py) and
    :class:`accord.comm.TorchCommunicator` (torch.distributed).
    """

    #: Short transport name: ``"mpi"``, or the torch.distributed backend (``"gloo"``,
    #: ``"nccl"``, ...).
    backend: str = ""

    # Implementations set ``_rank`` and ``_size`` at construction (a communicator's group is fixed).
    _rank: int
    _size: int
    #: Whether accord created the underlying handle (a duplicate, a split) and so frees it in
    #: :meth:`close`; a handle the program passed in stays the program's.
    owned: bool = False
    _closed: bool = False
    _guard: Guard | None = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for name in _GUARDED:
            fn = cls.__dict__.get(name)
            if fn is not None and callable(fn) and not getattr(fn, "__accord_guarded__", False) \
                    and not getattr(fn, "__isabstractmethod__", False):
                setattr(cls, name, _guarded(name, fn))

    def _make_guard(self) -> Guard:
        from . import watchdog  # registers the communicator with the stall inspector

        g = self.__dict__.get("_guard")
        if g is None:
            g = self._guard = Guard(f"{type(self).__name__}(backend={self.backend}, "
                                    f"size={self.size})")
            watchdog.watch(self)
        return g

    def operation(self, what: str, args=()) -> Operation:
        """Context manager making a multi-call operation (an Adasum reduction, a fused allreduce)
        one unit for the guard: no other thread may enter this communicator until it ends, and
        the stall inspector reports ``what`` (plus the method running inside it). Nestable.
        A thread entering while another thread is inside gets
        :class:`~accord.comm.guard.ConcurrentCallError` on entry (see ``accord.comm.guard``)."""
        g = self._guard
        if g is None:
            g = self._make_guard()
        return Operation(g, what, args)

    @property
    def progress(self) -> dict:
        """What this communicator is doing: ``seq`` (operations started), ``inside`` (one is
        running), ``what`` (it, or the last one), ``for_s`` (seconds inside it, or since it
        ended)."""
        g = self._guard
        if g is None:
            g = self._make_guard()
        return g.snapshot()

    @property
    def rank(self) -> int:
        """This process's rank in the communicator, ``0 <= rank < size``."""
        return self._rank

    @property
    def size(self) -> int:
        """Number of ranks in the communicator."""
        return self._size

    # -- point to point ------------------------------------------------------------------

    @abc.abstractmethod
    def sendrecv(self, sendbuf, dest: int, recvbuf, source: int) -> None:
        """Send ``sendbuf`` to rank ``dest`` while receiving ``recvbuf`` from ``source``.

        Both transfers proceed concurrently (no deadlock when two ranks exchange with each
        other) and the call returns once both have completed. ``sendbuf`` and ``recvbuf`` may
        have different lengths, and either may be empty; the receive length must equal the
        length ``source`` sends. ``dest == source == rank`` copies ``sendbuf`` into
        ``recvbuf``. The buffers must not overlap. This is on the Adasum hot path (one call
        per level), so implementations keep per-call overhead to a minimum.
        """

    # -- collectives ---------------------------------------------------------------------

    @abc.abstractmethod
    def allreduce_small(self, values, op: str = "sum"):
        """Reduce a small host array element-wise over all ranks; return a new numpy array.

        ``values`` is a 1-D numpy array (or array-like) of float64 or int64, typically a few
        per-layer scalars (e.g. ``3*L`` dot products) or a signature to compare across ranks.
        ``op`` is ``"sum"``, ``"max"``, ``"min"`` or ``"prod"``. Every rank gets the same
        result, of the same dtype and shape as ``values``; ``values`` itself is not modified.
        Called once per Adasum level, so it must be cheap.
        """

    @abc.abstractmethod
    def allreduce_(self, buf, op: str = "sum", *, scale: float | None = None):
        """Reduce ``buf`` element-wise over all ranks, in place; return ``buf``.

        For large buffers (plain Sum/Average, benchmark baseline). ``op`` is ``"sum"``,
        ``"max"``, ``"min"`` or ``"prod"``. ``scale`` (floating-point buffers only) multiplies the
        reduced values before they are written back: Average is ``op="sum", scale=1/N``. float16
        and bfloat16 are reduced and scaled in float32 and rounded once at the end, so a mean that
        fits the 16-bit type is not lost to an overflowing 16-bit sum. Every rank must pass the
        same number of elements and dtype.
        """

    @abc.abstractmethod
    def allgather(self, sendbuf, recvbuf) -> None:
        """Gather ``sendbuf`` from every rank into ``recvbuf``, in rank order.

        ``recvbuf`` holds ``size * len(sendbuf)`` elements; block ``j`` (elements
        ``j*n .. (j+1)*n``) receives rank ``j``'s ``sendbuf``. All ranks send the same count.
        """

    @abc.abstractmethod
    def allgather_object(self, obj: Any) -> list:
        """Gather one picklable object per rank; return the rank-ordered list.

        For setup and validation only (it pickles), never on the hot path.
        """

    @abc.abstractmethod
    def broadcast_(self, buf, root: int):
        """Overwrite ``buf`` on every rank with ``root``'s ``buf``, in place; return ``buf``."""

    @abc.abstractmethod
    def alltoall(self, sendbuf, recvbuf) -> None:
        """Exchange equal blocks between all pairs of ranks.

        ``sendbuf`` and ``recvbuf`` both hold ``size * block`` elements (``block`` may be
        0). Block ``i`` of ``sendbuf`` goes to rank ``i``; block ``j`` of ``recvbuf`` comes
        from rank ``j``.
        """

    @abc.abstractmethod
    def barrier(self) -> None:
        """Block until every rank of the communicator has entered the barrier."""

    @property
    def threads_ok(self) -> bool:
        """Whether a background thread may communicate on this communicator while the main
        thread calls the transport too (MPI needs ``MPI_THREAD_MULTIPLE``; SERIALIZED is not
        enough). The optimizer and the DDP hooks reduce on the calling thread otherwise."""
        return True

    # -- communicator management ---------------------------------------------------------

    @abc.abstractmethod
    def split(self, color: int | None, key: int | None = None) -> "Communicator | None":
        """Partition this communicator by ``color``; return this rank's part.

        Collective: every rank calls it. Ranks passing the same non-negative ``color`` end up
        in the same new communicator, ordered by ``key`` (default: this rank) and then by
        rank in this communicator. A rank passing ``color=None`` joins no part and gets
        ``None``. Callers are expected to keep the result; implementations return the cached
        communicator when the same partition (every rank's ``(color, key)``) is requested
        again, so repeated calls do not leak communicators.
        """

    @abc.abstractmethod
    def local_split(self) -> "Communicator":
        """Communicator of the ranks of this communicator on this node (shared memory).

        Collective on first call; cached afterwards. Ranks keep their relative order.
        """

    @abc.abstractmethod
    def abort(self, code: int = 1) -> None:
        """Terminate the whole job with exit status ``code``, without waiting for other ranks.

        Use after an unrecoverable error on one rank so that peers blocked in a collective
        do not hang. Does not return.
        """

    # -- lifetime -------------------------------------------------------------------------

    def derived(self, key, make: Callable[[], Any]) -> Any:
        """An object built from this communicator (an Adasum reducer, a node topology), made by
        ``make()`` on first use and kept until :meth:`close`, so its lifetime is the
        communicator's rather than the process's. ``make`` may be collective: every rank asks
        for the same keys in the same order."""
        cache = self.__dict__.setdefault("_derived", {})
        if key not in cache:
            cache[key] = make()
        return cache[key]

    def close(self) -> None:
        """Release what accord made for this communicator: cached derived objects, the
        sub-communicators of :meth:`split` and :meth:`local_split`, and the underlying handle if
        accord created it (:attr:`owned`). Collective; idempotent. The communicator cannot be
        used afterwards."""
        if self._closed:
            return
        self.release()
        self._closed = True
        if self.owned:
            self._free()

    def release(self) -> None:
        """Drop what accord derived from this communicator (cached objects, sub-communicators)
        but keep the communicator itself usable; :meth:`close` does this first. Collective."""
        self.__dict__.pop("_derived", None)
        subs = list(getattr(self, "_splits", {}).values())
        local = getattr(self, "_local", None)
        if local is not None and all(local is not s for s in subs):
            subs.append(local)
        self._splits, self._local = {}, None
        for sub in subs:
            if sub is not None:
                sub.close()

    def _free(self) -> None:
        """Free the underlying handle (called by :meth:`close` when :attr:`owned`)."""

    @property
    def closed(self) -> bool:
        return self._closed

    def __repr__(self) -> str:
        return f"<{type(self).__name__} backend={self.backend} rank={self.rank} size={self.size}>"
