"""The top-level collectives, with Horovod's ``horovod.torch`` signatures.

``import accord as hvd`` runs a Horovod PyTorch script; ``docs/horovod.md`` maps every name.
These functions validate Horovod's arguments and hand the work to :mod:`accord.collectives`
(which keeps accord's own keyword-only ``comm=`` / ``hierarchical=``, accepted here too):

* ``op=`` (default Average) or the deprecated ``average=`` flag (DeprecationWarning; ``True``
  is Average, ``False`` Sum). An op passed positionally where Horovod has ``average``
  (``accord.allreduce(t, accord.Adasum)``) is taken as the op.
* ``name=``: shown in error messages (``allreduce(name='loss'): ...``) and in profiler ranges
  (``accord.allreduce[loss]``). It does not match tensors across ranks: accord matches
  collectives by call order (every rank issues the same collectives in the same order).
* ``prescale_factor`` / ``postscale_factor``: the input is multiplied before the reduction and
  the result after it (Average's 1/size comes in between).
* ``compression=``: ``accord.Compression.none`` / ``.fp16`` / ``.bf16`` (see
  :mod:`accord.compression`; with Adasum the 16-bit values are what the exchanges carry).
* ``process_set=``: accord has no process-set registry; pass an accord Communicator (for example
  ``accord.communicator().split(color)``), the same as ``comm=``.

Asynchronous variants (``allreduce_async(_)``, ``grouped_allreduce_async(_)``,
``broadcast_async(_)``, ``allgather_async``) return a handle, a
``concurrent.futures.Future``; ``synchronize(handle)`` waits and returns the result,
``poll(handle)`` says whether it is done. They run on one background thread per communicator,
in call order, so every rank issues the collectives in the same order. A blocking collective
called while async ones are pending on the same communicator is queued behind them on that
thread (and waited for), so the order is kept there too. Inputs are read when the operation
runs: do not modify a tensor until its handle is synchronized (in-place variants write the
result into it then). Under MPI the worker thread needs ``MPI_THREAD_MULTIPLE`` when the
program makes its own MPI calls concurrently (mpi4py requests it by default; see
:func:`mpi_threads_supported`).
"""
from __future__ import annotations

import math
import pickle
import threading
import time
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Callable, Sequence, Union

import numpy as np

from . import collectives as _c
from . import profiling, topology
from ._buffers import is_tensor, scale_
from .comm.base import Communicator
from .compression import Compression, check_compression, is_none
from .reduce_op import ReduceOp, parse_op

__all__ = ["allreduce", "allreduce_", "grouped_allreduce", "grouped_allreduce_", "broadcast",
           "broadcast_", "broadcast_parameters", "allgather", "allreduce_async",
           "allreduce_async_", "grouped_allreduce_async", "grouped_allreduce_async_",
           "broadcast_async", "broadcast_async_", "allgather_async", "synchronize", "poll",
           "broadcast_object", "allgather_object", "barrier", "join", "mpi_threads_supported",
           "mpi_built", "mpi_enabled", "gloo_built", "gloo_enabled", "nccl_built", "cuda_built",
           "rocm_built", "ddl_built", "ccl_built", "Handle"]

#: What the asynchronous functions return.
Handle = Future

if TYPE_CHECKING:
    import torch

    #: A torch tensor (CPU or CUDA) or a numpy array.
    Buffer = Union[torch.Tensor, np.ndarray]
else:
    Buffer = Any


# ---------------------------------------------------------------------------------------------
# argument handling


def _resolve_op(op, average, where: str) -> ReduceOp:
    if average is not None:
        if op is None and isinstance(average, (ReduceOp, str)):
            return parse_op(average, _c.ALLREDUCE_OPS, "op")  # accord's positional op
        if op is not None:
            raise ValueError(f"{where}: give op= or the deprecated average=, not both")
        warnings.warn(f"{where}: average= is deprecated; use op=accord.Average or "
                      "op=accord.Sum", DeprecationWarning, stacklevel=4)
        return ReduceOp.AVERAGE if average else ReduceOp.SUM
    return parse_op(ReduceOp.AVERAGE if op is None else op, _c.ALLREDUCE_OPS, "op")


