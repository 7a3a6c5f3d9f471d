"""``DistributedOptimizer`` and ``broadcast_optimizer_state``: Horovod's training-loop face.

    opt = accord.DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1),
                                      named_parameters=model.named_parameters(), op=accord.Average)
    accord.broadcast_parameters(model.state_dict(), root_rank=0)
    accord.broadcast_optimizer_state(opt, root_rank=0)

The result is an instance of a dynamic subclass of the wrapped optimizer's class that shares the
wrapped instance's ``param_groups``, ``state`` and hooks (``isinstance(opt, torch.optim.SGD)``,
``state_dict``/``load_state_dict``/``zero_grad`` are the optimizer's own). Use the returned
object from then on; create LR schedulers on it.

Ops:

* ``Average`` / ``Sum``: gradient reduction. Every parameter gets a
  ``register_post_accumulate_grad_hook``. The parameters (``requires_grad`` ones, in reverse
  optimizer order, since backward produces the last layers' gradients first, as DDP does) are cut
  up front into buckets of at most ``accord.fusion_threshold()`` bytes of one dtype and device.
  A bucket is packed into one flat buffer and handed to ONE background thread as soon as all of
  its gradients have been accumulated ``backward_passes_per_step`` times, and buckets launch in
  bucket-index order, so every rank issues the same collectives in the same order with no
  negotiation; communication overlaps the rest of backward.
* ``Adasum``: Horovod's delta semantics. ``step()`` saves the parameters, runs the wrapped
  optimizer's local step, and replaces each parameter by ``p_before + Adasum(p - p_before)``
  (one fused VHDD per bucket, per-tensor coefficients). Optimizer state stays local. With plain
  SGD this equals ``p - lr * Adasum(grads)``.
* ``Consensus``: the gradients are aggregated by an :class:`accord.ConsensusAggregator`
  (``consensus=`` or a default one) through ``aggregate_flat_``, bucketed and overlapped like
  Average; then the local step.

When are gradients final? At the end of the backward pass that completes the
``backward_passes_per_step``-th accumulation: a callback queued on the autograd engine runs
``synchronize()`` there (as DDP does), so ``p.grad`` already holds the reduced values when
``loss.backward()`` returns. That makes both AMP flows safe::

    scaler.scale(loss).backward()        # reduced here
    scaler.step(opt); scaler.update()    # unscale_ sees the same gradients on every rank

    scaler.scale(loss).backward()
    opt.synchronize()                    # Horovod's explicit flow: a no-op if already done
    scaler.unscale_(opt); torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    with opt.skip_synchronize():
        scaler.step(opt)
    scaler.update()

``synchronize()`` is idempotent until the next backward or ``step()``. ``step()`` synchronizes
first unless it already happened or it runs inside ``skip_synchronize()``. A backward that starts
after the gradients were synchronized (and before ``step()``) starts a new reduction of the
accumulated gradients: with Average that yields the average of the accumulated sum; Sum would
count the earlier part N times, so accumulate with ``backward_passes_per_step`` instead.

Non-finite gradients (AMP overflow): Average/Sum propagate inf/NaN to every rank, so GradScaler
skips the step everywhere. Adasum does not reduce gradients, so a rank with an overflow would skip
``optimizer.step`` (and the Adasum collective in it) while the others enter it: a hang. Adasum's
``synchronize()`` therefore allreduces (max) one per-rank non-finite flag and, if any rank has
one, writes inf into one element of every rank's gradients: every GradScaler then skips.
Consensus: the aggregator detects NaN/Inf from its allreduced Gram entries, identically on every
rank; with its default ``nonfinite="raise"`` the optimizer turns that into all-NaN gradients for
the bucket on every rank (no exception), so GradScaler skips everywhere (``nonfinite="skip"``
gives zero gradients instead, and the scaler never sees the overflow). The diagonal rule without
``keep_scale`` returns a unit-norm direction whatever the input scale, so GradScaler's unscale_
would shrink it by the loss scale: use ``keep_scale=True`` or ``weighting="gram"`` with AMP.
The aggregator's momentum is keyed by bucket index; save ``opt.consensus.state_dict()`` with
the optimizer's.

Threading: the background thread needs ``MPI_THREAD_MULTIPLE`` (what mpi4py asks for by
default), since the main thread may call MPI while a reduction runs; with a lower thread level
the reductions run on the calling thread, without overlap. While a reduction is in flight only the worker thread communicates on the optimizer's
communicator: do not issue other collectives on the same communicator from inside backward (e.g.
SyncBatchNorm on torch's default group when accord also runs on it); give accord its own
communicator instead (``accord.init()`` over MPI uses a private duplicate of COMM_WORLD).

Limits: sparse gradients are not supported; closures are evaluated once, before the reduction
(LBFGS, which evaluates its closure repeatedly, is not supported); parameters whose
``requires_grad`` changes or that are added after wrapping are not reduced (an error says so):
wrap after freezing/unfreezing.

Lifecycle: the wrapper registers one gradient hook per parameter and may start one thread.
``close()`` removes both; so does wrapping the same parameters again (the previous wrapper is
closed and refuses to step afterwards) and dropping the last reference to the wrapper. An
exception raised inside backward by the wrapper's hooks (e.g. a sparse gradient) resets the
step's bookkeeping before it propagates, so the next backward starts clean.
"""
from __future__ import annotations

