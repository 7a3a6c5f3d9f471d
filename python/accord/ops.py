"""accord.ops: the fused segment kernels, for numpy arrays and torch tensors (CPU and CUDA).

A flat buffer of n elements is split into L layer segments by ``offsets`` (L+1 non-decreasing
integers from 0 to n, on the host; empty segments are allowed). Reductions accumulate in float64;
outputs keep the input dtype. Supported dtypes: float32, float64, float16, bfloat16 (bfloat16
through torch tensors only, numpy has no such dtype).

With torch tensors every op goes through a ``torch.library`` custom op (``torch.ops.accord.*``)
so it works under ``torch.compile``; numpy arrays call the kernels directly.

    segment_dots(a, b, offsets)                      -> float64 [L, 3]: a.b, a.a, b.b
    adasum_combine(a, b, offsets, out=None, *, dots=None, weights=(1, 1))
    gram(vectors, offsets, rhs=None)                 -> [L, k, k] (and [L, k] when rhs is given)
    solve_spd(gram, rhs, ridge=0.0)                  -> [L, k]
    weighted_sum(vectors, weights, offsets, out=None)
    axpby(x, y, alpha, beta, offsets=None, out=None) -> alpha x + beta y, per segment
    pull_(x, target, strength, offsets=None)         -> x <- x - strength (x - target), in place
"""
from __future__ import annotations

import math
from numbers import Real

import numpy as np

from . import _C
from ._kernels import (CUDA, Buf, addr, check_cuda_available, empty, float64_array, host_offsets,
                       is_tensor, plan, same_kind, stream, workspace)

__all__ = ["segment_dots", "adasum_combine", "gram", "solve_spd", "weighted_sum", "axpby", "pull_"]


def _numel(buf: Buf) -> int:
    return math.prod(buf.shape)


def _flat_pair(a, b, names=("a", "b")):
    ba, bb = Buf(a, names[0]), Buf(b, names[1])
    same_kind(ba, bb, names[1], names[0])
    if ba.shape != bb.shape:
        raise ValueError(f"{names[0]} and {names[1]} must have the same shape, "
                         f"got {ba.shape} and {bb.shape}")
    check_cuda_available(ba, names[0])
    return ba, bb


def _out_buf(out, like: Buf, shape, name="out") -> Buf:
    bo = Buf(out, name)
    same_kind(like, bo, name, "the inputs")
    if bo.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {bo.shape}")
    return bo


def _offsets_for(offsets, length):
    return host_offsets(offsets if offsets is not None else np.array([0, length], np.int64), length)


def _torch_ops():
    from . import _torch_ops  # registers torch.ops.accord.* on first use
    return _torch_ops


def _offsets_tensor(offsets, length):
    """Offsets for a torch custom op: a CPU int64 tensor. A tensor is passed through unchanged
    (the implementation validates it with host_offsets), so no numpy runs while torch.compile
    traces the call."""
    import torch
    if isinstance(offsets, torch.Tensor):
        return offsets
    if offsets is None:
        return torch.tensor([0, length], dtype=torch.int64)
    if torch.compiler.is_compiling():  # numpy/list offsets while tracing: no numpy checks here
        return torch.as_tensor(offsets, dtype=torch.int64)
    return torch.from_numpy(_offsets_for(offsets, length))


def _require_tensors(ref_name, **named):
    """With torch tensors, every other buffer must be a tensor too (numpy ones are an error,
    as in same_kind, not an opaque schema-cast failure inside torch.ops)."""
    for name, value in named.items():
        if value is not None and not is_tensor(value):
            raise TypeError(f"{name} and {ref_name} must both be numpy arrays or both torch "
                            f"tensors, got {type(value).__name__} for {name}")


def _float64_tensor(value, like, name):
    """Coefficient arrays (dots, weights, alpha, beta) given as numpy/lists with torch data:
    converted to float64 tensors on the data's device, like float64_array does for numpy."""
    if value is None or is_tensor(value):
        return value
    import torch
    return torch.as_tensor(np.asarray(value, dtype=np.float64), device=like.device)


# ---------------------------------------------------------------------------------------------
# Implementations (numpy and torch alike); the torch custom ops call these.


def _segment_dots(a, b, offsets):
    ba, bb = _flat_pair(a, b)
    p = plan(host_offsets(offsets, _numel(ba)), ba)
    dots = empty(ba, (p.num_segments, 3), float64=True)
    keep, ws = workspace(ba, "segment_dots", p)
    _C.segment_dots(ba.code, ba.device, ba.ptr, bb.ptr, p.layout, addr(dots), ws, stream(ba))
    return dots


def _check_weights(weights):
    if len(weights) != 2 or not all(isinstance(w, Real) and w > 0 and math.isfinite(w)
                                    for w in weights):
        raise ValueError(f"weights must be two positive finite numbers (n1, n2), got {weights!r}")
    n1, n2 = float(weights[0]), float(weights[1])
    return n1 / (n1 + n2), n2 / (n1 + n2)


