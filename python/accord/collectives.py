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

NaN/Inf: Sum and Average propagate them element-wise (as MPI does). Adasum works per layer: a
NaN or Inf anywhere in one rank's tensor makes that whole tensor NaN on every rank (other tensors
of a grouped call are unaffected), so a loss scaler (GradScaler) sees it and skips the step.
"""
from __future__ import annotations

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
           "broadcast_", "broadcast_parameters", "allgather"]

_ALLREDUCE_OPS = (ReduceOp.SUM, ReduceOp.AVERAGE, ReduceOp.ADASUM, ReduceOp.MIN, ReduceOp.MAX,
                  ReduceOp.PRODUCT)
# The communicator's name for each element-wise op (Average is a Sum, then a scale).
_ELEMENTWISE = {ReduceOp.SUM: "sum", ReduceOp.AVERAGE: "sum", ReduceOp.MIN: "min",
                ReduceOp.MAX: "max", ReduceOp.PRODUCT: "prod"}


# ---------------------------------------------------------------------------------------------
# helpers


def _comm(comm):
    return comm if comm is not None else topology.communicator()


def _local_error(op: ReduceOp, tensors):
    """This rank's own argument problems, reported through the consistency check so that every
    rank raises (module doc)."""
    if op is ReduceOp.ADASUM:
        for i, t in enumerate(tensors):
            try:
                dtype_code(t, f"tensors[{i}]")  # the kernels' dtypes only
            except TypeError as e:
                return e
    return None


def _scale_(buf, factor: float) -> None:
    if is_tensor(buf):
        buf.mul_(factor)
    else:
        np.multiply(buf, factor, out=buf, casting="unsafe")


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
    comm.allreduce_(flat, _ELEMENTWISE[op])
    if op is ReduceOp.AVERAGE:
        _scale_(flat, 1.0 / comm.size)


# ---------------------------------------------------------------------------------------------
# allreduce


def allreduce_(tensor, op=ReduceOp.AVERAGE, *, comm=None, hierarchical: bool = False,
               wire: str | None = None):
    """Reduce ``tensor`` over all ranks in place and return it. ``wire`` (Adasum, not
    hierarchical): ``"float16"``/``"bfloat16"`` values in the exchanges."""
    op, comm = parse_op(op, _ALLREDUCE_OPS), _comm(comm)
    check_consistency(comm, f"allreduce:{op.value}:{hierarchical}" + (f":{wire}" if wire else ""),
                      [tensor],
                      local_error=_local_error(op, [tensor]))
    offsets = np.array([0, numel(tensor)], dtype=np.int64)
    if is_contiguous(tensor):
        _reduce_flat_(flat_view(tensor), offsets, op, comm, hierarchical, wire)
        return tensor
    flat = tensor.contiguous().view(-1) if is_tensor(tensor) else \
        np.ascontiguousarray(tensor).reshape(-1)
    _reduce_flat_(flat, offsets, op, comm, hierarchical, wire)
    if is_tensor(tensor):
        tensor.copy_(flat.view(tensor.shape))
    else:
        tensor[...] = flat.reshape(tensor.shape)
    return tensor


def allreduce(tensor, op=ReduceOp.AVERAGE, *, comm=None, hierarchical: bool = False):
    """Return the reduction of ``tensor`` over all ranks (the input is left unchanged)."""
    out = tensor.clone() if is_tensor(tensor) else np.array(tensor, copy=True, order="C")
    return allreduce_(out, op, comm=comm, hierarchical=hierarchical)


def grouped_allreduce(tensors, op=ReduceOp.AVERAGE, *, comm=None, hierarchical: bool = False):
    """Reduce a list of tensors; returns new tensors (views into the fused buffers)."""
    return _grouped(list(tensors), op, comm, hierarchical, in_place=False)


def grouped_allreduce_(tensors, op=ReduceOp.AVERAGE, *, comm=None, hierarchical: bool = False,
                       wire: str | None = None):
    """Reduce a list of tensors in place (fused into buffers of at most the fusion threshold).
    ``wire`` as for :func:`allreduce_`."""
    return _grouped(list(tensors), op, comm, hierarchical, in_place=True, wire=wire)


def _grouped(tensors, op, comm, hierarchical, in_place, wire=None):
    op, comm = parse_op(op, _ALLREDUCE_OPS), _comm(comm)
    if not tensors:
        return []
    check_consistency(comm, f"grouped:{op.value}:{hierarchical}" + (f":{wire}" if wire else ""),
                      tensors,
                      local_error=_local_error(op, tensors))
    # Out of place, the results are views into the fused buffers: fresh ones every call.
    # In place, the buffers are scratch: one per bucket, kept while the same layout recurs.
    fusion = _in_place_fusion(tensors) if in_place else Fusion(tensors)
    out = list(tensors) if in_place else [None] * len(tensors)
    for bucket in fusion.buckets:
        with profiling.span("accord.fusion.pack"):
            fused = fusion.pack(bucket, tensors)
        _reduce_flat_(fused, bucket.offsets, op, comm, hierarchical, wire)
        if in_place:
            with profiling.span("accord.fusion.unpack"):
                fusion.unpack(bucket, fused, tensors)
        else:
            for i, view in zip(bucket.members, fusion.views(bucket, fused, tensors)):
                out[i] = view
    return out


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


def broadcast_(tensor, root_rank: int = 0, *, comm=None):
    """Overwrite ``tensor`` on every rank with ``root_rank``'s, in place."""
    comm = _comm(comm)
    if not 0 <= root_rank < comm.size:
        raise ValueError(f"root_rank must be in [0, {comm.size}), got {root_rank}")
    check_consistency(comm, f"broadcast:{root_rank}", [tensor])
    if is_contiguous(tensor):
        comm.broadcast_(flat_view(tensor), root_rank)
        return tensor
    tmp = tensor.contiguous() if is_tensor(tensor) else np.ascontiguousarray(tensor)
    comm.broadcast_(flat_view(tmp), root_rank)
    if is_tensor(tensor):
        tensor.copy_(tmp)
    else:
        tensor[...] = tmp
    return tensor


def broadcast(tensor, root_rank: int = 0, *, comm=None):
    out = tensor.clone() if is_tensor(tensor) else np.array(tensor, copy=True, order="C")
    return broadcast_(out, root_rank, comm=comm)


def broadcast_parameters(params, root_rank: int = 0, *, comm=None) -> None:
    """Broadcast model parameters/buffers from ``root_rank``, in place.

    ``params``: a ``state_dict()``/dict of name -> tensor, ``model.named_parameters()``, or an
    iterable of tensors. Tensors are fused by dtype/device into buffers of at most the fusion
    threshold; the order is the dict's/iterable's (identical on every rank for the same model).
    """
    comm = _comm(comm)
    if isinstance(params, dict):
        tensors = list(params.values())
    else:
        tensors = [p[1] if isinstance(p, tuple) else p for p in params]
    tensors = [t for t in tensors if t is not None]
    if not tensors:
        return
    if not 0 <= root_rank < comm.size:
        raise ValueError(f"root_rank must be in [0, {comm.size}), got {root_rank}")
    check_consistency(comm, f"broadcast_parameters:{root_rank}", tensors)
    fusion = Fusion(tensors)
    for bucket in fusion.buckets:
        fused = fusion.pack(bucket)
        comm.broadcast_(fused, root_rank)
        fusion.unpack(bucket, fused)


def allgather(tensor, *, comm=None):
    """Concatenate every rank's ``tensor`` along dim 0 (the first dims may differ by rank)."""
    comm = _comm(comm)
    t = tensor
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