import collections
import contextlib
import math
import weakref
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import torch

from . import ops, profiling, topology
from ._kernels import dtype_code
from .comm.base import Communicator
from .compression import Compression, check_compression, is_none
from .adasum import adasum_allreduce_
from .consistency import check_consistency
from .fusion import Fusion
from .reduce_op import GRADIENT_OPS, ReduceOp, parse_op

__all__ = ["DistributedOptimizer"]


class _Bucket:
    """Per-cycle state of one fusion bucket: the parameters, how many gradients of each have
    been accumulated, and the reduction in flight."""
    __slots__ = ("fused", "params", "offsets", "counts", "ready", "future")

    def __init__(self, fused, params):
        self.fused, self.params, self.offsets = fused, params, fused.offsets
        self.counts = [0] * len(params)
        self.ready = 0
        self.future = None

    @property
    def index(self) -> int:
        return self.fused.index


# Which live wrapper manages each parameter: a second wrapper over the same parameters closes
# the first, whose hooks would otherwise keep firing (and keep it alive) as long as the model.
_OWNERS: "weakref.WeakValueDictionary[int, _DistributedMixin]" = weakref.WeakValueDictionary()


def _hook(ref, p):
    """post-accumulate-grad hook trampoline: holds the wrapper weakly, so a wrapper nobody
    references is collected (and its finaliser removes the hooks) instead of living as long as
    the model's parameters."""
    opt = ref()
    if opt is not None:
        opt._on_grad(p)


def _release(handles, executor_box) -> None:
    for h in handles:
        h.remove()
    handles.clear()
    if executor_box[0] is not None:
        executor_box[0].shutdown(wait=True)
        executor_box[0] = None


