"""float64 numpy reference implementations ("oracles") of the accord.ops kernels.

Every oracle takes numpy arrays (any float dtype: they are converted to float64 exactly, so an
fp16 input is judged on the values it actually stores) and computes in float64 with numpy. They
follow the kernels' documented contracts (accord.ops docstrings, csrc/include/accord/*.h), not
their code paths, and are meant to be reused by the collective / optimizer tests:

    segment_dots(a, b, offsets)            -> [L, 3] (a.b, a.a, b.b)
    scaled_segment_dots(a, b, offsets)     -> [L, 5] the same, scaled by powers of two (finite)
    adasum_coeffs(dots, wa, wb)            -> [L, 2] pair-rule coefficients (with the zero guard)
    adasum_pair(a, b, wa=.5, wb=.5)        -> the rule on one segment (a, b 1-D)
    adasum_combine(a, b, offsets, ...)     -> the rule per segment
    gram(vectors, offsets, rhs=None)       -> [L, k, k] (and [L, k])
    solve_spd(gram, rhs, ridge)            -> [L, k], pinv(G + ridge I) @ r
    weighted_sum(vectors, weights, offsets)
    axpby(x, y, alpha, beta, offsets=None)
    pull(x, target, strength, offsets=None)

plus error bounds (``*_bound``) that the tests turn into element-wise tolerances.
"""
from __future__ import annotations

import numpy as np

# A squared norm below this counts as zero (pair_math.h kZeroNormSq = DBL_MIN).
ZERO_NORM_SQ = np.finfo(np.float64).tiny
EPS64 = np.finfo(np.float64).eps
MAX64 = float(np.finfo(np.float64).max)
ZERO_SCALE = -4096  # scaled_dots.h kZeroScale: the exponent of an all-zero vector


def f64(x) -> np.ndarray:
    """Exact float64 copy of a numpy array or torch tensor (bfloat16 included)."""
    if type(x).__module__.startswith("torch"):
        import torch
        x = x.detach().cpu()
        if x.dtype == torch.bfloat16:  # numpy has no bfloat16; float32 holds it exactly
            x = x.float()
        x = x.numpy()
    with np.errstate(invalid="ignore"):  # NaN payloads
        return np.array(x, dtype=np.float64)  # always a copy: callers keep it across in-place ops


def segments(offsets):
    off = np.asarray(offsets, dtype=np.int64)
    return [(int(off[i]), int(off[i + 1])) for i in range(off.shape[0] - 1)]


def _expand(per_segment, offsets, n):
    """[L, ...] per-segment values -> [n, ...] per element."""
    lengths = np.diff(np.asarray(offsets, dtype=np.int64))
    return np.repeat(np.asarray(per_segment), lengths, axis=0)


# ------------------------------------------------------------------------------------------
# Dots and the Adasum pair rule


def segment_dots(a, b, offsets) -> np.ndarray:
    a, b = f64(a).ravel(), f64(b).ravel()
    out = np.zeros((len(offsets) - 1, 3))
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        for l, (s, e) in enumerate(segments(offsets)):
            x, y = a[s:e], b[s:e]
            out[l] = (np.dot(x, y), np.dot(x, x), np.dot(y, y))
    return out


def dots_bound(a, b, offsets) -> np.ndarray:
    """|kernel - oracle| bound of segment_dots: both sum the same float64 products (exact for
    16/32-bit inputs) in different orders, so the difference is at most ~2 n eps64 sum|x y|
    (classic recursive-summation bound, for both sides), plus 2 n 2^-1074 absolute: float64
    products in the subnormal range are rounded to a multiple of 2^-1074 by numpy, while the
    kernel sums such tiles scaled and rounds the segment's sum once."""
    a, b = f64(a).ravel(), f64(b).ravel()
    out = np.zeros((len(offsets) - 1, 3))
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        for l, (s, e) in enumerate(segments(offsets)):
            x, y = np.abs(a[s:e]), np.abs(b[s:e])
            out[l] = (np.dot(x, y), np.dot(x, x), np.dot(y, y))
            out[l] *= 2 * max(e - s, 1) * EPS64
            out[l] += 2 * (e - s) * 2.0**-1074
    return out


