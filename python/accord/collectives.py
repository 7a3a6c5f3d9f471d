"""Horovod-style collectives over the process-wide communicator (``accord.init``).

    allreduce(t, op=Average)          new tensor / array
    allreduce_(t, op=Average)         in place
    grouped_allreduce(ts, op=...)     many tensors fused into few buffers (one segment each)
    broadcast_(t, root_rank), broadcast(t, root_rank), broadcast_parameters(params, root_rank)
    allgather(t)                      concatenation along dim 0 (first dims may differ)

Ops: ``Sum``, ``Average`` and ``Adasum`` (per-tensor coefficients; see accord.adasum for the
tree), and the element-wise ``Min``, ``Max`` and ``Product``. Everything works on torch tensors
(CPU through MPI or gloo, CUDA through NCCL) and on numpy arrays.

Consistency check: before any data moves, ranks compare a 64-bit signature of the call (op,
dtypes, shapes) with one tiny allreduce; a mismatch raises ``ValueError`` on every rank naming
what differs, instead of deadlocking or silently mixing tensors. It costs one small allreduce and
no pass over the data; turn it off with ``accord.set_consistency_check(False)`` or
``ACCORD_CHECK_CONSISTENCY=0``.

Bad input: every argument problem is found before any data moves or any input is written, and
it joins the consistency exchange, so every rank raises (naming the argument and the ranks), not
only the one that saw it. A call either completes or leaves its inputs untouched.

* dtypes: Sum takes float16/bfloat16/float32/float64 and integer dtypes (int8 to int64, numpy
  unsigned too); Average takes the floating dtypes only: an integer Average is refused
  (``TypeError``), since its mean is not an integer (use a floating copy, or Sum and divide
  yourself). Adasum takes float16/bfloat16/float32/float64. broadcast and allgather move any
  numpy or torch dtype except numpy object arrays.
* requires grad: the in-place calls (``allreduce_``, ``grouped_allreduce_``, ``broadcast_``)
  refuse a tensor that requires grad while grad mode is on (``RuntimeError``): they would change
  it behind autograd's back. Pass ``t.detach()`` (shares memory) or call them under
  ``torch.no_grad()``. ``broadcast_parameters`` writes parameters the way an optimizer step does
  (not recorded by autograd) and accepts them.

Gradients of the out-of-place calls: ``allreduce``/``grouped_allreduce`` with Sum or Average on
tensors that require grad (grad mode on) return results that carry the collective's adjoint, as
``torch.distributed.nn.functional.all_reduce`` does: the gradient of the inputs is the Sum
(resp. Average) over ranks of the results' gradients, itself a collective run during backward,
so every rank must backpropagate through the results. Adasum has no simple adjoint: its results
are detached. ``broadcast`` and ``allgather`` return detached results.

Reductions: Average is a Sum scaled by 1/N before the result is rounded to the tensor's dtype;
float16 and bfloat16 are reduced and scaled in float32 and rounded once, so a mean that fits the
16-bit type does not overflow (a float16 Sum whose value exceeds 65504 is inf).

NaN/Inf: ``accord.set_nonfinite`` / ``ACCORD_NONFINITE`` picks the policy of ``allreduce(_)`` and
``grouped_allreduce(_)``. ``"propagate"`` (default, no cost): Sum and Average propagate NaN/Inf
element-wise (as MPI does); Adasum works per layer: a NaN or Inf anywhere in one rank's tensor
makes that whole tensor NaN on every rank (other tensors of a grouped call are unaffected), so a
loss scaler (GradScaler) sees it and skips the step. ``"raise"``: ``FloatingPointError`` on every
rank, inputs unchanged. ``"skip"``: the whole call's results are zeros on every rank (counted by
:func:`nonfinite_skips`). Both decide from the reduced values plus one 8-byte max-allreduce of a
flag, so ranks never disagree.
"""
from __future__ import annotations

import functools
import math

import numpy as np

