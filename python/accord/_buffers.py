"""Helpers over the two kinds of buffer accord accepts, numpy arrays and torch tensors.

torch is never imported here: a tensor is recognised by its type's module, so numpy-only users
(mpi4py training loops) never pay for importing torch. Everything that needs torch asks
:func:`torch_module`, which only returns the module a caller's tensor already proves is loaded.
"""
from __future__ import annotations

import sys

import numpy as np

__all__ = ["is_tensor", "torch_module", "numel", "describe", "is_contiguous",
           "flat_view", "scale_", "BoundedCache", "empty_tensor"]


_TENSOR_TYPES: dict = {}  # type -> is it a tensor type; a handful of entries per process


def is_tensor(x) -> bool:
    """True for a torch tensor (any subclass), without importing torch."""
    t = type(x)
    known = _TENSOR_TYPES.get(t)
    if known is None:
        known = t.__module__.startswith("torch") and hasattr(x, "data_ptr")
        if len(_TENSOR_TYPES) < 256:  # remembered per type: it is called several times per op
            _TENSOR_TYPES[t] = known
    return known


def torch_module():
    """The torch module: imported on first use (callers hold torch tensors or need torch)."""
    torch = sys.modules.get("torch")
    if torch is None:
        import torch
    return torch


def empty_tensor(n: int, dtype, device):
    """An uninitialised 1-D tensor of n elements. CPU tensors get numpy's memory
    (``torch.from_numpy``): numpy asks the kernel for transparent huge pages on large
    allocations (``madvise(MADV_HUGEPAGE)``), torch's CPU allocator does not, and on machines
    where huge pages are madvise-only, an MPI single-copy exchange or allreduce of a 64 MiB
    buffer in 4 KiB pages is measurably slower (docs/collectives.md)."""
    torch = torch_module()
    if torch.device(device).type != "cpu":
        return torch.empty(n, dtype=dtype, device=device)
    itemsize = torch.empty((), dtype=dtype).element_size()
    return torch.from_numpy(np.empty(n * itemsize, dtype=np.uint8)).view(dtype)


def numel(x) -> int:
    return x.numel() if is_tensor(x) else int(np.size(x))


def describe(x) -> str:
    """``dtype[shape]@device``: how a buffer shows up in error messages and signatures."""
    if is_tensor(x):
        return f"{str(x.dtype).replace('torch.', '')}{list(x.shape)}@{x.device.type}"
    if isinstance(x, np.ndarray):
        return f"{x.dtype}{list(x.shape)}@cpu"
    return type(x).__name__


def is_contiguous(x) -> bool:
    return x.is_contiguous() if is_tensor(x) else x.flags.c_contiguous


def scale_(x, factor: float) -> None:
    """``x *= factor`` in place (numpy: cast back to x's dtype, as torch does)."""
    if is_tensor(x):
        x.mul_(factor)
    else:
        np.multiply(x, factor, out=x, casting="unsafe")


def flat_view(x):
    """1-D view of a contiguous buffer (no copy)."""
    return x.view(-1) if is_tensor(x) else x.reshape(-1)


class BoundedCache(dict):
    """A dict that forgets everything once it holds ``limit`` entries.

    Caches keyed by layouts or shapes must not grow without bound when a program keeps
    producing new ones; a training loop reuses a handful, so dropping all of them on overflow
    costs one rebuild and keeps the code free of eviction bookkeeping.
    """

    def __init__(self, limit: int):
        super().__init__()
        self.limit = limit

    def get_or_make(self, key, make):
        value = self.get(key)
        if value is None:
            if len(self) >= self.limit:
                self.clear()
            value = self[key] = make()
        return value
