"""DDP communication hooks: Adasum and consensus aggregation inside ``DistributedDataParallel``.

    from accord.hooks import adasum_hook, consensus_hook, ConsensusHookState
    ddp = DistributedDataParallel(model)
    ddp.register_comm_hook(None, adasum_hook)              # state: None or a process group
    ddp.register_comm_hook(ConsensusHookState({"granularity": "layer"}), consensus_hook)

    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
    ddp.register_comm_hook(None, default_hooks.fp16_compress_wrapper(adasum_hook))  # or bf16_
    ddp.register_comm_hook(AdasumHookState(compression=accord.Compression.fp16), adasum_hook)

Both hooks reduce DDP's flat bucket buffer in place with accord's algorithms over an
:class:`accord.comm.TorchCommunicator` of the process group (one per group, cached), with
per-layer coefficients: the bucket is split into one segment per parameter (from the positions
of ``bucket.gradients()`` in the buffer), exactly as ``accord.grouped_allreduce(op=Adasum)``
treats a list of tensors. They return a ``torch.futures.Future`` at once and reduce on a
background thread (one per communicator), which completes the future: DDP's autograd thread
goes on computing the next buckets' gradients while earlier buckets communicate, as with torch's
built-in hooks. The thread takes buckets in the order DDP hands them over (the same on every
rank), one at a time, so the collectives match across ranks. CUDA buckets: the thread makes the
bucket's device current, waits for the gradients on its own stream through an event recorded
on DDP's stream, reduces there, and completes a CUDA-aware future (``devices=[...]``), so DDP's
stream waits for the result without blocking the host. Adasum's result is
not divided by the world size (Adasum is its own normalisation: parallel gradients give their
mean, orthogonal ones their sum). The kernels take float16 and bfloat16 buffers, so torch's
fp16/bf16 compression wrappers work unchanged (on torch builds without CUDA/NCCL, DDP refuses
to register a function *named* ``bf16_compress_wrapper_hook``, a guard for NCCL's bf16
allreduce that these hooks do not use: call the wrapper from a function of another name).

Learning rates: Adasum with DDP behaves as the Adasum optimizer with plain SGD (see
docs/training.md): keep the single-worker learning rate; do not scale it with N.

Non-finite gradients: Adasum turns a NaN/Inf tensor on any rank into NaN for that tensor on every
rank. The consensus hook catches the aggregator's FloatingPointError (raised on every rank alike)
and returns an all-NaN bucket instead, so AMP's GradScaler skips the step on every rank.
"""
# No `from __future__ import annotations`: DDP checks the hooks' return annotation object.
import threading
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from . import profiling, topology
from .adasum import adasum_allreduce_
from .comm.base import Communicator
from .compression import check_compression, is_none

__all__ = ["adasum_hook", "consensus_hook", "ConsensusHookState", "AdasumHookState"]

# One TorchCommunicator per process group the hooks were given, dropped by accord.shutdown().
_COMMS: dict = {}
topology.on_shutdown(_COMMS.clear)

# One single-thread worker per communicator: buckets reduce in submission order (DDP's bucket
# order, identical on every rank). Stopped by accord.shutdown() after the work in flight.
_WORKERS: dict = {}
_WORKERS_LOCK = threading.Lock()


def _stop_workers():
    with _WORKERS_LOCK:
        workers = list(_WORKERS.values())
        _WORKERS.clear()
    for w in workers:
        w.shutdown(wait=True)


topology.on_shutdown(_stop_workers)


def _worker_for(comm) -> ThreadPoolExecutor:
    with _WORKERS_LOCK:
        w = _WORKERS.get(id(comm))
        if w is None:
            w = _WORKERS[id(comm)] = ThreadPoolExecutor(max_workers=1,
                                                        thread_name_prefix="accord-ddp-hook")
        return w


def _in_background(comm, buf, reduce) -> torch.futures.Future:
    """Run ``reduce()`` (which reduces ``buf`` in place) on ``comm``'s worker thread; the
    returned future completes with ``buf`` (or the exception) when it is done."""
    if not comm.threads_ok:  # an MPI below THREAD_MULTIPLE: reduce here, no overlap
        reduce()
        fut = torch.futures.Future()
        fut.set_result(buf)
        return fut
    if buf.is_cuda:
        device = buf.device
        fut = torch.futures.Future(devices=[device])
        ready = torch.cuda.Event()
        ready.record(torch.cuda.current_stream(device))  # DDP's stream produced the gradients

        def work():
            try:
                with torch.cuda.device(device):
                    stream = _side_stream(device)
                    stream.wait_event(ready)
                    with torch.cuda.stream(stream):
                        buf.record_stream(stream)  # used here, allocated on DDP's stream
                        reduce()
                        # a CUDA-aware future records an event on this (current) stream; its
                        # consumers' streams wait on it
                        fut.set_result(buf)
            except BaseException as e:
                fut.set_exception(e)
    else:
        fut = torch.futures.Future()

        def work():
            try:
                reduce()
                fut.set_result(buf)
            except BaseException as e:
                fut.set_exception(e)
    _worker_for(comm).submit(work)
    return fut


