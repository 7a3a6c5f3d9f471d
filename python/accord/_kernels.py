"""The one dispatch layer between arrays/tensors and the `accord._C` kernels.

It turns numpy arrays and torch tensors (CPU or CUDA) into (dtype code, device, address), checks
everything a kernel relies on, keeps the per-layout tile tables cached, and allocates outputs in
the caller's framework. torch is never imported here: a tensor is recognised by its type's module,
so numpy-only users (mpi4py training loops) need no torch.

Everything public goes through `accord.ops`; the collectives call the functions here directly
because they already hold validated, contiguous buffers and the 4 KiB latency path cannot afford
torch's op dispatch.
"""
from __future__ import annotations

import math
import os
import threading
from functools import lru_cache

import numpy as np

from . import _C
from ._buffers import BoundedCache, empty_tensor, is_tensor, torch_module

CPU, CUDA = 0, 1
FLOAT32, FLOAT64, FLOAT16, BFLOAT16 = 0, 1, 2, 3
_NUMPY_CODES = {np.dtype(np.float32): FLOAT32, np.dtype(np.float64): FLOAT64,
                np.dtype(np.float16): FLOAT16}
_CODE_NAMES = {FLOAT32: "float32", FLOAT64: "float64", FLOAT16: "float16", BFLOAT16: "bfloat16"}
SUPPORTED = "float32, float64, float16 or bfloat16"
CPU_ISAS = ("portable", "avx2")  # the CPU kernels' SIMD levels (csrc/cpu/vec.h), same bits

if os.environ.get("ACCORD_CPU_ISA", "portable") not in CPU_ISAS:
    raise ValueError(f"ACCORD_CPU_ISA={os.environ['ACCORD_CPU_ISA']!r} is not one of "
                     f"{', '.join(CPU_ISAS)}; unset it to use the best level this CPU supports")


#: Largest k (vectors per system) solve_spd handles; fixed in the C++ solver.
MAX_SOLVE_K: int = _C.max_solve_k


_TORCH_CODES: dict = {}  # filled on the first tensor (torch is not imported before)


def _torch_codes():
    if not _TORCH_CODES:
        torch = torch_module()
        _TORCH_CODES.update({torch.float32: FLOAT32, torch.float64: FLOAT64,
                             torch.float16: FLOAT16, torch.bfloat16: BFLOAT16})
    return _TORCH_CODES


def dtype_code(obj, name: str) -> int:
    """The kernel dtype code of an array or tensor; TypeError naming ``name`` otherwise."""
    if is_tensor(obj):
        code = _torch_codes().get(obj.dtype)
        if code is None:
            raise TypeError(f"{name}: dtype {obj.dtype} is not supported; use {SUPPORTED}")
        return code
    if isinstance(obj, np.ndarray):
        code = _NUMPY_CODES.get(obj.dtype)
        if code is None:
            raise TypeError(f"{name}: dtype {obj.dtype} is not supported; use float32, "
                            "float64 or float16 (bfloat16 via torch tensors)")
        return code
    raise TypeError(f"{name} must be a numpy array or a torch tensor, got {type(obj).__name__}")


def kernel_device(device: int, cuda_index) -> int:
    """The ``device`` argument of the ``_C`` kernels: 0 for the CPU, 1 + k for cuda:k. The
    kernels make cuda:k current from this number, with no pointer query per launch."""
    return CPU if device == CPU else CUDA + (cuda_index or 0)


def addr(x) -> int:
    """Address of the first element of a tensor or C-contiguous array; 0 for ``None`` (the
    kernels' "no buffer"). Arrays through the buffer protocol: ``ndarray.ctypes.data`` builds a
    ctypes object per call, ten times the cost."""
    if x is None:
        return 0
    return x.data_ptr() if is_tensor(x) else _C.buffer_address(x)


