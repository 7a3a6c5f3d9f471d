"""Tensor fusion: many tensors reduced as few flat buffers, with scratch reused across steps.

Every face of accord that moves a list of tensors (grouped collectives, parameter broadcast,
DistributedOptimizer's buckets, the averagers, Leader SGD, consensus aggregation) cuts the list
the same way, with :func:`plan_buckets`, and packs through a :class:`Fusion`:

* a bucket is a run of consecutive tensors of one dtype and device holding at most
  ``threshold`` bytes (``accord.fusion_threshold()``, env ``ACCORD_FUSION_THRESHOLD``); a larger
  single tensor gets a bucket of its own;
* each bucket has ``offsets`` (numpy int64, one segment per tensor), the segment layout the
  kernels and Adasum's per-tensor coefficients use;
* a bucket's flat buffer is allocated on first use and reused while the layout stays the same,
  so a training loop allocates nothing per step after the first.

The order is the caller's: every rank passes the same model in the same order, so every rank
cuts the same buckets without communicating.
"""
from __future__ import annotations

import numpy as np

from . import settings
from ._buffers import empty_tensor, is_tensor, numel, torch_module

__all__ = ["Bucket", "plan_buckets", "Fusion", "pack_into", "unpack_from"]


class Bucket:
    """One fused run: ``members`` (indices into the tensor list), ``offsets``, ``numel``, and the
    ``dtype`` and ``device`` (None for numpy) its buffer has."""

    __slots__ = ("index", "members", "offsets", "numel", "dtype", "device")

    def __init__(self, index: int, members: list, sizes: list, like):
        self.index, self.members = index, members
        self.dtype = like.dtype
        self.device = like.device if is_tensor(like) else None
        self.offsets = np.zeros(len(sizes) + 1, dtype=np.int64)
        np.cumsum(sizes, out=self.offsets[1:])
        self.numel = int(self.offsets[-1])

    def __repr__(self) -> str:
        return f"Bucket(index={self.index}, tensors={len(self.members)}, numel={self.numel})"


def _key(t):
    return (t.dtype, t.device) if is_tensor(t) else (t.dtype, "numpy")


def _nbytes(t) -> int:
    return numel(t) * (t.element_size() if is_tensor(t) else t.itemsize)


def plan_buckets(tensors, threshold: float | None = None) -> list:
    """Consecutive runs of same dtype/device tensors of at most ``threshold`` bytes each
    (default ``accord.fusion_threshold()``; ``math.inf``: one bucket per dtype/device run)."""
    if threshold is None:
        threshold = settings.fusion_threshold()
    buckets, members, sizes, nbytes, key = [], [], [], 0, None
    for i, t in enumerate(tensors):
        k, size = _key(t), _nbytes(t)
        if members and (k != key or nbytes + size > threshold):
            buckets.append(Bucket(len(buckets), members, sizes, tensors[members[0]]))
            members, sizes, nbytes = [], [], 0
        members.append(i)
        sizes.append(numel(t))
        nbytes += size
        key = k
    if members:
        buckets.append(Bucket(len(buckets), members, sizes, tensors[members[0]]))
    return buckets


class Fusion:
    """The buckets of one tensor list and their reusable flat buffers.

    ``extra``: elements appended to every bucket's buffer after the tensors (room for scalars
    that travel with the data, e.g. the averagers' variance term). ``copies``: buffers per
    bucket (an optimizer may need the packed parameters and the packed update side by side).
    """

    def __init__(self, tensors, threshold: float | None = None, *, extra: int = 0,
                 copies: int = 1):
        #: the tensors pack/unpack use when not given others; a cache of buffers that must not
        #: keep a caller's tensors alive sets it to None between calls
        self.tensors = list(tensors)
        self.buckets = plan_buckets(self.tensors, threshold)
        self.extra = extra
        self._buffers = [[None] * len(self.buckets) for _ in range(copies)]

    def __len__(self) -> int:
        return len(self.buckets)

    def members(self, bucket: Bucket, tensors=None) -> list:
        source = self.tensors if tensors is None else tensors
        return [source[i] for i in bucket.members]

    def buffer(self, bucket: Bucket, copy: int = 0):
        """The bucket's flat buffer (``numel + extra`` elements), allocated once."""
        buf = self._buffers[copy][bucket.index]
        if buf is None:
            n = bucket.numel + self.extra
            if bucket.device is not None:
                buf = empty_tensor(n, bucket.dtype, bucket.device)
            else:
                buf = np.empty(n, dtype=bucket.dtype)
            self._buffers[copy][bucket.index] = buf
        return buf

    def pack(self, bucket: Bucket, tensors=None, copy: int = 0):
        """Copy the bucket's tensors (or the same positions of ``tensors``, e.g. gradients) into
        its buffer and return the buffer."""
        buf = self.buffer(bucket, copy)
        pack_into(buf, self.members(bucket, tensors), bucket.offsets)
        return buf

    def pack_values(self, bucket: Bucket, values, copy: int = 0):
        """Copy ``values`` (one per member of the bucket, in order: e.g. the members'
        gradients) into the bucket's buffer and return the buffer."""
        buf = self.buffer(bucket, copy)
        pack_into(buf, values, bucket.offsets)
        return buf

    def unpack(self, bucket: Bucket, buf, tensors=None) -> None:
        """Copy ``buf``'s segments back into the bucket's tensors (or ``tensors``' ones)."""
        unpack_from(buf, self.members(bucket, tensors), bucket.offsets)

    def views(self, bucket: Bucket, buf, tensors=None) -> list:
        """Views of ``buf`` shaped like the bucket's tensors."""
        offs = bucket.offsets
        return [buf[offs[j]:offs[j + 1]].reshape(tuple(t.shape))
                for j, t in enumerate(self.members(bucket, tensors))]


def pack_into(buf, tensors, offsets) -> None:
    """``buf[offsets[j]:offsets[j+1]] = tensors[j]`` for every j, without temporaries."""
    if not tensors:
        return
    n = int(offsets[-1])
    if is_tensor(buf):
        srcs = [t.detach() for t in tensors]
        if all(s.is_contiguous() and s.dtype == buf.dtype for s in srcs):
            torch_module().cat([s.reshape(-1) for s in srcs], out=buf[:n])  # one kernel
            return
        for j, s in enumerate(srcs):
            buf[offsets[j]:offsets[j + 1]].view(s.shape).copy_(s)
        return
    if all(type(t) is np.ndarray and t.flags.c_contiguous for t in tensors):
        np.concatenate([t.reshape(-1) for t in tensors], out=buf[:n], casting="same_kind")
        return
    for j, t in enumerate(tensors):
        buf[offsets[j]:offsets[j + 1]].reshape(np.shape(t))[...] = t


def unpack_from(buf, tensors, offsets) -> None:
    for j, t in enumerate(tensors):
        piece = buf[offsets[j]:offsets[j + 1]]
        if is_tensor(t):
            t.detach().copy_(piece.view(t.shape))  # detach: leaves need no no_grad
        else:
            t[...] = piece.reshape(t.shape)
