"""Hypothesis property tests of accord.ops: random segment layouts (empty and one-element
segments, odd lengths, hundreds of segments), extreme magnitudes (1e30 / 1e-300 in float64,
1e30 / 1e-30 in float32 and bfloat16, 1e4 / 1e-6 in float16), zero vectors, and the algebraic
properties of the Adasum pair rule. Example counts are kept small (the matrix multiplies them)."""
from __future__ import annotations

import os
import platform

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import oracle
from accord import ops
from oracle import Case, assert_matches, case_params, f64

# ACCORD_HYPOTHESIS_SCALE=10 multiplies every example count (a deeper, slower run)
_SCALE = float(os.environ.get("ACCORD_HYPOTHESIS_SCALE", "1"))


def _n(count):
    return max(1, int(count * _SCALE))


SETTINGS = settings(max_examples=_n(40), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
CASES = case_params()

# magnitudes per dtype: ordinary, large, tiny (float64 1e-300: the squares underflow, the kernel
# scales those dots by powers of two and the rule holds as at 1.0; float16 1e-6 is subnormal)
SCALES = {"float64": [1.0, 1e30, 1e-300], "float32": [1.0, 1e30, 1e-30],
          "float16": [1.0, 1e4, 1e-6], "bfloat16": [1.0, 1e30, 1e-30]}
KINDS = ["random", "random", "zero_a", "zero_b", "zeros", "parallel", "identical",
         "orthogonal", "one_hot"]
X86 = platform.machine().lower() in ("x86_64", "amd64")


def offsets_of(lengths):
    return np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]).astype(np.int64)


def _values(rng, n, scale):
    """Uniform in (-scale, scale) over ~10 binades: never past the dtype's range."""
    return rng.uniform(-1, 1, n) * scale * np.exp2(rng.integers(-10, 1, n))


def _segment_pair(rng, kind, length, scale):
    a, b = _values(rng, length, scale), _values(rng, length, scale)
    if kind == "zero_a":
        a[:] = 0
    elif kind == "zero_b":
        b[:] = 0
    elif kind == "zeros":
        a[:] = b[:] = 0
    elif kind == "parallel":
        b = a * rng.choice([0.5, -0.5, 1.0, -1.0, 0.25, -2.0])  # exact (powers of two)
    elif kind == "identical":
        b = a.copy()
    elif kind == "orthogonal":  # disjoint supports: a.b is exactly 0
        a[1::2] = 0
        b[0::2] = 0
    elif kind == "one_hot" and length:
        a[:] = 0
        a[rng.integers(length)] = scale
    return a, b


@st.composite
def pair_data(draw, case: Case, min_segments=0, max_segments=10, max_len=40, kinds=None):
    """(a, b, offsets, kinds): a and b in the case's dtype, one kind per segment."""
    lengths = draw(st.lists(st.integers(0, max_len), min_size=min_segments,
                            max_size=max_segments))
    kinds = draw(st.lists(st.sampled_from(kinds or KINDS), min_size=len(lengths),
                          max_size=len(lengths)))
    scale = draw(st.sampled_from(SCALES[case.dtype]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    parts = [_segment_pair(rng, k, n, scale) for k, n in zip(kinds, lengths)]
    a = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0)
    b = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0)
    return case.array(a), case.array(b), offsets_of(lengths), kinds


weights_st = st.tuples(st.integers(1, 7), st.integers(1, 7))


def bits_equal(case, x, y):
    return np.array_equal(case.bits(x), case.bits(y))


# ------------------------------------------------------------------------------------------
# Against the oracle


@pytest.mark.parametrize("case", CASES)
@SETTINGS
@given(data=st.data(), weights=weights_st)
def test_dots_and_combine_match_oracle(case, data, weights):
    a, b, off, _ = data.draw(pair_data(case))
    dots = ops.segment_dots(a, b, case.offsets(off))
    assert np.all(np.abs(f64(dots) - oracle.segment_dots(a, b, off))
                  <= oracle.dots_bound(a, b, off))
    out = ops.adasum_combine(a, b, case.offsets(off), weights=weights)
    assert_matches(out, oracle.adasum_combine(a, b, off, weights=weights),
                   oracle.adasum_combine_bound(a, b, off, case.unit(2), weights=weights),
                   case.dtype)


