"""A communicator wrapper that counts the bytes each rank sends.

Every accord algorithm talks to the network only through its Communicator, so wrapping the
communicator a method is given measures what that method really sends, including the small
messages (consistency checks, scores, Gram entries) next to the big ones.

What is charged per call (bytes of the buffers handed to the communicator, N = its size):

    sendrecv          the message, when it goes to another rank
    allreduce_(_small) 2 (N-1)/N x the buffer    (ring / reduce-scatter + allgather)
    allgather         (N-1) x the send buffer    (every other rank needs this rank's block)
    allgather_object  (N-1) x the pickled object
    alltoall          (N-1)/N x the send buffer  (all blocks but this rank's own)
    broadcast_        (N-1)/N x the buffer       (a pipelined broadcast: N-1 copies leave some
                                                 rank, spread over N ranks)

Collectives are charged the per-rank volume of a bandwidth-optimal implementation, not what
the MPI library happens to do for that size (which it does not report); point-to-point
messages are exact. The sum over ranks divided by N is "bytes per rank".
"""
from __future__ import annotations

import pickle
import threading

import numpy as np

from ..comm import Communicator


def nbytes(buf) -> int:
    if isinstance(buf, np.ndarray):
        return buf.nbytes
    if hasattr(buf, "element_size"):  # torch tensor
        return buf.numel() * buf.element_size()
    return np.asarray(buf).nbytes


class _Counter:
    # The DistributedOptimizer communicates from a background thread: count under a lock.
    def __init__(self):
        self.bytes = 0.0
        self.lock = threading.Lock()

    def add(self, n: float) -> None:
        with self.lock:
            self.bytes += n


class CountingCommunicator(Communicator):
    """Forwards every call to ``inner`` and adds the bytes this rank sends to ``bytes``.
    Sub-communicators from ``split``/``local_split`` (Leader SGD's groups) are wrapped too
    and share the counter."""

    def __init__(self, inner: Communicator, counter: _Counter | None = None):
        self.inner = inner
        self.counter = counter or _Counter()
        self._rank, self._size = inner.rank, inner.size
        self.backend = inner.backend
        self._local = None

    @property
    def bytes(self) -> float:
        return self.counter.bytes

    def __getattr__(self, name):
        # e.g. mpi_comm: the optimizer asks the MPI thread level through it
        return getattr(self.inner, name)

    def _allreduce_share(self, n: int) -> float:
        return 2.0 * (self._size - 1) / self._size * n

    def sendrecv(self, sendbuf, dest, recvbuf, source):
        if dest != self._rank:
            self.counter.add(nbytes(sendbuf))
        return self.inner.sendrecv(sendbuf, dest, recvbuf, source)

    def allreduce_small(self, values, op="sum"):
        self.counter.add(self._allreduce_share(np.asarray(values).nbytes))
        return self.inner.allreduce_small(values, op)

    def allreduce_(self, buf, op="sum", *, scale=None):
        self.counter.add(self._allreduce_share(nbytes(buf)))
        return self.inner.allreduce_(buf, op, scale=scale)

    @property
    def threads_ok(self) -> bool:
        return self.inner.threads_ok

    def allgather(self, sendbuf, recvbuf):
        self.counter.add((self._size - 1) * nbytes(sendbuf))
        return self.inner.allgather(sendbuf, recvbuf)

    def allgather_object(self, obj):
        self.counter.add((self._size - 1) * len(pickle.dumps(obj)))
        return self.inner.allgather_object(obj)

    def broadcast_(self, buf, root):
        self.counter.add((self._size - 1) / self._size * nbytes(buf))
        return self.inner.broadcast_(buf, root)

    def alltoall(self, sendbuf, recvbuf):
        self.counter.add((self._size - 1) / self._size * nbytes(sendbuf))
        return self.inner.alltoall(sendbuf, recvbuf)

    def barrier(self):
        return self.inner.barrier()

    def split(self, color, key=None):
        sub = self.inner.split(color, key)
        return None if sub is None else CountingCommunicator(sub, self.counter)

    def local_split(self):
        if self._local is None:  # cached, as the interface promises
            self._local = CountingCommunicator(self.inner.local_split(), self.counter)
        return self._local

    def abort(self, code=1):
        self.inner.abort(code)
