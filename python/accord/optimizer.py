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

Threading: mpi4py initialises MPI with ``MPI_THREAD_MULTIPLE``; accord needs at least
``MPI_THREAD_SERIALIZED`` (it falls back to reducing on the calling thread, without overlap,
below that). While a reduction is in flight only the worker thread communicates on the optimizer's
communicator: do not issue other collectives on the same communicator from inside backward (e.g.
SyncBatchNorm on torch's default group when accord also runs on it); give accord its own
communicator instead (``accord.init()`` over MPI uses a private duplicate of COMM_WORLD).

Limits: sparse gradients are not supported; closures are evaluated once, before the reduction
(LBFGS, which evaluates its closure repeatedly, is not supported); parameters whose
``requires_grad`` changes or that are added after wrapping are not reduced (an error says so):
wrap after freezing/unfreezing.
"""
from __future__ import annotations

import collections
import contextlib
import math
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import torch

from . import topology
from ._kernels import dtype_code
from .collectives import (ReduceOp, _op, broadcast_parameters, check_consistency,
                          fusion_threshold)

__all__ = ["DistributedOptimizer", "broadcast_optimizer_state"]


class _Bucket:
    """A fixed run of parameters reduced as one flat buffer (``offsets``: per-tensor segments)."""
    __slots__ = ("index", "params", "offsets", "counts", "ready", "future")

    def __init__(self, index, params):
        self.index, self.params = index, params
        self.offsets = np.zeros(len(params) + 1, dtype=np.int64)
        np.cumsum([p.numel() for p in params], out=self.offsets[1:])
        self.counts = [0] * len(params)
        self.ready = 0
        self.future = None


def _make_buckets(params, threshold):
    buckets, current, nbytes, key = [], [], 0, None
    for p in params:
        k = (p.dtype, p.device)
        size = p.numel() * p.element_size()
        if current and (k != key or nbytes + size > threshold):
            buckets.append(_Bucket(len(buckets), current))
            current, nbytes = [], 0
        current.append(p)
        nbytes += size
        key = k
    if current:
        buckets.append(_Bucket(len(buckets), current))
    return buckets


def _pack(tensors):
    return torch.cat([t.detach().reshape(-1) for t in tensors])


class _DistributedMixin:
    """Methods of the dynamic subclass; the wrapped optimizer's class comes after it in the MRO."""

    def _accord_setup(self, op, names, bpps, predivide, comm, consensus):
        self._reduce_op, self._param_names, self._bpps, self._comm = op, names, bpps, comm
        self._consensus = consensus
        params = [p for g in self.param_groups for p in g["params"] if p.requires_grad]
        if op is ReduceOp.ADASUM:
            for p in params:
                dtype_code(p, f"parameter {names.get(id(p), '?')}")
        # Reverse order: backward produces the last layers' gradients first (as DDP buckets).
        threshold = fusion_threshold()
        if op is ReduceOp.CONSENSUS and consensus.granularity == "model":
            # One weight set per call: "model" must see the whole model in one buffer.
            if len({(p.dtype, p.device) for p in params}) > 1:
                raise ValueError("op=accord.Consensus with granularity='model' needs every "
                                 "parameter in one dtype and device (one fused buffer); use "
                                 "ConsensusAggregator(granularity='layer')")
            threshold = math.inf
        self._acc_buckets = _make_buckets(params[::-1], threshold)
        self._bucket_of = {id(p): (b, j) for b in self._acc_buckets for j, p in enumerate(b.params)}
        check_consistency(comm, f"DistributedOptimizer:{op.value}:{bpps}:{predivide}",
                          [p.detach() for b in self._acc_buckets for p in b.params])
        n = comm.size
        self._prescale = 1.0 / predivide if op is ReduceOp.AVERAGE else 1.0
        self._postscale = predivide / n if op is ReduceOp.AVERAGE else 1.0
        self._reduces_grads = op is not ReduceOp.ADASUM
        self._executor = None
        self._threaded = self._reduces_grads and n > 1 and _threads_ok(comm)
        self._next_bucket = 0        # first bucket not yet launched this cycle
        self._grads_synced = False   # reduced (Adasum: checked) since the last backward/step
        self._sync_skipped = False
        self._callback_queued = False
        self._grad_hooks = [p.register_post_accumulate_grad_hook(self._on_grad) for p in params]

    # -- per-cycle state ------------------------------------------------------------------------

    def _reset_cycle(self):
        for b in self._acc_buckets:
            b.counts = [0] * len(b.params)
            b.ready, b.future = 0, None
        self._next_bucket = 0
        self._callback_queued = False

    def _on_grad(self, p):
        """post-accumulate-grad hook (autograd thread): count, launch full buckets in order."""
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
            elif g.is_sparse:
                raise TypeError(f"accord.DistributedOptimizer: sparse gradient for parameter "
                                f"{self._param_names.get(id(p), '?')} is not supported")
            grads.append(g if g.dtype == p.dtype else g.to(p.dtype))
        flat = _pack(grads)  # a private copy: the worker never touches p.grad
        event = None
        if flat.is_cuda:
            event = torch.cuda.Event()
            event.record()
        if self._threaded:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=1,
                                                    thread_name_prefix="accord-reduce")
            b.future = self._executor.submit(self._reduce, flat, b.offsets, b.index, event)
        else:
            b.future = Future()
            b.future.set_result(self._reduce(flat, b.offsets, b.index, event))

    def _reduce(self, flat, offsets, key, event):
        """The collective itself (worker thread)."""
        if event is not None:
            event.wait()  # the packing kernel ran on the launching thread's stream
        if self._reduce_op is ReduceOp.CONSENSUS:
            try:
                self._consensus.aggregate_flat_(flat, offsets, key=key)
            except FloatingPointError:
                # Raised on every rank alike (decided from allreduced Gram entries): NaN
                # gradients everywhere, so a GradScaler skips the step on every rank.
                flat.fill_(math.nan)
        else:
            if self._prescale != 1.0:
                flat.mul_(self._prescale)
            self._comm.allreduce_(flat, "sum")
            if self._postscale != 1.0:
                flat.mul_(self._postscale)
        if flat.is_cuda:
            event = torch.cuda.Event()
            event.record()
        return flat, event

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
        if self._grads_synced:
            return
        self._check_params()
        try:
            if self._reduces_grads:
                while self._next_bucket < len(self._acc_buckets):
                    self._launch(self._acc_buckets[self._next_bucket])
                    self._next_bucket += 1
                for b in self._acc_buckets:
                    flat, event = b.future.result()
                    if event is not None:
                        event.wait()
                    for p, s, e in zip(b.params, b.offsets[:-1], b.offsets[1:]):
                        piece = flat[s:e].view(p.shape)
                        if p.grad is None:
                            p.grad = piece.clone()
                        else:
                            p.grad.copy_(piece)
            if self._reduce_op is ReduceOp.ADASUM:
                self._agree_nonfinite()
        finally:
            self._reset_cycle()
        self._grads_synced = True

    def _agree_nonfinite(self):
        params = [p for b in self._acc_buckets for p in b.params]
        finite: dict = {}  # one device sync per device, not per tensor
        for p in params:
            if p.grad is not None:
                finite.setdefault(p.grad.device, []).append(torch.isfinite(p.grad).all())
        local = not all(bool(torch.stack(v).all()) for v in finite.values())
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
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if not self._sync_skipped:
            self.synchronize()
        if self._reduce_op is ReduceOp.ADASUM and self._comm.size > 1:
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
        before = [_pack(b.params) for b in self._acc_buckets]
        super().step()
        for b, flat in zip(self._acc_buckets, before):
            delta = _pack(b.params).sub_(flat)
            adasum_allreduce_(delta, b.offsets, self._comm)
            flat.add_(delta)
            for p, s, e in zip(b.params, b.offsets[:-1], b.offsets[1:]):
                p.copy_(flat[s:e].view(p.shape))