def _resolve_comm(process_set, comm, where: str) -> Communicator:
    if process_set is not None:
        if not isinstance(process_set, Communicator):
            raise TypeError(
                f"{where}: process_set must be None or an accord Communicator (accord has no "
                "Horovod process sets: use accord.communicator().split(color) and pass the "
                f"result as process_set= or comm=), got {type(process_set).__name__}")
        if comm is not None and comm is not process_set:
            raise ValueError(f"{where}: process_set and comm name different communicators")
        comm = process_set
    return comm if comm is not None else topology.communicator()


def _factor(value, what: str, where: str) -> float:
    if type(value) is float and math.isfinite(value):
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            isinstance(value, float) and not math.isfinite(value) or \
            isinstance(value, int) and abs(value) > 2 ** 1023:
        raise ValueError(f"{where}: {what} must be a finite number, got {value!r}")
    return float(value)


def _where(fn: str, name) -> str:
    return f"{fn}(name={name!r})" if name is not None else fn


def _reraise(e: BaseException, where: str):
    """Re-raise ``e`` with ``where`` (the function and its name=) in front of its message."""
    try:
        new = type(e)(f"{where}: {e}")
    except Exception:
        raise e
    raise new.with_traceback(e.__traceback__) from e


class _Call:
    """A collective's context: the profiler range and the name= in error messages."""
    __slots__ = ("where", "span")

    def __init__(self, fn: str, name):
        self.where = _where(fn, name)
        self.span = profiling.span(f"accord.{fn}" if name is None else f"accord.{fn}[{name}]") \
            if profiling.active() else None

    def __enter__(self):
        if self.span is not None:
            self.span.__enter__()
        return self

    def __exit__(self, et, e, tb):
        if self.span is not None:
            self.span.__exit__(et, e, tb)
        if isinstance(e, (ValueError, TypeError, RuntimeError)) and not str(e).startswith(
                self.where):
            _reraise(e, self.where)
        return False


# ---------------------------------------------------------------------------------------------
# ordering: one worker thread per communicator


class _Worker:
    def __init__(self):
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="accord-async")
        self.pending = 0
        self.lock = threading.Lock()

    def submit(self, fn: Callable, *args) -> Future:
        with self.lock:
            self.pending += 1
        return self.executor.submit(self._run, fn, args)

    def _run(self, fn, args):
        try:
            return fn(*args)
        finally:
            with self.lock:
                self.pending -= 1


_WORKERS: dict = {}


def _release_workers() -> None:
    workers = list(_WORKERS.values())
    _WORKERS.clear()
    for w in workers:
        w.executor.shutdown(wait=True)


topology.on_shutdown(_release_workers)


def _submit(comm, fn, *args) -> Future:
    w = _WORKERS.get(comm)
    if w is None:
        w = _WORKERS[comm] = _Worker()
    return w.submit(fn, *args)


def _blocking(comm, fn, *args):
    """Run now, or behind the pending async operations of ``comm`` (module doc)."""
    w = _WORKERS.get(comm)
    if w is not None and w.pending:
        return w.submit(fn, *args).result()
    return fn(*args)


def synchronize(handle: Future):
    """Wait for an asynchronous operation; return its result (the output tensor(s))."""
    if not isinstance(handle, Future):
        raise TypeError(f"synchronize(handle): expected a handle returned by an accord *_async "
                        f"function, got {type(handle).__name__}")
    with profiling.span("accord.wait"):
        return handle.result()


def poll(handle: Future) -> bool:
    """Whether the asynchronous operation of ``handle`` has finished (never blocks)."""
    if not isinstance(handle, Future):
        raise TypeError(f"poll(handle): expected a handle returned by an accord *_async "
                        f"function, got {type(handle).__name__}")
    return handle.done()


