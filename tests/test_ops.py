"""accord.ops against the float64 oracles (tests/oracle.py), over the dtype x device x framework
matrix (the ``case`` fixture, tests/conftest.py): numpy {float32, float64, float16} on cpu and
torch {float32, float64, float16, bfloat16} on cpu and cuda (cuda cells skip without a GPU).

Inputs are built in the case's dtype first and the oracle reads them back exactly (oracle.f64),
so the only error measured is the kernel's own arithmetic and output rounding; the per-dtype
bounds are derived in oracle.py (U_STORE / U_OPMATH / dots_bound).

Also here: tiles and segment layouts (empty, one-element, straddling tile boundaries, many
tiles), in-place use, bitwise determinism (repeated calls, OpenMP thread counts) and exhaustive
float16 / bfloat16 conversion checks.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import accord
import oracle
from accord import _C, ops
from oracle import Case, assert_matches, case_params, f64

TILE = _C.tile_size(0)              # CPU reduction tile (elements)
GRAM_TILE = _C.tile_size(0, True)   # CPU gram tile
CUDA_TILE = 8192                    # csrc/include/accord/kernels.h cuda::kTileSize

_many = np.random.default_rng(1234).integers(0, 40, size=300)
LAYOUTS = {
    # segment lengths; offsets = [0, cumsum(lengths)]
    "single": [1000],
    "one-element": [1],
    "mixed": [0, 1, 7, 0, TILE - 1, TILE, TILE + 1, 2 * TILE + 3, 33, 0,
              CUDA_TILE - 1, CUDA_TILE + 1, 0],
    "many": _many.tolist(),
    "empty-buffer": [],          # n = 0, L = 0: offsets = [0]
    "empty-segments": [0, 0, 0],  # n = 0, L = 3
}
GRAM_LAYOUTS = {
    "single": [300],
    "mixed": [0, 5, GRAM_TILE - 1, GRAM_TILE + 1, 0, 100],
    "many": _many[:120].tolist(),
    "empty-buffer": [],
    "empty-segments": [0, 0],  # n = 0: torch's empty tensors have a null data pointer
}
WEIGHTS = [(1, 1), (3, 1), (1, 6)]


def offsets_of(lengths) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]).astype(np.int64)


def pair_inputs(case: Case, n: int, rng, scale=1.0):
    """a, b partly correlated (so the Adasum coefficients are neither 0 nor 1)."""
    a = rng.standard_normal(n) * scale
    b = (0.6 * a + 0.8 * rng.standard_normal(n) * scale) * rng.choice([-1.0, 1.0])
    return case.array(a), case.array(b)


def check_float64_result(case: Case, x, shape):
    """Reductions come back as float64 [..] in the caller's framework, on its device."""
    if case.torch:
        import torch
        assert isinstance(x, torch.Tensor) and x.dtype == torch.float64
        assert x.device.type == case.device
    else:
        assert isinstance(x, np.ndarray) and x.dtype == np.float64
    assert tuple(x.shape) == tuple(shape)


def check_like(case: Case, out, ref_input):
    """Element-wise outputs keep the input's framework, dtype, device and shape."""
    assert type(out) is type(ref_input)
    assert out.dtype == ref_input.dtype and tuple(out.shape) == tuple(ref_input.shape)
    if case.torch:
        assert out.device == ref_input.device


def same_bits(case: Case, x, y) -> bool:
    return np.array_equal(case.bits(x), case.bits(y))


def test_buffer_address_is_the_first_element():
    """_C.buffer_address, the kernels' route to a numpy array's memory, agrees with numpy's own
    for offset, reshaped and read-only arrays; a non-contiguous view is refused."""
    x = np.arange(16, dtype=np.float32)
    for a in (x, x[3:], x.reshape(4, 4), np.frombuffer(x.tobytes(), np.float32)):
        assert _C.buffer_address(a) == a.ctypes.data
    with pytest.raises(ValueError, match="contiguous"):
        _C.buffer_address(x[::2])


# ------------------------------------------------------------------------------------------
# segment_dots


@pytest.mark.parametrize("layout", LAYOUTS)
def test_segment_dots(case, layout, rng):
    off = offsets_of(LAYOUTS[layout])
    a, b = pair_inputs(case, int(off[-1]), rng)
    dots = ops.segment_dots(a, b, case.offsets(off))
    check_float64_result(case, dots, (len(off) - 1, 3))
    ref = oracle.segment_dots(a, b, off)
    assert np.all(np.abs(f64(dots) - ref) <= oracle.dots_bound(a, b, off))
    # empty segments are exactly zero
    empty = np.diff(off) == 0
    assert np.all(f64(dots)[empty] == 0)


def test_segment_dots_swapped_is_bitwise(case, rng):
    off = offsets_of(LAYOUTS["mixed"])
    a, b = pair_inputs(case, int(off[-1]), rng)
    d1, d2 = f64(ops.segment_dots(a, b, case.offsets(off))), f64(ops.segment_dots(b, a, off))
    assert np.array_equal(d1, d2[:, [0, 2, 1]])


def test_segment_dots_offsets_forms(case, rng):
    """offsets as numpy int64 / int32, list, torch tensor give the same result."""
    off = offsets_of([3, 0, 5])
    a, b = pair_inputs(case, 8, rng)
    want = f64(ops.segment_dots(a, b, off))
    forms = [off.astype(np.int32), off.tolist(), tuple(off.tolist())]
    if case.torch:
        import torch
        forms += [torch.from_numpy(off), torch.from_numpy(off.astype(np.int32))]
    for form in forms:
        assert np.array_equal(f64(ops.segment_dots(a, b, form)), want)


