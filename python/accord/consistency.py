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

# describe() costs microseconds, which the 4 KiB latency path feels: memoise per (dtype, shape).
_DESCRIPTIONS = BoundedCache(4096)


def _describe_cached(t) -> str:
    if type(t) is np.ndarray:
        key = (t.dtype, t.shape)
    elif is_tensor(t):
        key = (t.dtype, tuple(t.shape), t.device.type)
    else:
        return describe(t)
    return _DESCRIPTIONS.get_or_make(key, lambda: describe(t))


def signature(what: str, tensors) -> str:
    """The text two ranks must agree on for a call ``what`` over ``tensors``."""
    return what + ";" + ",".join([_describe_cached(t) for t in tensors])


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
    desc = signature(what, tensors)
    if local_error is not None:
        desc += f";error:{type(local_error).__name__}:{local_error}"
    h = zlib.crc32(desc.encode()) | (len(tensors) << 32)
    r = comm.allreduce_small(np.array([h, -h], dtype=np.int64), "max")
    if r[0] == -r[1] and local_error is None:
        return
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