# ---------------------------------------------------------------------------------------------
# allreduce


def _copy_into(dst, src) -> None:
    if is_tensor(dst):
        dst.copy_(src)
    else:
        dst[...] = src


def _allreduce_into(out, op, compression, pre, post, comm, hierarchical):
    """Reduce ``out`` in place (it is the caller's tensor or a private copy)."""
    if pre != 1.0:
        scale_(out, pre)
    wire = getattr(compression, "wire_dtype", None)
    if is_none(compression):
        _c.allreduce_(out, op, comm=comm, hierarchical=hierarchical)
    elif op is ReduceOp.ADASUM and wire is not None and not hierarchical:
        _c.allreduce_(out, op, comm=comm, wire=wire)
    else:
        with profiling.span("accord.compress"):
            small, ctx = compression.compress(out)
        _c.allreduce_(small, op, comm=comm, hierarchical=hierarchical)
        with profiling.span("accord.decompress"):
            back = compression.decompress(small, ctx)
        if back is not out:
            _copy_into(out, back)
    if post != 1.0:
        scale_(out, post)
    return out


def _prepare_allreduce(fn, tensor, average, name, compression, op, pre, post, process_set,
                       comm):
    where = _where(fn, name)
    try:
        op = _resolve_op(op, average, where)
    except ValueError as e:
        if not str(e).startswith(where):
            _reraise(e, where)
        raise
    compression = check_compression(compression, f"{where}: compression")
    pre = _factor(pre, "prescale_factor", where)
    post = _factor(post, "postscale_factor", where)
    return op, compression, pre, post, _resolve_comm(process_set, comm, where)


def _clone(t):
    """A private copy to reduce in place (detached: compressed or scaled results, and
    asynchronous ones, do not carry gradients)."""
    return t.detach().clone() if is_tensor(t) else np.array(t, copy=True, order="C")


def _run_plain_allreduce(fn, tensor, op, comm, hierarchical, name):
    with _Call(fn, name):
        return _c.allreduce(tensor, op, comm=comm, hierarchical=hierarchical)


def _run_allreduce(fn, out, op, compression, pre, post, comm, hierarchical, name):
    with _Call(fn, name):
        return _allreduce_into(out, op, compression, pre, post, comm, hierarchical)


def allreduce(tensor: Buffer, average: bool | None = None, name: str | None = None,
              compression: Any = Compression.none, op: ReduceOp | str | None = None,
              prescale_factor: float = 1.0, postscale_factor: float = 1.0,
              process_set: Communicator | None = None, *, comm: Communicator | None = None,
              hierarchical: bool = False) -> Buffer:
    """Return the reduction of ``tensor`` over all ranks (the input is left unchanged).

    ``op``: Average (default), Sum, Adasum, Min, Max, Product; see the module doc for
    ``average``, ``name``, ``compression``, the scale factors and ``process_set``."""
    op, compression, pre, post, comm = _prepare_allreduce(
        "allreduce", tensor, average, name, compression, op, prescale_factor, postscale_factor,
        process_set, comm)
    if is_none(compression) and pre == 1.0 and post == 1.0:
        # accord.collectives' own out-of-place call: Sum/Average results carry gradients
        return _blocking(comm, _run_plain_allreduce, "allreduce", tensor, op, comm,
                         hierarchical, name)
    return _blocking(comm, _run_allreduce, "allreduce", _clone(tensor), op, compression, pre,
                     post, comm, hierarchical, name)