# ------------------------------------------------------------------------------------------
# adasum_combine


@pytest.mark.parametrize("weights", WEIGHTS, ids=lambda w: f"w{w[0]}-{w[1]}")
@pytest.mark.parametrize("layout", LAYOUTS)
def test_adasum_combine(case, layout, weights, rng):
    off = offsets_of(LAYOUTS[layout])
    a, b = pair_inputs(case, int(off[-1]), rng)
    out = ops.adasum_combine(a, b, case.offsets(off), weights=weights)
    check_like(case, out, a)
    ref = oracle.adasum_combine(a, b, off, weights=weights)
    bound = oracle.adasum_combine_bound(a, b, off, case.unit(2), weights=weights)
    assert_matches(out, ref, bound, case.dtype)

    # given dots: the oracle uses the very same dots, so only the combine's rounding remains
    dots = ops.segment_dots(a, b, case.offsets(off))
    out2 = ops.adasum_combine(a, b, off, dots=dots, weights=weights)
    ref2 = oracle.adasum_combine(a, b, off, dots=f64(dots), weights=weights)
    bound2 = oracle.adasum_combine_bound(a, b, off, case.unit(2), dots=f64(dots),
                                         weights=weights, dots_error=False)
    assert_matches(out2, ref2, bound2, case.dtype)
    # dots=None computes exactly those dots: the two paths agree bit for bit
    assert same_bits(case, out, out2)


def test_adasum_combine_uses_given_dots(case, rng):
    """Dots summed across ranks differ from the local ones: the kernel must use what it gets."""
    off = offsets_of([50, 0, 31, 7])
    a, b = pair_inputs(case, int(off[-1]), rng)
    local = oracle.segment_dots(a, b, off)
    given = local * np.array([1.7, 2.0, 0.5]) + np.array([0.3, 1.0, 2.0])
    out = ops.adasum_combine(a, b, case.offsets(off), dots=case.float64(given))
    ref = oracle.adasum_combine(a, b, off, dots=given)
    bound = oracle.adasum_combine_bound(a, b, off, case.unit(2), dots=given, dots_error=False)
    assert_matches(out, ref, bound, case.dtype)
    plain = ops.adasum_combine(a, b, case.offsets(off))
    assert not np.allclose(f64(out), f64(plain))


def test_adasum_bound_allows_contracted_coefficients():
    """The oracle's bound holds for any correctly rounded way of computing the coefficients
    1 - w (a.b / |a|^2) from the dots, not only for numpy's three separate roundings. Here: a
    fused multiply-add (one rounding, as a contracting compiler emits), emulated exactly with
    fractions, on the inputs of test_adasum_combine[torch-float64-cuda-many-w1-6]. Where 1 - w q
    cancels, the oracle's own rounding of the coefficient exceeds the combine's error budget."""
    import zlib
    from fractions import Fraction

    rng = np.random.default_rng(zlib.crc32(
        b"tests/test_ops.py::test_adasum_combine[torch-float64-cuda-many-w1-6]"))
    off = offsets_of(LAYOUTS["many"])
    case = Case("numpy", "float64")
    a, b = pair_inputs(case, int(off[-1]), rng)
    dots = oracle.segment_dots(a, b, off)
    wa, wb = 1 / 7, 6 / 7
    fused = np.empty_like(a)
    for l, (s, e) in enumerate(oracle.segments(off)):
        ab, aa, bb = dots[l]
        ca = float(1 - Fraction(wa) * Fraction(ab / aa)) if aa >= oracle.ZERO_NORM_SQ else 1.0
        cb = float(1 - Fraction(wb) * Fraction(ab / bb)) if bb >= oracle.ZERO_NORM_SQ else 1.0
        fused[s:e] = ca * a[s:e] + cb * b[s:e]
    assert_matches(fused, oracle.adasum_combine(a, b, off, dots=dots, weights=(1, 6)),
                   oracle.adasum_combine_bound(a, b, off, case.unit(2), dots=dots,
                                               weights=(1, 6), dots_error=False), "float64")


@pytest.mark.parametrize("target", ["a", "b"])
def test_adasum_combine_in_place(case, target, rng):
    off = offsets_of(LAYOUTS["mixed"])
    a, b = pair_inputs(case, int(off[-1]), rng)
    want = ops.adasum_combine(a, b, case.offsets(off), weights=(2, 1))
    dest = a if target == "a" else b
    got = ops.adasum_combine(a, b, case.offsets(off), out=dest, weights=(2, 1))
    assert got is dest
    assert same_bits(case, dest, want)


def test_adasum_combine_out_buffer(case, rng):
    off = offsets_of([10, 20])
    a, b = pair_inputs(case, 30, rng)
    out = case.zeros(30)
    got = ops.adasum_combine(a, b, case.offsets(off), out=out)
    assert got is out
    assert same_bits(case, out, ops.adasum_combine(a, b, case.offsets(off)))