def _scale_exponent(x) -> int:
    """Binary exponent e with max|x| 2^-e in [0.5, 1); ZERO_SCALE for a zero vector, 0 when
    the vector holds NaN/Inf (no scaling: the dots come out NaN/Inf)."""
    m = float(np.max(np.abs(x), initial=0.0))
    if m == 0.0:
        return ZERO_SCALE
    if not np.isfinite(m):
        return 0
    return int(np.frexp(m)[1])


def scaled_segment_dots(a, b, offsets) -> np.ndarray:
    """[L, 5] (ab, aa, bb, sa, sb) with a.b = ab 2^(sa+sb), a.a = aa 2^(2sa), b.b = bb 2^(2sb):
    each segment's a and b scaled by exact powers of two so that their largest |element| lies in
    [0.5, 1). Finite for every finite input (the kernels' contract, scaled_dots.h)."""
    a, b = f64(a).ravel(), f64(b).ravel()
    out = np.zeros((len(offsets) - 1, 5))
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        for l, (s, e) in enumerate(segments(offsets)):
            sa, sb = _scale_exponent(a[s:e]), _scale_exponent(b[s:e])
            x, y = np.ldexp(a[s:e], -sa), np.ldexp(b[s:e], -sb)
            out[l] = (np.dot(x, y), np.dot(x, x), np.dot(y, y), sa, sb)
    return out


def unscaled(scaled) -> np.ndarray:
    """[L, 5] scaled dots -> [L, 3] float64 values (Inf where they overflow)."""
    d = np.asarray(scaled, dtype=np.float64).reshape(-1, 5)
    sa, sb = d[:, 3].astype(np.int64), d[:, 4].astype(np.int64)
    with np.errstate(over="ignore"):
        return np.stack([np.ldexp(d[:, 0], sa + sb), np.ldexp(d[:, 1], 2 * sa),
                         np.ldexp(d[:, 2], 2 * sb)], axis=1)


def _pair_coeff(ab, aa, sa, sb, w):
    """(c, e): coefficient 1 - w (ab / aa) 2^(sb - sa) = c 2^e, e = 0 unless the coefficient
    itself is beyond float64's range (a tiny vector next to a partner ~2^1024 larger)."""
    if aa < ZERO_NORM_SQ:
        return 1.0, 0
    r = ab / aa
    c = 1.0 - w * np.ldexp(r, sb - sa)
    if not abs(c) <= MAX64 and abs(r) <= MAX64:
        return np.ldexp(1.0, sa - sb) - w * r, sb - sa
    return c, 0


def adasum_coeffs_scaled(scaled, wa=0.5, wb=0.5) -> np.ndarray:
    """[L, 4] (ca, ea, cb, eb) from [L, 5] scaled dots: the rule is ca (a 2^ea) + cb (b 2^eb)."""
    d = np.asarray(scaled, dtype=np.float64).reshape(-1, 5)
    out = np.zeros((d.shape[0], 4))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for l, (ab, aa, bb, sa, sb) in enumerate(d):
            sa, sb = int(sa), int(sb)
            out[l, 0:2] = _pair_coeff(ab, aa, sa, sb, wa)
            out[l, 2:4] = _pair_coeff(ab, bb, sb, sa, wb)
    return out


def _given_as_scaled(dots) -> np.ndarray:
    d = np.asarray(dots, dtype=np.float64).reshape(-1, 3)
    return np.concatenate([d, np.zeros((d.shape[0], 2))], axis=1)


def adasum_coeffs(dots, wa=0.5, wb=0.5) -> np.ndarray:
    """[L, 2] coefficients (ca, cb): 1 - wa a.b/|a|^2, 1 - wb a.b/|b|^2; a squared norm below
    DBL_MIN gives coefficient 1 (zero input -> plain sum); a NaN norm propagates NaN."""
    dots = np.asarray(dots, dtype=np.float64).reshape(-1, 3)
    ab, aa, bb = dots[:, 0], dots[:, 1], dots[:, 2]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        # written like the kernel's `x < DBL_MIN ? 1 : ...` so NaN takes the formula branch
        ca = np.where(aa < ZERO_NORM_SQ, 1.0, 1.0 - wa * (ab / aa))
        cb = np.where(bb < ZERO_NORM_SQ, 1.0, 1.0 - wb * (ab / bb))
    return np.stack([ca, cb], axis=1)


def adasum_pair(a, b, wa=0.5, wb=0.5, dots=None) -> np.ndarray:
    """The pair rule on one segment (1-D a, b); ``dots`` = (a.b, a.a, b.b) if precomputed."""
    a, b = f64(a).ravel(), f64(b).ravel()
    return _combine(a, b, [0, a.shape[0]], dots, wa, wb)