def allreduce_(tensor: Buffer, average: bool | None = None, name: str | None = None,
               op: ReduceOp | str | None = None, prescale_factor: float = 1.0,
               postscale_factor: float = 1.0, process_set: Communicator | None = None, *,
               compression: Any = Compression.none, comm: Communicator | None = None,
               hierarchical: bool = False) -> Buffer:
    """Reduce ``tensor`` over all ranks in place and return it (arguments as allreduce)."""
    op, compression, pre, post, comm = _prepare_allreduce(
        "allreduce_", tensor, average, name, compression, op, prescale_factor, postscale_factor,
        process_set, comm)
    return _blocking(comm, _run_allreduce, "allreduce_", tensor, op, compression, pre, post,
                     comm, hierarchical, name)


def allreduce_async(tensor: Buffer, average: bool | None = None, name: str | None = None,
                    op: ReduceOp | str | None = None, prescale_factor: float = 1.0,
                    postscale_factor: float = 1.0, process_set: Communicator | None = None, *,
                    compression: Any = Compression.none, comm: Communicator | None = None,
                    hierarchical: bool = False) -> Future:
    """:func:`allreduce` on the background worker; ``synchronize(handle)`` returns the result.
    The input is copied now, so it may be modified right away."""
    op, compression, pre, post, comm = _prepare_allreduce(
        "allreduce_async", tensor, average, name, compression, op, prescale_factor,
        postscale_factor, process_set, comm)
    return _submit(comm, _run_allreduce, "allreduce_async", _clone(tensor), op, compression, pre,
                   post, comm, hierarchical, name)


def allreduce_async_(tensor: Buffer, average: bool | None = None, name: str | None = None,
                     op: ReduceOp | str | None = None, prescale_factor: float = 1.0,
                     postscale_factor: float = 1.0, process_set: Communicator | None = None, *,
                     compression: Any = Compression.none, comm: Communicator | None = None,
                     hierarchical: bool = False) -> Future:
    """:func:`allreduce_` on the background worker (``tensor`` holds the result once the
    handle is synchronized; do not touch it before)."""
    op, compression, pre, post, comm = _prepare_allreduce(
        "allreduce_async_", tensor, average, name, compression, op, prescale_factor,
        postscale_factor, process_set, comm)
    return _submit(comm, _run_allreduce, "allreduce_async_", tensor, op, compression, pre, post,
                   comm, hierarchical, name)


def _grouped_into(fn, tensors, in_place, op, compression, pre, post, comm, hierarchical, name):
    with _Call(fn, name):
        if not tensors:
            return []
        if not in_place and is_none(compression) and pre == 1.0 and post == 1.0:
            # accord.collectives' own out-of-place call: Sum/Average results carry gradients
            return _c.grouped_allreduce(tensors, op, comm=comm, hierarchical=hierarchical)
        work = list(tensors) if in_place else [_clone(t) for t in tensors]
        if pre != 1.0:
            for t in work:
                scale_(t, pre)
        wire = getattr(compression, "wire_dtype", None)
        if is_none(compression):
            _c.grouped_allreduce_(work, op, comm=comm, hierarchical=hierarchical)
        elif op is ReduceOp.ADASUM and wire is not None and not hierarchical:
            _c.grouped_allreduce_(work, op, comm=comm, wire=wire)
        else:
            with profiling.span("accord.compress"):
                packed = [compression.compress(t) for t in work]
            _c.grouped_allreduce_([s for s, _ in packed], op, comm=comm,
                                  hierarchical=hierarchical)
            with profiling.span("accord.decompress"):
                for t, (s, ctx) in zip(work, packed):
                    back = compression.decompress(s, ctx)
                    if back is not t:
                        _copy_into(t, back)
        if post != 1.0:
            for t in work:
                scale_(t, post)
        return work


def _prepare_grouped(fn, tensors, average, name, compression, op, pre, post, process_set, comm):
    if is_tensor(tensors) or isinstance(tensors, np.ndarray):
        raise TypeError(f"{_where(fn, name)}: tensors must be a list of tensors, got one "
                        "tensor; use allreduce for a single tensor")
    return (list(tensors),) + _prepare_allreduce(fn, None, average, name, compression, op, pre,
                                                 post, process_set, comm)


