"""Communicator over an mpi4py communicator."""

from __future__ import annotations

import sys

import numpy as np
from mpi4py import MPI

from .._buffers import is_tensor as _is_torch_tensor
from .._buffers import torch_module
from .base import Communicator, check_op, check_scale

_ndarray = np.ndarray

# Datatypes for moving data (sendrecv, allgather, broadcast, alltoall). float16 has no
# portable MPI type; moving it as 2-byte integers is exact.
_MOVE_DT = {
    np.dtype(np.bool_): MPI.C_BOOL,
    np.dtype(np.int8): MPI.INT8_T,
    np.dtype(np.uint8): MPI.UINT8_T,
    np.dtype(np.int16): MPI.INT16_T,
    np.dtype(np.uint16): MPI.UINT16_T,
    np.dtype(np.int32): MPI.INT32_T,
    np.dtype(np.uint32): MPI.UINT32_T,
    np.dtype(np.int64): MPI.INT64_T,
    np.dtype(np.uint64): MPI.UINT64_T,
    np.dtype(np.float16): MPI.INT16_T,
    np.dtype(np.float32): MPI.FLOAT,
    np.dtype(np.float64): MPI.DOUBLE,
    np.dtype(np.complex64): MPI.C_FLOAT_COMPLEX,
    np.dtype(np.complex128): MPI.C_DOUBLE_COMPLEX,
}
# Datatypes MPI can reduce with SUM/MAX/MIN; float16 is absent on purpose (staged).
_REDUCE_DT = {
    dt: mpi
    for dt, mpi in _MOVE_DT.items()
    if dt.kind in "iuf" and dt != np.dtype(np.float16)
}
_OPS = {"sum": MPI.SUM, "max": MPI.MAX, "min": MPI.MIN, "prod": MPI.PROD}
_F16 = np.dtype(np.float16)
_F32 = np.dtype(np.float32)

_torch = None  # torch and its bfloat16/int16 dtypes, set on the first tensor seen
_bf16 = _i16 = None


def _torch_mod():
    global _torch, _bf16, _i16
    if _torch is None:
        _torch = torch_module()
        _bf16, _i16 = _torch.bfloat16, _torch.int16
    return _torch


def _spec(a: np.ndarray) -> list:
    """mpi4py buffer spec for moving ``a``; unknown dtypes move as raw bytes."""
    dt = _MOVE_DT.get(a.dtype)
    if dt is None:
        return [a.reshape(-1).view(np.uint8), MPI.BYTE]
    return [a, dt]


def _mpi_op(op: str):
    try:
        return _OPS[op]
    except KeyError:
        check_op(op)


def _tensor_view(t) -> np.ndarray:
    """Zero-copy numpy view of a CPU tensor (bfloat16 viewed as int16 for data movement)."""
    if _torch is None:
        _torch_mod()
    if t.requires_grad:
        t = t.detach()
    if t.dtype is _bf16:
        t = t.view(_i16)
    return t.numpy()


