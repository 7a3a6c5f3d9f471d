"""The validated implementations behind ``accord.ops``, for numpy arrays and torch tensors.

``accord.ops`` calls these directly for numpy arrays and for eager torch tensors; the
``torch.library`` custom ops of ``accord._torch_ops`` (used while tracing, e.g. under
``torch.compile``) call the same functions, so both paths share one set of checks.
"""
from __future__ import annotations

import math
from numbers import Real

import numpy as np

from . import _C
from ._buffers import BoundedCache
from ._kernels import (CUDA, MAX_SOLVE_K, Buf, addr, check_cuda_available, cuda_workspace, empty,
                       float64_array, host_offsets, layout_plan, plan, same_kind, stream,
                       workspace)

def numel_of(buf: Buf) -> int:
    return math.prod(buf.shape)


def flat_pair(a, b, names=("a", "b")):
    ba, bb = Buf(a, names[0]), Buf(b, names[1])
    same_kind(ba, bb, names[1], names[0])
    if ba.shape != bb.shape:
        raise ValueError(f"{names[0]} and {names[1]} must have the same shape, "
                         f"got {ba.shape} and {bb.shape}")
    check_cuda_available(ba, names[0])
    return ba, bb


def out_buf(out, like: Buf, shape, name="out") -> Buf:
    bo = Buf(out, name)
    same_kind(like, bo, name, "the inputs")
    if bo.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {bo.shape}")
    return bo


def output(out, like: Buf, shape):
    """(out, its address) for an op writing a buffer like ``like`` of ``shape``: the caller's
    ``out``, checked by :func:`out_buf`, or a new one, which is made to match and so needs no
    check."""
    if out is None:
        out = empty(like, shape)
        return out, addr(out)
    return out, out_buf(out, like, shape).ptr


def offsets_for(offsets, length):
    return host_offsets(offsets if offsets is not None else np.array([0, length], np.int64), length)




def segment_dots(a, b, offsets, out=None):
    ba, bb = flat_pair(a, b)
    p = layout_plan(offsets, numel_of(ba), ba)
    if out is None:
        dots = empty(ba, (p.num_segments, 3), float64=True)
    else:
        bo = Buf(out, "out")
        same_kind(ba, bo, "out", "the inputs", dtype=False)
        if bo.dtype_name != "float64" or bo.shape != (p.num_segments, 3):
            raise ValueError(f"out must be float64 with shape {(p.num_segments, 3)}, got "
                             f"{bo.dtype_name} {bo.shape}")
        dots = out
    st = stream(ba)
    keep, ws = workspace(ba, "segment_dots", p, stream_handle=st)
    _C.segment_dots(ba.code, ba.kdev, ba.ptr, bb.ptr, p.layout, addr(dots), ws, st)
    return dots


def _positive_finite(w) -> bool:
    return isinstance(w, Real) and w > 0 and math.isfinite(w)


def check_weights(weights):
    # two plain calls: all() over a generator expression took about 1 us more per call
    if not (len(weights) == 2 and _positive_finite(weights[0]) and _positive_finite(weights[1])):
        raise ValueError(f"weights must be two positive finite numbers (n1, n2), got {weights!r}")
    n1, n2 = float(weights[0]), float(weights[1])
    return n1 / (n1 + n2), n2 / (n1 + n2)


def adasum_combine(a, b, offsets, out, dots, weights):
    ba, bb = flat_pair(a, b)
    wa, wb = check_weights(weights)
    p = layout_plan(offsets, numel_of(ba), ba)
    out, out_ptr = output(out, ba, ba.shape)
    if dots is not None:
        dots = float64_array(dots, ba, "dots", (p.num_segments, 3))
    st = stream(ba)
    keep, ws = (workspace(ba, "adasum_combine", p, stream_handle=st) if dots is None
                else (None, 0))
    _C.adasum_combine(ba.code, ba.kdev, ba.ptr, bb.ptr, out_ptr, p.layout, addr(dots), wa, wb,
                      ws, st)
    return out


def vectors_buf(vectors, name="vectors"):
    bv = Buf(vectors, name)
    if len(bv.shape) != 2 or bv.shape[0] < 1:
        raise ValueError(f"{name} must be a 2-D [k, n] buffer with k >= 1, got shape {bv.shape}")
    check_cuda_available(bv, name)
    return bv