def grouped_allreduce(tensors: Sequence, average: bool | None = None, name: str | None = None,
                      compression: Any = Compression.none, op: ReduceOp | str | None = None,
                      prescale_factor: float = 1.0, postscale_factor: float = 1.0,
                      process_set: Communicator | None = None, *, comm: Communicator | None = None,
                      hierarchical: bool = False) -> list:
    """Reduce a list of tensors fused into few buffers (Adasum: one coefficient set per
    tensor); returns new tensors."""
    ts, op, compression, pre, post, comm = _prepare_grouped(
        "grouped_allreduce", tensors, average, name, compression, op, prescale_factor,
        postscale_factor, process_set, comm)
    return _blocking(comm, _grouped_into, "grouped_allreduce", ts, False, op, compression, pre,
                     post, comm, hierarchical, name)


def grouped_allreduce_(tensors: Sequence, average: bool | None = None, name: str | None = None,
                       op: ReduceOp | str | None = None, prescale_factor: float = 1.0,
                       postscale_factor: float = 1.0, process_set: Communicator | None = None, *,
                       compression: Any = Compression.none, comm: Communicator | None = None,
                       hierarchical: bool = False) -> list:
    """Reduce a list of tensors in place; returns the list."""
    ts, op, compression, pre, post, comm = _prepare_grouped(
        "grouped_allreduce_", tensors, average, name, compression, op, prescale_factor,
        postscale_factor, process_set, comm)
    return _blocking(comm, _grouped_into, "grouped_allreduce_", ts, True, op, compression, pre,
                     post, comm, hierarchical, name)


def grouped_allreduce_async(tensors: Sequence, average: bool | None = None, name: str | None = None,
                            op: ReduceOp | str | None = None, prescale_factor: float = 1.0,
                            postscale_factor: float = 1.0, process_set: Communicator | None = None,
                            *, compression: Any = Compression.none,
                            comm: Communicator | None = None, hierarchical: bool = False) -> Future:
    """:func:`grouped_allreduce` on the background worker (inputs copied now)."""
    ts, op, compression, pre, post, comm = _prepare_grouped(
        "grouped_allreduce_async", tensors, average, name, compression, op, prescale_factor,
        postscale_factor, process_set, comm)
    return _submit(comm, _grouped_into, "grouped_allreduce_async", [_clone(t) for t in ts], True,
                   op, compression, pre, post, comm, hierarchical, name)


def grouped_allreduce_async_(tensors: Sequence, average: bool | None = None,
                             name: str | None = None, op: ReduceOp | str | None = None,
                             prescale_factor: float = 1.0, postscale_factor: float = 1.0,
                             process_set: Communicator | None = None, *,
                             compression: Any = Compression.none, comm: Communicator | None = None,
                             hierarchical: bool = False) -> Future:
    """:func:`grouped_allreduce_` on the background worker."""
    ts, op, compression, pre, post, comm = _prepare_grouped(
        "grouped_allreduce_async_", tensors, average, name, compression, op, prescale_factor,
        postscale_factor, process_set, comm)
    return _submit(comm, _grouped_into, "grouped_allreduce_async_", ts, True, op, compression,
                   pre, post, comm, hierarchical, name)


# ---------------------------------------------------------------------------------------------
# broadcast / allgather


def _run_named(fn: str, name, call, *args):
    with _Call(fn, name):
        return call(*args)


def broadcast(tensor: Buffer, root_rank: int = 0, name: str | None = None,
              process_set: Communicator | None = None, *,
              comm: Communicator | None = None) -> Buffer:
    """Return ``root_rank``'s ``tensor`` on every rank (the input is left unchanged)."""
    comm = _resolve_comm(process_set, comm, _where("broadcast", name))
    return _blocking(comm, _run_named, "broadcast", name,
                     lambda: _c.broadcast_(_clone(tensor), root_rank, comm=comm))