class _DistributedMixin:
    """Methods of the dynamic subclass; the wrapped optimizer's class comes after it in the MRO."""

    def _accord_setup(self, op, names, bpps, predivide, comm, consensus, compression=None,
                      sparse_as_dense=False, adasum_mode="delta"):
        self._reduce_op, self._param_names, self._bpps, self._comm = op, names, bpps, comm
        self._consensus = consensus
        self._adasum_mode = adasum_mode if op is ReduceOp.ADASUM else None
        # Adasum of gradients: reduced bucket by bucket during backward, like Average
        adasum_grads = self._adasum_mode == "gradients"
        self._compression = None if is_none(compression) else compression
        self._sparse_as_dense = sparse_as_dense
        params = [p for g in self.param_groups for p in g["params"] if p.requires_grad]
        bad = None
        try:
            for p in params:
                name = f"parameter {names.get(id(p), '?')}"
                if op in (ReduceOp.ADASUM, ReduceOp.CONSENSUS):
                    dtype_code(p, name)  # the kernels' dtypes
                elif not p.is_floating_point():
                    raise TypeError(f"{name}: dtype {str(p.dtype).replace('torch.', '')} cannot "
                                    f"be reduced with op=accord.{op.name.title()}; use a "
                                    "floating-point dtype")
        except TypeError as e:
            bad = e
        threshold = None
        if op is ReduceOp.CONSENSUS and consensus.granularity == "model":
            # One weight set per call: "model" must see the whole model in one buffer.
            if len({(p.dtype, p.device) for p in params}) > 1:
                bad = ValueError("op=accord.Consensus with granularity='model' needs every "
                                 "parameter in one dtype and device (one fused buffer); use "
                                 "ConsensusAggregator(granularity='layer')")
            threshold = math.inf
        # Reverse order: backward produces the last layers' gradients first (as DDP buckets).
        ordered = params[::-1]
        wire = "" if self._compression is None else \
            f":{getattr(self._compression, 'wire_dtype', None) or self._compression!r}"
        check_consistency(comm, f"DistributedOptimizer:{op.value}:{self._adasum_mode}:{bpps}:"
                          f"{predivide}{wire}", [p.detach() for p in ordered], local_error=bad)
        delta = op is ReduceOp.ADASUM and not adasum_grads
        # copies: the gradients (Average/Sum/Consensus/Adasum of gradients), or Adasum's
        # parameters-before and update side by side; allocated on first use, reused every step.
        self._fusion = Fusion(ordered, threshold, copies=2 if delta else 1)
        if op is ReduceOp.ADASUM and comm.size > 1:
            # Building the reducer splits sub-communicators (collective): here, where every
            # rank is, not in the worker thread mid-backward.
            from .adasum import reducer_for
            self._adasum = reducer_for(comm)
        self._acc_buckets = [_Bucket(fb, self._fusion.members(fb)) for fb in self._fusion.buckets]
        self._bucket_of = {id(p): (b, j) for b in self._acc_buckets for j, p in enumerate(b.params)}
        n = comm.size
        self._prescale = 1.0 / predivide if op is ReduceOp.AVERAGE else 1.0
        self._postscale = predivide / n if op is ReduceOp.AVERAGE else 1.0
        self._reduces_grads = not delta
        self._threaded = self._reduces_grads and n > 1 and comm.threads_ok
        self._executor_box = [None]  # shared with the finaliser, which must not hold self
        self._next_bucket = 0        # first bucket not yet launched this cycle
        self._grads_synced = False   # reduced (Adasum: checked) since the last backward/step
        self._sync_skipped = False
        self._callback_queued = False
        self._closed = False
        for p in params:
            old = _OWNERS.get(id(p))
            if old is not None and old is not self:
                old.close()
        ref = weakref.ref(self)
        self._grad_hooks = [p.register_post_accumulate_grad_hook(lambda q, ref=ref: _hook(ref, q))
                            for p in params]
        self._finalizer = weakref.finalize(self, _release, self._grad_hooks, self._executor_box)
        for p in params:
            _OWNERS[id(p)] = self

    # -- lifecycle ------------------------------------------------------------------------------

    def close(self) -> None:
        """Remove the gradient hooks and stop the background thread (waiting for a reduction in
        flight). Idempotent. The wrapper cannot step afterwards; the wrapped optimizer's state
        and parameters are untouched. Wrapping the same parameters again closes the previous
        wrapper; dropping the last reference to a wrapper closes it too."""
        if self._closed:
            return
        self._closed = True
        self._wait_in_flight()
        self._finalizer()
        for p in [p for b in self._acc_buckets for p in b.params]:
            if _OWNERS.get(id(p)) is self:
                del _OWNERS[id(p)]

    @property
    def closed(self) -> bool:
        return self._closed

    def _require_open(self):
        if self._closed:
            raise RuntimeError("this accord.DistributedOptimizer was closed (close() was called, "
                               "or the same parameters were wrapped again); use the newer "
                               "wrapper, or wrap the optimizer again")

    # -- per-cycle state ------------------------------------------------------------------------

    def _wait_in_flight(self):
        """Wait for reductions still running (their results or errors no longer matter): the
        next cycle reuses their buffers."""
        for b in self._acc_buckets:
            if b.future is not None:
                try:
                    b.future.result()
                except BaseException:
                    pass

    def _reset_cycle(self):
        self._wait_in_flight()
        for b in self._acc_buckets:
            b.counts = [0] * len(b.params)
            b.ready, b.future = 0, None
        self._next_bucket = 0
        self._callback_queued = False

    def _on_grad(self, p):
        """post-accumulate-grad hook (autograd thread): count, launch full buckets in order.
        An exception here (a sparse gradient, a failed launch) resets the cycle before it
        propagates out of backward, so the wrapper stays usable."""
        if self._closed:
            return
        try:
            self._count_grad(p)
        except BaseException:
            self._reset_cycle()
            self._grads_synced = False
            raise

    def _count_grad(self, p):
        if self._grads_synced:  # a backward after synchronize() and before step(): new reduction
            self._grads_synced = False
            self._reset_cycle()
        b, j = self._bucket_of[id(p)]
        b.counts[j] += 1
        if b.counts[j] != self._bpps:
            return
        b.ready += 1
        if not self._callback_queued:
            self._callback_queued = True
            torch.autograd.Variable._execution_engine.queue_callback(self._end_of_backward)
        if self._reduces_grads:
            while self._next_bucket < len(self._acc_buckets):
                nb = self._acc_buckets[self._next_bucket]
                if nb.ready < len(nb.params):
                    break
                self._launch(nb)
                self._next_bucket += 1

    def _end_of_backward(self):
        self._callback_queued = False
        if self._closed:
            return
        if _current_autograd_node() is not None:
            # The end of a nested backward (reentrant checkpointing) inside a running one: not
            # the end of this pass. Later hooks of the outer pass queue the callback again.
            return
        self.synchronize()

    def _launch(self, b):
        grads = []
        for p in b.params:
            g = p.grad
            if g is None:
                g = torch.zeros_like(p)  # unused on this rank: contributes zeros (Horovod)
            elif g.is_sparse and self._sparse_as_dense:
                g = g.to_dense()
            elif g.is_sparse:
                raise TypeError(f"accord.DistributedOptimizer: sparse gradient for parameter "
                                f"{self._param_names.get(id(p), '?')} is not supported; pass "
                                "sparse_as_dense=True to reduce it as a dense tensor")
            grads.append(g)
        # A private copy (the worker never touches p.grad), into the bucket's reused buffer.
        flat = self._fusion.pack_values(b.fused, grads)
        event = None
        if flat.is_cuda:
            event = torch.cuda.Event()
            # packed on the producer's (autograd's) current stream of the bucket's device; the
            # worker's stream waits for this event, not for the whole device
            event.record(torch.cuda.current_stream(flat.device))
        if self._threaded:
            if self._executor_box[0] is None:
                self._executor_box[0] = ThreadPoolExecutor(max_workers=1,
                                                           thread_name_prefix="accord-reduce")
            b.future = self._executor_box[0].submit(self._reduce, flat, b.offsets, b.index,
                                                    event)
        else:
            b.future = Future()
            b.future.set_result(self._reduce(flat, b.offsets, b.index, event))

    def _reduce(self, flat, offsets, key, event):
        """The collective itself (worker thread). CUDA buckets: on the bucket's device (a rank
        on cuda:k never touches cuda:0), on the optimizer's own stream there, ordered after the
        packing by ``event``; returns the event that orders the consumer after the result."""
        if not flat.is_cuda:
            return self._reduce_on_stream(flat, offsets, key), None
        device = flat.device
        with torch.cuda.device(device):
            stream = self._worker_stream(device)
            stream.wait_event(event)
            with torch.cuda.stream(stream):
                # the bucket buffer is allocated on the producer's stream and used on this one
                flat.record_stream(stream)
                self._reduce_on_stream(flat, offsets, key)
                done = torch.cuda.Event()
                done.record(stream)
        return flat, done

    def _worker_stream(self, device):
        streams = self.__dict__.setdefault("_streams", {})
        s = streams.get(device)
        if s is None:
            s = streams[device] = torch.cuda.Stream(device)
        return s

    def _reduce_on_stream(self, flat, offsets, key):
        if self._reduce_op is ReduceOp.CONSENSUS:
            try:
                self._consensus.aggregate_flat_(flat, offsets, key=key)
            except FloatingPointError:
                # Raised on every rank alike (decided from allreduced Gram entries): NaN
                # gradients everywhere, so a GradScaler skips the step on every rank.
                flat.fill_(math.nan)
        elif self._reduce_op is ReduceOp.ADASUM:
            # A NaN/Inf gradient on any rank makes its tensor NaN on every rank (the allreduced
            # dots carry it), so every GradScaler skips: no separate non-finite round.
            if self._comm.size > 1:
                wire = getattr(self._compression, "wire_dtype", None)
                with profiling.span("accord.optimizer.adasum"):
                    adasum_allreduce_(flat, offsets, self._comm, wire)
        else:
            if self._prescale != 1.0:
                flat.mul_(self._prescale)
            with profiling.span("accord.optimizer.allreduce"):
                if self._compression is None:
                    # the post-scale is applied before 16-bit gradients are rounded back (no
                    # overflow of a float16 sum whose mean fits)
                    self._comm.allreduce_(flat, "sum", scale=self._postscale)
                else:  # values rounded as Horovod's compression does (accord.compression)
                    small, ctx = self._compression.compress(flat)
                    self._comm.allreduce_(small, "sum", scale=self._postscale)
                    back = self._compression.decompress(small, ctx)
                    if back is not flat:
                        flat.copy_(back)
        return flat

    # -- public ---------------------------------------------------------------------------------

    @property
    def consensus(self):
        """The ConsensusAggregator of op=accord.Consensus (None otherwise)."""
        return self._consensus

    def synchronize(self):
        """Finish this step's communication: wait for every bucket (launching those not yet
        launched; missing gradients count as zeros) and write the reduced gradients back.
        Adasum: agree across ranks on non-finite gradients (module doc). Idempotent until the
        next backward or step()."""
        self._require_open()
        if self._grads_synced:
            return
        self._check_params()
        with profiling.span("accord.optimizer.synchronize"):
            self._synchronize()

    def _synchronize(self):
        try:
            if self._reduces_grads:
                while self._next_bucket < len(self._acc_buckets):
                    self._launch(self._acc_buckets[self._next_bucket])
                    self._next_bucket += 1
                for b in self._acc_buckets:
                    flat, event = b.future.result()
                    if event is not None:  # the consumer's stream waits for the worker's
                        event.wait(torch.cuda.current_stream(flat.device))
                    for p, s, e in zip(b.params, b.offsets[:-1], b.offsets[1:]):
                        piece = flat[s:e].view(p.shape)
                        if p.grad is None or p.grad.is_sparse:  # sparse_as_dense: now dense
                            p.grad = piece.clone()
                        else:
                            p.grad.copy_(piece)
            if self._adasum_mode == "delta":
                self._agree_nonfinite()
        finally:
            self._reset_cycle()
        self._grads_synced = True

    def _agree_nonfinite(self):
        params = [p for b in self._acc_buckets for p in b.params]
        # |g|^2 per bucket in float64 by the fused kernel: NaN or Inf in any gradient makes it
        # non-finite. The gradients are packed into the update buffer, which step() has not
        # taken yet: no allocation.
        local = False
        for b in self._acc_buckets:
            grads = [p.grad if p.grad is not None else p.detach()[:0] for p in b.params]
            if all(g.numel() == 0 for g in grads):
                continue
            flat = self._fusion.buffer(b.fused, copy=1)
            for g, lo, hi in zip(grads, b.offsets[:-1], b.offsets[1:]):
                if g.numel():
                    flat[lo:hi].copy_(g.reshape(-1))
                else:
                    flat[lo:hi].zero_()
            whole = np.array([0, b.fused.numel], dtype=np.int64)
            sq = ops.segment_dots(flat, flat, whole)
            local = local or not math.isfinite(float(sq[0, 1]))
        if self._comm.size > 1:
            anywhere = bool(self._comm.allreduce_small(np.array([int(local)], np.int64),
                                                       "max")[0])
        else:
            anywhere = local
        if anywhere:
            for p in params:
                if p.numel():
                    if p.grad is None:
                        p.grad = torch.zeros_like(p)
                    p.grad[(0,) * p.grad.dim()] = math.inf
                    break

    def _check_params(self):
        for g in self.param_groups:
            for p in g["params"]:
                if p.grad is not None and p.requires_grad and id(p) not in self._bucket_of:
                    raise RuntimeError(
                        "accord.DistributedOptimizer: a parameter has a gradient but was not "
                        "trainable (requires_grad) or not in the optimizer when it was wrapped, "
                        "so it would not be reduced; wrap the optimizer after freezing/unfreezing "
                        "or adding parameter groups")

    @contextlib.contextmanager
    def skip_synchronize(self):
        """step() inside this block does not synchronize (call synchronize() yourself first)."""
        self._sync_skipped = True
        try:
            yield
        finally:
            self._sync_skipped = False

    def step(self, closure=None):
        self._require_open()
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if not self._sync_skipped:
            self.synchronize()
        if self._adasum_mode == "delta" and self._comm.size > 1:
            with profiling.span("accord.optimizer.adasum_step"):
                self._adasum_step()
        else:
            super().step()
        self._grads_synced = False
        self._reset_cycle()
        return loss

    # Keeps Optimizer._patch_step_function (run by load_state_dict) from wrapping this step with
    # the step hooks: they already run around the wrapped optimizer's own step.
    step.hooked = True

    @torch.no_grad()
    def _adasum_step(self):
        from .adasum import adasum_allreduce_
        fusion = self._fusion
        before = [fusion.pack(b.fused, copy=0) for b in self._acc_buckets]
        super().step()
        compression = self._compression
        wire = getattr(compression, "wire_dtype", None)
        for b, flat in zip(self._acc_buckets, before):
            delta = fusion.pack(b.fused, copy=1).sub_(flat)
            if compression is None or wire is not None:  # 16-bit exchanges, float32 math
                adasum_allreduce_(delta, b.offsets, self._comm, wire)
            else:
                small, ctx = compression.compress(delta)
                adasum_allreduce_(small, b.offsets, self._comm)
                back = compression.decompress(small, ctx)
                if back is not delta:
                    delta.copy_(back)
            flat.add_(delta)
            fusion.unpack(b.fused, flat)