def _adasum_combine(a, b, offsets, out, dots, weights):
    ba, bb = _flat_pair(a, b)
    wa, wb = _check_weights(weights)
    p = plan(host_offsets(offsets, _numel(ba)), ba)
    if out is None:
        out = empty(ba, ba.shape)
    bo = _out_buf(out, ba, ba.shape)
    if dots is not None:
        dots = float64_array(dots, ba, "dots", (p.num_segments, 3))
    keep, ws = workspace(ba, "adasum_combine", p) if dots is None else (None, 0)
    _C.adasum_combine(ba.code, ba.device, ba.ptr, bb.ptr, bo.ptr, p.layout, addr(dots), wa, wb,
                      ws, stream(ba))
    return out


def _vectors(vectors, name="vectors"):
    bv = Buf(vectors, name)
    if len(bv.shape) != 2 or bv.shape[0] < 1:
        raise ValueError(f"{name} must be a 2-D [k, n] buffer with k >= 1, got shape {bv.shape}")
    check_cuda_available(bv, name)
    return bv


def _gram(vectors, offsets, rhs):
    bv = _vectors(vectors)
    k, n = bv.shape
    br = None
    if rhs is not None:
        br = Buf(rhs, "rhs")
        same_kind(bv, br, "rhs", "vectors")
        if _numel(br) != n:
            raise ValueError(f"rhs must have n={n} elements (one row of vectors), got {br.shape}")
    p = plan(host_offsets(offsets, n), bv, gram=True)
    g = empty(bv, (p.num_segments, k, k), float64=True)
    r = empty(bv, (p.num_segments, k), float64=True) if br is not None else None
    keep, ws = workspace(bv, "gram", p, k, br is not None)
    _C.gram(bv.code, bv.device, bv.ptr, k, br.ptr if br else 0, p.layout, addr(g), addr(r), ws,
            stream(bv))
    if br is not None and br.ptr == 0:
        # an empty (n = 0) torch tensor has data_ptr() 0, which the kernel reads as "no rhs" and
        # leaves rhs_dots unwritten: the products over empty segments are 0
        r[...] = 0
    return g, r


def _solve_spd(gram, rhs, ridge):
    bg, br = Buf(gram, "gram"), Buf(rhs, "rhs")
    same_kind(bg, br, "rhs", "gram")
    if bg.dtype_name != "float64":
        raise TypeError(f"gram must be float64 (as returned by accord.ops.gram), got {bg.dtype_name}")
    if len(bg.shape) != 3 or bg.shape[1] != bg.shape[2]:
        raise ValueError(f"gram must have shape [L, k, k], got {bg.shape}")
    L, k = bg.shape[0], bg.shape[1]
    if br.shape != (L, k):
        raise ValueError(f"rhs must have shape [L, k] = {(L, k)}, got {br.shape}")
    if k > 128:
        raise ValueError(f"solve_spd supports k <= 128 vectors, got k={k}")
    if not (isinstance(ridge, Real) and ridge >= 0 and math.isfinite(ridge)):
        raise ValueError(f"ridge must be a finite number >= 0, got {ridge!r}")
    check_cuda_available(bg, "gram")
    x = empty(bg, (L, k), float64=True)
    if bg.device == CUDA:
        nbytes = _C.workspace_bytes(CUDA, "solve_spd", plan(np.zeros(L + 1, np.int64), bg).layout, k)
        import torch
        ws_t = torch.empty(max(nbytes, 1), dtype=torch.uint8, device=gram.device)
        ws = ws_t.data_ptr()
    else:
        ws = 0
    _C.solve_spd(bg.device, bg.ptr, br.ptr, L, k, float(ridge), addr(x), ws, stream(bg))
    return x


def _weighted_sum(vectors, weights, offsets, out):
    bv = _vectors(vectors)
    k, n = bv.shape
    p = plan(host_offsets(offsets, n), bv)
    w = float64_array(weights, bv, "weights", (p.num_segments, k))
    if out is None:
        out = empty(bv, (n,))
    bo = Buf(out, "out")
    same_kind(bv, bo, "out", "vectors")
    if _numel(bo) != n:
        raise ValueError(f"out must have n={n} elements, got shape {bo.shape}")
    _C.weighted_sum(bv.code, bv.device, bv.ptr, k, addr(w), p.layout, bo.ptr, stream(bv))
    return out


def _segment_coefficient(value, like: Buf, name: str, num_segments: int):
    if isinstance(value, Real):
        if not math.isfinite(value):
            raise ValueError(f"{name} must be finite, got {value!r}")
        value = np.full(num_segments, float(value))
    return float64_array(value, like, name, (num_segments,))


def _axpby(x, y, alpha, beta, offsets, out):
    bx, by = _flat_pair(x, y, ("x", "y"))
    p = plan(_offsets_for(offsets, _numel(bx)), bx)
    al = _segment_coefficient(alpha, bx, "alpha", p.num_segments)
    be = _segment_coefficient(beta, bx, "beta", p.num_segments)
    if out is None:
        out = empty(bx, bx.shape)
    bo = _out_buf(out, bx, bx.shape)
    _C.axpby(bx.code, bx.device, bx.ptr, by.ptr, bo.ptr, p.layout, addr(al), addr(be), stream(bx))
    return out