class Buf:
    """A validated view of one argument: framework, dtype code, device, address, shape.
    ``kdev`` is the device argument of the ``_C`` calls (:func:`kernel_device`)."""

    __slots__ = ("obj", "tensor", "code", "device", "ptr", "shape", "cuda_index", "kdev")

    def __init__(self, obj, name: str):
        self.obj = obj
        if is_tensor(obj):
            codes = _TORCH_CODES or _torch_codes()
            code = codes.get(obj.dtype)
            if code is None:
                dtype_code(obj, name)  # raises, naming the argument
            self.code = code
            self.tensor = True
            if not obj.is_contiguous():
                raise ValueError(f"{name} must be contiguous; call .contiguous() first")
            # is_cpu / is_cuda / get_device(): each a fraction of obj.device.type, which builds
            # a torch.device and a str on every call
            if obj.is_cpu:
                self.device, self.cuda_index, self.kdev = CPU, None, CPU
            elif obj.is_cuda:
                index = obj.get_device()
                self.device, self.cuda_index, self.kdev = CUDA, index, CUDA + index
            else:
                raise ValueError(f"{name} is on device {obj.device}; accord supports cpu and cuda")
            self.ptr = obj.data_ptr()
            self.shape = tuple(obj.shape)
        else:
            self.code = dtype_code(obj, name)
            self.tensor = False
            if not obj.flags.c_contiguous:
                raise ValueError(f"{name} must be C-contiguous; use np.ascontiguousarray")
            self.device, self.cuda_index, self.kdev = CPU, None, CPU
            self.ptr = addr(obj)
            self.shape = obj.shape

    @property
    def dtype_name(self) -> str:
        return _CODE_NAMES[self.code]


def same_kind(ref: Buf, other: Buf, name: str, ref_name: str, *, dtype: bool = True) -> None:
    """Mixed frameworks, dtypes or devices are errors, never silent conversions."""
    if ref.tensor != other.tensor:
        raise TypeError(f"{name} and {ref_name} must both be numpy arrays or both torch tensors")
    if dtype and ref.code != other.code:
        raise TypeError(f"{name} has dtype {other.dtype_name} but {ref_name} has "
                        f"{ref.dtype_name}; convert one so they match")
    if ref.device != other.device or ref.cuda_index != other.cuda_index:
        raise ValueError(f"{name} is on {_device_name(other)} but {ref_name} is on "
                         f"{_device_name(ref)}; move them to one device")


def _device_name(b: Buf) -> str:
    return "cpu" if b.device == CPU else f"cuda:{b.cuda_index}"


@lru_cache(maxsize=None)
def _cuda_state():
    """(built with CUDA, visible GPU count), asked once: neither changes inside a process (the
    CUDA runtime reads CUDA_VISIBLE_DEVICES once), and build_info() builds a dict per call."""
    built = bool(_C.build_info()["cuda"])
    return built, (_C.cuda_device_count() if built else 0)


def check_cuda_available(buf: Buf, name: str) -> None:
    if buf.device != CUDA:
        return
    built, count = _cuda_state()
    if not built:
        raise RuntimeError(f"{name} is a CUDA tensor but accord was built without CUDA kernels; "
                           "reinstall with nvcc on PATH (or ACCORD_WITH_CUDA=1)")
    if count == 0:
        raise RuntimeError(f"{name} is a CUDA tensor but no usable GPU is visible to accord")


# ---------------------------------------------------------------------------------------------
# Segment layouts


def host_offsets(offsets, length: int, name: str = "offsets") -> np.ndarray:
    """Validate offsets (L+1 non-decreasing int64, 0 .. length) and return them as numpy."""
    if is_tensor(offsets):
        if offsets.device.type != "cpu":
            raise ValueError(f"{name} must live on the CPU (it is layout metadata); "
                             "pass offsets.cpu()")
        off = offsets.detach().numpy()
    else:
        off = np.asarray(offsets)
    if off.ndim != 1 or off.shape[0] < 1:
        raise ValueError(f"{name} must be a 1-D array of L+1 values, got shape {off.shape}")
    if off.dtype != np.int64:
        if not np.issubdtype(off.dtype, np.integer):
            raise TypeError(f"{name} must hold integers (int64), got {off.dtype}")
        off = off.astype(np.int64)
    off = np.ascontiguousarray(off)
    if off[0] != 0:
        raise ValueError(f"{name}[0] must be 0, got {int(off[0])}")
    if off[-1] != length:
        raise ValueError(f"{name}[-1] must equal the buffer length {length}, got {int(off[-1])}")
    if off.shape[0] > 1 and np.any(off[1:] < off[:-1]):
        raise ValueError(f"{name} must be non-decreasing")
    return off