def _current_autograd_node():
    fn = getattr(torch._C, "_current_autograd_node", None)  # private; absent: assume not nested
    return fn() if fn is not None else None


_CLASSES: dict = {}


def _wrapped_class(base):
    cls = _CLASSES.get(base)
    if cls is None:
        cls = _CLASSES[base] = type(base.__name__, (_DistributedMixin, base),
                                    {"__module__": base.__module__})
    return cls


def _named(optimizer, named_parameters):
    params = [p for g in optimizer.param_groups for p in g["params"]]
    if named_parameters is None:
        return {id(p): f"param.{i}" for i, p in enumerate(params)}
    named = list(named_parameters)
    if any(not (isinstance(x, tuple) and len(x) == 2 and isinstance(x[1], torch.Tensor))
           for x in named):
        raise ValueError("named_parameters must be a sequence of (name, parameter) tuples, "
                         "e.g. model.named_parameters()")
    counts = collections.Counter(name for name, _ in named)
    dups = sorted(name for name, c in counts.items() if c > 1)
    if dups:
        raise ValueError(f"named_parameters has duplicate names: {dups}")
    names = {id(p): name for name, p in named}
    missing = [i for i, p in enumerate(params) if id(p) not in names]
    if missing:
        raise ValueError(
            f"named_parameters was given but {len(missing)} of the optimizer's parameters are "
            f"not named in it (positions {missing[:8]} in param_groups order); pass the "
            "named_parameters of the model the optimizer was built from")
    return names


