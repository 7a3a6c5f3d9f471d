"""float64 numpy oracle of the Adasum tree accord computes (see accord.adasum's module doc)."""
from __future__ import annotations

import numpy as np


def pair(a, b, offsets, wa=0.5, wb=0.5):
    """The weighted pair rule per segment, in float64, with the zero-norm guard."""
    out = np.empty(len(a))
    for s, e in zip(offsets[:-1], offsets[1:]):
        x, y = a[s:e], b[s:e]
        dot, xx, yy = x @ y, x @ x, y @ y
        ca = 1.0 if xx < np.finfo(float).tiny else 1.0 - wa * dot / xx
        cb = 1.0 if yy < np.finfo(float).tiny else 1.0 - wb * dot / yy
        out[s:e] = ca * x + cb * y
    return out


def adasum_tree(inputs, offsets):
    """Fold pairs (2i, 2i+1) for the ranks beyond the largest power of two, then the
    adjacent-pair tree, each combine weighted by the input counts of its two sides."""
    inputs = [np.asarray(x, dtype=np.float64) for x in inputs]
    n = len(inputs)
    p = 1 << (n.bit_length() - 1)
    r = n - p
    vals = [pair(inputs[2 * i], inputs[2 * i + 1], offsets) for i in range(r)] + inputs[2 * r:]
    counts = [2] * r + [1] * (n - 2 * r)
    while len(vals) > 1:
        nxt, nc = [], []
        for j in range(0, len(vals), 2):
            n1, n2 = counts[j], counts[j + 1]
            nxt.append(pair(vals[j], vals[j + 1], offsets, n1 / (n1 + n2), n2 / (n1 + n2)))
            nc.append(n1 + n2)
        vals, counts = nxt, nc
    return vals[0]