class MPICommunicator(Communicator):
    """:class:`~accord.comm.Communicator` over an mpi4py communicator (default ``COMM_WORLD``).

    numpy arrays and CPU torch tensors are handed to MPI without copies (tensors through
    ``Tensor.numpy()`` views; bfloat16 tensors are moved as int16). Reductions of float16 and
    bfloat16 run in float32 on a temporary and are rounded back once.

    accord's MPI transport is not CUDA-aware; CUDA buffers are staged through host memory;
    use torch.distributed with NCCL for GPU tensors.

    The communicator is used as given (not duplicated) and stays the caller's unless
    ``owned=True``; sub-communicators made by :meth:`split` and :meth:`local_split` are accord's
    and are freed by :meth:`close`.
    """

    backend = "mpi"

    def __init__(self, comm=None, *, owned: bool = False):
        if comm is None:
            comm = MPI.COMM_WORLD
        if comm == MPI.COMM_NULL:
            raise ValueError("MPICommunicator(comm): comm is MPI.COMM_NULL (this process is not "
                             "a member); pass a communicator this process belongs to, e.g. "
                             "MPI.COMM_WORLD")
        self._comm = comm
        self.owned = owned
        self._rank = comm.Get_rank()
        self._size = comm.Get_size()
        self._splits: dict = {}
        self._local = None

    @property
    def mpi_comm(self):
        """The underlying mpi4py communicator."""
        return self._comm

    # Staging helpers for anything that is not a numpy array. They return the ndarray to
    # hand to MPI and, for CUDA tensors, the (device tensor, host copy) pair to write back.
    @staticmethod
    def _host(buf):
        if type(buf) is _ndarray:
            return buf, None
        if _is_torch_tensor(buf):
            if buf.is_cpu:
                return _tensor_view(buf), None
            dev = buf.detach()
            host = dev.cpu()
            return _tensor_view(host), (dev, host)
        return np.asarray(buf), None

    @staticmethod
    def _writeback(back) -> None:
        if back is not None:
            back[0].copy_(back[1])

    def sendrecv(self, sendbuf, dest, recvbuf, source):
        # Hot path (once per Adasum level): no staging work for numpy or CPU tensors.
        s = sendbuf if type(sendbuf) is _ndarray else self._host(sendbuf)[0]
        if type(recvbuf) is _ndarray:
            self._comm.Sendrecv(_spec(s), dest, 0, _spec(recvbuf), source, 0)
            return
        r, back = self._host(recvbuf)
        self._comm.Sendrecv(_spec(s), dest, 0, _spec(r), source, 0)
        if back is not None:
            back[0].copy_(back[1])

    def allreduce_small(self, values, op="sum"):
        v = values if type(values) is _ndarray else np.asarray(values)
        mop = _mpi_op(op)
        dt = _REDUCE_DT.get(v.dtype)
        if dt is None:
            raise TypeError(f"allreduce_small: unsupported dtype {v.dtype}")
        out = np.empty_like(v, order="C")
        self._comm.Allreduce([np.ascontiguousarray(v), dt], [out, dt], mop)
        return out

    def allreduce_(self, buf, op="sum", *, scale=None):
        mop = _mpi_op(op)
        if type(buf) is not _ndarray and _is_torch_tensor(buf):
            torch = _torch_mod()
            if buf.dtype in (torch.float16, torch.bfloat16):
                scale = check_scale(scale, True)
                t = buf.detach()
                tmp = t.to("cpu", torch.float32)
                self._comm.Allreduce(MPI.IN_PLACE, [tmp.numpy(), MPI.FLOAT], mop)
                if scale is not None:  # in float32, before the one rounding to 16 bits
                    tmp.mul_(scale)
                t.copy_(tmp)
                return buf
        a, back = self._host(buf)
        scale = check_scale(scale, a.dtype.kind in "fc")
        if a.dtype == _F16:
            tmp = a.astype(_F32)
            self._comm.Allreduce(MPI.IN_PLACE, [tmp, MPI.FLOAT], mop)
            if scale is not None:
                tmp *= np.float32(scale)
            a[...] = tmp
            self._writeback(back)
            return buf
        dt = _REDUCE_DT.get(a.dtype)
        if dt is None:
            raise TypeError(f"allreduce_: unsupported dtype {a.dtype}")
        self._comm.Allreduce(MPI.IN_PLACE, [a, dt], mop)
        if scale is not None:
            np.multiply(a, scale, out=a, casting="unsafe")
        self._writeback(back)
        return buf

    def allgather(self, sendbuf, recvbuf):
        s, _ = self._host(sendbuf)
        r, back = self._host(recvbuf)
        if r.size != s.size * self._size:
            raise ValueError(
                f"allgather: recvbuf has {r.size} elements, expected {self._size} x {s.size}"
            )
        self._comm.Allgather(_spec(s), _spec(r))
        self._writeback(back)

    def allgather_object(self, obj):
        return self._comm.allgather(obj)

    def broadcast_(self, buf, root):
        a, back = self._host(buf)
        self._comm.Bcast(_spec(a), root)
        self._writeback(back)
        return buf

    def alltoall(self, sendbuf, recvbuf):
        s, _ = self._host(sendbuf)
        r, back = self._host(recvbuf)
        if s.size != r.size or s.size % self._size:
            raise ValueError(
                f"alltoall: sendbuf ({s.size}) and recvbuf ({r.size}) must hold the same "
                f"multiple of size={self._size} elements"
            )
        self._comm.Alltoall(_spec(s), _spec(r))
        self._writeback(back)

    @property
    def threads_ok(self) -> bool:
        return MPI.Query_thread() >= MPI.THREAD_MULTIPLE

    def barrier(self):
        self._comm.Barrier()

    def split(self, color, key=None):
        if color is not None and (not isinstance(color, (int, np.integer)) or color < 0):
            raise ValueError(f"split: color must be a non-negative int or None, got {color!r}")
        key = self._rank if key is None else int(key)
        color = None if color is None else int(color)
        # Cache on the whole partition, which every rank sees identically, so that all
        # ranks hit or miss together (a per-rank cache could desynchronise the collective).
        partition = tuple(self._comm.allgather((color, key)))
        if partition in self._splits:
            return self._splits[partition]
        sub = self._comm.Split(MPI.UNDEFINED if color is None else color, key)
        result = None if sub == MPI.COMM_NULL else MPICommunicator(sub, owned=True)
        self._splits[partition] = result
        return result

    def local_split(self):
        if self._local is None:
            self._local = MPICommunicator(
                self._comm.Split_type(MPI.COMM_TYPE_SHARED, key=self._rank), owned=True
            )
        return self._local

    def _free(self):
        if not MPI.Is_finalized() and self._comm != MPI.COMM_NULL:
            self._comm.Free()

    def abort(self, code=1):
        sys.stdout.flush()
        sys.stderr.flush()
        self._comm.Abort(code)