class Plan:
    """Tile tables for one layout on one device, cached: a training loop reuses its layout."""

    __slots__ = ("offsets", "tile_start", "layout", "keep", "num_segments", "ws_bytes")

    def __init__(self, offsets: np.ndarray, device: int, cuda_index, gram: bool):
        # a private copy: plans are cached by the offsets' contents, and the caller's array
        # (which the kernels would otherwise read through) may be changed after the call
        offsets = np.array(offsets, dtype=np.int64, copy=True)
        tile = _C.tile_size(device, gram)
        lengths = np.diff(offsets)
        tile_start = np.zeros(offsets.shape[0], dtype=np.int64)
        np.cumsum((lengths + tile - 1) // tile, out=tile_start[1:])
        self.offsets, self.tile_start = offsets, tile_start
        self.num_segments = offsets.shape[0] - 1
        if device == CUDA:
            torch = torch_module()
            dev = torch.device("cuda", cuda_index)
            self.keep = (torch.from_numpy(offsets).to(dev), torch.from_numpy(tile_start).to(dev))
            ptrs = (self.keep[0].data_ptr(), self.keep[1].data_ptr())
        else:
            self.keep = (offsets, tile_start)
            ptrs = (offsets.ctypes.data, tile_start.ctypes.data)
        self.layout = _C.Layout(ptrs[0], ptrs[1], self.num_segments, int(tile_start[-1]), tile)
        self.ws_bytes = {}  # (op, k, with_rhs) -> CUDA workspace bytes

    def workspace_bytes(self, op: str, k: int = 0, with_rhs: bool = False) -> int:
        key = (op, k, with_rhs)
        n = self.ws_bytes.get(key)
        if n is None:
            n = self.ws_bytes[key] = _C.workspace_bytes(CUDA, op, self.layout, k, with_rhs)
        return n


_PLANS = BoundedCache(1024)


def plan(offsets: np.ndarray, buf: Buf, gram: bool = False) -> Plan:
    key = (offsets.tobytes(), buf.device, buf.cuda_index, gram)
    return _PLANS.get_or_make(key, lambda: Plan(offsets, buf.device, buf.cuda_index, gram))


# Validated layouts by the caller's offsets: (offsets bytes, length, device, gram) -> Plan. A
# training loop passes the same offsets every call; validating them (host_offsets: several
# numpy reductions) and hashing them again cost more than a small kernel.
_LAYOUTS = BoundedCache(1024)


def _offsets_key(offsets):
    """Bytes identifying int64 1-D offsets cheaply, or None (anything else: validate fully)."""
    if type(offsets) is np.ndarray:
        if offsets.dtype == np.int64 and offsets.ndim == 1:
            return offsets.tobytes()
        return None
    if is_tensor(offsets) and offsets.dtype is _torch_int64() and offsets.dim() == 1 \
            and offsets.is_cpu and not offsets.requires_grad:
        return offsets.numpy().tobytes()
    return None


@lru_cache(maxsize=None)
def _torch_int64():
    return torch_module().int64


def layout_plan(offsets, length: int, buf: Buf, gram: bool = False, name: str = "offsets") -> Plan:
    """``plan(host_offsets(offsets, length), buf, gram)``, cached on the offsets' contents: a
    repeated layout costs one ``tobytes`` and one dict lookup."""
    if offsets is None:  # one segment over the whole buffer
        raw, offsets = b"", np.array([0, length], np.int64)
    else:
        raw = _offsets_key(offsets)
    if raw is None:
        return plan(host_offsets(offsets, length, name), buf, gram)
    key = (raw, length, buf.device, buf.cuda_index, gram)
    p = _LAYOUTS.get(key)
    if p is None:
        p = plan(host_offsets(offsets, length, name), buf, gram)
        _LAYOUTS.get_or_make(key, lambda: p)
    return p


# ---------------------------------------------------------------------------------------------
# Allocation in the caller's framework


def empty(like: Buf, shape, float64: bool = False):
    if like.tensor:
        torch = torch_module()
        dtype = torch.float64 if float64 else like.obj.dtype
        if not shape:  # 0-d: no sizes to pass one by one
            return torch.empty((), dtype=dtype, device=like.obj.device)
        # the sizes as separate arguments: torch parses them over 1 us faster than one tuple
        return torch.empty(*shape, dtype=dtype, device=like.obj.device)
    return np.empty(shape, dtype=np.float64 if float64 else like.obj.dtype)


def _on_device_of(tensor, buf: Buf) -> bool:
    """Whether a torch tensor lives on ``buf``'s device (buf holds a tensor)."""
    if buf.device == CUDA:
        return tensor.is_cuda and tensor.get_device() == buf.cuda_index
    return tensor.is_cpu


def float64_array(values, like: Buf, name: str, shape):
    """Coefficient arrays (weights, alpha, beta): float64, contiguous, on like's device."""
    if like.tensor:
        torch = torch_module()
        if is_tensor(values) and values.dtype is torch.float64 and values.is_contiguous() \
                and _on_device_of(values, like):
            t = values  # what .to(...).contiguous() would return, without parsing their arguments
        elif is_tensor(values):
            t = values.to(device=like.obj.device, dtype=torch.float64).contiguous()
        else:
            t = torch.as_tensor(np.asarray(values, dtype=np.float64),
                                device=like.obj.device).contiguous()
    else:
        if is_tensor(values):
            values = values.detach().cpu().numpy()
        t = np.ascontiguousarray(values, dtype=np.float64)
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(t.shape)}")
    return t