from . import profiling, settings, topology
from ._buffers import BoundedCache, flat_view, is_contiguous, is_tensor, numel, torch_module
from ._kernels import dtype_code
from .adasum import adasum_allreduce_
from .consistency import check_consistency
from .fusion import Fusion
from .reduce_op import ReduceOp, parse_op

__all__ = ["allreduce", "allreduce_", "grouped_allreduce", "grouped_allreduce_", "broadcast",
           "broadcast_", "broadcast_parameters", "allgather", "nonfinite_skips"]

ALLREDUCE_OPS = (ReduceOp.SUM, ReduceOp.AVERAGE, ReduceOp.ADASUM, ReduceOp.MIN, ReduceOp.MAX,
                  ReduceOp.PRODUCT)
# The communicator's name for each element-wise op (Average is a Sum, then a scale).
_ELEMENTWISE = {ReduceOp.SUM: "sum", ReduceOp.AVERAGE: "sum", ReduceOp.MIN: "min",
                ReduceOp.MAX: "max", ReduceOp.PRODUCT: "prod"}
_NUMPY_SUM = frozenset(np.dtype(t) for t in (np.int8, np.uint8, np.int16, np.uint16, np.int32,
                                             np.uint32, np.int64, np.uint64, np.float16,
                                             np.float32, np.float64))
_SUM_DTYPES = "float16, bfloat16, float32, float64 or an integer dtype"
_skips = 0


def nonfinite_skips() -> int:
    """How many allreduce/grouped_allreduce calls returned zeros under the ``"skip"`` NaN/Inf
    policy (``accord.set_nonfinite``) in this process."""
    return _skips


# ---------------------------------------------------------------------------------------------
# argument checks (run before any data moves; their errors join the consistency exchange)


def _comm(comm):
    return comm if comm is not None else topology.communicator()


def _one_unit(fn):
    """Run the collective as one operation of its communicator's guard: another thread cannot
    interleave its calls, and a stall report names the collective (and ``name=``, if given)."""
    label = fn.__name__
    whats = BoundedCache(1024)  # (op, name) -> the text above: formatted once per pair

    @functools.wraps(fn)
    def call(*args, comm=None, **kwargs):
        c = comm if comm is not None or not topology.is_initialized() else \
            topology.communicator()
        if c is None:
            return fn(*args, comm=comm, **kwargs)  # raises "accord.init() has not been called"
        op, name = kwargs.get("op", args[1] if len(args) > 1 else None), kwargs.get("name")
        try:
            what = whats.get((op, name))
        except TypeError:  # an unhashable op: refused below, described here
            what = None
        if what is None:
            what = label
            if op is not None and label.endswith(("allreduce", "allreduce_")):
                what += f"[{getattr(op, 'value', op)}]"
            if name is not None:
                what += f" name={name!r}"
            if isinstance(op, (ReduceOp, str)) and (name is None or isinstance(name, str)):
                whats[(op, name)] = what
        first = args[0] if args else None
        with c.operation(what, (first,) if hasattr(first, "shape") else
                         (f"{len(first)} tensors",) if isinstance(first, (list, tuple)) else ()):
            return fn(*args, comm=c, **kwargs)

    return call


def _check_buffer(t, name: str) -> None:
    if not (is_tensor(t) or isinstance(t, np.ndarray)):
        raise TypeError(f"{name} must be a numpy array or a torch tensor, got {type(t).__name__}")
    if not is_tensor(t) and t.dtype.hasobject:
        raise TypeError(f"{name}: numpy dtype {t.dtype} holds Python objects, which cannot be "
                        "sent; use a numeric dtype")


def _check_writable(t, name: str) -> None:
    """In-place calls never write into a tensor autograd tracks (module doc)."""
    if is_tensor(t) and t.requires_grad and torch_module().is_grad_enabled():
        raise RuntimeError(f"{name} requires grad: an in-place collective would overwrite it "
                           f"behind autograd's back; pass {name}.detach() (same memory, not "
                           "recorded), call it under torch.no_grad(), or use the out-of-place "
                           "form (accord.allreduce / grouped_allreduce / broadcast)")