# ---------------------------------------------------------------------------------------------
# Public API


def segment_dots(a, b, offsets):
    """Per segment ``(a.b, a.a, b.b)`` as float64 ``[L, 3]``, in one pass over a and b."""
    if is_tensor(a):
        _require_tensors("a", b=b)
        return _torch_ops().segment_dots(a, b, _offsets_tensor(offsets, a.numel()))
    return _segment_dots(a, b, offsets)


def adasum_combine(a, b, offsets, out=None, *, dots=None, weights=(1, 1)):
    """Adasum pair rule per segment: ``(1 - wa a.b/|a|^2) a + (1 - wb a.b/|b|^2) b``.

    ``weights=(n1, n2)`` are the input counts under each side (wa = n1/(n1+n2)); (1, 1) is the
    plain rule. A segment whose squared norm is zero (below DBL_MIN) gets coefficient 1, so a
    zero input gives a plain sum. NaN or Inf anywhere in a segment makes that output segment
    NaN. ``dots`` ([L, 3] from :func:`segment_dots`, possibly summed across ranks) skips the
    dot pass. ``out`` may be ``a`` or ``b`` (in place).
    """
    if is_tensor(a):
        _require_tensors("a", b=b, out=out)
        _check_weights(weights)
        weights = [float(w) for w in weights]
        dots = _float64_tensor(dots, a, "dots")
        t = _torch_ops()
        off = _offsets_tensor(offsets, a.numel())
        if out is None:
            return t.adasum_combine(a, b, off, dots, weights)
        t.adasum_combine_out(a, b, off, dots, weights, out)
        return out
    return _adasum_combine(a, b, offsets, out, dots, weights)


def gram(vectors, offsets, rhs=None):
    """Per segment Gram matrix of the rows of ``vectors`` ([k, n]): float64 ``[L, k, k]``.

    With ``rhs`` (n elements) also returns ``[L, k]`` products ``v_i . rhs``: ``(gram, rhs_dots)``.
    """
    if is_tensor(vectors):
        _require_tensors("vectors", rhs=rhs)
        g, r = _torch_ops().gram(vectors, _offsets_tensor(offsets, vectors.shape[-1]), rhs)
    else:
        g, r = _gram(vectors, offsets, rhs)
    return g if rhs is None else (g, r)


def solve_spd(gram, rhs, ridge=0.0):
    """Batched solves of ``(gram[l] + ridge I) x[l] = rhs[l]``, k <= 128, float64.

    Symmetric positive semi-definite systems are solved through an eigendecomposition; a
    rank-deficient (or zero) matrix gives the minimum-norm least-squares solution (pseudo-inverse,
    eigenvalues below k * eps * max|eigenvalue| dropped): always finite for finite input.
    """
    if is_tensor(gram):
        _require_tensors("gram", rhs=rhs)
        return _torch_ops().solve_spd(gram, rhs, float(ridge))
    return _solve_spd(gram, rhs, ridge)


def weighted_sum(vectors, weights, offsets, out=None):
    """Per segment ``out = sum_i weights[l, i] * vectors[i]``; weights are float64 ``[L, k]``."""
    if is_tensor(vectors):
        _require_tensors("vectors", out=out)
        weights = _float64_tensor(weights, vectors, "weights")
        t = _torch_ops()
        off = _offsets_tensor(offsets, vectors.shape[-1])
        if out is None:
            return t.weighted_sum(vectors, weights, off)
        t.weighted_sum_out(vectors, weights, off, out)
        return out
    return _weighted_sum(vectors, weights, offsets, out)


def axpby(x, y, alpha, beta, offsets=None, out=None):
    """``out = alpha * x + beta * y``; alpha and beta are numbers or per-segment ``[L]`` arrays."""
    if is_tensor(x):
        _require_tensors("x", y=y, out=out)
        t = _torch_ops()
        off = _offsets_tensor(offsets, x.numel())
        L = off.shape[0] - 1
        al = _as_segment_tensor(alpha, L, x, "alpha")
        be = _as_segment_tensor(beta, L, x, "beta")
        if out is None:
            return t.axpby(x, y, al, be, off)
        t.axpby_out(x, y, al, be, off, out)
        return out
    return _axpby(x, y, alpha, beta, offsets, out)


def _as_segment_tensor(value, num_segments, like, name):
    import torch
    if isinstance(value, Real):
        if not math.isfinite(value):
            raise ValueError(f"{name} must be finite, got {value!r}")
        return torch.full((num_segments,), float(value), dtype=torch.float64, device=like.device)
    return _float64_tensor(value, like, name)


def pull_(x, target, strength, offsets=None):
    """In place ``x <- x - strength * (x - target)`` (Leader SGD's pull, averaging's blend)."""
    if isinstance(strength, Real) and not math.isfinite(strength):
        raise ValueError(f"strength must be finite, got {strength!r}")
    return axpby(x, target, 1.0 - strength, strength, offsets, out=x)