def test_adasum_tiny_a_next_to_ordinary_b(case):
    """a is not zero (|a|^2 >= DBL_MIN, so no guard) but tiny next to b: the coefficient
    ca = 1 - a.b / (2 |a|^2) is huge while ca * a_i stays of the order of b. Cases: one entry
    holding the smallest subnormal of the dtype; 1e-30 next to 1e10 (ratio beyond FLT_MAX).
    Rounding ca to float would give inf/NaN: such segments are combined in float64."""
    big = {"float16": 3e4, "float64": 1e10}.get(case.dtype, 1e10)
    small = {"float16": 1e-7, "float64": 1e-30}.get(case.dtype, 1e-30)
    a1 = np.zeros(8)
    a1[0] = case.tiny
    a2 = np.full(8, small)
    b1 = np.arange(1.0, 9.0)
    b2 = np.linspace(-1, 1, 8) * big
    a, b = case.array(np.concatenate([a1, a2])), case.array(np.concatenate([b1, b2]))
    off = np.array([0, 8, 16])
    out = ops.adasum_combine(a, b, case.offsets(off))
    assert np.all(np.isfinite(f64(out)))
    assert_matches(out, oracle.adasum_combine(a, b, off),
                   oracle.adasum_combine_bound(a, b, off, case.unit(2)), case.dtype)


FLOAT64_CASES = case_params([c for c in oracle.all_cases() if c.dtype == "float64"])
BIG, SMALL = 2.0**512, 2.0**-540  # ~1.3e154 and ~2.8e-163: squares overflow / underflow


def _extreme_float64_pair(rng):
    """Segments whose float64 dots overflow or underflow: both large, both tiny, tiny next to
    large (ratio ~2^1050: the coefficient itself is beyond float64), a segment mixing both
    magnitudes, a subnormal one, an ordinary one, and large or tiny ones with all-zero tiles."""
    def pair(n, sa, sb):
        a = rng.standard_normal(n)
        b = (0.6 * a + 0.8 * rng.standard_normal(n)) * rng.choice([-1.0, 1.0])
        return a * sa, b * sb
    mix = np.where(rng.random(300) < 0.5, BIG, SMALL)
    zero_tiles = [pair(2 * TILE + 7, BIG, 1.0), pair(2 * TILE + 7, SMALL, 1.0)]
    for za, zb in zero_tiles:  # all-zero tiles of a (a zero side) next to scaled ones
        za[:TILE + 3] = 0
        zb[-TILE:] = 0
    parts = [*zero_tiles, pair(100, BIG, BIG), pair(100, SMALL, SMALL), pair(60, SMALL, BIG),
             pair(60, BIG, SMALL), pair(300, mix, mix[::-1]), pair(40, 2.0**-1060, 2.0**-1060),
             pair(5000, BIG, 1.0), pair(50, 1.0, 1.0), pair(2 * TILE + 5, 1.0, BIG * 64)]
    a = np.concatenate([p[0] for p in parts])
    b = np.concatenate([p[1] for p in parts])
    return a, b, offsets_of([len(p[0]) for p in parts])


@pytest.mark.parametrize("case", FLOAT64_CASES)
def test_adasum_float64_extreme_magnitudes(case, rng):
    """Finite float64 inputs give finite results: dots are scaled by powers of two wherever
    their squares over- or underflow, and the pair rule still holds (scaled oracle)."""
    fa, fb, off = _extreme_float64_pair(rng)
    a, b = case.array(fa), case.array(fb)
    out = ops.adasum_combine(a, b, case.offsets(off), weights=(1, 2))
    assert np.all(np.isfinite(f64(out)))
    assert_matches(out, oracle.adasum_combine(a, b, off, weights=(1, 2)),
                   oracle.adasum_combine_bound(a, b, off, case.unit(2), weights=(1, 2)),
                   case.dtype)
    # segment_dots returns the float64 values: Inf where a.a or b.b overflows, else the dots
    dots = f64(ops.segment_dots(a, b, case.offsets(off)))
    want = oracle.unscaled(oracle.scaled_segment_dots(a, b, off))
    assert np.array_equal(np.isinf(dots), np.isinf(want))
    fin = np.isfinite(want)
    assert np.all(np.abs(dots[fin] - want[fin]) <= oracle.dots_bound(a, b, off)[fin] + 1e-300)


@pytest.mark.parametrize("case", FLOAT64_CASES)
@pytest.mark.parametrize("k", [-560, 511])
def test_adasum_float64_pair_rule_is_scale_free(case, k, rng):
    """The pair rule is homogeneous: 2^k a, 2^k b give 2^k times the result, also where 2^k
    makes every square overflow (k = 511) or underflow (k = -560); parallel inputs give the
    mean, identical inputs give a, orthogonal inputs the sum."""
    off = offsets_of([1, 7, 300, TILE + 9])
    n = int(off[-1])
    fa, fb = (f64(x) for x in pair_inputs(Case("numpy", "float64"), n, rng))
    s = 2.0**k
    out = f64(ops.adasum_combine(case.array(fa), case.array(fb), case.offsets(off)))
    out_s = ops.adasum_combine(case.array(fa * s), case.array(fb * s), case.offsets(off))
    assert_matches(out_s, out * s, 2 * s * oracle.adasum_combine_bound(
        fa, fb, off, case.unit(2)), case.dtype)
    a = case.array(fa * s)
    assert same_bits(case, ops.adasum_combine(a, a, case.offsets(off)), a)
    par = ops.adasum_combine(a, case.array(-0.5 * fa * s), case.offsets(off))
    assert_matches(par, 0.25 * fa * s, 4 * oracle.EPS64 * np.abs(fa * s), case.dtype)
    ortho_a, ortho_b = fa * s, fb * s
    ortho_a[1::2] = 0
    ortho_b[0::2] = 0
    got = ops.adasum_combine(case.array(ortho_a), case.array(ortho_b), case.offsets(off))
    assert np.array_equal(f64(got), ortho_a + ortho_b)


# ------------------------------------------------------------------------------------------
# gram