_STREAMS: dict = {}


def _side_stream(device):
    """The hooks' own stream on ``device`` (created once, on the worker thread)."""
    s = _STREAMS.get(device)
    if s is None:
        s = _STREAMS[device] = torch.cuda.Stream(device)
    return s


def _comm_for(group):
    """The cached TorchCommunicator of ``group`` (None: the default group); a Communicator is
    used as is (e.g. accord's MPI communicator for CPU buckets)."""
    if isinstance(group, Communicator):
        return group
    comm = _COMMS.get(group)
    if comm is None:
        from .comm.torch_dist import TorchCommunicator
        comm = _COMMS[group] = TorchCommunicator(group)
    return comm


def _offsets(bucket, buf) -> np.ndarray:
    """One segment per parameter gradient (any gap in the buffer gets a segment of its own)."""
    base, size, n = buf.data_ptr(), buf.element_size(), buf.numel()
    grads = bucket.gradients()
    bounds = {0, n}
    for g in grads:
        if g.numel():
            start = (g.data_ptr() - base) // size
            if not 0 <= start <= start + g.numel() <= n:  # not views of this buffer: packed
                sizes = np.cumsum([g.numel() for g in grads])
                return np.concatenate([[0], sizes]).astype(np.int64)
            bounds.update((start, start + g.numel()))
    return np.array(sorted(bounds), dtype=np.int64)


class AdasumHookState:
    """State of :func:`adasum_hook` for compressed exchanges:
    ``AdasumHookState(process_group=None, compression=accord.Compression.fp16)``. The bucket's
    halves travel in 16 bits while the combine runs in the bucket's dtype (float64 dots), unlike
    torch's fp16 wrapper, which also runs the combine on 16-bit values."""

    def __init__(self, process_group=None, compression=None):
        self.process_group = process_group
        self.compression = check_compression(compression, "AdasumHookState: compression")


def adasum_hook(state, bucket) -> torch.futures.Future[torch.Tensor]:
    """DDP comm hook: Adasum of the bucket over ``state`` (None: the default process group;
    or a ProcessGroup; or an accord Communicator; or an :class:`AdasumHookState`),
    per-parameter coefficients, in place."""
    buf = bucket.buffer()
    compression = None
    if isinstance(state, AdasumHookState):
        state, compression = state.process_group, state.compression
    offsets, comm = _offsets(bucket, buf), _comm_for(state)
    wire = getattr(compression, "wire_dtype", None)

    def reduce():
        with profiling.span("accord.hooks.adasum"):
            if is_none(compression) or wire is not None:
                adasum_allreduce_(buf, offsets, comm, wire)
            else:
                small, ctx = compression.compress(buf)
                adasum_allreduce_(small, offsets, comm)
                buf.copy_(compression.decompress(small, ctx))
    return _in_background(comm, buf, reduce)


class ConsensusHookState:
    """State of :func:`consensus_hook`.

    ``aggregator``: a dict of :class:`accord.ConsensusAggregator` keyword arguments (the
    aggregator is built on the process group's communicator), None for the defaults, or a
    ConsensusAggregator (used as is: build it with ``comm=`` the group's communicator).
    ``process_group``: None for the default group.

    Momentum is kept per bucket index and bucket layout: DDP rebuilds its buckets after the first
    iteration, and the rebuilt buckets start fresh instead of inheriting another layout's state.
    Save ``state.aggregator.state_dict()`` with the model to resume.
    """

    def __init__(self, aggregator=None, process_group=None):
        from .consensus import ConsensusAggregator
        self.process_group = process_group
        if aggregator is None or isinstance(aggregator, dict):
            kwargs = dict(aggregator or {})
            if "comm" in kwargs:
                raise ValueError("ConsensusHookState: give process_group=, not comm=")
            aggregator = ConsensusAggregator(**kwargs, comm=_comm_for(process_group))
        elif not callable(getattr(aggregator, "aggregate_flat_", None)):
            raise TypeError("aggregator must be a dict of ConsensusAggregator arguments or a "
                            f"ConsensusAggregator, got {type(aggregator).__name__}")
        self.aggregator = aggregator


def consensus_hook(state: ConsensusHookState, bucket) -> torch.futures.Future[torch.Tensor]:
    """DDP comm hook: ACGA consensus aggregation of the bucket (see ConsensusHookState)."""
    if not isinstance(state, ConsensusHookState):
        raise TypeError("consensus_hook needs a ConsensusHookState as its state, got "
                        f"{type(state).__name__}")
    buf = bucket.buffer()
    offsets = _offsets(bucket, buf)
    key = f"ddp:{bucket.index()}:{zlib.crc32(offsets.tobytes()):08x}"

    def reduce():
        try:
            with profiling.span("accord.hooks.consensus"):
                state.aggregator.aggregate_flat_(buf, offsets, key=key)
        except FloatingPointError:
            buf.fill_(float("nan"))  # every rank takes this branch (see the module doc)
    return _in_background(state.aggregator.comm, buf, reduce)