def gram(vectors, offsets, rhs):
    bv = vectors_buf(vectors)
    k, n = bv.shape
    br = None
    if rhs is not None:
        br = Buf(rhs, "rhs")
        same_kind(bv, br, "rhs", "vectors")
        if numel_of(br) != n:
            raise ValueError(f"rhs must have n={n} elements (one row of vectors), got {br.shape}")
    p = layout_plan(offsets, n, bv, gram=True)
    g = empty(bv, (p.num_segments, k, k), float64=True)
    r = empty(bv, (p.num_segments, k), float64=True) if br is not None else None
    st = stream(bv)
    keep, ws = workspace(bv, "gram", p, k, br is not None, stream_handle=st)
    _C.gram(bv.code, bv.kdev, bv.ptr, k, br.ptr if br else 0, p.layout, addr(g), addr(r), ws, st)
    if br is not None and br.ptr == 0:
        # an empty (n = 0) torch tensor has data_ptr() 0, which the kernel reads as "no rhs" and
        # leaves rhs_dots unwritten: the products over empty segments are 0
        r[...] = 0
    return g, r


def solve_spd(gram, rhs, ridge):
    bg, br = Buf(gram, "gram"), Buf(rhs, "rhs")
    same_kind(bg, br, "rhs", "gram")
    if bg.dtype_name != "float64":
        raise TypeError(f"gram must be float64 (as returned by accord.ops.gram), got {bg.dtype_name}")
    if len(bg.shape) != 3 or bg.shape[1] != bg.shape[2]:
        raise ValueError(f"gram must have shape [L, k, k], got {bg.shape}")
    L, k = bg.shape[0], bg.shape[1]
    if br.shape != (L, k):
        raise ValueError(f"rhs must have shape [L, k] = {(L, k)}, got {br.shape}")
    if k > MAX_SOLVE_K:
        raise ValueError(f"solve_spd supports k <= {MAX_SOLVE_K} vectors, got k={k}")
    if not (isinstance(ridge, Real) and ridge >= 0 and math.isfinite(ridge)):
        raise ValueError(f"ridge must be a finite number >= 0, got {ridge!r}")
    check_cuda_available(bg, "gram")
    x = empty(bg, (L, k), float64=True)
    st = stream(bg)
    if bg.device == CUDA:
        p = plan(np.zeros(L + 1, np.int64), bg)
        keep, ws = cuda_workspace(gram.device, st, p.workspace_bytes("solve_spd", k))
    else:
        ws = 0
    _C.solve_spd(bg.kdev, bg.ptr, br.ptr, L, k, float(ridge), addr(x), ws, st)
    return x


def weighted_sum(vectors, weights, offsets, out):
    bv = vectors_buf(vectors)
    k, n = bv.shape
    p = layout_plan(offsets, n, bv)
    w = float64_array(weights, bv, "weights", (p.num_segments, k))
    if out is None:
        out = empty(bv, (n,))  # made to match: nothing to check
        out_ptr = addr(out)
    else:
        bo = Buf(out, "out")
        same_kind(bv, bo, "out", "vectors")
        if numel_of(bo) != n:
            raise ValueError(f"out must have n={n} elements, got shape {bo.shape}")
        out_ptr = bo.ptr
    _C.weighted_sum(bv.code, bv.kdev, bv.ptr, k, addr(w), p.layout, out_ptr, stream(bv))
    return out


# Per-segment coefficient arrays made from one number (pull_'s strength, axpby's scalars), by
# (value, segments, framework, device): read-only to the kernels, so one copy serves every call
# (on CUDA a fresh one would be a host-to-device copy per call).
_SCALAR_COEFFS = BoundedCache(256)


def segment_coefficient(value, like: Buf, name: str, num_segments: int):
    if isinstance(value, Real):
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"{name} must be finite, got {value!r}")
        key = (value, num_segments, like.tensor, like.device, like.cuda_index)
        return _SCALAR_COEFFS.get_or_make(key, lambda: float64_array(
            np.full(num_segments, value), like, name, (num_segments,)))
    return float64_array(value, like, name, (num_segments,))


def axpby(x, y, alpha, beta, offsets, out):
    bx, by = flat_pair(x, y, ("x", "y"))
    p = layout_plan(offsets, numel_of(bx), bx)
    al = segment_coefficient(alpha, bx, "alpha", p.num_segments)
    be = segment_coefficient(beta, bx, "beta", p.num_segments)
    out, out_ptr = output(out, bx, bx.shape)
    _C.axpby(bx.code, bx.kdev, bx.ptr, by.ptr, out_ptr, p.layout, addr(al), addr(be), stream(bx))
    return out