@functools.lru_cache(maxsize=None)
def _torch_sum_dtypes() -> frozenset:
    torch = torch_module()
    return frozenset((torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.int8,
                      torch.uint8, torch.int16, torch.int32, torch.int64))


def _check_reducible(t, name: str, op: ReduceOp) -> None:
    if op is ReduceOp.ADASUM:
        dtype_code(t, name)  # the kernels' dtypes only
        return
    if is_tensor(t):
        ok = t.dtype in _torch_sum_dtypes()
        integer = ok and not t.is_floating_point()
    else:
        ok = t.dtype in _NUMPY_SUM
        integer = ok and t.dtype.kind in "iu"
    if ok and not (integer and op is ReduceOp.AVERAGE):
        return
    dtype = str(t.dtype).replace("torch.", "")  # for the message only: str(dtype) is slow
    if not ok:
        raise TypeError(f"{name}: dtype {dtype} cannot be reduced with op=accord."
                        f"{op.name.title()}; use {_SUM_DTYPES}")
    if integer and op is ReduceOp.AVERAGE:
        copy = f"{name}.double()" if is_tensor(t) else f"{name}.astype(np.float64)"
        raise TypeError(f"{name}: op=accord.Average of integer dtype {dtype} is refused (the "
                        "mean of integers is not an integer); reduce a floating-point copy "
                        f"(e.g. {copy}), or use op=accord.Sum and divide yourself")


# (type, dtype, op, in_place, writes-into-a-tensor-autograd-tracks) of single tensors that
# passed the checks below: a training loop passes the same kinds of tensor every step.
_PASSED = BoundedCache(256)


def _pass_key(op, t, in_place: bool):
    if type(t) is np.ndarray:
        return (np.ndarray, t.dtype, op, in_place)
    if is_tensor(t):
        tracked = in_place and t.requires_grad and torch_module().is_grad_enabled()
        return (type(t), t.dtype, op, in_place, tracked)
    return None


def _local_error(op, tensors, names, *, in_place: bool, root_rank=None, size=None):
    """This rank's own argument problems, reported through the consistency check so that every
    rank raises (module doc); None if there are none."""
    key = _pass_key(op, tensors[0], in_place) if len(tensors) == 1 and root_rank is None \
        else None
    if key is not None and key in _PASSED:
        return None
    try:
        if root_rank is not None and not (isinstance(root_rank, int) and 0 <= root_rank < size):
            raise ValueError(f"root_rank must be an int in [0, {size}), got {root_rank!r}")
        for t, name in zip(tensors, names):
            _check_buffer(t, name)
            if op is not None:
                _check_reducible(t, name, op)
            if in_place:
                _check_writable(t, name)
    except (TypeError, ValueError, RuntimeError) as e:
        return e
    if key is not None:
        _PASSED.get_or_make(key, lambda: True)
    return None


_WHATS: dict = {}


def _what(kind: str, op: ReduceOp, hierarchical: bool, wire: str | None = None) -> str:
    # The NaN/Inf policy is part of the signature: raise/skip run one more small allreduce.
    key = (kind, op, hierarchical, wire, settings.nonfinite())
    what = _WHATS.get(key)
    if what is None:
        what = _WHATS[key] = f"{kind}:{op.value}:{hierarchical}:{key[4]}" + \
            (f":{wire}" if wire else "")
    return what


def _tensor_names(n: int, name: str = "tensors"):
    return [f"{name}[{i}]" for i in range(n)]


# ---------------------------------------------------------------------------------------------
# the reduction


