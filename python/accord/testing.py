"""Reference implementations for tests and benchmarks: plain float64 numpy, independent of
accord's kernels and of how accord.adasum schedules its messages.

    adasum_pair(a, b, offsets, wa=0.5, wb=0.5)  the Adasum pair rule per segment
    adasum_tree(inputs, offsets)                 the Adasum result over all ranks' inputs

Inputs are converted to float64 (exactly, for any float dtype), so a float16 input is judged on
the values it actually stores. ``offsets`` are segment boundaries ``[0, ..., n]``: each segment
(one layer of a fused buffer) gets its own coefficients, as in ``accord.allreduce_``.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["adasum_pair", "adasum_tree"]

# A squared norm below this counts as zero: that side's coefficient is 1 (a zero input adds
# nothing, so the pair reduces to a plain sum), as in the kernels.
_ZERO_NORM_SQ = np.finfo(np.float64).tiny


def adasum_pair(a, b, offsets, wa: float = 0.5, wb: float = 0.5) -> np.ndarray:
    """Per segment: ``(1 - wa a.b/|a|^2) a + (1 - wb a.b/|b|^2) b`` in float64.

    ``wa``/``wb`` weight the two sides by how many ranks' inputs each one already combines
    (0.5/0.5 for two single inputs).
    """
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"adasum_pair: a has {a.size} elements and b {b.size}; they must match")
    offsets = np.asarray(offsets, dtype=np.int64)
    if offsets.ndim != 1 or offsets.size < 1 or offsets[0] != 0 or offsets[-1] != a.size:
        raise ValueError(f"adasum_pair: offsets must run from 0 to {a.size} (the input length); "
                         f"got {offsets.tolist()}")
    out = np.empty(a.shape[0])
    for s, e in zip(offsets[:-1], offsets[1:]):
        x, y = a[s:e], b[s:e]
        dot, xx, yy = x @ y, x @ x, y @ y
        ca = 1.0 if xx < _ZERO_NORM_SQ else 1.0 - wa * dot / xx
        cb = 1.0 if yy < _ZERO_NORM_SQ else 1.0 - wb * dot / yy
        out[s:e] = ca * x + cb * y
    return out


def adasum_tree(inputs: Sequence, offsets) -> np.ndarray:
    """The Adasum reduction of ``inputs`` (one array per rank, in rank order).

    The tree accord computes: with ``p`` the largest power of two <= ``len(inputs)`` and
    ``r = len(inputs) - p``, ranks ``2i`` and ``2i+1`` (``i < r``) are first folded pairwise;
    then adjacent results are combined level by level, each combine weighted by the number of
    inputs on its two sides. Parallel inputs give their mean, orthogonal ones their sum.
    """
    inputs = [np.asarray(x, dtype=np.float64).ravel() for x in inputs]
    n = len(inputs)
    if n == 0:
        raise ValueError("adasum_tree: inputs is empty; pass one array per rank")
    if n == 1:
        return inputs[0].copy()
    p = 1 << (n.bit_length() - 1)
    r = n - p
    vals = [adasum_pair(inputs[2 * i], inputs[2 * i + 1], offsets) for i in range(r)]
    vals += inputs[2 * r:]
    counts = [2] * r + [1] * (n - 2 * r)
    while len(vals) > 1:
        nxt, nc = [], []
        for j in range(0, len(vals), 2):
            n1, n2 = counts[j], counts[j + 1]
            nxt.append(adasum_pair(vals[j], vals[j + 1], offsets, n1 / (n1 + n2),
                                   n2 / (n1 + n2)))
            nc.append(n1 + n2)
        vals, counts = nxt, nc
    return vals[0]
