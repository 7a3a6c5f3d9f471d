"""Gradient compression for the wire: ``accord.Compression.none`` / ``.fp16`` / ``.bf16``.

Horovod's interface: a compressor has ``compress(tensor) -> (compressed, ctx)`` and
``decompress(compressed, ctx) -> tensor``; both are static, so the classes themselves are passed
around (``compression=accord.Compression.fp16``). Only float32/float64 buffers are narrowed;
16-bit and non-float ones pass through unchanged. Works on torch tensors and numpy arrays
(numpy has no bfloat16: ``bf16`` raises TypeError on a numpy float32 array).

Where the 16 bits travel depends on the op:

* ``Adasum``: the VHDD exchanges (the halves each level sends, the fold and the allgather) carry
  16-bit values, while the per-layer dots stay float64 and the pair combine runs in the
  buffer's own float32/float64 (:attr:`Compressor.wire_dtype` tells accord.adasum which 16-bit
  type to send). The result is rounded to 16 bits once per exchange and is bitwise identical on
  every rank.
* ``Sum`` / ``Average`` / ``Min`` / ``Max`` / ``Product``: the tensor is narrowed, reduced and
  widened back, so results are rounded as with Horovod's compression. accord's MPI and gloo
  transports reduce 16-bit buffers in float32 (MPI has no portable 16-bit float reduction), so
  there the values are 16-bit but the messages are not smaller.
* ``broadcast`` and ``allgather`` move the 16-bit buffer as is.

A custom compressor (any class with the two static methods) is applied around the whole
collective; give it a ``wire_dtype`` (a torch dtype name, ``"float16"`` or ``"bfloat16"``) to
use the in-exchange path with Adasum instead.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ._buffers import is_tensor, torch_module

__all__ = ["Compression", "Compressor", "NoneCompressor", "FP16Compressor", "BF16Compressor",
           "check_compression"]


class Compressor:
    """Base of the built-in compressors (Horovod's interface; see the module doc)."""

    #: 16-bit dtype name the values travel as, or None for no compression.
    wire_dtype: str | None = None

    @staticmethod
    def compress(tensor) -> tuple[Any, Any]:
        """Return ``(compressed, ctx)``; ``ctx`` is what :meth:`decompress` needs."""
        return tensor, None

    @staticmethod
    def decompress(tensor, ctx):
        """Undo :meth:`compress`."""
        return tensor


class NoneCompressor(Compressor):
    """No compression."""


def _narrow(tensor, name: str):
    if is_tensor(tensor):
        torch = torch_module()
        if tensor.dtype in (torch.float32, torch.float64):
            return tensor.to(getattr(torch, name)), tensor.dtype
        return tensor, None
    a = np.asarray(tensor)
    if a.dtype in (np.float32, np.float64):
        if name != "float16":
            raise TypeError(f"Compression.bf16 needs torch tensors (numpy has no bfloat16), got "
                            f"a numpy {a.dtype} array; use Compression.fp16 for numpy arrays")
        return a.astype(np.float16), a.dtype
    return tensor, None


def _widen(tensor, ctx):
    if ctx is None:
        return tensor
    return tensor.to(ctx) if is_tensor(tensor) else tensor.astype(ctx)


class FP16Compressor(Compressor):
    """float32/float64 values travel as IEEE float16 (range +-65504: scale losses that could
    overflow, as with AMP)."""

    wire_dtype = "float16"

    @staticmethod
    def compress(tensor):
        return _narrow(tensor, "float16")

    @staticmethod
    def decompress(tensor, ctx):
        return _widen(tensor, ctx)


class BF16Compressor(Compressor):
    """float32/float64 values travel as bfloat16 (float32's range, 8 significant bits)."""

    wire_dtype = "bfloat16"

    @staticmethod
    def compress(tensor):
        return _narrow(tensor, "bfloat16")

    @staticmethod
    def decompress(tensor, ctx):
        return _widen(tensor, ctx)


class Compression:
    """The built-in compressors, by Horovod's names (plus ``bf16``)."""

    none = NoneCompressor
    fp16 = FP16Compressor
    bf16 = BF16Compressor


def check_compression(compression, where: str = "compression"):
    """``compression`` (None meaning none), or TypeError naming the argument."""
    if compression is None:
        return NoneCompressor
    if not (callable(getattr(compression, "compress", None)) and
            callable(getattr(compression, "decompress", None))):
        raise TypeError(f"{where} must be accord.Compression.none, .fp16, .bf16 or an object "
                        f"with compress(tensor) -> (tensor, ctx) and decompress(tensor, ctx), "
                        f"got {compression!r}")
    return compression


def is_none(compression) -> bool:
    return compression is None or compression is NoneCompressor or (
        isinstance(compression, type) and issubclass(compression, NoneCompressor))