@pytest.mark.parametrize("case", CASES)
@settings(SETTINGS, max_examples=_n(15))
@given(data=st.data())
def test_many_segments(case, data):
    a, b, off, _ = data.draw(pair_data(case, min_segments=100, max_segments=400, max_len=6))
    dots = ops.segment_dots(a, b, case.offsets(off))
    assert np.all(np.abs(f64(dots) - oracle.segment_dots(a, b, off))
                  <= oracle.dots_bound(a, b, off))
    out = ops.adasum_combine(a, b, case.offsets(off))
    assert_matches(out, oracle.adasum_combine(a, b, off),
                   oracle.adasum_combine_bound(a, b, off, case.unit(2)), case.dtype)
    L = len(off) - 1
    al, be = np.linspace(-2, 2, L), np.linspace(3, -1, L)
    out = ops.axpby(a, b, case.float64(al), case.float64(be), case.offsets(off))
    assert_matches(out, oracle.axpby(a, b, al, be, off),
                   oracle.axpby_bound(a, b, al, be, case.unit(2), off), case.dtype)


@pytest.mark.parametrize("case", CASES)
@SETTINGS
@given(data=st.data(), k=st.integers(1, 4))
def test_weighted_sum_and_axpby_match_oracle(case, data, k):
    a, b, off, _ = data.draw(pair_data(case))
    n, L = int(off[-1]), len(off) - 1
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    scale = np.abs(f64(a)).max(initial=1.0)
    v = case.array(np.stack([f64(a), f64(b), *(_values(rng, n, scale) for _ in range(k))])[:k])
    w = rng.uniform(-1, 1, (L, k))
    out = ops.weighted_sum(v, case.float64(w), case.offsets(off))
    assert_matches(out, oracle.weighted_sum(v, w, off),
                   oracle.weighted_sum_bound(v, w, off, case.unit(k)), case.dtype)
    al, be = float(rng.uniform(-2, 2)), float(rng.uniform(-2, 2))
    out = ops.axpby(a, b, al, be, case.offsets(off))
    assert_matches(out, oracle.axpby(a, b, al, be, off),
                   oracle.axpby_bound(a, b, al, be, case.unit(2), off), case.dtype)


@pytest.mark.parametrize("case", CASES)
@settings(SETTINGS, max_examples=_n(25))
@given(data=st.data(), k=st.integers(1, 5), ridge=st.sampled_from([0.0, 0.5]))
def test_gram_and_solve(case, data, k, ridge):
    a, b, off, _ = data.draw(pair_data(case, max_segments=6))
    n = int(off[-1])
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    rows = [f64(a), f64(b)] + [f64(case.array(rng.standard_normal(n))) for _ in range(k)]
    v = case.array(np.stack(rows[:k]))
    g, r = ops.gram(v, case.offsets(off), rhs=b)
    gref, rref = oracle.gram(v, off, b)
    gb, rb = oracle.gram_bound(v, off, b)
    assert np.all(np.abs(f64(g) - gref) <= gb) and np.all(np.abs(f64(r) - rref) <= rb)
    # solve: well scaled by the diagonal so the ridge matters; finite always
    x = f64(ops.solve_spd(g, r, ridge))
    assert np.all(np.isfinite(x))
    if ridge > 0 and case.dtype == "float64" and SCALES["float64"][0] == 1.0:
        gs = f64(g)
        norm = np.sqrt(np.maximum(np.abs(gs).max(axis=(1, 2)), 1e-300))
        ok = (norm > 1e-100) & (norm < 1e100)
        gs, rs = gs[ok] / norm[ok, None, None] ** 2, f64(r)[ok] / norm[ok, None] ** 2
        xs = f64(ops.solve_spd(case.float64(gs), case.float64(rs), ridge))
        ref = oracle.solve_spd(gs, rs, ridge)
        assert np.allclose(xs, ref, rtol=1e-8, atol=1e-8 * np.abs(ref).max(initial=1))


# ------------------------------------------------------------------------------------------
# Adasum pair-rule properties (through adasum_combine)


@pytest.mark.parametrize("case", CASES)
@SETTINGS
@given(data=st.data(), weights=weights_st)
def test_orthogonal_gives_sum(case, data, weights):
    """a.b = 0 exactly (disjoint supports): out = a + b, bit for bit, whatever the weights."""
    a, b, off, _ = data.draw(pair_data(case, kinds=["orthogonal"]))
    out = ops.adasum_combine(a, b, case.offsets(off), weights=weights)
    assert np.array_equal(f64(out), f64(a) + f64(b))