def _reduce_flat_(flat, offsets: np.ndarray, op: ReduceOp, comm, hierarchical: bool,
                  wire: str | None = None) -> None:
    """The reduction itself on one contiguous 1-D buffer split into tensor segments.
    ``wire``: Adasum's exchanges carry 16-bit values (accord.compression)."""
    if op is ReduceOp.ADASUM:
        if hierarchical:
            from .hierarchical import hierarchical_adasum_
            hierarchical_adasum_(flat, offsets, comm)
        else:
            adasum_allreduce_(flat, offsets, comm, wire)
        return
    # Average: the 1/N scale is applied before the values are rounded to a 16-bit dtype
    comm.allreduce_(flat, _ELEMENTWISE[op],
                    scale=1.0 / comm.size if op is ReduceOp.AVERAGE else None)


def _finite(buf) -> bool:
    if is_tensor(buf):
        return not buf.is_floating_point() or bool(torch_module().isfinite(buf).all())
    return buf.dtype.kind not in "fc" or bool(np.isfinite(buf).all())


def _nonfinite_anywhere(bufs, comm) -> bool:
    """Whether any rank's reduced result holds NaN/Inf: one flag, max-reduced, so every rank
    decides alike even if a transport gave ranks different bits."""
    local = int(not all(_finite(b) for b in bufs))
    if comm.size == 1:
        return bool(local)
    return bool(comm.allreduce_small(np.array([local], dtype=np.int64), "max")[0])


def _zero_(buf) -> None:
    if is_tensor(buf):
        buf.zero_()
    else:
        buf[...] = 0


def _after_reduction(bufs, comm, policy: str) -> None:
    """The NaN/Inf policy on the reduced buffers, before anything is written to the inputs."""
    global _skips
    if policy == "propagate" or not _nonfinite_anywhere(bufs, comm):
        return
    if policy == "raise":
        raise FloatingPointError("accord: the reduced result holds NaN or Inf (policy 'raise', "
                                 "accord.set_nonfinite); the inputs are unchanged on every rank")
    _skips += 1
    for b in bufs:
        _zero_(b)


def _copy(t):
    """A contiguous, detached copy (the out-of-place result before its reduction)."""
    if is_tensor(t):
        return t.detach().clone(memory_format=torch_module().contiguous_format)
    return np.array(t, copy=True, order="C")


_OFFSETS = BoundedCache(1024)


def _one_segment(n: int) -> np.ndarray:
    """The offsets [0, n] of a one-tensor buffer (shared, read-only)."""
    offsets = _OFFSETS.get(n)
    if offsets is None:
        offsets = np.array([0, n], dtype=np.int64)
        offsets.flags.writeable = False
        _OFFSETS[n] = offsets
    return offsets


def _flat_writable(tensor):
    """A contiguous tensor as a 1-D buffer the reduction may write (detached from autograd:
    the in-place calls only reach here once a tracked tensor has been refused)."""
    if type(tensor) is np.ndarray:
        return tensor if tensor.ndim == 1 else tensor.reshape(-1)
    if tensor.requires_grad:
        tensor = tensor.detach()
    return tensor if tensor.dim() == 1 else tensor.view(-1)


def _reduce_one_(tensor, op, comm, hierarchical, policy, wire=None) -> None:
    """Reduce one validated tensor in place."""
    offsets = _one_segment(numel(tensor))
    if is_contiguous(tensor) and policy != "raise":
        flat = _flat_writable(tensor)
        _reduce_flat_(flat, offsets, op, comm, hierarchical, wire)
        _after_reduction([flat], comm, policy)
        return
    # a scratch copy: non-contiguous tensors, and "raise", which must leave the input unchanged
    flat = flat_view(_copy(tensor))
    _reduce_flat_(flat, offsets, op, comm, hierarchical, wire)
    _after_reduction([flat], comm, policy)
    if is_tensor(tensor):
        tensor.detach().copy_(flat.view(tensor.shape))
    else:
        tensor[...] = flat.reshape(tensor.shape)


