"""Horovod-style collectives over the process-wide communicator (``accord.init``).

    allreduce(t, op=Average)          new tensor / array
    allreduce_(t, op=Average)         in place
    grouped_allreduce(ts, op=...)     many tensors fused into few buffers (one segment each)
    broadcast_(t, root_rank), broadcast(t, root_rank), broadcast_parameters(params, root_rank)
    allgather(t)                      concatenation along dim 0 (first dims may differ)

Ops: ``Sum``, ``Average`` and ``Adasum`` (per-tensor coefficients; see accord.adasum for the
tree). Everything works on torch tensors (CPU through MPI or gloo, CUDA through NCCL) and on
numpy arrays.

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

import enum
import math
import os
import zlib

import numpy as np

from . import topology
from ._kernels import dtype_code, is_tensor
from .adasum import adasum_allreduce_

__all__ = ["ReduceOp", "Sum", "Average", "Adasum", "Consensus", "allreduce", "allreduce_",
           "grouped_allreduce",
           "grouped_allreduce_", "broadcast", "broadcast_", "broadcast_parameters", "allgather",
           "set_fusion_threshold", "fusion_threshold", "set_consistency_check"]


class ReduceOp(enum.Enum):
    SUM = "sum"
    AVERAGE = "average"
    ADASUM = "adasum"
    CONSENSUS = "consensus"  # stateful: DistributedOptimizer / ConsensusAggregator, not allreduce


Sum, Average, Adasum = ReduceOp.SUM, ReduceOp.AVERAGE, ReduceOp.ADASUM
Consensus = ReduceOp.CONSENSUS

_DEFAULT_FUSION = 64 * 1024 * 1024
_settings = {
    "fusion": int(os.environ.get("ACCORD_FUSION_THRESHOLD", _DEFAULT_FUSION)),
    "check": os.environ.get("ACCORD_CHECK_CONSISTENCY", "1") not in ("0", "false", "False"),
}


def set_fusion_threshold(nbytes: int) -> None:
    """Largest fusion buffer in bytes for grouped reductions (env ACCORD_FUSION_THRESHOLD)."""
    if not isinstance(nbytes, int) or nbytes <= 0:
        raise ValueError(f"fusion threshold must be a positive number of bytes, got {nbytes!r}")
    _settings["fusion"] = nbytes


def fusion_threshold() -> int:
    return _settings["fusion"]


def set_consistency_check(enabled: bool) -> None:
    """Turn the cross-rank signature check of every collective on or off."""
    _settings["check"] = bool(enabled)


# ---------------------------------------------------------------------------------------------
# helpers


def _comm(comm):
    return comm if comm is not None else topology.communicator()


def _op(op) -> ReduceOp:
    if isinstance(op, ReduceOp):
        return op
    if isinstance(op, str):
        try:
            return ReduceOp(op.lower())
        except ValueError:
            pass
    raise ValueError(f"op must be accord.Sum, accord.Average or accord.Adasum, got {op!r}")


def _allreduce_op(op) -> ReduceOp:
    op = _op(op)
    if op is ReduceOp.CONSENSUS:
        # Consensus keeps momentum across steps, so it cannot be a stateless allreduce op.
        raise ValueError("accord.Consensus is not an allreduce op: use "
                         "accord.ConsensusAggregator(...).aggregate(tensors), or "
                         "accord.DistributedOptimizer(opt, op=accord.Consensus)")
    return op


def _numel(t) -> int:
    return t.numel() if is_tensor(t) else t.size


def _flat_view(t):
    return t.view(-1) if is_tensor(t) else t.reshape(-1)


def _describe(t) -> str:
    if is_tensor(t):
        return f"{str(t.dtype).replace('torch.', '')}{list(t.shape)}@{t.device.type}"
    if isinstance(t, np.ndarray):
        return f"{t.dtype}{list(t.shape)}@cpu"
    return type(t).__name__


_DESCRIPTIONS: dict = {}


def _describe_cached(t) -> str:
    """_describe(t), memoised on (dtype, shape[, device type]): formatting it costs microseconds
    on the small-tensor latency path."""
    if type(t) is np.ndarray:
        key = (t.dtype, t.shape)
    elif is_tensor(t):
        key = (t.dtype, tuple(t.shape), t.device.type)
    else:
        return _describe(t)
    d = _DESCRIPTIONS.get(key)
    if d is None:
        if len(_DESCRIPTIONS) >= 4096:
            _DESCRIPTIONS.clear()
        d = _DESCRIPTIONS[key] = _describe(t)
    return d


def check_consistency(comm, what: str, tensors) -> None:
    """Raise ValueError on every rank if the ranks' calls differ (one 16-byte allreduce)."""
    if not _settings["check"] or comm.size == 1:
        return
    desc = what + ";" + ",".join([_describe_cached(t) for t in tensors])
    h = zlib.crc32(desc.encode()) | (len(tensors) << 32)
    r = comm.allreduce_small(np.array([h, -h], dtype=np.int64), "max")
    if r[0] != -r[1]:
        every = comm.allgather_object(desc)  # all ranks are on this path: safe to gather
        lines = "\n".join(f"  rank {i}: {d}" for i, d in enumerate(every))
        raise ValueError(f"accord: ranks called a collective with different arguments:\n{lines}\n"
                         "every rank must pass the same op, tensor count, shapes and dtypes "
                         "in the same order")