@pytest.mark.parametrize("with_rhs", [False, True], ids=["no-rhs", "rhs"])
@pytest.mark.parametrize("k", [1, 3, 8])
@pytest.mark.parametrize("layout", GRAM_LAYOUTS)
def test_gram(case, layout, k, with_rhs, rng):
    off = offsets_of(GRAM_LAYOUTS[layout])
    n = int(off[-1])
    v = case.array(rng.standard_normal((k, n)))
    rhs = case.array(rng.standard_normal(n)) if with_rhs else None
    res = ops.gram(v, case.offsets(off), rhs=rhs)
    L = len(off) - 1
    if with_rhs:
        g, r = res
        check_float64_result(case, r, (L, k))
    else:
        g = res
    check_float64_result(case, g, (L, k, k))
    ref = oracle.gram(v, off, rhs)
    bound = oracle.gram_bound(v, off, rhs)
    if with_rhs:
        assert np.all(np.abs(f64(g) - ref[0]) <= bound[0])
        assert np.all(np.abs(f64(r) - ref[1]) <= bound[1])
    else:
        assert np.all(np.abs(f64(g) - ref) <= bound)
    assert np.array_equal(f64(g), f64(g).transpose(0, 2, 1))  # exactly symmetric


# ------------------------------------------------------------------------------------------
# solve_spd (float64 only: it takes accord.ops.gram's output)

# The CUDA backend sweeps in round-robin order (spd_solve.h); the "round_robin" cell runs that
# order on the CPU (accord._C.solve_spd_round_robin) through the same tests.
SOLVE_CASES = case_params([Case("numpy", "float64"), Case("torch", "float64", "cpu"),
                           Case("torch", "float64", "cuda")]) + [
    pytest.param(Case("numpy", "float64"), id="numpy-float64-round_robin")]


def _round_robin_on_cpu(device, gram, rhs, num_systems, k, ridge, x, workspace, stream):
    assert device == 0, "the round-robin cell runs on host buffers"
    _C.solve_spd_round_robin(gram, rhs, num_systems, k, ridge, x)


def test_solve_spd_round_robin_refuses_k_over_the_limit():
    g, r, x = np.zeros((1, 129, 129)), np.zeros((1, 129)), np.empty((1, 129))
    with pytest.raises(ValueError, match="k=129 exceeds 128"):
        _C.solve_spd_round_robin(g.ctypes.data, r.ctypes.data, 1, 129, 0.0, x.ctypes.data)


@pytest.fixture
def solve_order(request, monkeypatch):
    """In the round_robin cell, ops.solve_spd runs the CUDA backend's sweep order on the CPU."""
    if "round_robin" in request.node.callspec.id:
        monkeypatch.setattr(_C, "solve_spd", _round_robin_on_cpu)


def solve_and_check(case: Case, g, r, ridge=0.0, rtol=1e-9):
    x = f64(ops.solve_spd(case.float64(g), case.float64(r), ridge))
    ref = oracle.solve_spd(g, r, ridge)
    assert np.all(np.isfinite(x))
    scale = np.maximum(np.abs(ref).max(axis=1, keepdims=True), 1e-300)
    assert np.all(np.abs(x - ref) <= rtol * scale), np.abs(x - ref).max()
    return x


def random_spd(rng, L, k, cond=1e3):
    q = np.linalg.qr(rng.standard_normal((L, k, k)))[0]
    lam = np.exp(rng.uniform(0, np.log(cond), size=(L, k)))
    g = np.einsum("lij,lj,lkj->lik", q, lam, q)
    return (g + g.transpose(0, 2, 1)) / 2


@pytest.mark.usefixtures("solve_order")
@pytest.mark.parametrize("case", SOLVE_CASES)
@pytest.mark.parametrize("ridge", [0.0, 0.5])
@pytest.mark.parametrize("k", [1, 2, 7, 32])
def test_solve_spd_well_conditioned(case, k, ridge, rng):
    g, r = random_spd(rng, 5, k), rng.standard_normal((5, k))
    x = solve_and_check(case, g, r, ridge)
    check_float64_result(case, ops.solve_spd(case.float64(g), case.float64(r)), (5, k))
    # residual of the system itself
    a = g + ridge * np.eye(k)
    assert np.allclose(np.einsum("lij,lj->li", a, x), r, rtol=0, atol=1e-9 * np.abs(r).max())


@pytest.mark.usefixtures("solve_order")
@pytest.mark.parametrize("case", SOLVE_CASES)
def test_solve_spd_k128(case, rng):
    """The largest k. Diagonally dominant, so the Jacobi sweeps converge fast (a dense
    k = 128 system costs ~0.25 s on one core)."""
    noise = rng.standard_normal((1, 128, 128)) * 1e-2
    g = np.diag(rng.uniform(1, 10, 128))[None] + noise + noise.transpose(0, 2, 1)
    solve_and_check(case, g, rng.standard_normal((1, 128)), rtol=1e-8)


@pytest.mark.usefixtures("solve_order")
@pytest.mark.parametrize("case", SOLVE_CASES)
@pytest.mark.parametrize("ridge", [0.0, 1e-3])
def test_solve_spd_rank_deficient(case, ridge, rng):
    """Rank-deficient Gram matrices: pinv (minimum-norm least squares), finite, as numpy."""
    systems = []
    for k, rank in [(2, 1), (4, 2), (6, 5), (12, 3), (20, 10)]:
        v = rng.standard_normal((k, rank)) @ rng.standard_normal((rank, 64))
        systems.append((v @ v.T, rng.standard_normal(k)))
    for g, r in systems:
        g = (g + g.T) / 2
        solve_and_check(case, g[None], r[None], ridge, rtol=1e-8)