def _grouped_(tensors, op, comm, hierarchical, policy, in_place: bool, wire=None):
    """Reduce validated tensors; in place (returns them) or into fresh fused buffers (returns
    views of those). Every bucket is reduced before any result is written back, so a failure
    leaves the inputs untouched."""
    # Out of place, the results are views into the fused buffers: fresh ones every call.
    # In place, the buffers are scratch: one per bucket, kept while the same layout recurs.
    fusion = _in_place_fusion(tensors) if in_place else Fusion(tensors)
    fused = []
    for bucket in fusion.buckets:
        with profiling.span("accord.fusion.pack"):
            buf = fusion.pack(bucket, tensors)
        _reduce_flat_(buf, bucket.offsets, op, comm, hierarchical, wire)
        fused.append(buf)
    _after_reduction(fused, comm, policy)
    if in_place:
        with profiling.span("accord.fusion.unpack"):
            for bucket, buf in zip(fusion.buckets, fused):
                fusion.unpack(bucket, buf, tensors)
        return list(tensors)
    out = [None] * len(tensors)
    for bucket, buf in zip(fusion.buckets, fused):
        for i, view in zip(bucket.members, fusion.views(bucket, buf, tensors)):
            out[i] = view
    return out


def _wants_grad(op, tensors) -> bool:
    if op is ReduceOp.ADASUM or not any(is_tensor(t) and t.requires_grad for t in tensors):
        return False
    return torch_module().is_grad_enabled()


_FUNCTION = None


def _autograd_allreduce():
    """The autograd Function of out-of-place Sum/Average: forward reduces copies of the inputs,
    backward reduces the results' gradients with the same op (the adjoint of a Sum over ranks
    is a Sum of the output gradients; of an Average, their Average)."""
    global _FUNCTION
    if _FUNCTION is None:
        torch = torch_module()

        class AllreduceFunction(torch.autograd.Function):
            @staticmethod
            def forward(ctx, op, comm, hierarchical, *tensors):
                ctx.op, ctx.comm, ctx.hierarchical = op, comm, hierarchical
                out = [_copy(t) for t in tensors]
                _grouped_(out, op, comm, hierarchical, settings.nonfinite(), in_place=True)
                return tuple(out)

            @staticmethod
            def backward(ctx, *grads):
                gs = [_copy(g) for g in grads]
                check_consistency(ctx.comm, _what("allreduce-backward", ctx.op, ctx.hierarchical),
                                  gs)
                # gradients keep NaN/Inf (GradScaler's signal): no policy here
                _grouped_(gs, ctx.op, ctx.comm, ctx.hierarchical, "propagate", in_place=True)
                return (None, None, None, *gs)

        _FUNCTION = AllreduceFunction
    return _FUNCTION


def _allreduce_list(tensors, names, op, comm, hierarchical, kind, in_place, wire=None):
    op, comm = parse_op(op, ALLREDUCE_OPS), _comm(comm)
    check_consistency(comm, _what(kind, op, hierarchical, wire), tensors,
                      local_error=_local_error(op, tensors, names, in_place=in_place))
    policy = settings.nonfinite()
    if in_place:
        if len(tensors) == 1:
            _reduce_one_(tensors[0], op, comm, hierarchical, policy, wire)
            return tensors
        return _grouped_(tensors, op, comm, hierarchical, policy, in_place=True, wire=wire)
    if _wants_grad(op, tensors):
        return list(_autograd_allreduce().apply(op, comm, hierarchical, *tensors))
    if len(tensors) == 1:
        out = _copy(tensors[0])
        _reduce_one_(out, op, comm, hierarchical, policy)
        return [out]
    return _grouped_(tensors, op, comm, hierarchical, policy, in_place=False)


# ---------------------------------------------------------------------------------------------
# allreduce