def _combine_coeffs(a, b, offsets, dots, wa, wb) -> np.ndarray:
    """[L, 4] (ca, ea, cb, eb): from scaled dots computed here (dots=None, as the kernel does:
    finite for finite inputs, only a zero vector meets the zero-norm guard) or from the given
    plain float64 dots (no scaling, the guard is |x|^2 < DBL_MIN)."""
    scaled = scaled_segment_dots(a, b, offsets) if dots is None else _given_as_scaled(dots)
    return adasum_coeffs_scaled(scaled, wa, wb)


def adasum_combine(a, b, offsets, dots=None, weights=(1, 1)) -> np.ndarray:
    """The pair rule per segment; weights (n1, n2) -> wa = n1/(n1+n2), wb = n2/(n1+n2)."""
    a, b = f64(a).ravel(), f64(b).ravel()
    wa, wb = weights[0] / (weights[0] + weights[1]), weights[1] / (weights[0] + weights[1])
    return _combine(a, b, offsets, dots, wa, wb)


def _combine(a, b, offsets, dots, wa, wb) -> np.ndarray:
    c = _expand(_combine_coeffs(a, b, offsets, dots, wa, wb), offsets, a.shape[0]).reshape(-1, 4)
    with np.errstate(invalid="ignore", over="ignore"):
        return (c[:, 0] * np.ldexp(a, c[:, 1].astype(np.int64))
                + c[:, 2] * np.ldexp(b, c[:, 3].astype(np.int64)))


def adasum_combine_bound(a, b, offsets, unit, dots=None, weights=(1, 1), dots_error=True):
    """Element-wise bound on |kernel - oracle| for adasum_combine.

    Per element x = a_i, y = b_i, with q_a = a.b / |a|^2, q_b = a.b / |b|^2 (first order):

    - ``unit`` (|ca x| + |cb y|): the kernel's own combine arithmetic and store (``unit`` is
      the sum of its rounding units, see the tolerance table below);
    - 2 eps64 ((wa |q_a| + |ca|) |x| + (wb |q_b| + |cb|) |y|): each side computes a coefficient
      1 - w q from the dots with three float64 roundings (q, w q, the difference), each up to
      half an eps64 of its own magnitude. Where 1 - w q cancels, those roundings are large next
      to |c| itself, and nothing makes two implementations round them alike (a contracted
      FMA rounds once): the bound must not rely on the kernel reproducing the oracle's bits;
    - with ``dots_error``: the kernel's dots differ from the oracle's by up to
      :func:`dots_bound` (plus 2^-150 of the norms for tiles summed with and without scaling),
      which moves the coefficients by d(ca) <= wa (|d ab| / aa + |ab| |d aa| / aa^2).

    Computed on the segments scaled by powers of two (scaled_segment_dots; dots=None) or on the
    given plain dots, so it is finite wherever the result is.
    """
    a, b = f64(a).ravel(), f64(b).ravel()
    wa, wb = weights[0] / (weights[0] + weights[1]), weights[1] / (weights[0] + weights[1])
    scaled = scaled_segment_dots(a, b, offsets) if dots is None else _given_as_scaled(dots)
    c = adasum_coeffs_scaled(scaled, wa, wb)
    ab, aa, bb = scaled[:, 0], scaled[:, 1], scaled[:, 2]
    n = a.shape[0]
    sa = _expand(scaled[:, 3], offsets, n).astype(np.int64)
    sb = _expand(scaled[:, 4], offsets, n).astype(np.int64)
    ce = _expand(c, offsets, n).reshape(-1, 4)
    ea, eb = ce[:, 1].astype(np.int64), ce[:, 3].astype(np.int64)
    ax, by = np.abs(a), np.abs(b)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore", under="ignore"):
        # |coefficient * element| and w |q| * element, without forming huge coefficients
        term_a, term_b = np.abs(ce[:, 0]) * np.ldexp(ax, ea), np.abs(ce[:, 2]) * np.ldexp(by, eb)
        xa, yb = np.ldexp(ax, sb - sa), np.ldexp(by, sa - sb)  # |x| 2^(sb-sa), |y| 2^(sa-sb)
        qa = np.where(aa < ZERO_NORM_SQ, 0.0, wa * np.abs(ab / aa))
        qb = np.where(bb < ZERO_NORM_SQ, 0.0, wb * np.abs(ab / bb))
        bound = unit * (term_a + term_b)
        bound = bound + 2 * EPS64 * (_expand(qa, offsets, n) * xa + term_a
                                     + _expand(qb, offsets, n) * yb + term_b)
        if dots_error:
            err = dots_bound(np.ldexp(a, -sa), np.ldexp(b, -sb), offsets)
            err += 2.0**-150 * np.stack([np.sqrt(aa * bb), aa, bb], axis=1)
            dca = np.where(aa < ZERO_NORM_SQ, 0.0,
                           wa * (err[:, 0] / aa + np.abs(ab) * err[:, 1] / aa**2))
            dcb = np.where(bb < ZERO_NORM_SQ, 0.0,
                           wb * (err[:, 0] / bb + np.abs(ab) * err[:, 2] / bb**2))
            bound = bound + 2 * (_expand(dca, offsets, n) * xa + _expand(dcb, offsets, n) * yb)
    return bound