@pytest.mark.usefixtures("solve_order")
@pytest.mark.parametrize("case", SOLVE_CASES)
def test_solve_spd_degenerate(case, rng):
    k = 4
    zero = np.zeros((1, k, k))
    r = rng.standard_normal((1, k))
    # zero matrix: pinv(0) = 0; with a ridge: r / ridge
    assert np.array_equal(f64(ops.solve_spd(case.float64(zero), case.float64(r))), np.zeros((1, k)))
    x = f64(ops.solve_spd(case.float64(zero), case.float64(r), 2.0))
    assert np.allclose(x, r / 2.0, rtol=1e-15, atol=0)
    # diagonal with zeros: the zero directions get 0
    d = np.diag([3.0, 0.0, 5.0, 0.0])[None]
    x = f64(ops.solve_spd(case.float64(d), case.float64(r)))
    assert np.allclose(x, [[r[0, 0] / 3, 0, r[0, 2] / 5, 0]], rtol=1e-15, atol=0)
    # duplicated and zero vectors through ops.gram: k = 4 rows, rank 2
    base = rng.standard_normal((2, 50))
    v = np.stack([base[0], base[0], np.zeros(50), base[1]])
    g = f64(ops.gram(case.array(v), case.offsets([0, 50])))
    solve_and_check(case, g, r, rtol=1e-8)
    solve_and_check(case, g, r, ridge=0.1)
    # L = 0
    x = ops.solve_spd(case.float64(np.zeros((0, k, k))), case.float64(np.zeros((0, k))))
    assert tuple(x.shape) == (0, k)


@pytest.mark.usefixtures("solve_order")
@pytest.mark.parametrize("case", SOLVE_CASES)
def test_solve_spd_non_finite(case):
    """NaN or Inf anywhere in a system gives an all-NaN x for that system only."""
    g = np.stack([np.eye(2) * 2] * 5)
    r = np.ones((5, 2))
    g[0, 0, 1] = g[0, 1, 0] = np.nan
    g[1, 0, 0] = np.nan
    g[2, 0, 0] = np.inf
    r[3, 1] = np.inf
    x = f64(ops.solve_spd(case.float64(g), case.float64(r)))
    assert np.all(np.isnan(x[:4]))
    assert np.array_equal(x[4], [0.5, 0.5])


@pytest.mark.cuda
@pytest.mark.parametrize("k", [1, 2, 7, 16, 54, 55, 128])
def test_solve_spd_cuda_bits_equal_cpu_round_robin(k, rng):
    """CUDA solves in the round-robin order with the same operations as the CPU's run of that
    order (no FMA contraction on either side): identical bits, shared-memory (k <= 54) and
    workspace (k > 54) paths alike."""
    import torch
    L = 3 if k <= 55 else 1
    g, r = random_spd(rng, L, k), rng.standard_normal((L, k))
    want = np.empty((L, k))
    _C.solve_spd_round_robin(g.ctypes.data, r.ctypes.data, L, k, 0.25, want.ctypes.data)
    got = ops.solve_spd(torch.from_numpy(g).cuda(), torch.from_numpy(r).cuda(), 0.25)
    assert np.array_equal(got.cpu().numpy().view(np.int64), want.view(np.int64))


# ------------------------------------------------------------------------------------------
# weighted_sum, axpby, pull_


@pytest.mark.parametrize("k", [1, 2, 5])
@pytest.mark.parametrize("layout", ["single", "mixed", "many", "empty-buffer"])
def test_weighted_sum(case, layout, k, rng):
    off = offsets_of(LAYOUTS[layout])
    n, L = int(off[-1]), len(off) - 1
    v = case.array(rng.standard_normal((k, n)))
    w = rng.standard_normal((L, k))
    out = ops.weighted_sum(v, case.float64(w), case.offsets(off))
    assert tuple(out.shape) == (n,) and out.dtype == v.dtype
    assert_matches(out, oracle.weighted_sum(v, w, off),
                   oracle.weighted_sum_bound(v, w, off, case.unit(k)), case.dtype)
    # out= and weights given as numpy (with torch data) give the same bits
    dest = case.zeros(n)
    assert ops.weighted_sum(v, w, off, out=dest) is dest
    assert same_bits(case, dest, out)


@pytest.mark.parametrize("coeffs", ["scalar", "per-segment"])
@pytest.mark.parametrize("layout", ["single", "mixed", "many", "empty-buffer", "empty-segments"])
def test_axpby(case, layout, coeffs, rng):
    off = offsets_of(LAYOUTS[layout])
    n, L = int(off[-1]), len(off) - 1
    x, y = case.array(rng.standard_normal(n)), case.array(rng.standard_normal(n))
    if coeffs == "scalar":
        al, be = 0.75, -1.25
        out = ops.axpby(x, y, al, be, case.offsets(off))
    else:
        al, be = rng.standard_normal(L), rng.standard_normal(L)
        out = ops.axpby(x, y, case.float64(al), case.float64(be), case.offsets(off))
    check_like(case, out, x)
    assert_matches(out, oracle.axpby(x, y, al, be, off),
                   oracle.axpby_bound(x, y, al, be, case.unit(2), off), case.dtype)


def test_axpby_default_offsets_and_out(case, rng):
    x, y = case.array(rng.standard_normal(100)), case.array(rng.standard_normal(100))
    want = ops.axpby(x, y, 2.0, 0.5, [0, 100])
    assert same_bits(case, ops.axpby(x, y, 2.0, 0.5), want)
    for dest in (x, y):  # in place, either input
        x2, y2 = case.array(f64(x)), case.array(f64(y))
        d = x2 if dest is x else y2
        assert ops.axpby(x2, y2, 2.0, 0.5, out=d) is d
        assert same_bits(case, d, want)