@_one_unit
def allreduce_(tensor, op=ReduceOp.AVERAGE, *, comm=None, hierarchical: bool = False,
               wire: str | None = None):
    """Reduce ``tensor`` over all ranks in place and return it.

    Refused on every rank, with ``tensor`` unchanged: dtypes ``op`` cannot reduce (integer
    Average among them), a tensor that requires grad while grad mode is on (pass
    ``tensor.detach()`` or use ``torch.no_grad()``). NaN/Inf: ``accord.set_nonfinite`` (module
    doc). ``wire`` (Adasum, not hierarchical): ``"float16"``/``"bfloat16"`` values in the
    exchanges (accord.compression)."""
    return _allreduce_list([tensor], ["tensor"], op, comm, hierarchical, "allreduce",
                           True, wire)[0]


@_one_unit
def allreduce(tensor, op=ReduceOp.AVERAGE, *, comm=None, hierarchical: bool = False):
    """Return the reduction of ``tensor`` over all ranks (the input is left unchanged).

    With Sum/Average and a ``tensor`` that requires grad, the result carries gradients: the
    input's gradient is the Sum/Average over ranks of the result's gradients (every rank must
    backpropagate through it). Adasum results are detached. Dtype rules and NaN/Inf: module doc.
    """
    return _allreduce_list([tensor], ["tensor"], op, comm, hierarchical, "allreduce",
                           False)[0]


@_one_unit
def grouped_allreduce(tensors, op=ReduceOp.AVERAGE, *, comm=None, hierarchical: bool = False):
    """Reduce a list of tensors; returns new tensors (views into the fused buffers; with
    Sum/Average on tensors that require grad, separate tensors carrying gradients as
    :func:`allreduce`'s)."""
    tensors = list(tensors)
    if not tensors:
        return []
    return _allreduce_list(tensors, _tensor_names(len(tensors)), op, comm, hierarchical,
                           "grouped", False)


@_one_unit
def grouped_allreduce_(tensors, op=ReduceOp.AVERAGE, *, comm=None, hierarchical: bool = False,
                       wire: str | None = None):
    """Reduce a list of tensors in place (fused into buffers of at most the fusion threshold).
    Every bucket is reduced before any tensor is written: a call that fails leaves them all
    unchanged. Same refusals as :func:`allreduce_`; ``wire`` as there."""
    tensors = list(tensors)
    if not tensors:
        return []
    return _allreduce_list(tensors, _tensor_names(len(tensors)), op, comm, hierarchical,
                           "grouped", True, wire)


# Scratch for in-place grouped calls, keyed by the call's layout: a training loop repeats one.
# The buffers are model-sized, so few layouts are kept.
_FUSIONS = BoundedCache(8)


def _in_place_fusion(tensors) -> Fusion:
    key = (settings.fusion_threshold(),) + tuple(
        (t.dtype, t.device if is_tensor(t) else None, tuple(t.shape)) for t in tensors)
    return _FUSIONS.get_or_make(key, lambda: _unbound_fusion(tensors))


def _unbound_fusion(tensors) -> Fusion:
    fusion = Fusion(tensors)
    fusion.tensors = None  # callers pass their tensors: the cache must not keep them alive
    return fusion


topology.on_shutdown(_FUSIONS.clear)


# ---------------------------------------------------------------------------------------------
# broadcast / allgather


@_one_unit
def broadcast_(tensor, root_rank: int = 0, *, comm=None):
    """Overwrite ``tensor`` on every rank with ``root_rank``'s, in place. A tensor that requires
    grad is refused while grad mode is on (pass ``tensor.detach()`` or use ``torch.no_grad()``)."""
    comm = _comm(comm)
    check_consistency(comm, f"broadcast:{root_rank}", [tensor],
                      local_error=_local_error(None, [tensor], ["tensor"], in_place=True,
                                               root_rank=root_rank, size=comm.size))
    target = tensor.detach() if is_tensor(tensor) else tensor
    if is_contiguous(target):
        comm.broadcast_(flat_view(target), root_rank)
        return tensor
    tmp = _copy(target)
    comm.broadcast_(flat_view(tmp), root_rank)
    if is_tensor(target):
        target.copy_(tmp)
    else:
        target[...] = tmp
    return tensor