# ------------------------------------------------------------------------------------------
# Gram matrices and the pseudo-inverse solve


def gram(vectors, offsets, rhs=None):
    """[L, k, k] V_l V_l^T per segment (and [L, k] V_l r_l when rhs is given)."""
    v = f64(vectors)
    k = v.shape[0]
    L = len(offsets) - 1
    g = np.zeros((L, k, k))
    r = np.zeros((L, k)) if rhs is not None else None
    rr = f64(rhs).ravel() if rhs is not None else None
    for l, (s, e) in enumerate(segments(offsets)):
        g[l] = v[:, s:e] @ v[:, s:e].T
        if rr is not None:
            r[l] = v[:, s:e] @ rr[s:e]
    return g if rhs is None else (g, r)


def gram_bound(vectors, offsets, rhs=None):
    """Summation-order bound, as for dots: 2 n eps64 (|V| |V|^T)."""
    v = np.abs(f64(vectors))
    g = gram(v, offsets, None if rhs is None else np.abs(f64(rhs)))
    lengths = np.maximum(np.diff(np.asarray(offsets, dtype=np.int64)), 1).astype(np.float64)
    if rhs is None:
        return 2 * EPS64 * lengths[:, None, None] * g
    return (2 * EPS64 * lengths[:, None, None] * g[0], 2 * EPS64 * lengths[:, None] * g[1])


def solve_spd(gram_, rhs, ridge=0.0, rcond=None) -> np.ndarray:
    """x[l] = pinv(G[l] + ridge I) r[l], the minimum-norm least-squares solution.

    The kernel drops eigenvalues |lam| <= k eps max|lam|; ``rcond`` defaults to that cutoff.
    """
    g = f64(gram_)
    r = f64(rhs)
    L, k = r.shape
    rc = k * EPS64 if rcond is None else rcond
    x = np.zeros((L, k))
    for l in range(L):
        a = g[l] + ridge * np.eye(k)
        if not np.any(a):
            continue  # pinv(0) = 0 (numpy's SVD of a zero matrix also gives 0; skip the call)
        x[l] = np.linalg.pinv(a, rcond=rc, hermitian=True) @ r[l]
    return x


# ------------------------------------------------------------------------------------------
# Element-wise ops


def weighted_sum(vectors, weights, offsets) -> np.ndarray:
    v = f64(vectors)
    w = _expand(f64(weights), offsets, v.shape[1])  # [n, k]
    with np.errstate(invalid="ignore", over="ignore"):
        return np.einsum("kn,nk->n", v, w)


def weighted_sum_bound(vectors, weights, offsets, unit) -> np.ndarray:
    v = np.abs(f64(vectors))
    w = np.abs(_expand(f64(weights), offsets, v.shape[1]))
    return unit * np.einsum("kn,nk->n", v, w)


def axpby(x, y, alpha, beta, offsets=None) -> np.ndarray:
    x, y = f64(x).ravel(), f64(y).ravel()
    if offsets is None:
        offsets = [0, x.shape[0]]
    L = len(offsets) - 1
    al = _expand(np.broadcast_to(f64(alpha), (L,)), offsets, x.shape[0])
    be = _expand(np.broadcast_to(f64(beta), (L,)), offsets, x.shape[0])
    with np.errstate(invalid="ignore", over="ignore"):
        return al * x + be * y