@pytest.mark.parametrize("layout", ["single", "mixed"])
def test_pull_(case, layout, rng):
    off = offsets_of(LAYOUTS[layout])
    n = int(off[-1])
    x0, t = rng.standard_normal(n), case.array(rng.standard_normal(n))
    x = case.array(x0)
    before = f64(x)
    got = ops.pull_(x, t, 0.3, case.offsets(off))
    assert got is x
    ref = oracle.pull(before, t, 0.3, off)
    assert_matches(x, ref, oracle.axpby_bound(before, t, 0.7, 0.3, case.unit(2), off), case.dtype)
    # per-segment strengths
    s = rng.uniform(0, 1, len(off) - 1)
    x = case.array(x0)
    before = f64(x)
    ops.pull_(x, t, case.float64(s), case.offsets(off))
    assert_matches(x, oracle.pull(before, t, s, off),
                   oracle.axpby_bound(before, t, 1 - s, s, case.unit(2), off), case.dtype)
    # strength 1 -> target, strength 0 -> unchanged
    x = case.array(x0)
    ops.pull_(x, t, 1.0)
    assert np.array_equal(f64(x), f64(t))
    x = case.array(x0)
    ops.pull_(x, t, 0.0)
    assert np.array_equal(f64(x), f64(case.array(x0)))


# ------------------------------------------------------------------------------------------
# Large buffers: many tiles, ragged segments


def test_large_buffer_many_tiles(case, rng):
    n = 1 << 20
    cuts = np.sort(rng.choice(np.arange(1, n), size=99, replace=False))
    off = np.concatenate([[0], cuts, [n]]).astype(np.int64)
    a, b = pair_inputs(case, n, rng)
    dots = ops.segment_dots(a, b, case.offsets(off))
    assert np.all(np.abs(f64(dots) - oracle.segment_dots(a, b, off))
                  <= oracle.dots_bound(a, b, off))
    out = ops.adasum_combine(a, b, case.offsets(off), weights=(5, 3))
    assert_matches(out, oracle.adasum_combine(a, b, off, weights=(5, 3)),
                   oracle.adasum_combine_bound(a, b, off, case.unit(2), weights=(5, 3)),
                   case.dtype)
    al, be = rng.standard_normal(100), rng.standard_normal(100)
    out = ops.axpby(a, b, case.float64(al), case.float64(be), case.offsets(off))
    assert_matches(out, oracle.axpby(a, b, al, be, off),
                   oracle.axpby_bound(a, b, al, be, case.unit(2), off), case.dtype)


# ------------------------------------------------------------------------------------------
# Determinism


def test_repeated_calls_bitwise(case, rng):
    off = offsets_of(LAYOUTS["mixed"])
    n = int(off[-1])
    a, b = pair_inputs(case, n, rng)
    v = case.array(rng.standard_normal((3, n)))
    w = case.float64(rng.standard_normal((len(off) - 1, 3)))
    runs = [[ops.segment_dots(a, b, case.offsets(off)),
             ops.adasum_combine(a, b, case.offsets(off)),
             *ops.gram(v, case.offsets(off), rhs=a),
             ops.weighted_sum(v, w, case.offsets(off))] for _ in range(3)]
    for later in runs[1:]:
        for x, y in zip(runs[0], later):
            assert same_bits(case, x, y)


CPU_ISAS = ("portable", "avx2")


@pytest.fixture
def every_cpu_isa():
    """The SIMD levels this CPU runs (build_info()['cpu_isa_best'] and below); the automatic
    choice is restored afterwards."""
    info = accord.build_info()
    levels = CPU_ISAS[:CPU_ISAS.index(info["cpu_isa_best"]) + 1]
    if len(levels) < 2:
        pytest.skip("this CPU runs the portable kernels only")
    yield levels
    assert _C.set_cpu_isa(info["cpu_isa"])


def test_bitwise_across_cpu_isas(case, every_cpu_isa, rng):
    """The AVX2 kernels give the portable kernels' bits: tails, tile edges, many segments,
    subnormal-to-huge values (finite: only NaN payloads may differ, see csrc/cpu/vec.h)."""
    if case.device != "cpu":
        pytest.skip("the SIMD level is a CPU-backend choice")
    off = offsets_of(LAYOUTS["mixed"])
    n = int(off[-1])
    scale = np.exp(rng.uniform(-12, 12, n)) if case.dtype in ("float32", "float64") else 1.0
    a, b = pair_inputs(case, n, rng, scale)
    v = case.array(rng.standard_normal((8, n)))
    w = case.float64(rng.standard_normal((len(off) - 1, 3)))
    # gram over 1 .. 9 rows (k vectors, + 1 with rhs): the AVX2 kernel keeps up to five rows in
    # registers, stages more and walks them in groups of four (csrc/cpu/gram_cpu.cpp)
    grams = [(k, rhs) for k in (1, 2, 3, 4, 5, 6, 8) for rhs in (None, a)]
    names = ["dots", "combine", "weighted_sum"]
    for k, rhs in grams:
        names += [f"gram k={k}"] if rhs is None else [f"gram k={k} + rhs", f"rhs dots k={k}"]
    runs = []
    for level in every_cpu_isa:
        assert _C.set_cpu_isa(level) and accord.build_info()["cpu_isa"] == level
        run = [ops.segment_dots(a, b, case.offsets(off)),
               ops.adasum_combine(a, b, case.offsets(off), weights=(3, 1)),
               ops.weighted_sum(v[:3], w, case.offsets(off))]
        for k, rhs in grams:
            res = ops.gram(v[:k], case.offsets(off), rhs=rhs)
            run += [res] if rhs is None else list(res)
        runs.append(run)
    for later, level in zip(runs[1:], every_cpu_isa[1:]):
        for name, x, y in zip(names, runs[0], later):
            assert same_bits(case, x, y), f"{name}: {level} differs from portable"


