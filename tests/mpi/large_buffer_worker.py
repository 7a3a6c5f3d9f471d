"""Buffers past the 32-bit limits: a float16 layer of 2^31 + 64 elements (4 GiB).

Rank 0 first runs the kernels on the whole layer (split into three segments, the middle one
longer than 2^31 elements); then every rank runs accord.allreduce_(op=Adasum) on its own 4 GiB
buffer. Inputs repeat a random block of P (prime) elements, so the float64 dots have a closed
form (whole periods plus a prefix) and any element can be predicted without a second 4 GiB
array. Checked: the dots (to 1e-10 of the sum of |terms|), elements at the start, at 2^30 (the ranks' split), at
2^31, at the end and at random places, and the same bits on every rank.
"""
from __future__ import annotations

import numpy as np
from _worker import check, check_close, check_identical_across_ranks, setup, worker_main

import accord
from accord import ops

N = (1 << 31) + 64
P = 4099


def block(rank: int) -> np.ndarray:
    return np.random.default_rng((17, rank)).uniform(-1, 1, P).astype(np.float16)


def periodic_dot(u: np.ndarray, v: np.ndarray, start: int, end: int, absolute=False) -> float:
    """sum of u[i % P] * v[i % P] (or of its absolute value) over start <= i < end, float64."""
    terms = u.astype(np.float64) * v.astype(np.float64)
    terms = np.abs(terms) if absolute else terms
    if end - start <= 2 * P:  # short: sum directly (a difference of two long sums would cancel)
        return float(np.sum(terms[np.arange(start, end) % P]))
    prefix = np.concatenate([[0.0], np.cumsum(terms)])

    def upto(m: int) -> float:
        return (m // P) * prefix[-1] + prefix[m % P]

    return upto(end) - upto(start)


def probe_indices() -> np.ndarray:
    """The same positions on every rank."""
    rng = np.random.default_rng(5)
    edges = [np.arange(64), (1 << 30) + np.arange(-64, 64), (1 << 31) + np.arange(-64, 64),
             N - 64 + np.arange(64), rng.integers(0, N, 4096)]
    return np.unique(np.concatenate(edges))


def expected_pair(u, v, idx, dots, weights=(0.5, 0.5)) -> np.ndarray:
    """The pair rule at positions idx (float32 opmath like the kernel: coefficients rounded to
    float, products and sum in float, result rounded to float16)."""
    ab, aa, bb = dots
    ca = np.float32(1.0 - weights[0] * ab / aa)
    cb = np.float32(1.0 - weights[1] * ab / bb)
    x = u[idx % P].astype(np.float32)
    y = v[idx % P].astype(np.float32)
    return (ca * x + cb * y).astype(np.float16)


def kernels_on_one_process() -> None:
    u, v = block(0), block(1)
    a, b = np.resize(u, N), np.resize(v, N)
    offsets = np.array([0, 3, N - 5, N], dtype=np.int64)
    dots = ops.segment_dots(a, b, offsets)
    for seg, (s, e) in enumerate(zip(offsets[:-1], offsets[1:])):
        want = [periodic_dot(u, v, s, e), periodic_dot(u, u, s, e), periodic_dot(v, v, s, e)]
        # float64 rounding over 2^31 terms in 2^19 tile partials, relative to the sum of |terms|
        # (measured 3e-12); one tile missed or counted twice would be off by ~10^2-10^3
        scale = periodic_dot(u, v, s, e, absolute=True)
        check_close(dots[seg], want, rtol=1e-10, atol=1e-10 * scale,
                    msg=f"segment_dots, segment {seg} [{s}, {e})")
    ops.adasum_combine(a, b, offsets, out=a)
    idx = probe_indices()
    seg_of = np.searchsorted(offsets, idx, side="right") - 1
    for seg in range(3):
        sel = idx[seg_of == seg]
        check(np.array_equal(a[sel], expected_pair(u, v, sel, dots[seg])),
              f"adasum_combine, segment {seg}: wrong elements at {sel[a[sel] != expected_pair(u, v, sel, dots[seg])][:8]}")


def main() -> None:
    comm = setup()
    accord.init(comm.mpi_comm)
    check(comm.size == 2, "run with 2 ranks")
    if comm.rank == 0:
        kernels_on_one_process()
    comm.barrier()
    buf = np.resize(block(comm.rank), N)
    accord.allreduce_(buf, op=accord.Adasum)
    u, v = block(0), block(1)
    dots = (periodic_dot(u, v, 0, N), periodic_dot(u, u, 0, N), periodic_dot(v, v, 0, N))
    idx = probe_indices()
    want = expected_pair(u, v, idx, dots)
    bad = idx[buf[idx] != want]
    check(bad.size == 0, f"Adasum over 2 ranks: wrong elements at {bad[:8]} "
                         f"(got {buf[bad[:8]]}, want {want[buf[idx] != want][:8]})")
    check_identical_across_ranks(comm, [buf[idx]], "probed Adasum elements")
    if comm.rank == 0:
        print(f"large buffers OK: {N} float16 elements ({N * 2 / 2**30:.2f} GiB) per rank")


if __name__ == "__main__":
    worker_main(main)