def pull(x, target, strength, offsets=None) -> np.ndarray:
    """pull_: x - strength (x - target) = (1 - strength) x + strength target."""
    s = f64(strength)
    return axpby(x, target, 1.0 - s, s, offsets)


def axpby_bound(x, y, alpha, beta, unit, offsets=None) -> np.ndarray:
    x, y = np.abs(f64(x).ravel()), np.abs(f64(y).ravel())
    return unit * axpby(x, y, np.abs(f64(alpha)), np.abs(f64(beta)), offsets)


# ------------------------------------------------------------------------------------------
# The test matrix (dtype x device x framework) and per-dtype tolerances.
#
# Tolerances are element-wise bounds built from rounding units, not blanket rtol values:
#
#   U_STORE[dtype]   unit roundoff of the stored type, 2^-p for a p-bit significand:
#                    float64 2^-53, float32 2^-24, float16 2^-11 (11-bit significand),
#                    bfloat16 2^-8 (8-bit significand). Every output is rounded once to it.
#   U_OPMATH[dtype]  unit roundoff of the arithmetic type (dtype.h Elem<T>::opmath): float64 for
#                    float64, float32 for the other three (16-bit inputs are widened exactly).
#
# An element-wise op out = sum_j c_j x_j (adasum_combine: 2 terms, axpby: 2, weighted_sum: k)
# computes each c_j (given in float64) rounded to opmath (1 unit), k products (1 unit each),
# k-1 additions (1 unit each, relative to the running sum of |c_j x_j|), then stores (U_STORE
# of |out|). Standard error analysis gives |out - exact| <= ((k + 2) U_OPMATH + U_STORE)
# sum_j |c_j x_j| to first order; we allow twice that (second-order terms, and slack so the
# bound never flakes), plus TINY[dtype] absolute for results in the subnormal range (the
# absolute rounding error there is at most half the smallest subnormal).
#
# Reductions (dots, Gram entries) accumulate float64 products of exactly widened inputs, so
# they are compared with an oracle computed on the SAME stored inputs; the only difference is
# the summation order, bounded by 2 n eps64 sum|x y| (dots_bound / gram_bound) whatever the
# input dtype (~1e-12 relative for the sizes used).

U_STORE = {"float64": 2.0**-53, "float32": 2.0**-24, "float16": 2.0**-11, "bfloat16": 2.0**-8}
U_OPMATH = {"float64": 2.0**-53, "float32": 2.0**-24, "float16": 2.0**-24, "bfloat16": 2.0**-24}
TINY = {"float64": 2.0**-1074, "float32": 2.0**-149, "float16": 2.0**-24, "bfloat16": 2.0**-133}
MAX = {"float64": float(np.finfo(np.float64).max), "float32": float(np.finfo(np.float32).max),
       "float16": 65504.0, "bfloat16": float.fromhex("0x1.fep127")}


def elementwise_unit(dtype: str, terms: int) -> float:
    """Relative bound (see above) for an element-wise op summing ``terms`` products."""
    return 2.0 * ((terms + 2) * U_OPMATH[dtype] + U_STORE[dtype])


class Case:
    """One (framework, dtype, device) cell of the test matrix; builds inputs in that cell."""

    def __init__(self, framework: str, dtype: str, device: str = "cpu"):
        self.framework, self.dtype, self.device = framework, dtype, device

    @property
    def id(self) -> str:
        return f"{self.framework}-{self.dtype}-{self.device}"

    def __repr__(self) -> str:
        return f"Case({self.id})"

    @property
    def torch(self) -> bool:
        return self.framework == "torch"

    def array(self, values):
        """values (float64 numpy or anything array-like) rounded to the case's dtype."""
        values = np.asarray(values, dtype=np.float64)
        if not self.torch:
            with np.errstate(over="ignore"):  # out-of-range values become inf, as in torch
                return np.ascontiguousarray(values.astype(self.dtype))
        import torch
        t = torch.from_numpy(values.copy()).to(getattr(torch, self.dtype))
        return t.to(self.device).contiguous()

    def offsets(self, offsets):
        """Offsets in the case's framework: numpy int64, or a CPU int64 tensor."""
        off = np.asarray(offsets, dtype=np.int64)
        if not self.torch:
            return off
        import torch
        return torch.from_numpy(off.copy())

    def float64(self, values):
        """Coefficients (dots, weights, alpha...) in the case's framework and device."""
        values = np.asarray(values, dtype=np.float64)
        if not self.torch:
            return values.copy()
        import torch
        return torch.from_numpy(values.copy()).to(self.device)

    def zeros(self, shape):
        return self.array(np.zeros(shape))

    def bits(self, x) -> np.ndarray:
        """The stored bytes of x as an unsigned-integer numpy array (for bitwise checks)."""
        if type(x).__module__.startswith("torch"):
            import torch
            x = x.detach().cpu()
            width = {8: torch.int64, 4: torch.int32, 2: torch.int16}[x.element_size()]
            return x.contiguous().view(width).numpy().view(f"u{x.element_size()}")
        x = np.ascontiguousarray(x)
        return x.view(f"u{x.itemsize}")

    @property
    def unit_store(self) -> float:
        return U_STORE[self.dtype]

    @property
    def tiny(self) -> float:
        return TINY[self.dtype]

    @property
    def max(self) -> float:
        return MAX[self.dtype]

    def unit(self, terms: int) -> float:
        return elementwise_unit(self.dtype, terms)