def DistributedOptimizer(optimizer: torch.optim.Optimizer, named_parameters=None,
                         compression=Compression.none, backward_passes_per_step: int = 1,
                         op=ReduceOp.AVERAGE, gradient_predivide_factor: float = 1.0,
                         num_groups: int = 0, groups=None, sparse_as_dense: bool = False,
                         process_set=None, *, comm: Communicator | None = None,
                         consensus=None, adasum_mode: str = "delta") -> torch.optim.Optimizer:
    """Wrap ``optimizer`` so that its steps use gradients/updates reduced over all ranks.

    Horovod's signature. ``op``: ``accord.Average`` (default), ``accord.Sum``,
    ``accord.Adasum`` or ``accord.Consensus`` (see the module doc). ``named_parameters``:
    ``model.named_parameters()`` (validated: unique names, every optimizer parameter named; used
    in messages). ``compression``: ``accord.Compression.none`` / ``.fp16`` / ``.bf16`` (with
    Adasum the update halves travel in 16 bits, the combine stays in the parameters' dtype; with
    Average/Sum the fused gradients are rounded to 16 bits around the reduction; not with
    Consensus). ``backward_passes_per_step``: local accumulations before the reduction.
    ``gradient_predivide_factor`` f (Average only): gradients are scaled by 1/f before the sum
    and by f/N after. ``num_groups`` / ``groups``: accepted; accord fuses by dtype, device and
    ``accord.fusion_threshold()`` instead. ``sparse_as_dense``: reduce sparse gradients as dense
    tensors (otherwise they raise). ``process_set`` / ``comm``: an accord Communicator (default:
    the one of ``accord.init()``). ``consensus``: the ConsensusAggregator to use with
    ``op=accord.Consensus``. ``adasum_mode`` (op=accord.Adasum): ``"delta"`` (default, Horovod's
    semantics: Adasum of the local optimizer updates, in ``step()``) or ``"gradients"`` (Adasum of
    the gradients, bucket by bucket in the background during backward, as the DDP hook; then the
    wrapped optimizer's step on the combined gradient). They agree for plain SGD and differ with
    momentum, weight decay or adaptive optimizers (docs/training.md). Collective: every rank
    wraps the same parameters (checked with one tiny allreduce); an argument problem found on
    one rank raises on every rank.
    """
    if isinstance(compression, (ReduceOp, str)) and op is ReduceOp.AVERAGE:
        # accord's earlier positional order (optimizer, named_parameters, op): keep it working
        compression, op = Compression.none, compression
    if process_set is not None and isinstance(process_set, Communicator) and comm is None:
        comm = process_set
    comm = comm if comm is not None else topology.communicator()
    try:
        op, names, f, consensus, compression = _validate(
            optimizer, named_parameters, op, backward_passes_per_step, gradient_predivide_factor,
            comm, consensus, compression, sparse_as_dense, num_groups, groups, process_set,
            adasum_mode)
    except (TypeError, ValueError) as e:
        # A problem seen on this rank only must not leave the others waiting in the exchange
        # of _accord_setup: it joins that exchange, and every rank raises.
        check_consistency(comm, "DistributedOptimizer:invalid", [], local_error=e)
        raise
    cls = _wrapped_class(type(optimizer))
    wrapped = cls.__new__(cls)
    # Share the optimizer's state, param_groups and hooks. An instance-level `step` (an LR
    # scheduler's call-tracking wrapper around the old object's step) would shadow ours: drop it.
    wrapped.__dict__.update({k: v for k, v in optimizer.__dict__.items() if k != "step"})
    wrapped._accord_setup(op, names, backward_passes_per_step, float(f), comm, consensus,
                          compression, sparse_as_dense, adasum_mode)
    return wrapped