def _check_adasum_dtype(tensors) -> None:
    for i, t in enumerate(tensors):
        dtype_code(t, f"tensors[{i}]")  # TypeError for dtypes the kernels do not support


def _scale_(buf, factor: float) -> None:
    if is_tensor(buf):
        buf.mul_(factor)
    else:
        np.multiply(buf, factor, out=buf, casting="unsafe")


def _reduce_flat_(flat, offsets: np.ndarray, op: ReduceOp, comm, hierarchical: bool) -> None:
    """The reduction itself on one contiguous 1-D buffer split into tensor segments."""
    if op is ReduceOp.ADASUM:
        if hierarchical:
            from .hierarchical import hierarchical_adasum_
            hierarchical_adasum_(flat, offsets, comm)
        else:
            adasum_allreduce_(flat, offsets, comm)
        return
    comm.allreduce_(flat, "sum")
    if op is ReduceOp.AVERAGE:
        _scale_(flat, 1.0 / comm.size)


# ---------------------------------------------------------------------------------------------
# allreduce


def allreduce_(tensor, op=Average, *, comm=None, hierarchical: bool = False):
    """Reduce ``tensor`` over all ranks in place and return it."""
    op, comm = _allreduce_op(op), _comm(comm)
    if op is ReduceOp.ADASUM:
        _check_adasum_dtype([tensor])
    check_consistency(comm, f"allreduce:{op.value}:{hierarchical}", [tensor])
    n = _numel(tensor)
    offsets = np.array([0, n], dtype=np.int64)
    contiguous = tensor.is_contiguous() if is_tensor(tensor) else tensor.flags.c_contiguous
    if contiguous:
        _reduce_flat_(_flat_view(tensor), offsets, op, comm, hierarchical)
    else:
        flat = tensor.contiguous().view(-1) if is_tensor(tensor) else np.ascontiguousarray(tensor).reshape(-1)
        _reduce_flat_(flat, offsets, op, comm, hierarchical)
        if is_tensor(tensor):
            tensor.copy_(flat.view(tensor.shape))
        else:
            tensor[...] = flat.reshape(tensor.shape)
    return tensor


def allreduce(tensor, op=Average, *, comm=None, hierarchical: bool = False):
    """Return the reduction of ``tensor`` over all ranks (the input is left unchanged)."""
    out = tensor.clone() if is_tensor(tensor) else np.array(tensor, copy=True, order="C")
    return allreduce_(out, op, comm=comm, hierarchical=hierarchical)