DTYPES_NUMPY = ("float32", "float64", "float16")
DTYPES_TORCH = ("float32", "float64", "float16", "bfloat16")


def all_cases(devices=("cpu", "cuda")):
    """numpy x {float32, float64, float16} on cpu + torch x {.., bfloat16} x devices."""
    cases = [Case("numpy", d) for d in DTYPES_NUMPY]
    cases += [Case("torch", d, dev) for dev in devices for d in DTYPES_TORCH]
    return cases


def case_params(cases=None):
    """pytest.param per matrix cell (default: all_cases()), cuda cells marked ``cuda``, which
    tests/conftest.py skips unless a GPU and the CUDA build are there."""
    import pytest
    cases = all_cases() if cases is None else cases
    return [pytest.param(c, id=c.id, marks=[pytest.mark.cuda] if c.device == "cuda" else [])
            for c in cases]


def assert_matches(out, ref, bound, dtype: str, what: str = "output"):
    """|out - ref| <= bound + TINY element-wise, with NaN where (and only where) ref is NaN.

    Where the exact result is beyond the dtype's range (or within ``bound`` of rounding past
    it) the kernel must give the correctly signed infinity (or, at the edge, a finite value).
    """
    out, ref = f64(out).ravel(), np.asarray(ref, dtype=np.float64).ravel()
    bound = np.broadcast_to(np.asarray(bound, dtype=np.float64), ref.shape)
    assert out.shape == ref.shape, f"{what}: shape {out.shape} != {ref.shape}"
    nan_out, nan_ref = np.isnan(out), np.isnan(ref)
    assert np.array_equal(nan_out, nan_ref), (
        f"{what}: NaN mismatch at {np.flatnonzero(nan_out != nan_ref)[:10]}")
    ok = ~nan_ref
    # correctly rounded overflow threshold: MAX + half an ulp of MAX
    limit = MAX[dtype] * (1 + U_STORE[dtype])
    with np.errstate(invalid="ignore", over="ignore"):
        inf_ref = np.isinf(ref)
        over = ok & ~inf_ref & (np.abs(ref) - bound > limit)
        edge = ok & ~inf_ref & ~over & (np.abs(ref) + bound >= limit)
        fin = ok & ~inf_ref & ~over & ~edge
        assert np.array_equal(out[inf_ref], ref[inf_ref]), f"{what}: infinities differ"
        assert np.all(out[over] == np.copysign(np.inf, ref[over])), f"{what}: expected overflow"
        e_ok = np.isinf(out[edge]) & (np.sign(out[edge]) == np.sign(ref[edge]))
        e_ok |= np.abs(out[edge] - ref[edge]) <= bound[edge] + TINY[dtype]
        assert np.all(e_ok), f"{what}: wrong value at the overflow edge"
        err = np.abs(out[fin] - ref[fin])
        tol = bound[fin] + TINY[dtype]
        bad = ~(err <= tol)
    if np.any(bad):
        idx = np.flatnonzero(fin)[bad][:5]
        raise AssertionError(
            f"{what} ({dtype}): {int(bad.sum())} of {int(fin.sum())} elements out of bound; "
            f"first at {idx.tolist()}: got {out[idx].tolist()}, want {ref[idx].tolist()}, "
            f"bound {bound[idx].tolist()}")
