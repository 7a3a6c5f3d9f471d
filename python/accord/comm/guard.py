"""One thread at a time per communicator, and a record of what each communicator is doing.

Every :class:`~accord.comm.Communicator` method that communicates runs inside its communicator's
:class:`Guard` (``Communicator.__init_subclass__`` wraps them), and so do the multi-call operations
of the layers above (an Adasum reduction, a grouped allreduce) through
:meth:`Communicator.operation`. The guard gives two guarantees:

* **No two threads inside one communicator.** MPI and gloo corrupt memory or mix messages when two
  threads run collectives on one communicator at once. A thread that starts an operation while
  another thread of the same process is inside one on the same communicator gets
  :class:`ConcurrentCallError` at once (nothing is sent). Nested calls of the owning thread (an
  operation's own sendrecvs) pass. Threads that take turns (one finishes before the next
  starts, e.g. joined through a queue or a future) are fine.
* **A progress record.** The outermost entry of each operation bumps a sequence number and records
  what it is, its arguments and when it started; the stall inspector (``accord.comm.watchdog``)
  reads these records from its own thread to warn about, and then fail, operations that do not
  complete, naming the ranks that did not arrive.

The hot path is a lock try-acquire, a few attribute stores and one clock read per operation:
nothing is formatted and no message is sent until the watchdog needs a description.
"""
from __future__ import annotations

import threading
import time
from threading import get_ident

__all__ = ["ConcurrentCallError", "Guard", "describe_args"]

_monotonic = time.monotonic


class ConcurrentCallError(RuntimeError):
    """A thread called into a communicator while another thread was inside it."""


def _thread_name(ident) -> str:
    for t in threading.enumerate():
        if t.ident == ident:
            return t.name
    return f"thread {ident}"


def _describe_one(a) -> str | None:
    shape = getattr(a, "shape", None)
    dtype = getattr(a, "dtype", None)
    if shape is None or dtype is None:
        return None
    return f"{str(dtype).replace('torch.', '')}{list(shape)}"


def describe_args(args) -> str:
    """Short text for a call's buffers (dtype and shape) and small scalars; never the data."""
    parts = []
    for a in args or ():
        d = _describe_one(a)
        if d is not None:
            parts.append(d)
        elif isinstance(a, (int, float, str)) and len(str(a)) <= 40:
            parts.append(repr(a))
    return ", ".join(parts)


class Guard:
    """Per-communicator lock and progress record (see the module doc).

    Fields read by the watchdog (without the lock: a slightly stale or torn read only affects a
    diagnostic): ``seq`` (operations started), ``what``/``args`` (the current or last outermost
    operation), ``inner`` (the method running inside it), ``t_start``, ``t_end`` (None while in
    the operation), ``owner`` (thread ident inside, or None).
    """

    __slots__ = ("_lock", "owner", "depth", "seq", "what", "args", "inner", "inner_args",
                 "t_start", "t_end", "label", "__weakref__")

    def __init__(self, label: str = ""):
        self._lock = threading.Lock()
        self.owner = None
        self.depth = 0
        self.seq = 0
        self.what = None
        self.args = None
        self.inner = None
        self.inner_args = None
        self.t_start = None
        self.t_end = None
        self.label = label

    def enter(self, what: str, args=None) -> None:
        if self.owner == get_ident():
            self.depth += 1
            self.inner = what
            self.inner_args = args
            return
        if not self._lock.acquire(False):
            self._refuse(what, args)
        self.owner = get_ident()
        self.depth = 1
        self.seq += 1
        self.what = what
        self.args = args
        self.inner = self.inner_args = None
        self.t_end = None
        self.t_start = _monotonic()

    def exit(self) -> None:
        self.depth -= 1
        if self.depth == 0:
            self.t_end = _monotonic()
            self.args = self.inner_args = None  # do not keep the caller's buffers alive
            self.owner = None
            self._lock.release()

    def _refuse(self, what, args):
        other = self.owner
        busy = self.what
        raise ConcurrentCallError(
            f"accord: {threading.current_thread().name!r} called {what}"
            f"({describe_args(args)}) on {self.label or 'a communicator'} while "
            f"{_thread_name(other)!r} is inside {busy} (operation #{self.seq}) on it. "
            "Two threads must not run collectives on one communicator at the same time: the "
            "ranks could pair up different calls. Give each thread its own communicator "
            "(e.g. comm.split(0) once per thread, made in the same order on every rank) or make "
            "the threads take turns in the same order on every rank."
        )

    def snapshot(self) -> dict:
        """This record as plain data (for the stall inspector and the cross-rank board)."""
        now = _monotonic()
        t_start, t_end = self.t_start, self.t_end
        inside = self.owner is not None
        what = self.what
        if what is not None:
            what = f"{what}({describe_args(self.args)})" if inside else what
            if inside and self.inner is not None:
                what += f" in {self.inner}({describe_args(self.inner_args)})"
        return {
            "seq": self.seq,
            "inside": inside,
            "what": what,
            "for_s": None if t_start is None else
            (now - t_start if inside or t_end is None else now - t_end),
        }


class Operation:
    """Context manager for :meth:`Communicator.operation` (a class: cheaper than a generator)."""

    __slots__ = ("_guard", "_what", "_args")

    def __init__(self, guard: Guard, what: str, args):
        self._guard, self._what, self._args = guard, what, args

    def __enter__(self):
        self._guard.enter(self._what, self._args)
        return self

    def __exit__(self, *exc):
        self._guard.exit()
        return False
