"""accord.ops: the fused segment kernels, for numpy arrays and torch tensors (CPU and CUDA).

A flat buffer of n elements is split into L layer segments by ``offsets`` (L+1 non-decreasing
integers from 0 to n, on the host; empty segments are allowed). Reductions accumulate in float64;
outputs keep the input dtype. Supported dtypes: float32, float64, float16, bfloat16 (bfloat16
through torch tensors only, numpy has no such dtype).

With torch tensors the ops are ``torch.library`` custom ops (``torch.ops.accord.*``), so they
work under ``torch.compile``, ``make_fx`` and other tracing. An eager call on plain tensors skips
torch's op dispatch and calls the same implementation directly (see :func:`_eager`); numpy arrays
always do.

    segment_dots(a, b, offsets, out=None)            -> float64 [L, 3]: a.b, a.a, b.b
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

from . import _op_impl as _impl
from ._buffers import is_tensor, torch_module

__all__ = ["segment_dots", "adasum_combine", "gram", "solve_spd", "weighted_sum", "axpby", "pull_"]


def _torch_ops():
    from . import _torch_ops  # registers torch.ops.accord.* on first use
    return _torch_ops


_PLAIN_TYPES: tuple = ()   # torch.Tensor, nn.Parameter: set on the first tensor seen


def _init_eager_checks():
    """Bind the torch functions :func:`_eager` calls, once torch is known to be loaded: each
    call then costs one global lookup, not a chain of attribute lookups."""
    global _PLAIN_TYPES, _is_compiling, _jit_tracing_state, _dispatch_modes, _function_modes
    global _functorch_active, _grad_enabled
    torch = torch_module()
    C = torch._C
    # Each says whether something other than plain eager execution is in charge of the call:
    # then the torch.library op must run, so the tracer records it.
    _is_compiling = torch.compiler.is_compiling             # dynamo / torch.compile
    _jit_tracing_state = C._get_tracing_state               # torch.jit.trace (not None)
    _dispatch_modes = C._len_torch_dispatch_stack           # make_fx, FakeTensorMode, ...
    _function_modes = C._len_torch_function_stack           # torch function modes
    _functorch_active = C._are_functorch_transforms_active  # vmap / grad / functionalize
    _grad_enabled = torch.is_grad_enabled
    _PLAIN_TYPES = (torch.Tensor, torch.nn.Parameter)


def _eager(*tensors) -> bool:
    """True when the call can bypass torch.ops dispatch: no tracer, compiler, mode or functorch
    transform is active, every tensor is a plain ``torch.Tensor``/``nn.Parameter`` (a FakeTensor,
    FunctionalTensor or fx Proxy is not), and no autograd graph would be recorded (grad mode off,
    or no input requires grad). ``None`` entries (absent optional buffers) are skipped.

    The ops have no derivative. With grad mode on and an input that requires grad, the call
    goes through the custom op, which is what defines the behaviour there: outputs carry a
    grad_fn whose backward raises "no autograd formula". Everything else gives identical
    results on both paths (same implementation), at a fraction of the host time.

    A true answer also proves that every non-None argument is a torch tensor, so the public
    functions check for mixed numpy/torch buffers (:func:`_require_tensors`) only when it is
    false; a mixed call then raises there, as before.
    """
    if not _PLAIN_TYPES:
        _init_eager_checks()
    if (_is_compiling() or _jit_tracing_state() is not None or _dispatch_modes()
            or _function_modes() or _functorch_active()):
        return False
    plain = _PLAIN_TYPES
    grad = _grad_enabled()
    for t in tensors:
        if t is not None and (type(t) not in plain or grad and t.requires_grad):
            return False
    return True


def _offsets_tensor(offsets, length):
    """Offsets for a torch custom op: a CPU int64 tensor. A tensor is passed through unchanged
    (the implementation validates it with host_offsets), so no numpy runs while torch.compile
    traces the call."""
    torch = torch_module()
    if isinstance(offsets, torch.Tensor):
        return offsets
    if offsets is None:
        return torch.tensor([0, length], dtype=torch.int64)
    if torch.compiler.is_compiling():  # numpy/list offsets while tracing: no numpy checks here
        return torch.as_tensor(offsets, dtype=torch.int64)
    return torch.from_numpy(_impl.offsets_for(offsets, length))


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
    torch = torch_module()
    return torch.as_tensor(np.asarray(value, dtype=np.float64), device=like.device)


# ---------------------------------------------------------------------------------------------
# Public API


def segment_dots(a, b, offsets, out=None):
    """Per segment ``(a.b, a.a, b.b)`` as float64 ``[L, 3]``, in one pass over a and b.

    ``out``: a float64 ``[L, 3]`` buffer to write into (returned). With ``out=`` given (and
    ``out=``/``dots=`` to :func:`adasum_combine`) a CUDA call allocates nothing and does not
    synchronise once its layout and workspace exist, so it can be captured in a CUDA graph
    after one warm-up call on the capturing stream (docs/kernels.md)."""
    if is_tensor(a):
        if _eager(a, b, out, offsets if is_tensor(offsets) else None):
            return _impl.segment_dots(a, b, offsets, out)
        _require_tensors("a", b=b, out=out)
        dots = _torch_ops().segment_dots(a, b, _offsets_tensor(offsets, a.numel()))
        if out is None:
            return dots
        out.copy_(dots)
        return out
    return _impl.segment_dots(a, b, offsets, out)


def adasum_combine(a, b, offsets, out=None, *, dots=None, weights=(1, 1)):
    """Adasum pair rule per segment: ``(1 - wa a.b/|a|^2) a + (1 - wb a.b/|b|^2) b``.

    ``weights=(n1, n2)`` are the input counts under each side (wa = n1/(n1+n2)); (1, 1) is the
    plain rule. A segment whose squared norm is zero (below DBL_MIN) gets coefficient 1, so a
    zero input gives a plain sum. NaN or Inf anywhere in a segment makes that output segment
    NaN. ``dots`` ([L, 3] from :func:`segment_dots`, possibly summed across ranks) skips the
    dot pass. ``out`` may be ``a`` or ``b`` (in place).
    """
    if is_tensor(a):
        if _eager(a, b, out, dots if is_tensor(dots) else None):
            return _impl.adasum_combine(a, b, offsets, out, _float64_tensor(dots, a, "dots"),
                                        weights)
        _require_tensors("a", b=b, out=out)
        _impl.check_weights(weights)
        weights = [float(w) for w in weights]
        dots = _float64_tensor(dots, a, "dots")
        t = _torch_ops()
        off = _offsets_tensor(offsets, a.numel())
        if out is None:
            return t.adasum_combine(a, b, off, dots, weights)
        t.adasum_combine_out(a, b, off, dots, weights, out)
        return out
    return _impl.adasum_combine(a, b, offsets, out, dots, weights)


def gram(vectors, offsets, rhs=None):
    """Per segment Gram matrix of the rows of ``vectors`` ([k, n]): float64 ``[L, k, k]``.

    With ``rhs`` (n elements) also returns ``[L, k]`` products ``v_i . rhs``: ``(gram, rhs_dots)``.
    """
    if is_tensor(vectors):
        if _eager(vectors, rhs):
            g, r = _impl.gram(vectors, offsets, rhs)
            return g if rhs is None else (g, r)
        _require_tensors("vectors", rhs=rhs)
        g, r = _torch_ops().gram(vectors, _offsets_tensor(offsets, vectors.shape[-1]), rhs)
    else:
        g, r = _impl.gram(vectors, offsets, rhs)
    return g if rhs is None else (g, r)


def solve_spd(gram, rhs, ridge=0.0):
    """Batched solves of ``(gram[l] + ridge I) x[l] = rhs[l]``, k <= 128, float64.

    Symmetric positive semi-definite systems are solved through an eigendecomposition; a
    rank-deficient (or zero) matrix gives the minimum-norm least-squares solution (pseudo-inverse,
    eigenvalues below k * eps * max|eigenvalue| dropped): always finite for finite input.
    """
    if is_tensor(gram):
        if _eager(gram, rhs):
            return _impl.solve_spd(gram, rhs, ridge)
        _require_tensors("gram", rhs=rhs)
        return _torch_ops().solve_spd(gram, rhs, float(ridge))
    return _impl.solve_spd(gram, rhs, ridge)


def weighted_sum(vectors, weights, offsets, out=None):
    """Per segment ``out = sum_i weights[l, i] * vectors[i]``; weights are float64 ``[L, k]``."""
    if is_tensor(vectors):
        # numpy/list weights become a plain float64 tensor, which never sends a call down the
        # dispatched path: only given tensors need looking at
        if _eager(vectors, out, weights if is_tensor(weights) else None):
            return _impl.weighted_sum(vectors, _float64_tensor(weights, vectors, "weights"),
                                      offsets, out)
        _require_tensors("vectors", out=out)
        weights = _float64_tensor(weights, vectors, "weights")
        t = _torch_ops()
        off = _offsets_tensor(offsets, vectors.shape[-1])
        if out is None:
            return t.weighted_sum(vectors, weights, off)
        t.weighted_sum_out(vectors, weights, off, out)
        return out
    return _impl.weighted_sum(vectors, weights, offsets, out)


def axpby(x, y, alpha, beta, offsets=None, out=None):
    """``out = alpha * x + beta * y``; alpha and beta are numbers or per-segment ``[L]`` arrays."""
    if is_tensor(x):
        if _eager(x, y, out, alpha if is_tensor(alpha) else None,
                  beta if is_tensor(beta) else None):
            return _impl.axpby(x, y, alpha, beta, offsets, out)
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
    return _impl.axpby(x, y, alpha, beta, offsets, out)


def _as_segment_tensor(value, num_segments, like, name):
    torch = torch_module()
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
