"""Communicator over torch.distributed (gloo, nccl, or a mixed ``cpu:gloo,cuda:nccl``)."""

from __future__ import annotations

import os
import socket
import sys

import numpy as np
import torch
import torch.distributed as dist

from .base import Communicator, check_op, check_scale

_OPS = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN,
        "prod": dist.ReduceOp.PRODUCT}
# Reduced through a wider type: gloo has no int16 reductions and sums float16/bfloat16 in
# their own precision; staging also makes results match the MPI backend (one rounding).
_REDUCE_STAGE = {
    torch.float16: torch.float32,
    torch.bfloat16: torch.float32,
    torch.int16: torch.int32,
}
# Data movement is bitwise, but gloo and NCCL only move some dtypes: move the others as a
# supported dtype of the same width.
_MOVE_AS = {torch.int16: torch.float16}
for _name, _as in (("uint16", torch.float16), ("uint32", torch.int32), ("uint64", torch.int64)):
    if hasattr(torch, _name):
        _MOVE_AS[getattr(torch, _name)] = _as
# all_gather_into_tensor was renamed; keep working on older torch.
_all_gather_single = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor


def _reduce_op(op: str):
    try:
        return _OPS[op]
    except KeyError:
        check_op(op)


def _flat(t):
    """Flat view of ``t`` in a dtype every backend can move."""
    as_dtype = _MOVE_AS.get(t.dtype)
    t = t.reshape(-1)
    return t if as_dtype is None else t.view(as_dtype)


def _device_types(backend: str) -> frozenset:
    """Device types a backend string serves without staging."""
    if ":" in backend:  # e.g. "cpu:gloo,cuda:nccl"
        return frozenset(part.split(":")[0] for part in backend.split(","))
    if backend == "nccl":
        return frozenset({"cuda"})
    return frozenset({"cpu"})


def _n_groups():
    """How many process groups this process has registered (None if torch hides it)."""
    try:
        return len(dist.distributed_c10d._world.pg_names)
    except AttributeError:
        return None


def _check_histories(gathered) -> None:
    counts: dict = {}
    for c, _, n in gathered:
        if c is not None and n is not None:
            counts.setdefault(c, set()).add(n)
    if any(len(v) > 1 for v in counts.values()):
        raise RuntimeError(
            "TorchCommunicator.split: this communicator does not span the default group and "
            "the members of a new part have created different numbers of process groups, so "
            "torch.distributed.new_group(use_local_synchronization=True) would hang; split "
            "the world communicator instead"
        )