def broadcast_(tensor: Buffer, root_rank: int = 0, name: str | None = None,
               process_set: Communicator | None = None, *,
               comm: Communicator | None = None) -> Buffer:
    """Overwrite ``tensor`` on every rank with ``root_rank``'s, in place; return it."""
    comm = _resolve_comm(process_set, comm, _where("broadcast_", name))
    return _blocking(comm, _run_named, "broadcast_", name,
                     lambda: _c.broadcast_(tensor, root_rank, comm=comm))


def broadcast_async(tensor: Buffer, root_rank: int = 0, name: str | None = None,
                    process_set: Communicator | None = None, *,
                    comm: Communicator | None = None) -> Future:
    """:func:`broadcast` on the background worker (input copied now)."""
    comm = _resolve_comm(process_set, comm, _where("broadcast_async", name))
    out = _clone(tensor)
    return _submit(comm, _run_named, "broadcast_async", name,
                   lambda: _c.broadcast_(out, root_rank, comm=comm))


def broadcast_async_(tensor: Buffer, root_rank: int = 0, name: str | None = None,
                     process_set: Communicator | None = None, *,
                     comm: Communicator | None = None) -> Future:
    """:func:`broadcast_` on the background worker."""
    comm = _resolve_comm(process_set, comm, _where("broadcast_async_", name))
    return _submit(comm, _run_named, "broadcast_async_", name,
                   lambda: _c.broadcast_(tensor, root_rank, comm=comm))


def broadcast_parameters(params, root_rank: int = 0, *, comm: Communicator | None = None) -> None:
    """Broadcast model parameters/buffers from ``root_rank`` in place (``state_dict()``,
    ``named_parameters()`` or an iterable of tensors)."""
    comm = _resolve_comm(None, comm, "broadcast_parameters")
    _blocking(comm, _run_named, "broadcast_parameters", None,
              lambda: _c.broadcast_parameters(params, root_rank, comm=comm))


def allgather(tensor: Buffer, name: str | None = None, process_set: Communicator | None = None, *,
              comm: Communicator | None = None) -> Buffer:
    """Concatenate every rank's ``tensor`` along dim 0 (the first dims may differ by rank)."""
    comm = _resolve_comm(process_set, comm, _where("allgather", name))
    return _blocking(comm, _run_named, "allgather", name,
                     lambda: _c.allgather(tensor, comm=comm))


def allgather_async(tensor: Buffer, name: str | None = None,
                    process_set: Communicator | None = None, *,
                    comm: Communicator | None = None) -> Future:
    """:func:`allgather` on the background worker (input copied now)."""
    comm = _resolve_comm(process_set, comm, _where("allgather_async", name))
    t = _clone(tensor)
    return _submit(comm, _run_named, "allgather_async", name,
                   lambda: _c.allgather(t, comm=comm))


# ---------------------------------------------------------------------------------------------
# objects, barrier, join


def _broadcast_object(obj, root_rank, comm):
    if not 0 <= root_rank < comm.size:
        raise ValueError(f"root_rank must be in [0, {comm.size}), got {root_rank}")
    if comm.size == 1:
        return obj
    me = comm.rank == root_rank
    data = pickle.dumps(obj) if me else b""
    length = np.array([len(data)], dtype=np.int64)
    comm.broadcast_(length, root_rank)
    buf = np.frombuffer(data, dtype=np.uint8).copy() if me else \
        np.empty(int(length[0]), dtype=np.uint8)
    comm.broadcast_(buf, root_rank)
    return obj if me else pickle.loads(buf.tobytes())


def broadcast_object(obj: Any, root_rank: int = 0, name: str | None = None,
                     process_set: Communicator | None = None, *,
                     comm: Communicator | None = None) -> Any:
    """Return ``root_rank``'s ``obj`` (any picklable object) on every rank; the root gets its
    own object back. Two broadcasts: the pickle's length, then its bytes."""
    comm = _resolve_comm(process_set, comm, _where("broadcast_object", name))
    return _blocking(comm, _run_named, "broadcast_object", name, _broadcast_object, obj,
                     root_rank, comm)