@pytest.mark.parametrize("case", CASES)
@SETTINGS
@given(data=st.data())
def test_parallel_gives_mean(case, data):
    """b = c a (any sign, antiparallel included): out = (a + b) / 2."""
    a, b, off, _ = data.draw(pair_data(case, kinds=["parallel"]))
    out = ops.adasum_combine(a, b, case.offsets(off))
    want = (f64(a) + f64(b)) / 2
    # b = c a was rounded to the dtype: in the subnormal range (float16 ~1e-6) it may no longer
    # be exactly parallel; such segments are held to the general oracle instead
    general = oracle.adasum_combine(a, b, off)
    for s, e in oracle.segments(off):
        if not _exactly_parallel(f64(a)[s:e], f64(b)[s:e]):
            want[s:e] = general[s:e]
    # the oracle's own float64 rounding is below 4 eps64 (|a| + |b|). (A zero a has a zero b:
    # the zero-norm guard's plain sum is the mean too.)
    bound = oracle.adasum_combine_bound(a, b, off, case.unit(2))
    bound += 4 * oracle.EPS64 * (np.abs(f64(a)) + np.abs(f64(b)))
    assert_matches(out, want, bound, case.dtype)


def _exactly_parallel(x, y):
    if not np.any(x):
        return not np.any(y)
    j = int(np.argmax(np.abs(x)))
    return np.array_equal(y, (y[j] / x[j]) * x)


@pytest.mark.parametrize("case", CASES)
@SETTINGS
@given(data=st.data(), weights=weights_st)
def test_identical_gives_a(case, data, weights):
    """combine(a, a) = a exactly (ca = cb = 1/2 for the plain rule; wa + wb = 1 in general),
    also where |a|^2 underflows (float64 ~1e-300: the dots are scaled)."""
    a, _, off, _ = data.draw(pair_data(case))
    out = ops.adasum_combine(a, a, case.offsets(off), weights=weights)
    want = f64(a)
    if weights[0] == weights[1]:
        assert np.array_equal(f64(out), want)
    else:  # (1 - wa) a + (1 - wb) a: two roundings
        assert_matches(out, want, case.unit(2) * np.abs(want), case.dtype)


@pytest.mark.parametrize("case", CASES)
@SETTINGS
@given(data=st.data(), weights=weights_st)
def test_zero_input_gives_other(case, data, weights):
    """A zero input degrades to a plain sum: the other input comes back unchanged."""
    a, _, off, _ = data.draw(pair_data(case))
    z = case.zeros(int(off[-1]))
    assert np.array_equal(f64(ops.adasum_combine(a, z, case.offsets(off), weights=weights)),
                          f64(a))
    assert np.array_equal(f64(ops.adasum_combine(z, a, case.offsets(off), weights=weights)),
                          f64(a))
    assert np.array_equal(f64(ops.adasum_combine(z, z, case.offsets(off))), f64(z))


@pytest.mark.parametrize("case", CASES)
@SETTINGS
@given(data=st.data(), weights=weights_st)
def test_symmetric(case, data, weights):
    """combine(a, b, (n1, n2)) = combine(b, a, (n2, n1)). Bitwise on the x86-64 CPU build (the
    dots are symmetric bit for bit and ca x + cb y is commutative without FMA); where FMA may
    contract (CUDA, aarch64) within the rounding bound."""
    a, b, off, _ = data.draw(pair_data(case))
    o1 = ops.adasum_combine(a, b, case.offsets(off), weights=weights)
    o2 = ops.adasum_combine(b, a, case.offsets(off), weights=weights[::-1])
    if X86 and case.device == "cpu":
        assert bits_equal(case, o1, o2)
    else:
        assert_matches(o1, f64(o2), 2 * oracle.adasum_combine_bound(
            a, b, off, case.unit(2), weights=weights), case.dtype)


@pytest.mark.parametrize("case", CASES)
@SETTINGS
@given(data=st.data(), c=st.sampled_from([2.0, 0.5, -1.0, -4.0, 8.0, -0.25]))
def test_homogeneous(case, data, c):
    """combine(c a, c b) = c combine(a, b): bitwise for a power of two c when no output is
    subnormal (the dots scale by c^2 exactly or are scaled back by powers of two, the
    coefficients are unchanged)."""
    a, b, off, _ = data.draw(pair_data(case))
    ca, cb = case.array(c * f64(a)), case.array(c * f64(b))
    scaled_exactly = (np.array_equal(f64(ca), c * f64(a)) and np.array_equal(f64(cb), c * f64(b)))
    out = f64(ops.adasum_combine(a, b, case.offsets(off)))
    out_c = f64(ops.adasum_combine(ca, cb, case.offsets(off)))
    want = c * out
    both = np.abs(np.concatenate([out, want]))
    normal = np.all((both == 0) | (both >= _min_normal(case.dtype)))  # no subnormal rounding
    finite = np.all(np.isfinite(out)) and np.all(np.abs(want) <= case.max)
    if scaled_exactly and finite and normal:
        assert np.array_equal(out_c, want)
    elif scaled_exactly:
        # c times out's rounding error (subnormal results: up to half a TINY each)
        assert_matches(out_c, want, abs(c) * (2 * oracle.adasum_combine_bound(
            a, b, off, case.unit(2)) + case.tiny), case.dtype)