def _current_autograd_node():
    fn = getattr(torch._C, "_current_autograd_node", None)  # private; absent: assume not nested
    return fn() if fn is not None else None


def _threads_ok(comm) -> bool:
    if getattr(comm, "mpi_comm", None) is None:
        return True  # torch.distributed process groups may be used from any thread
    from mpi4py import MPI
    return MPI.Query_thread() >= MPI.THREAD_SERIALIZED


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


def DistributedOptimizer(optimizer, named_parameters=None, op=ReduceOp.AVERAGE,
                         backward_passes_per_step: int = 1,
                         gradient_predivide_factor: float = 1.0, comm=None, consensus=None):
    """Wrap ``optimizer`` so that its steps use gradients/updates reduced over all ranks.

    ``op``: ``accord.Average`` (default), ``accord.Sum``, ``accord.Adasum`` or
    ``accord.Consensus`` (see the module doc). ``named_parameters``: ``model.named_parameters()``
    (validated: unique names, every optimizer parameter named; used in messages).
    ``backward_passes_per_step``: local accumulations before the reduction.
    ``gradient_predivide_factor`` f (Average only): gradients are scaled by 1/f before the sum and
    by f/N after. ``comm``: an accord Communicator (default: the one of ``accord.init()``).
    ``consensus``: the ConsensusAggregator to use with ``op=accord.Consensus``.
    Collective: every rank wraps the same parameters (checked with one tiny allreduce).
    """
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer, got "
                        f"{type(optimizer).__name__}")
    if isinstance(optimizer, _DistributedMixin):
        raise ValueError("optimizer is already an accord.DistributedOptimizer")
    if isinstance(optimizer, torch.optim.LBFGS):
        raise ValueError("LBFGS evaluates its closure several times per step; "
                         "accord.DistributedOptimizer does not support it")
    try:
        op = _op(op)
    except ValueError:
        raise ValueError("op must be accord.Average, accord.Sum, accord.Adasum or "
                         f"accord.Consensus, got {op!r}") from None
    if (isinstance(backward_passes_per_step, bool) or
            not isinstance(backward_passes_per_step, int) or backward_passes_per_step < 1):
        raise ValueError("backward_passes_per_step must be an int >= 1, got "
                         f"{backward_passes_per_step!r}")
    f = gradient_predivide_factor
    if isinstance(f, bool) or not isinstance(f, (int, float)) or not (math.isfinite(f) and f > 0):
        raise ValueError(f"gradient_predivide_factor must be a positive number, got {f!r}")
    if f != 1.0 and op is not ReduceOp.AVERAGE:
        raise ValueError("gradient_predivide_factor is only supported with op=accord.Average")
    if consensus is not None and op is not ReduceOp.CONSENSUS:
        raise ValueError("consensus= is only used with op=accord.Consensus")
    names = _named(optimizer, named_parameters)
    comm = comm if comm is not None else topology.communicator()
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

    cls = _wrapped_class(type(optimizer))
    wrapped = cls.__new__(cls)
    # Share the optimizer's state, param_groups and hooks. An instance-level `step` (an LR
    # scheduler's call-tracking wrapper around the old object's step) would shadow ours: drop it.
    wrapped.__dict__.update({k: v for k, v in optimizer.__dict__.items() if k != "step"})
    wrapped._accord_setup(op, names, backward_passes_per_step, float(f), comm, consensus)
    return wrapped