@_one_unit
def broadcast(tensor, root_rank: int = 0, *, comm=None):
    """``root_rank``'s ``tensor`` as a new (detached) tensor/array on every rank."""
    comm = _comm(comm)
    err = _local_error(None, [tensor], ["tensor"], in_place=False, root_rank=root_rank,
                       size=comm.size)
    if err is not None:
        check_consistency(comm, f"broadcast:{root_rank}", [tensor], local_error=err)
    return broadcast_(_copy(tensor), root_rank, comm=comm)


@_one_unit
def broadcast_parameters(params, root_rank: int = 0, *, comm=None) -> None:
    """Broadcast model parameters/buffers from ``root_rank``, in place.

    ``params``: a ``state_dict()``/dict of name -> tensor, ``model.named_parameters()``, or an
    iterable of tensors. Tensors are fused by dtype/device into buffers of at most the fusion
    threshold; the order is the dict's/iterable's (identical on every rank for the same model).
    Parameters are written as an optimizer step writes them (not recorded by autograd), so
    tensors that require grad are accepted.
    """
    comm = _comm(comm)
    err, tensors, names = None, [], []
    try:
        if isinstance(params, dict):
            items = list(params.items())
        else:
            items = [p if isinstance(p, tuple) else (i, p) for i, p in enumerate(params)]
        for key, t in items:
            if t is not None:
                tensors.append(t)
                names.append(f"params[{key!r}]")
    except TypeError as e:
        err = TypeError(f"params must be a state_dict, named_parameters() or an iterable of "
                        f"tensors, got {type(params).__name__} ({e})")
    if err is None:
        err = _local_error(None, tensors, names, in_place=False, root_rank=root_rank,
                           size=comm.size)
    # an empty list still joins the exchange: a rank with nothing must not leave the others
    # waiting
    check_consistency(comm, f"broadcast_parameters:{root_rank}", tensors, local_error=err)
    if not tensors:
        return
    fusion = Fusion(tensors)
    for bucket in fusion.buckets:
        fused = fusion.pack(bucket)
        comm.broadcast_(fused, root_rank)
        fusion.unpack(bucket, fused)


@_one_unit
def allgather(tensor, *, comm=None):
    """Concatenate every rank's ``tensor`` along dim 0 (the first dims may differ by rank).
    The result is a new, detached tensor/array."""
    comm = _comm(comm)
    err = _local_error(None, [tensor], ["tensor"], in_place=False)
    if err is not None:
        check_consistency(comm, "allgather", [tensor], local_error=err)
    t = tensor.detach() if is_tensor(tensor) else tensor
    if is_tensor(t) and t.dim() == 0 or not is_tensor(t) and np.ndim(t) == 0:
        t = t.reshape(1)
    rest = tuple(t.shape[1:])
    check_consistency(comm, f"allgather:{rest}", [t[:0]])
    firsts = comm.allreduce_small(_one_hot(comm, t.shape[0]), "sum").astype(int)
    inner = math.prod(rest)
    longest = int(firsts.max())
    if is_tensor(t):
        torch = torch_module()
        send = torch.zeros((longest * inner,), dtype=t.dtype, device=t.device)
        send[:t.shape[0] * inner] = t.reshape(-1)
        recv = torch.empty((comm.size * longest * inner,), dtype=t.dtype, device=t.device)
    else:
        send = np.zeros(longest * inner, dtype=t.dtype)
        send[:t.shape[0] * inner] = np.ravel(t)
        recv = np.empty(comm.size * longest * inner, dtype=t.dtype)
    comm.allgather(send, recv)
    pieces = [recv[r * longest * inner:(r * longest + int(firsts[r])) * inner]
              for r in range(comm.size)]
    if is_tensor(t):
        return torch_module().cat(pieces).reshape((-1,) + rest)
    return np.concatenate(pieces).reshape((-1,) + rest)


def _one_hot(comm, value: int) -> np.ndarray:
    v = np.zeros(comm.size, dtype=np.int64)
    v[comm.rank] = value
    return v