def _min_normal(dtype):
    return {"float64": 2.0**-1022, "float32": 2.0**-126, "float16": 2.0**-14,
            "bfloat16": 2.0**-126}[dtype]


@pytest.mark.parametrize("case", CASES)
@SETTINGS
@given(data=st.data(), beta=st.sampled_from([1.0, 2.0, 0.5, -0.5, -2.0, 4.0]),
       gamma=st.sampled_from([1.0, -1.0, 2.0, 0.25, -4.0]))
def test_weighted_rule_three_parallel(case, data, beta, gamma):
    """Three parallel inputs a, b = beta a, c = gamma a: combine(combine(a, b), c,
    weights=(2, 1)) is the mean (a + b + c) / 3 (the weights count the inputs under each side)."""
    a, _, off, _ = data.draw(pair_data(case, kinds=["random"], max_len=30))
    fa = f64(a)
    b, c = case.array(beta * fa), case.array(gamma * fa)
    if not (np.array_equal(f64(b), beta * fa) and np.array_equal(f64(c), gamma * fa)):
        return  # scaling left the dtype's range: not a parallel triple any more
    m = ops.adasum_combine(a, b, case.offsets(off))
    fm = np.abs(f64(m))
    if np.any((fm > 0) & (fm < _min_normal(case.dtype))):
        return  # m rounded in the subnormal range is not parallel to c any more (float16 1e-6)
    out = ops.adasum_combine(m, c, case.offsets(off), weights=(2, 1))
    want = (fa + f64(b) + f64(c)) / 3
    unit = case.unit(2)
    b1 = oracle.adasum_combine_bound(a, b, off, unit)
    b2 = oracle.adasum_combine_bound(m, c, off, unit, weights=(2, 1))
    # the first combine's error, carried into the second by its coefficient on m
    coef = oracle.adasum_coeffs_scaled(oracle.scaled_segment_dots(m, c, off), 2 / 3, 1 / 3)
    c2 = np.abs(np.repeat(coef[:, 0], np.diff(off)))  # exponent 0: m and c are parallel
    bound = 2 * (b2 + c2 * b1) + 8 * oracle.EPS64 * (np.abs(fa) + np.abs(f64(b)) + np.abs(f64(c)))
    assert_matches(out, want, bound, case.dtype)


@pytest.mark.parametrize("case", CASES)
@SETTINGS
@given(data=st.data(), bad=st.sampled_from([np.nan, np.inf, -np.inf]),
       where=st.sampled_from(["a", "b", "both"]))
def test_non_finite_poisons_only_its_segment(case, data, bad, where):
    """NaN/Inf anywhere in a segment: that whole output segment is NaN (never silently finite),
    the other segments are bitwise what they were."""
    a, b, off, _ = data.draw(pair_data(case, min_segments=1))
    lengths = np.diff(off)
    nonempty = np.flatnonzero(lengths)
    if nonempty.size == 0:
        return
    seg = int(nonempty[data.draw(st.integers(0, nonempty.size - 1))])
    pos = int(off[seg] + data.draw(st.integers(0, int(lengths[seg]) - 1)))
    fa, fb = f64(a), f64(b)
    if where in ("a", "both"):
        fa[pos] = bad
    if where in ("b", "both"):
        fb[pos] = bad
    a2, b2 = case.array(fa), case.array(fb)
    clean = f64(ops.adasum_combine(a, b, case.offsets(off)))
    out = f64(ops.adasum_combine(a2, b2, case.offsets(off)))
    inside = np.zeros(out.shape, bool)
    inside[off[seg]:off[seg + 1]] = True
    assert np.all(np.isnan(out[inside]))
    assert np.array_equal(out[~inside], clean[~inside])
    dots = f64(ops.segment_dots(a2, b2, case.offsets(off)))
    assert not np.all(np.isfinite(dots[seg]))
    others = np.arange(len(off) - 1) != seg
    assert np.array_equal(dots[others], f64(ops.segment_dots(a, b, case.offsets(off)))[others])