ADASUM_MODES = ("delta", "gradients")


def _validate(optimizer, named_parameters, op, bpps, f, comm, consensus, compression,
              sparse_as_dense, num_groups, groups, process_set, adasum_mode):
    """DistributedOptimizer's argument checks: (op, names, predivide factor, consensus,
    compression)."""
    compression = check_compression(compression)
    if not isinstance(sparse_as_dense, bool):
        raise TypeError(f"sparse_as_dense must be a bool, got {sparse_as_dense!r}")
    if isinstance(num_groups, bool) or not isinstance(num_groups, int) or num_groups < 0:
        raise ValueError(f"num_groups must be an int >= 0, got {num_groups!r}")
    if groups is not None and not isinstance(groups, (int, list, tuple)):
        raise ValueError(f"groups must be None, an int or a list of parameter lists, got "
                         f"{type(groups).__name__}")
    if process_set is not None:
        if not isinstance(process_set, Communicator):
            raise TypeError("process_set must be None or an accord Communicator (accord has no "
                            "Horovod process sets; use accord.communicator().split(color)), got "
                            f"{type(process_set).__name__}")
        if comm is not process_set:
            raise ValueError("process_set and comm name different communicators")
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer, got "
                        f"{type(optimizer).__name__}")
    if isinstance(optimizer, _DistributedMixin):
        raise ValueError("optimizer is already an accord.DistributedOptimizer")
    if isinstance(optimizer, torch.optim.LBFGS):
        raise ValueError("LBFGS evaluates its closure several times per step; "
                         "accord.DistributedOptimizer does not support it")
    op = parse_op(op, GRADIENT_OPS)
    if isinstance(bpps, bool) or not isinstance(bpps, int) or bpps < 1:
        raise ValueError(f"backward_passes_per_step must be an int >= 1, got {bpps!r}")
    if isinstance(f, bool) or not isinstance(f, (int, float)) or not (math.isfinite(f) and f > 0):
        raise ValueError(f"gradient_predivide_factor must be a positive number, got {f!r}")
    if f != 1.0 and op is not ReduceOp.AVERAGE:
        raise ValueError("gradient_predivide_factor is only supported with op=accord.Average")
    if consensus is not None and op is not ReduceOp.CONSENSUS:
        raise ValueError("consensus= is only used with op=accord.Consensus")
    if adasum_mode not in ADASUM_MODES:
        raise ValueError(f"adasum_mode must be one of {ADASUM_MODES}, got {adasum_mode!r}")
    if adasum_mode != "delta" and op is not ReduceOp.ADASUM:
        raise ValueError("adasum_mode is only used with op=accord.Adasum")
    if op is ReduceOp.CONSENSUS and not is_none(compression):
        raise ValueError("compression is not supported with op=accord.Consensus (its Gram "
                         "matrices need the full-precision gradients); use "
                         "compression=accord.Compression.none")
    names = _named(optimizer, named_parameters)
    if op is ReduceOp.CONSENSUS:
        if consensus is None:
            from .consensus import ConsensusAggregator
            consensus = ConsensusAggregator(comm=comm)
        elif not callable(getattr(consensus, "aggregate_flat_", None)):
            raise TypeError("consensus must be an accord.ConsensusAggregator, got "
                            f"{type(consensus).__name__}")
        elif consensus.comm is not comm:
            raise ValueError("the ConsensusAggregator runs on another communicator than the "
                             "optimizer; pass the same comm= to both")
    return op, names, f, consensus, compression
