"""ACGA's weighting rules: from the allreduced per-unit Gram quantities to coefficients.

Pure float64 numpy on the host, no communication: every rank feeds in the same allreduced
numbers and gets the same coefficients. ``accord.consensus`` documents the rules; this module
is their implementation, kept apart from how the data moves.
"""
from __future__ import annotations

import numpy as np

from . import _C
from ._kernels import CPU, addr

__all__ = ["diagonal_rule", "gram_rule", "SUM_TOL"]

# Uniform fallback when the clamped smoothed scores sum to at most this times the mean norm.
SUM_TOL = 1e-12


def diagonal_rule(part, scores, N: int, momentum: float, eps: float, keep_scale: bool):
    """The published rule with its defects fixed.

    ``part`` [U, 2, N]: per unit the squared norms |g_i|^2 and the row sums <g_i, sum_j g_j>;
    ``scores`` [U, N]: the smoothed sorted scores of the previous step, or None at the first.
    Returns (weights w [U, N], coefficients applied to the g_i, the new smoothed scores)."""
    sq, rows = part[:, 0], part[:, 1]
    norms = np.sqrt(np.maximum(sq, 0.0))
    denom = norms + eps
    safe = np.where(denom > 0, denom, 1.0)
    a = np.where(denom > 0, rows / N / safe, 0.0)  # <gbar, g_i> / (|g_i| + eps)
    p = np.argsort(a, axis=1, kind="stable")
    v = np.take_along_axis(a, p, axis=1)
    m = v if scores is None else momentum * scores + (1.0 - momentum) * v
    mine = np.empty_like(m)
    np.put_along_axis(mine, p, m, axis=1)  # worker p[k] gets m[k]: the inverse permutation
    c = np.maximum(mine, 0.0)
    total = c.sum(axis=1, keepdims=True)
    ok = total > SUM_TOL * norms.mean(axis=1, keepdims=True)
    w = np.where(ok, c / np.where(ok, total, 1.0), 1.0 / N)
    if keep_scale:  # w_i * (S / d_i): exactly w_i when all d_i are equal (N = 1)
        scale = denom.mean(axis=1, keepdims=True)
        coef = np.where(denom > 0, w * (scale / safe), 0.0)
    else:
        coef = np.where(denom > 0, w / safe, 0.0)
    return w, np.ascontiguousarray(coef), m


def gram_rule(K, N: int, ridge: float):
    """alpha [U, N] solving (K + lam I) alpha = K 1/N per unit, lam = ridge * trace(K) / N
    (pseudo-inverse when singular, through the solve_spd kernel)."""
    U = K.shape[0]
    lam = ridge * np.trace(K, axis1=1, axis2=2) / N
    A = np.ascontiguousarray(K + lam[:, None, None] * np.eye(N))
    rhs = np.ascontiguousarray(K.sum(axis=2) / N)
    alpha = np.empty((U, N), dtype=np.float64)
    _C.solve_spd(CPU, addr(A), addr(rhs), U, N, 0.0, addr(alpha), 0, 0)
    return alpha