class _Workspaces(threading.local):
    """CUDA workspace per (thread, device, stream), grown by doubling and reused.

    Reuse is safe because every kernel that reads a workspace is enqueued on that stream by
    that thread, after the previous user. Nothing is allocated per call, so a call whose
    workspace was prepared beforehand (a warm-up on the capturing stream) can be captured in
    a CUDA graph. Outgrown buffers are kept (``retired``): a captured graph may still hold
    their addresses; doubling bounds them to the size of the live one.
    """

    def __init__(self):
        self.live = {}
        self.retired = []


_WORKSPACES = _Workspaces()


def cuda_workspace(device, stream_handle: int, nbytes: int):
    """(tensor, address) of at least ``nbytes`` on ``device`` for use on ``stream_handle``."""
    key = (device, stream_handle)
    ws = _WORKSPACES.live.get(key)
    if ws is None or ws.numel() < nbytes:
        if ws is not None:
            _WORKSPACES.retired.append(ws)
        size = max(nbytes, 2 * ws.numel() if ws is not None else 4096)
        torch = torch_module()
        ws = _WORKSPACES.live[key] = torch.empty(size, dtype=torch.uint8, device=device)
    return ws, ws.data_ptr()


def workspace(buf: Buf, op: str, p: Plan, k: int = 0, with_rhs: bool = False,
              stream_handle: int | None = None):
    if buf.device != CUDA:
        return None, 0
    nbytes = p.workspace_bytes(op, k, with_rhs)
    if stream_handle is None:
        stream_handle = stream(buf)
    return cuda_workspace(buf.obj.device, stream_handle, nbytes)


def stream(buf: Buf) -> int:
    """The caller's current stream on the buffer's device (every op runs there)."""
    if buf.device != CUDA:
        return 0
    return current_stream_handle(buf.cuda_index)


def current_stream_handle(index: int) -> int:
    torch = torch_module()
    raw = getattr(torch._C, "_cuda_getCurrentRawStream", None)
    if raw is not None:  # one C call instead of building a torch.cuda.Stream object
        return raw(index)
    return torch.cuda.current_stream(index).cuda_stream


# ---------------------------------------------------------------------------------------------
# Raw calls for the collectives: buffers already validated (same dtype/device, contiguous 1-D).

ITEMSIZE = {FLOAT32: 4, FLOAT64: 8, FLOAT16: 2, BFLOAT16: 2}


class Flat:
    """A validated, contiguous 1-D buffer the collectives run kernels on by address."""

    __slots__ = ("obj", "code", "device", "ptr", "itemsize", "n", "stream", "cuda_index", "kdev")

    def __init__(self, obj, name: str = "tensor"):
        if type(obj) is np.ndarray:  # fast path (the 4 KiB allreduce latency): same checks
            code = _NUMPY_CODES.get(obj.dtype)
            if code is not None and obj.flags.c_contiguous:
                self.obj, self.code, self.device, self.ptr = obj, code, CPU, \
                    _C.buffer_address(obj)
                self.kdev = CPU
                self.cuda_index, self.itemsize, self.n, self.stream = None, ITEMSIZE[code], obj.size, 0
                return
        b = Buf(obj, name)
        check_cuda_available(b, name)
        self.obj, self.code, self.device, self.ptr = obj, b.code, b.device, b.ptr
        self.cuda_index, self.kdev = b.cuda_index, b.kdev
        self.itemsize = ITEMSIZE[b.code]
        self.n = math.prod(b.shape)
        self.stream = stream(b)

    def at(self, index: int) -> int:
        return self.ptr + index * self.itemsize

    def new(self, n: int, float64: bool = False):
        """An uninitialised buffer of n elements of this dtype (or float64), same device."""
        if is_tensor(self.obj):
            torch = torch_module()
            return empty_tensor(n, torch.float64 if float64 else self.obj.dtype, self.obj.device)
        return np.empty(n, dtype=np.float64 if float64 else self.obj.dtype)

    def workspace(self, op: str, p: Plan):
        if self.device != CUDA:
            return None, 0
        return cuda_workspace(self.obj.device, self.stream, p.workspace_bytes(op))