def _fusion_groups(tensors, threshold: int):
    """Consecutive runs of same dtype/device tensors, each at most `threshold` bytes (a larger
    single tensor gets a group of its own)."""
    groups, current, current_bytes, key = [], [], 0, None
    for i, t in enumerate(tensors):
        k = (str(t.dtype), str(t.device) if is_tensor(t) else "numpy")
        nbytes = _numel(t) * (t.element_size() if is_tensor(t) else t.itemsize)
        if current and (k != key or current_bytes + nbytes > threshold):
            groups.append(current)
            current, current_bytes = [], 0
        current.append(i)
        current_bytes += nbytes
        key = k
    if current:
        groups.append(current)
    return groups


def _pack(tensors):
    if is_tensor(tensors[0]):
        import torch
        return torch.cat([t.reshape(-1) for t in tensors])
    return np.concatenate([np.ravel(t) for t in tensors])


def grouped_allreduce(tensors, op=Average, *, comm=None, hierarchical: bool = False):
    """Reduce a list of tensors; returns new tensors (views into the fused buffers)."""
    return _grouped(list(tensors), op, comm, hierarchical, in_place=False)


def grouped_allreduce_(tensors, op=Average, *, comm=None, hierarchical: bool = False):
    """Reduce a list of tensors in place (fused into buffers of at most the fusion threshold)."""
    return _grouped(list(tensors), op, comm, hierarchical, in_place=True)


def _grouped(tensors, op, comm, hierarchical, in_place):
    op, comm = _allreduce_op(op), _comm(comm)
    if not tensors:
        return []
    if op is ReduceOp.ADASUM:
        _check_adasum_dtype(tensors)
    check_consistency(comm, f"grouped:{op.value}:{hierarchical}", tensors)
    out = [None] * len(tensors)
    for group in _fusion_groups(tensors, _settings["fusion"]):
        members = [tensors[i] for i in group]
        sizes = [_numel(t) for t in members]
        offsets = np.zeros(len(sizes) + 1, dtype=np.int64)
        np.cumsum(sizes, out=offsets[1:])
        fused = _pack(members)
        _reduce_flat_(fused, offsets, op, comm, hierarchical)
        for j, i in enumerate(group):
            piece = fused[offsets[j]:offsets[j + 1]].reshape(tuple(members[j].shape))
            if in_place:
                if is_tensor(piece):
                    members[j].copy_(piece)
                else:
                    members[j][...] = piece
                out[i] = members[j]
            else:
                out[i] = piece
    return out


# ---------------------------------------------------------------------------------------------
# broadcast / allgather


def broadcast_(tensor, root_rank: int = 0, *, comm=None):
    """Overwrite ``tensor`` on every rank with ``root_rank``'s, in place."""
    comm = _comm(comm)
    if not 0 <= root_rank < comm.size:
        raise ValueError(f"root_rank must be in [0, {comm.size}), got {root_rank}")
    check_consistency(comm, f"broadcast:{root_rank}", [tensor])
    contiguous = tensor.is_contiguous() if is_tensor(tensor) else tensor.flags.c_contiguous
    if contiguous:
        comm.broadcast_(_flat_view(tensor), root_rank)
    else:
        tmp = tensor.contiguous() if is_tensor(tensor) else np.ascontiguousarray(tensor)
        comm.broadcast_(_flat_view(tmp), root_rank)
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
    for group in _fusion_groups(tensors, _settings["fusion"]):
        members = [tensors[i] for i in group]
        fused = _pack([t.detach() if is_tensor(t) else t for t in members])
        comm.broadcast_(fused, root_rank)
        start = 0
        for t in members:
            n = _numel(t)
            piece = fused[start:start + n].reshape(tuple(t.shape))
            if is_tensor(t):
                with _no_grad():
                    t.copy_(piece)
            else:
                t[...] = piece
            start += n


def _no_grad():
    import torch
    return torch.no_grad()


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
        import torch
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
        import torch
        return torch.cat(pieces).reshape((-1,) + rest)
    return np.concatenate(pieces).reshape((-1,) + rest)


def _one_hot(comm, value: int) -> np.ndarray:
    v = np.zeros(comm.size, dtype=np.int64)
    v[comm.rank] = value
    return v
