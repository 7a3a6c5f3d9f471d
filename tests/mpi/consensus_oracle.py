"""Independent float64 reference for accord.consensus (ACGA), from every worker's gradient.

Written from the rules in docs/consensus.md with plain numpy on whole vectors (no Gram
kernels, no slicing, no sorting helpers shared with the implementation): per unit, gbar is the
mean of the workers' vectors, dots and norms are numpy dots, the subspace momentum keeps the
sorted scores, and worker i gets back m[k] where k is i's position in the ascending (stable)
order of the scores (the inverse permutation, built by an explicit loop).
"""
from __future__ import annotations

import numpy as np

SUM_TOL = 1e-12


class NonFinite(Exception):
    """Some worker's gradient holds NaN/Inf in some unit."""


class ConsensusOracle:
    def __init__(self, momentum=0.99, granularity="model", weighting="diagonal", ridge=1e-3,
                 eps=1e-8, keep_scale=False):
        self.momentum = momentum
        self.granularity = granularity
        self.weighting = weighting
        self.ridge = ridge
        self.eps = eps
        self.keep_scale = keep_scale
        self.m = None  # list of per-unit lists of N smoothed sorted scores (diagonal)
        self.steps = 0

    def copy(self):
        o = ConsensusOracle(self.momentum, self.granularity, self.weighting, self.ridge,
                            self.eps, self.keep_scale)
        o.m = None if self.m is None else [list(x) for x in self.m]
        o.steps = self.steps
        return o

    def units(self, offsets):
        n = int(offsets[-1])
        if self.granularity == "model":
            return [(0, n)]
        return [(int(offsets[i]), int(offsets[i + 1])) for i in range(len(offsets) - 1)]

    def step(self, grads, offsets):
        """grads: list of N float64 vectors (every worker's flat gradient). Returns (G, weights
        [units, N]); raises NonFinite (state untouched) if any value is NaN/Inf."""
        grads = [np.asarray(g, dtype=np.float64) for g in grads]
        N, n = len(grads), grads[0].size
        if not all(np.isfinite(g).all() for g in grads):
            raise NonFinite()
        units = self.units(offsets)
        G = np.zeros(n)
        self.terms = np.zeros(n)  # sum_i |c_i g_i|: the rounding-error scale of G
        weights = np.zeros((len(units), N))
        new_m = []
        for u, (lo, hi) in enumerate(units):
            gs = [g[lo:hi] for g in grads]
            if self.weighting == "diagonal":
                out, w, m = self._diagonal(gs, None if self.m is None else self.m[u])
                new_m.append(m)
            else:
                out, w = self._gram(gs)
            G[lo:hi] = out
            self.terms[lo:hi] = self._terms
            weights[u] = w
        if self.weighting == "diagonal":
            self.m = new_m
        self.steps += 1
        return G, weights

    def _diagonal(self, gs, m_prev):
        N = len(gs)
        gbar = sum(gs) / N
        norms = [float(np.sqrt(np.dot(g, g))) for g in gs]
        scores = []
        for g, s in zip(gs, norms):
            d = s + self.eps
            scores.append(float(np.dot(gbar, g)) / d if d > 0 else 0.0)
        order = sorted(range(N), key=lambda i: (scores[i], i))
        v = [scores[i] for i in order]
        if m_prev is None:
            m = v
        else:
            m = [self.momentum * a + (1 - self.momentum) * b for a, b in zip(m_prev, v)]
        mine = [0.0] * N
        for k, i in enumerate(order):  # the worker with the k-th smallest score gets m[k]
            mine[i] = m[k]
        clamped = [max(x, 0.0) for x in mine]
        total = sum(clamped)
        if total > SUM_TOL * (sum(norms) / N):
            w = [c / total for c in clamped]
        else:
            w = [1.0 / N] * N
        scale = sum(s + self.eps for s in norms) / N
        out = np.zeros_like(gs[0])
        self._terms = np.zeros_like(gs[0])
        for wi, g, s in zip(w, gs, norms):
            d = s + self.eps
            if d > 0:
                c = wi * (scale if self.keep_scale else 1.0) / d
                out = out + c * g
                self._terms = self._terms + abs(c) * np.abs(g)
        return out, w, m

    def _gram(self, gs):
        N = len(gs)
        K = np.array([[float(np.dot(a, b)) for b in gs] for a in gs])
        lam = self.ridge * np.trace(K) / N
        rhs = K @ (np.ones(N) / N)
        alpha = np.linalg.pinv(K + lam * np.eye(N), rcond=1e-13, hermitian=True) @ rhs
        out = np.zeros_like(gs[0])
        self._terms = np.zeros_like(gs[0])
        for a, g in zip(alpha, gs):
            out = out + a * g
            self._terms = self._terms + abs(a) * np.abs(g)
        return out, alpha
