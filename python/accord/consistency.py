"""The cross-rank argument check every collective runs before moving data.

Ranks compare a 64-bit signature of the call (what is called, dtypes, shapes) with one tiny
allreduce. A mismatch raises ``ValueError`` on every rank naming what differs, instead of
deadlocking or silently mixing tensors. It costs one small allreduce and no pass over the data;
turn it off with ``accord.set_consistency_check(False)`` or ``ACCORD_CHECK_CONSISTENCY=0``.
"""
from __future__ import annotations

import zlib

import numpy as np

from . import settings
from ._buffers import BoundedCache, describe, is_tensor

__all__ = ["check_consistency", "signature"]

# describe() and hashing cost microseconds, which the 4 KiB latency path feels: memoise the
# descriptions per (dtype, shape, device) and a one-tensor call's whole exchanged value.
_DESCRIPTIONS = BoundedCache(4096)
_ONE_TENSOR_VALUES = BoundedCache(1024)


def _layout_key(t):
    if type(t) is np.ndarray:
        return (t.dtype, t.shape)
    if is_tensor(t):  # the device object: a fraction of the cost of its .type string
        return (t.dtype, tuple(t.shape), t.device)
    return None


def _describe_cached(t) -> str:
    key = _layout_key(t)
    if key is None:
        return describe(t)
    return _DESCRIPTIONS.get_or_make(key, lambda: describe(t))


def signature(what: str, tensors) -> str:
    """The text two ranks must agree on for a call ``what`` over ``tensors``."""
    return what + ";" + ",".join([_describe_cached(t) for t in tensors])


def _description(what: str, tensors, local_error) -> str:
    desc = signature(what, tensors)
    if local_error is not None:
        desc += f";error:{type(local_error).__name__}:{local_error}"
    return desc


def _exchanged(desc: str, count: int) -> np.ndarray:
    """The signature as the max-allreduced pair (h, -h): ranks agree iff max(h) == -max(-h)."""
    h = zlib.crc32(desc.encode()) | (count << 32)
    return np.array([h, -h], dtype=np.int64)


def check_consistency(comm, what: str, tensors, *, local_error: Exception | None = None) -> None:
    """Raise on every rank if the ranks' calls differ (one 16-byte allreduce).

    ``local_error``: a problem this rank found in its own arguments (an unsupported dtype, a
    tensor that requires grad...). It joins the exchange so that every rank raises (an error of
    the same class, naming the faulty ranks), not only this one: a check that fails on one rank
    alone would leave the others waiting in the collective.
    """
    if comm.size == 1 or not settings.consistency_check():
        # Without the exchange a local error can only be raised here; the other ranks then
        # stop at the collective timeout instead of failing at once.
        if local_error is not None:
            raise local_error
        return
    key = (what, _layout_key(tensors[0])) if len(tensors) == 1 and local_error is None \
        else None
    value = None if key is None or key[1] is None else _ONE_TENSOR_VALUES.get(key)
    if value is None:
        value = _exchanged(_description(what, tensors, local_error), len(tensors))
        if key is not None and key[1] is not None:
            value.flags.writeable = False
            _ONE_TENSOR_VALUES[key] = value
    r = comm.allreduce_small(value, "max")
    if r[0] == -r[1] and local_error is None:
        return
    desc = _description(what, tensors, local_error)
    # Every rank is on this path (the hashes differ, or every rank has the same local error).
    every = comm.allgather_object((desc, None if local_error is None else
                                   (type(local_error), str(local_error))))
    errors = [(i, e) for i, (_, e) in enumerate(every) if e is not None]
    if errors:
        if local_error is not None and len(errors) == comm.size and \
                len({e for _, e in errors}) == 1:
            raise local_error  # the same mistake everywhere: the plain message
        lines = "\n".join(f"  rank {i}: {msg}" for i, (_, msg) in errors)
        raise errors[0][1][0](f"accord: bad input on rank(s) "
                              f"{[i for i, _ in errors]}, refused on every rank:\n{lines}")
    lines = "\n".join(f"  rank {i}: {d}" for i, (d, _) in enumerate(every))
    raise ValueError(f"accord: ranks called a collective with different arguments:\n{lines}\n"
                     "every rank must pass the same op, tensor count, shapes and dtypes "
                     "in the same order")