def allgather_object(obj: Any, name: str | None = None, process_set: Communicator | None = None, *,
                     comm: Communicator | None = None) -> list:
    """The list of every rank's ``obj`` (picklable), in rank order."""
    comm = _resolve_comm(process_set, comm, _where("allgather_object", name))
    return _blocking(comm, _run_named, "allgather_object", name, comm.allgather_object, obj)


def barrier(process_set: Communicator | None = None, *, comm: Communicator | None = None) -> None:
    """Block until every rank has called ``barrier`` (after the pending async operations)."""
    comm = _resolve_comm(process_set, comm, "barrier")
    _blocking(comm, _run_named, "barrier", None, comm.barrier)


def join(device: int = -1, *, comm: Communicator | None = None) -> int:
    """End-of-training synchronisation point: returns, on every rank, once every rank has
    called ``join`` (and its pending async operations finished), and returns the rank that
    called ``join`` last by wall-clock time (each host's clock; exact on one host, as good as
    the clocks' synchronisation across hosts; ties go to the lower rank).

    Unlike Horovod's join, ranks that have joined do not take part in collectives the others
    still issue: every rank must issue the same collectives in the same order before joining.
    With uneven data, agree on the number of steps first, e.g.
    ``steps = int(accord.allreduce(torch.tensor(len(loader)), op=accord.Min))``, and let
    every rank run that many. ``device`` is accepted for Horovod compatibility and unused.
    """
    comm = _resolve_comm(None, comm, "join")
    arrived = time.time()
    times = _blocking(comm, _run_named, "join", None, comm.allgather_object, arrived)
    return int(max(range(len(times)), key=lambda r: (times[r], -r)))


# ---------------------------------------------------------------------------------------------
# what is built / in use


def _mpi_module():
    try:
        from mpi4py import MPI
    except ImportError:
        return None
    return MPI


def mpi_threads_supported() -> bool:
    """Whether MPI runs with ``MPI_THREAD_MULTIPLE`` (False when MPI is not initialised, e.g.
    under torchrun)."""
    topology.communicator()  # Horovod raises before init as well
    import sys
    mpi = sys.modules.get("mpi4py.MPI")
    if mpi is None or not mpi.Is_initialized() or mpi.Is_finalized():
        return False
    return mpi.Query_thread() >= mpi.THREAD_MULTIPLE


def mpi_built() -> bool:
    """Whether mpi4py (and so accord's MPI transport) is available."""
    return _mpi_module() is not None


def mpi_enabled() -> bool:
    """Whether the active communicator is MPI."""
    return topology.is_initialized() and topology.communicator().backend == "mpi"


def _torch_dist():
    try:
        import torch.distributed as dist
    except ImportError:
        return None
    return dist if dist.is_available() else None


def gloo_built() -> bool:
    """Whether torch.distributed with gloo is available."""
    dist = _torch_dist()
    return dist is not None and dist.is_gloo_available()


def gloo_enabled() -> bool:
    """Whether the active communicator runs on gloo."""
    return topology.is_initialized() and "gloo" in topology.communicator().backend


def nccl_built() -> bool:
    """Whether torch.distributed with NCCL is available."""
    dist = _torch_dist()
    return dist is not None and dist.is_nccl_available()


def cuda_built() -> bool:
    """Whether accord's CUDA kernels were compiled."""
    from . import _C
    return bool(_C.build_info().get("cuda"))


def rocm_built() -> bool:
    """accord has no ROCm kernels."""
    return False


def ddl_built() -> bool:
    """accord has no IBM DDL transport."""
    return False


def ccl_built() -> bool:
    """accord has no oneCCL transport."""
    return False