def test_cpu_isa_environment_variable(tmp_path):
    """ACCORD_CPU_ISA=portable caps the choice; an unknown name stops the import, naming it."""
    env = dict(os.environ, ACCORD_CPU_ISA="portable")
    env["PYTHONPATH"] = os.pathsep.join(
        [os.path.dirname(os.path.dirname(accord.__file__))] + sys.path)
    code = "import accord; print(accord.build_info()['cpu_isa'])"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "portable", out.stderr
    env["ACCORD_CPU_ISA"] = "avx9000"
    bad = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode != 0 and "ACCORD_CPU_ISA='avx9000'" in bad.stderr
    assert not _C.set_cpu_isa("avx9000")


_THREADS_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    import accord
    from accord import ops
    path, = sys.argv[1:]
    rng = np.random.default_rng(7)
    n = 1 << 20
    off = np.concatenate([[0], np.sort(rng.choice(np.arange(1, n), 99, replace=False)), [n]])
    res = {"threads": accord.build_info()["omp_max_threads"]}
    for dt in ("float32", "float16", "float64"):
        a = rng.standard_normal(n).astype(dt)
        b = (0.5 * a + rng.standard_normal(n)).astype(dt)
        v = rng.standard_normal((3, n // 4)).astype(dt)
        voff = off // 4
        voff[-1] = n // 4
        res[dt] = [x.tobytes().hex() for x in (
            ops.segment_dots(a, b, off),
            ops.adasum_combine(a, b, off, weights=(3, 2)),
            *ops.gram(v, voff, rhs=a[: n // 4]),
            ops.weighted_sum(v, rng.standard_normal((100, 3)), voff),
        )]
    # float64 blocks whose squares overflow or underflow next to ordinary ones: scaled tiles
    # and plain tiles share segments
    blocks = np.exp2(rng.choice([-560.0, 0.0, 512.0], n // 3000 + 1))
    blocks[rng.random(blocks.size) < 0.2] = 0.0  # zero blocks: tiles with an all-zero side
    scale = np.repeat(blocks, 3000)[:n]
    a = rng.standard_normal(n) * scale
    b = (0.5 * a + rng.standard_normal(n) * scale[::-1])
    res["float64-extreme"] = [x.tobytes().hex() for x in (
        ops.segment_dots(a, b, off), ops.adasum_combine(a, b, off, weights=(3, 2)))]
    with open(path, "w") as f:
        json.dump(res, f)
""")


def _run_with_threads(tmp_path, threads):
    script = tmp_path / "det.py"
    script.write_text(_THREADS_SCRIPT)
    out = tmp_path / f"det{threads}.json"
    env = dict(os.environ)
    if threads is None:
        env.pop("OMP_NUM_THREADS", None)
    else:
        env["OMP_NUM_THREADS"] = str(threads)
    env["PYTHONPATH"] = os.pathsep.join(
        [os.path.dirname(os.path.dirname(accord.__file__))] + sys.path)
    subprocess.run([sys.executable, str(script), str(out)], env=env, check=True, timeout=120)
    return json.loads(out.read_text())


@pytest.mark.skipif(not accord.build_info()["openmp"], reason="built without OpenMP")
def test_bitwise_across_thread_counts(tmp_path):
    """1M elements in 100 ragged segments (hundreds of tiles): same bytes with 1, 3 and the
    default number of OpenMP threads."""
    runs = [_run_with_threads(tmp_path, t) for t in (1, 3, None)]
    assert runs[0]["threads"] == 1 and runs[1]["threads"] == 3
    for r in runs[1:]:
        for dt in ("float32", "float16", "float64", "float64-extreme"):
            assert r[dt] == runs[0][dt], f"{dt}: results depend on the thread count"


# ------------------------------------------------------------------------------------------
# float16 / bfloat16 conversions (the kernels' own bit arithmetic, dtype.h / vec.h)

HALF_CASES = case_params([Case("numpy", "float16"), Case("torch", "float16", "cpu"),
                          Case("torch", "float16", "cuda")])
BF16_CASES = case_params([Case("torch", "bfloat16", "cpu"), Case("torch", "bfloat16", "cuda")])


def _all_patterns(case: Case):
    bits = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    if not case.torch:
        return bits.view(np.float16)
    import torch
    return torch.from_numpy(bits.view(np.int16)).view(getattr(torch, case.dtype)).to(case.device)


@pytest.mark.parametrize("case", HALF_CASES + BF16_CASES)
def test_all_16bit_patterns_round_trip(case):
    """axpby(x, -0, 1, 0) = 1*x + 0*(-0): every pattern (subnormals, +-0, +-inf) comes back
    bit-identical; NaNs stay NaN. (y = -0, not +0: -0 + +0 would be +0, losing x = -0.)"""
    x = _all_patterns(case)
    y = case.array(np.full(1 << 16, -0.0))
    out = ops.axpby(x, y, 1.0, 0.0)
    xb, ob = case.bits(x), case.bits(out)
    nan_in = np.isnan(f64(x))
    assert np.array_equal(np.isnan(f64(out)), nan_in)
    assert np.array_equal(xb[~nan_in], ob[~nan_in])
    # the same through adasum_combine's widening: combine(x, 0) = x (zero b -> plain sum) for
    # every finite pattern (one segment per pattern, so NaN/Inf ones stay contained)
    off = np.arange((1 << 16) + 1)
    out = ops.adasum_combine(x, y, case.offsets(off))
    fin = np.isfinite(f64(x))
    assert np.array_equal(case.bits(out)[fin], xb[fin])
    assert np.all(np.isnan(f64(out)[~fin]))


def _float32_probe_values(case: Case) -> np.ndarray:
    """float32 values that stress rounding to the case's 16-bit type: every midpoint between
    consecutive 16-bit values and its float32 neighbours, random float32 bit patterns over the
    whole range (subnormals, overflow), and the edges."""
    rng = np.random.default_rng(99)
    pos = np.arange(0x7C00 if case.dtype == "float16" else 0x7F80, dtype=np.uint16)
    if case.dtype == "float16":
        vals = pos.view(np.float16).astype(np.float64)
    else:
        vals = (pos.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    mids = ((vals[:-1] + vals[1:]) / 2).astype(np.float32)  # exact: needs one more bit
    assert np.array_equal(mids.astype(np.float64), (vals[:-1] + vals[1:]) / 2)
    up, down = np.nextafter(mids, np.float32(np.inf)), np.nextafter(mids, np.float32(0))
    rnd = rng.integers(0, 1 << 32, size=60000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    edges = np.array([0.0, 65504, 65519.996, 65520, 65536, 2.0**-24, 2.0**-25,
                      np.nextafter(np.float32(2.0**-25), np.float32(1)), 2.0**-26, 2.0**-14,
                      1e-45, 1.1754942e-38, 3.4028235e38, np.inf, np.nan], dtype=np.float32)
    v = np.concatenate([mids, up, down, rnd, edges])
    return np.concatenate([v, -v])


def _convert_through_axpby(case: Case, v32: np.ndarray):
    """out[i] = store(float(alpha[i]) * 1 + 0 * (-0)) with one-element segments, alpha[i] = v[i]:
    exactly the opmath -> storage rounding of v[i] (the product by 1 and the -0 add are exact;
    FMA contraction cannot change them either)."""
    n = v32.shape[0]
    x = case.array(np.ones(n))
    y = case.array(np.full(n, -0.0))
    with np.errstate(invalid="ignore"):  # NaN probes
        alpha = case.float64(v32.astype(np.float64))
    return ops.axpby(x, y, alpha, case.float64(np.zeros(n)), case.offsets(np.arange(n + 1)))


@pytest.mark.parametrize("case", HALF_CASES)
def test_float32_to_float16_rounding_matches_numpy(case):
    v = _float32_probe_values(case)
    out = _convert_through_axpby(case, v)
    with np.errstate(over="ignore", invalid="ignore"):
        want = v.astype(np.float16)
    nan = np.isnan(want)
    assert np.array_equal(np.isnan(f64(out)), nan)
    got_bits, want_bits = case.bits(out), want.view(np.uint16)
    bad = np.flatnonzero((got_bits != want_bits) & ~nan)
    assert bad.size == 0, (f"{bad.size} float32 -> float16 roundings differ from numpy, e.g. "
                           f"{v[bad[:5]].tolist()} -> {got_bits[bad[:5]]} (numpy "
                           f"{want_bits[bad[:5]]})")


@pytest.mark.parametrize("case", BF16_CASES)
def test_float32_to_bfloat16_rounding_matches_torch(case):
    import torch
    v = _float32_probe_values(case)
    out = _convert_through_axpby(case, v)
    want = torch.from_numpy(v).to(torch.bfloat16)
    nan = np.isnan(v)
    assert np.array_equal(np.isnan(f64(out)), nan)
    got_bits, want_bits = case.bits(out), case.bits(want)
    bad = np.flatnonzero((got_bits != want_bits) & ~nan)
    assert bad.size == 0, (f"{bad.size} float32 -> bfloat16 roundings differ from torch, e.g. "
                           f"{v[bad[:5]].tolist()}")


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"),
                    reason="bitwise float32 emulation assumes no FMA contraction (x86-64 build)")
@pytest.mark.parametrize("case", case_params([Case("numpy", "float16"), Case("numpy", "float32"),
                                              Case("torch", "bfloat16")]))
def test_axpby_matches_float32_emulation_bitwise(case, rng):
    """CPU axpby = store(fl32(fl32(a x) + fl32(b y))): emulated with numpy float32 arithmetic
    and the reference conversion (numpy astype / torch .to), over random values incl.
    subnormal-range and overflowing results. One-element segments give each element its own
    random alpha, beta."""
    n = 50000
    x = case.array(rng.standard_normal(n) * np.exp2(rng.integers(-30, 30, n)))
    y = case.array(rng.standard_normal(n) * np.exp2(rng.integers(-30, 30, n)))
    al = rng.standard_normal(n) * np.exp2(rng.integers(-10, 10, n))
    be = rng.standard_normal(n) * np.exp2(rng.integers(-10, 10, n))
    out = ops.axpby(x, y, case.float64(al), case.float64(be), case.offsets(np.arange(n + 1)))
    with np.errstate(over="ignore", invalid="ignore"):
        m = (al.astype(np.float32) * f64(x).astype(np.float32)
             + be.astype(np.float32) * f64(y).astype(np.float32))
        if case.dtype == "bfloat16":
            import torch
            want = case.bits(torch.from_numpy(m).to(torch.bfloat16))
        else:
            want = m.astype(case.dtype).view(f"u{np.dtype(case.dtype).itemsize}")
    assert np.array_equal(case.bits(out), want)