class TorchCommunicator(Communicator):
    """:class:`~accord.comm.Communicator` over a torch.distributed process group.

    ``group=None`` means the default (world) group; ``torch.distributed`` must already be
    initialised by the caller. numpy buffers are wrapped with ``torch.from_numpy`` (shared
    memory). Buffers on a device the backend does not serve (CPU buffers with NCCL, CUDA
    buffers with gloo) are staged through a temporary on a served device and copied back.
    float16, bfloat16 and int16 reductions run in float32 / int32.

    ``sendrecv`` uses ``batch_isend_irecv``; with NCCL, run a collective on the group (e.g.
    :meth:`barrier`) before the first ``sendrecv`` so the communicator is set up by all
    ranks. Communicators made by :meth:`split` already are.
    """

    def __init__(self, group=None, *, owned: bool = False):
        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError(
                "TorchCommunicator needs torch.distributed.init_process_group() to have run"
            )
        self._group = group
        self.owned = owned and group is not None
        self._rank = dist.get_rank(group)
        if self._rank < 0:
            raise ValueError("this process is not a member of the given process group")
        self._size = dist.get_world_size(group)
        if group is None or group is dist.GroupMember.WORLD:
            self._global = list(range(self._size))
        else:
            self._global = [dist.get_global_rank(group, r) for r in range(self._size)]
        self.backend = str(dist.get_backend(group))
        self._types = _device_types(self.backend)
        if "cpu" in self._types:
            self._device = torch.device("cpu")
        else:
            self._device = torch.device("cuda", torch.cuda.current_device())
        self._spans_world = self._size == dist.get_world_size()
        self._splits: dict = {}
        self._local = None

    @property
    def group(self):
        """The underlying process group (``None`` for the default group)."""
        return self._group

    def _prepare(self, buf):
        """Return (tensor the backend can use, (target, staged) to copy back or None)."""
        if isinstance(buf, np.ndarray):
            t = torch.from_numpy(buf)
        elif isinstance(buf, torch.Tensor):
            t = buf.detach()
        else:
            raise TypeError(f"expected a numpy array or torch tensor, got {type(buf).__name__}")
        if t.device.type in self._types:
            return t, None
        staged = t.to(self._device)
        return staged, (t, staged)

    @staticmethod
    def _writeback(back) -> None:
        if back is not None:
            back[0].copy_(back[1])

    def sendrecv(self, sendbuf, dest, recvbuf, source):
        s, _ = self._prepare(sendbuf)
        r, back = self._prepare(recvbuf)
        me = self._rank
        if dest == me or source == me:
            if dest != source:
                raise ValueError("sendrecv with self must have dest == source == rank")
            r.reshape(-1).copy_(s.reshape(-1))
        else:
            # Zero-length halves are skipped on both sides: lengths agree pairwise.
            ops = []
            if s.numel():
                ops.append(dist.P2POp(dist.isend, s, self._global[dest], self._group))
            if r.numel():
                ops.append(dist.P2POp(dist.irecv, r, self._global[source], self._group))
            if ops:
                for work in dist.batch_isend_irecv(ops):
                    work.wait()
        self._writeback(back)

    def allreduce_small(self, values, op="sum"):
        mop = _reduce_op(op)
        t = torch.tensor(np.asarray(values), device=self._device)  # always a copy
        dist.all_reduce(t, mop, group=self._group)
        return t.cpu().numpy()

    def allreduce_(self, buf, op="sum", *, scale=None):
        mop = _reduce_op(op)
        t, back = self._prepare(buf)
        scale = check_scale(scale, t.is_floating_point() or t.is_complex())
        wide = _REDUCE_STAGE.get(t.dtype)
        if wide is None:
            dist.all_reduce(t, mop, group=self._group)
            if scale is not None:
                t.mul_(scale)
        else:
            tmp = t.to(wide)
            dist.all_reduce(tmp, mop, group=self._group)
            if scale is not None:  # in float32, before the one rounding to 16 bits
                tmp.mul_(scale)
            t.copy_(tmp)
        self._writeback(back)
        return buf

    def allgather(self, sendbuf, recvbuf):
        s, _ = self._prepare(sendbuf)
        r, back = self._prepare(recvbuf)
        if r.numel() != s.numel() * self._size:
            raise ValueError(
                f"allgather: recvbuf has {r.numel()} elements, expected {self._size} x {s.numel()}"
            )
        _all_gather_single(_flat(r), _flat(s), group=self._group)
        self._writeback(back)

    def allgather_object(self, obj):
        out = [None] * self._size
        dist.all_gather_object(out, obj, group=self._group)
        return out

    def broadcast_(self, buf, root):
        t, back = self._prepare(buf)
        dist.broadcast(_flat(t), self._global[root], group=self._group)
        self._writeback(back)
        return buf

    def alltoall(self, sendbuf, recvbuf):
        s, _ = self._prepare(sendbuf)
        r, back = self._prepare(recvbuf)
        if s.numel() != r.numel() or s.numel() % self._size:
            raise ValueError(
                f"alltoall: sendbuf ({s.numel()}) and recvbuf ({r.numel()}) must hold the "
                f"same multiple of size={self._size} elements"
            )
        dist.all_to_all_single(_flat(r), _flat(s), group=self._group)
        self._writeback(back)

    def barrier(self):
        if self._device.type == "cuda":
            dist.barrier(self._group, device_ids=[self._device.index])
        else:
            dist.barrier(self._group)

    def _new_group(self, ranks, local_sync):
        kwargs = {"backend": self.backend}
        if ranks != sorted(ranks):
            kwargs["sort_ranks"] = False  # keep the (key, rank) order
        if local_sync:
            kwargs["use_local_synchronization"] = True
        return dist.new_group(ranks, **kwargs)

    def split(self, color, key=None):
        """See :meth:`Communicator.split`.

        Implemented with ``dist.new_group``. On a communicator spanning the whole default
        group, every rank creates every part's group, in sorted color order, as new_group
        requires. On a smaller communicator only the members of each part can take part
        (``use_local_synchronization=True``), and torch then names the group after the
        number of groups each member has created so far: if the members' counts differ,
        creation would hang, so split raises RuntimeError on every rank instead. Splitting
        the world communicator directly avoids the restriction.
        """
        if color is not None and (not isinstance(color, (int, np.integer)) or color < 0):
            raise ValueError(f"split: color must be a non-negative int or None, got {color!r}")
        key = self._rank if key is None else int(key)
        color = None if color is None else int(color)
        gathered = self.allgather_object((color, key, None if self._spans_world else _n_groups()))
        # Keyed by the whole partition, which all ranks see identically, so every rank
        # hits or misses the cache together.
        partition = tuple((c, k) for c, k, _ in gathered)
        if partition in self._splits:
            return self._splits[partition]
        if not self._spans_world:
            _check_histories(gathered)
        parts: dict = {}
        for parent_rank, (c, k) in enumerate(partition):
            if c is not None:
                parts.setdefault(c, []).append((k, parent_rank))
        members = {c: [self._global[r] for _, r in sorted(v)] for c, v in parts.items()}
        mine = None
        if self._spans_world:
            for c in sorted(members):
                pg = self._new_group(members[c], local_sync=False)
                if c == color:
                    mine = pg
        elif color is not None:
            mine = self._new_group(members[color], local_sync=True)
        result = None if color is None else TorchCommunicator(mine, owned=True)
        if result is not None and result._device.type == "cuda":
            result.barrier()  # NCCL: set the communicator up collectively (see class doc)
        self._splits[partition] = result
        return result

    def local_split(self):
        if self._local is None:
            hosts = self.allgather_object(socket.gethostname())
            color = sorted(set(hosts)).index(hosts[self._rank])
            self._local = self.split(color, self._rank)
        return self._local

    def _free(self):
        if dist.is_initialized():
            dist.destroy_process_group(self._group)

    def abort(self, code=1):
        print(
            f"accord: rank {self._rank} aborting the job (exit code {code})",
            file=sys.stderr,
            flush=True,
        )
        sys.stdout.flush()
        os._exit(code)