# -------------------------------------------------------------------------------------------------
# broadcast_optimizer_state


class _TensorSlot(tuple):
    """Placeholder for the i-th tensor of a state dict: (index, dtype name, shape)."""


def _strip(obj, tensors):
    if isinstance(obj, torch.Tensor):
        tensors.append(obj)
        return _TensorSlot((len(tensors) - 1, str(obj.dtype).replace("torch.", ""),
                            tuple(obj.shape)))
    if isinstance(obj, dict):
        return type(obj)((k, _strip(v, tensors)) for k, v in obj.items())
    if isinstance(obj, list):
        return [_strip(v, tensors) for v in obj]
    if isinstance(obj, tuple) and not isinstance(obj, _TensorSlot):
        items = [_strip(v, tensors) for v in obj]
        return type(obj)(*items) if hasattr(obj, "_fields") else type(obj)(items)
    return obj


def _fill(obj, tensors):
    if isinstance(obj, _TensorSlot):
        return tensors[obj[0]]
    if isinstance(obj, dict):
        return type(obj)((k, _fill(v, tensors)) for k, v in obj.items())
    if isinstance(obj, list):
        return [_fill(v, tensors) for v in obj]
    if isinstance(obj, tuple):
        items = [_fill(v, tensors) for v in obj]
        return type(obj)(*items) if hasattr(obj, "_fields") else type(obj)(items)
    return obj


def broadcast_optimizer_state(optimizer, root_rank: int = 0, *, comm=None) -> None:
    """Make every rank's optimizer state and hyperparameters (lr, momentum, ...) ``root_rank``'s.

    Works whether or not the other ranks already have state (e.g. before the first step, when
    Adam/momentum buffers do not exist yet): the root's ``state_dict()`` structure travels as one
    small pickled object, its tensors in fused broadcasts, and the other ranks
    ``load_state_dict()`` the result (tensors are moved to each parameter's device there).
    Collective. Raises ValueError on every rank if the param_groups do not match the root's.
    """
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer, got "
                        f"{type(optimizer).__name__}")
    comm = comm if comm is not None else topology.communicator()
    if not 0 <= root_rank < comm.size:
        raise ValueError(f"root_rank must be in [0, {comm.size}), got {root_rank}")
    if comm.size == 1:
        return
    sd = optimizer.state_dict()
    tensors: list = []
    skeleton = _strip(sd, tensors)
    layout = [len(g["params"]) for g in sd["param_groups"]]
    me = comm.rank == root_rank
    every = comm.allgather_object((skeleton if me else None, layout))
    root_skeleton, root_layout = every[root_rank]
    bad = [r for r, (_, lay) in enumerate(every) if lay != root_layout]
    if bad:  # every rank sees every layout, so all raise together
        raise ValueError(f"broadcast_optimizer_state: parameters per group differ from root "
                         f"rank {root_rank}'s {root_layout} on ranks {bad}")
    if me:
        bufs = [t.detach().cpu() for t in tensors]
    else:
        bufs = []
        _collect_slots(root_skeleton, bufs)
        bufs = [torch.empty(shape, dtype=getattr(torch, dtype)) for _, dtype, shape in
                sorted(bufs)]
    broadcast_parameters(bufs, root_rank, comm=comm)
    if not me:
        optimizer.load_state_dict(_fill(root_skeleton, bufs))


def _collect_slots(obj, out):
    if isinstance(obj, _TensorSlot):
        out.append(tuple(obj))
    elif isinstance(obj, dict):
        for v in obj.values():
            _collect_slots(v, out)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _collect_slots(v, out)
