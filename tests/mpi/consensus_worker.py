"""ACGA (accord.consensus) checks for one rank count (any N), against the float64 oracle of
consensus_oracle.py built from every rank's seeded gradient. Launched by tests/test_consensus.py.

``--no-torch`` skips the torch cases (bfloat16, torch tensors through MPI): the launcher passes
it for larger MPI rank counts, whose torch paths the smaller ones and the gloo runs cover.
``--bench MIB`` instead times aggregate_flat_ against a raw MPI Allreduce(SUM) of the same
float32 buffer (MIB mebibytes) in the same run and prints the medians (rank 0).
"""
from __future__ import annotations

import json
import pickle
import sys

import numpy as np
from _worker import (backend, check, check_close, check_equal, check_identical_across_ranks,
                     setup, worker_main)
from consensus_oracle import ConsensusOracle, NonFinite

import accord
from accord import consensus
from accord.consensus import ConsensusAggregator

torch = None
if "--no-torch" not in sys.argv:  # (importing torch on 5 oversubscribed ranks costs seconds)
    try:
        import torch
    except ImportError:  # numpy-only environments: the torch cases are skipped
        pass

# Relative to the largest sum_i |c_i g_i| (the oracle's `terms`): float64 differs from the
# oracle by summation order only; the others by the rounding of the inputs (the oracle sees the stored values) and of the
# weighted sum (float32 opmath, N terms) and the final store.
TOL = {"float64": 1e-10, "float32": 2e-5, "float16": 3e-3, "bfloat16": 2e-2,
       "torch_float32": 2e-5}
SIZES = [7, 1, 1000, 33, 0, 409, 5, 2]  # boundaries fall mid-slice; one empty tensor


def grads_for(seed, n, N, kind="random"):
    """Every worker's flat float64 gradient, identical on every rank."""
    rng = np.random.default_rng(seed)
    d = rng.standard_normal(n)
    out = []
    for r in range(N):
        if kind == "random":
            v = rng.standard_normal(n) + 0.5 * d  # positively correlated: a real consensus
        elif kind == "zeros":
            v = np.zeros(n)
        elif kind == "one_zero":
            v = rng.standard_normal(n) + d if r != N - 1 else np.zeros(n)
        elif kind == "identical":
            v = d.copy()
        elif kind == "cancel":  # g, -g, g, -g (, 0): gbar = 0 exactly, every score 0
            v = d * (-1.0) ** r if not (N % 2 and r == N - 1) else np.zeros(n)
        elif kind == "near_cancel":  # gbar ~ 1e-15 |g|: below the sum guard
            v = d * (-1.0) ** r * (1.0 + 1e-15 * r) if not (N % 2 and r == N - 1) else d * 1e-16
        elif kind == "opposed":  # worker 0 points away from the others: negative score
            v = -1.0 * d + 0.1 * rng.standard_normal(n) if r == 0 else (
                d + 0.3 * rng.standard_normal(n))
        elif kind == "wide":
            v = (rng.standard_normal(n) + d) * 10.0 ** (3 * (r % 3) - 3)
        else:
            raise ValueError(kind)
        out.append(v)
    return out


def make(v, dtype):
    if dtype == "bfloat16":
        return torch.from_numpy(np.ascontiguousarray(v)).to(torch.bfloat16)
    if dtype.startswith("torch_"):
        return torch.from_numpy(np.ascontiguousarray(v).astype(dtype[6:]))
    return np.ascontiguousarray(v).astype(dtype)


def as_np(t):
    if torch is not None and isinstance(t, torch.Tensor):
        t = t.detach()
        return (t.float() if t.dtype == torch.bfloat16 else t).numpy()
    return t


def stored(v, dtype):
    return np.asarray(as_np(make(v, dtype)), dtype=np.float64)


def split(v, sizes):
    return np.split(v, np.cumsum(sizes)[:-1])


def offsets_of(sizes):
    return np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)


def step(comm, agg, oracle, every, sizes, dtype="float64", flat=False, key=None, what="",
         ties=False):
    """One aggregation step on every rank; check the result and the weights against the
    oracle and bitwise identity across ranks. Returns (got float64, expected).

    ties: the workers' scores are equal up to rounding (identical gradients), so which worker
    receives which smoothed score depends on the last bits of the summation order of the
    Gram allreduce: compare the weights as a set per unit (the result does not depend on it)."""
    rank = comm.rank
    offsets = offsets_of(sizes)
    expected, weights = oracle.step([stored(v, dtype) for v in every], offsets)
    if flat:
        buf = make(every[rank], dtype)
        out = agg.aggregate_flat_(buf, offsets, key=key)
        check(out is buf, "aggregate_flat_ must return its buffer")
        result = [buf]
    else:
        mine = [make(p, dtype) for p in split(every[rank], sizes)]
        result = agg.aggregate(mine)
        check(len(result) == len(mine), "aggregate returned a different number of tensors")
        for r, m in zip(result, mine):
            check(tuple(r.shape) == tuple(m.shape) and r.dtype == m.dtype,
                  f"{what}: shape/dtype changed {tuple(m.shape)}/{m.dtype} -> "
                  f"{tuple(r.shape)}/{r.dtype}")
    got = np.concatenate([np.ravel(as_np(t)).astype(np.float64) for t in result])
    scale = max(oracle.terms.max(), _floor(every, agg)) if expected.size else 1.0
    tol = TOL[dtype]
    err = np.abs(got - expected).max() if got.size else 0.0
    check(err <= tol * scale, f"{what} {dtype}: max err {err:.3g} vs scale {scale:.3g}")
    if not (agg.weighting == "gram" and agg.ridge == 0):  # pinv of a singular K: G only
        got_w, want_w = agg.last_weights, weights
        if ties:
            got_w, want_w = np.sort(got_w, axis=1), np.sort(want_w, axis=1)
        check_close(got_w, want_w, rtol=1e-7, atol=1e-10, msg=f"{what} {dtype} weights")
    check_identical_across_ranks(comm, result, what)
    return got, expected


def _floor(every, agg):
    """An error scale for outputs that cancel to ~0 (where sum |c_i g_i| is itself noise):
    1% of a typical term c_i g_i."""
    big = max(float(np.abs(g).max()) if g.size else 0.0 for g in every)
    if agg.weighting == "diagonal" and not agg.keep_scale:
        big /= max(min(np.linalg.norm(g) for g in every), 1.0)
    return max(1e-2 * big, 1e-300)


def configs():
    for weighting in ("diagonal", "gram"):
        for granularity in ("model", "layer"):
            yield dict(weighting=weighting, granularity=granularity)


_DEFAULT_P2P = consensus._P2P_MIN_BYTES


def transport(p2p):
    """Force the pairwise-sendrecv data path (p2p=True) or the alltoall/allgather one for the
    aggregators created next (None: the default choice by slice size, _P2P_MIN_BYTES)."""
    consensus._P2P_MIN_BYTES = _DEFAULT_P2P if p2p is None else 0 if p2p else 1 << 62


def check_rules(comm):
    """Both weightings x both granularities, several momentum steps, every dtype; the layer
    configurations through the sendrecv data path, the model ones through alltoall."""
    N = comm.size
    n = sum(SIZES)
    for cfg in configs():
        transport(cfg["granularity"] == "layer")
        agg = ConsensusAggregator(momentum=0.5, comm=comm, **cfg)
        oracle = ConsensusOracle(momentum=0.5, **cfg)
        for t in range(4):
            step(comm, agg, oracle, grads_for(10 + t, n, N), SIZES, what=f"{cfg} step {t}",
                 flat=t % 2 == 1)
        check(agg.state_dict()["entries"] and
              all(e["step"] == 4 for e in agg.state_dict()["entries"].values()),
              "step count after 4 steps")
        dtypes = ["float32", "float16"] + (["bfloat16", "torch_float32"] if torch else [])
        for dtype in dtypes:  # fresh momentum per dtype: inputs differ by rounding
            agg = ConsensusAggregator(momentum=0.5, comm=comm, **cfg)
            oracle = ConsensusOracle(momentum=0.5, **cfg)
            for t in range(2):
                step(comm, agg, oracle, grads_for(20 + t, n, N), SIZES, dtype,
                     what=f"{cfg} step {t}", flat=t == 1)
    # keep_scale, other eps, wide magnitudes
    for cfg in (dict(keep_scale=True), dict(keep_scale=True, granularity="layer", eps=1e-3),
                dict(weighting="gram", ridge=0.3, granularity="layer")):
        agg = ConsensusAggregator(momentum=0.9, comm=comm, **cfg)
        oracle = ConsensusOracle(momentum=0.9, **cfg)
        for t, kind in enumerate(("random", "wide", "one_zero")):
            step(comm, agg, oracle, grads_for(30 + t, n, N, kind), SIZES, what=f"{cfg} {kind}")
    # lengths that are / are not multiples of N (padding), a 1-element buffer, both paths
    for p2p in (True, False):
        transport(p2p)
        for sizes in ([N * 64], [N * 64 + 1], [1], [3, N * 5], [N * 7 - 1, 2]):
            agg = ConsensusAggregator(comm=comm, granularity="layer")
            step(comm, agg, ConsensusOracle(granularity="layer"), grads_for(40, sum(sizes), N),
                 sizes, flat=True, what=f"sizes {sizes} p2p={p2p}")
    transport(None)


def check_gram_ridge0(comm):
    """ridge = 0: plain averaging, also for a rank-deficient Gram matrix."""
    N = comm.size
    n = sum(SIZES)
    for granularity in ("model", "layer"):
        for kind in ("random", "identical", "one_zero", "cancel"):
            every = grads_for(50, n, N, kind)
            agg = ConsensusAggregator(weighting="gram", ridge=0.0, granularity=granularity,
                                      comm=comm)
            got, _ = step(comm, agg, ConsensusOracle(weighting="gram", ridge=0.0,
                                                     granularity=granularity),
                          every, SIZES, what=f"gram ridge=0 {kind}")
            mean = np.mean(every, axis=0)
            check_close(got, mean, rtol=0, atol=1e-12 * max(np.abs(mean).max(), 1.0),
                        msg=f"gram ridge=0 {granularity} {kind} is not the average")


def check_state_roundtrip(comm):
    """Momentum over several steps; the state through state_dict (pickle and JSON) into a
    fresh aggregator gives the same bits as the original one; bad states raise."""
    N = comm.size
    n = sum(SIZES)
    for cfg in configs():
        a = ConsensusAggregator(momentum=0.8, comm=comm, **cfg)
        oracle = ConsensusOracle(momentum=0.8, **cfg)
        for t in range(3):
            step(comm, a, oracle, grads_for(60 + t, n, N), SIZES, what=f"{cfg} pre {t}")
        for codec in ("pickle", "json"):
            sd = a.state_dict()
            sd = pickle.loads(pickle.dumps(sd)) if codec == "pickle" else json.loads(json.dumps(sd))
            b = ConsensusAggregator(momentum=0.8, comm=comm, **cfg)
            b.load_state_dict(sd)
            check(b.state_dict() == a.state_dict(), f"{cfg} {codec}: state differs after load")
            o2 = oracle.copy()
            every = grads_for(70, n, N)
            got_b, _ = step(comm, b, o2, every, SIZES, what=f"{cfg} {codec} restored")
        got_a, _ = step(comm, a, oracle, every, SIZES, what=f"{cfg} continued")
        check_equal(got_a, got_b, f"{cfg}: restored aggregator differs from the original")
        if cfg["weighting"] == "diagonal" and N > 1:
            # the momentum matters: a fresh aggregator gives something else
            c = ConsensusAggregator(momentum=0.8, comm=comm, **cfg)
            fresh = c.aggregate(split(every[comm.rank], SIZES))
            check(not np.array_equal(np.concatenate(fresh), got_a), "momentum had no effect")
    # the key argument: two identical layouts, separate momentum
    a = ConsensusAggregator(momentum=0.5, comm=comm)
    o1, o2 = ConsensusOracle(momentum=0.5), ConsensusOracle(momentum=0.5)
    for t in range(2):
        step(comm, a, o1, grads_for(80 + t, 50, N), [50], flat=True, key=0, what="key 0")
        step(comm, a, o2, grads_for(90 + t, 50, N), [50], flat=True, key="b", what="key b")
    check(set(a.state_dict()["entries"]) == {0, "b"}, "keys in the state")

    # bad states
    good = a.state_dict()
    bad_cases = [
        (dict(good, weighting="gram"), "weighting"),
        (dict(good, num_workers=N + 1), "workers"),
        (dict(good, entries={0: {"scores": [[1.0] * (N + 1)], "step": 1}}), "shape"),
        (dict(good, version=99), "version"),
        ({"x": 1}, "state_dict"),
    ]
    for sd, word in bad_cases:
        try:
            ConsensusAggregator(momentum=0.5, comm=comm).load_state_dict(sd)
        except ValueError as e:
            check(word in str(e), f"unexpected message for a bad state ({word}): {e}")
        else:
            check(False, f"a bad state ({word}) loaded")
    # units mismatch is found at the key's next use (layer granularity, other layout)
    a = ConsensusAggregator(granularity="layer", comm=comm)
    a.aggregate_flat_(np.ones(10), np.array([0, 4, 10]), key="k")
    sd = a.state_dict()
    b = ConsensusAggregator(granularity="layer", comm=comm)
    b.load_state_dict(sd)
    try:
        b.aggregate_flat_(np.ones(10), np.array([0, 2, 4, 10]), key="k")
    except ValueError as e:
        check("units" in str(e), f"unexpected message: {e}")
    else:
        check(False, "state with another unit count was used")


def check_inverse_permutation(comm):
    """A dissenting worker (the one furthest from the consensus direction, still with a
    positive score) must get the smallest weight, and the weights must follow the scores'
    order. The scores' sorting permutation is built to be a cycle, not an involution, so the
    reference's un-sorting with p instead of p^-1 fails this (for N >= 3).

    g_i = d + t_i e_i with d, e_i orthonormal: a_i = (1 + t_i^2/N) / sqrt(1 + t_i^2), which
    decreases in t_i for t_i^2 < N - 2. Worker 0 sits in the middle, worker N-1 dissents.
    """
    N = comm.size
    if N < 3:
        return
    n = 600
    T = np.sqrt(N - 2.0)
    t = np.empty(N)
    t[0] = 0.6 * T
    t[1:N - 1] = np.linspace(0.1, 0.5, N - 2) * T
    t[N - 1] = 0.95 * T
    rng = np.random.default_rng(100)
    for momentum, steps in ((0.0, 1), (0.9, 4)):
        agg = ConsensusAggregator(momentum=momentum, comm=comm)
        oracle = ConsensusOracle(momentum=momentum)
        for s in range(steps):
            q, _ = np.linalg.qr(rng.standard_normal((n, N + 1)))
            every = [q[:, 0] + t[i] * q[:, i + 1] for i in range(N)]
            gbar = np.mean(every, axis=0)
            scores = np.array([gbar.dot(g) / np.linalg.norm(g) for g in every])
            p = np.argsort(scores)
            check(int(p[0]) == N - 1 and not np.array_equal(p[p], np.arange(N)),
                  f"test setup: scores {scores}")
            step(comm, agg, oracle, every, [n], what=f"dissent momentum={momentum} s={s}")
            w = agg.last_weights[0]
            check(int(np.argmin(w)) == N - 1, f"dissenter did not get the smallest weight: {w}")
            check(np.array_equal(np.argsort(w), p), f"weights {w} do not follow scores {scores}")
            check(np.all(w > 0), f"positive scores must give positive weights: {w}")


def check_degenerate(comm):
    N = comm.size
    n = sum(SIZES)
    for cfg in configs():
        # all-zero gradients at the first step: uniform weights, zero result, no NaN
        agg = ConsensusAggregator(momentum=0.5, comm=comm, **cfg)
        oracle = ConsensusOracle(momentum=0.5, **cfg)
        got, _ = step(comm, agg, oracle, grads_for(0, n, N, "zeros"), SIZES, what="zeros")
        check(np.all(got == 0), "all-zero gradients must give zeros")
        check(np.allclose(agg.last_weights, 0 if cfg["weighting"] == "gram" else 1.0 / N),
              f"all-zero weights: {agg.last_weights}")
        # (not near_cancel here: its noise-level scores' order decides which worker gets
        # which smoothed score, and rounding differs between oracle and kernels)
        for t, kind in enumerate(("random", "one_zero", "opposed", "cancel", "identical")):
            step(comm, agg, oracle, grads_for(110 + t, n, N, kind), SIZES, what=f"{cfg} {kind}",
                 ties=kind == "identical")
    if N >= 2:
        # negative score: the opposed worker gets weight 0 at the first step
        agg = ConsensusAggregator(comm=comm)
        step(comm, agg, ConsensusOracle(), grads_for(120, n, N, "opposed"), SIZES, what="opp")
        if N >= 3:
            check(agg.last_weights[0, 0] == 0.0, f"opposed worker weight {agg.last_weights}")
        # scores summing to 0 (exactly, and below the guard): uniform weights
        for kind in ("cancel", "near_cancel"):
            agg = ConsensusAggregator(comm=comm)
            step(comm, agg, ConsensusOracle(), grads_for(121, n, N, kind), SIZES, what=kind)
            check(np.all(agg.last_weights == 1.0 / N), f"{kind}: {agg.last_weights}")
    # identical gradients with keep_scale give back g; N = 1 gives g/(|g|+eps), or g
    every = grads_for(130, n, N, "identical")
    for dtype in ("float64", "float32"):
        agg = ConsensusAggregator(keep_scale=True, comm=comm)
        got, _ = step(comm, agg, ConsensusOracle(keep_scale=True), every, SIZES, dtype,
                      what="identical keep_scale")
        g = stored(every[0], dtype)
        check_close(got, g, rtol=TOL[dtype], atol=TOL[dtype] * np.abs(g).max(),
                    msg=f"identical gradients with keep_scale ({dtype})")
        if N == 1:
            check_equal(got, g, "N=1 keep_scale must return g exactly")
    if N == 1:
        agg = ConsensusAggregator(comm=comm)
        got = np.concatenate(agg.aggregate(split(every[0], SIZES)))
        check_close(got, every[0] / (np.linalg.norm(every[0]) + 1e-8), rtol=1e-14,
                    msg="N=1 diagonal")
        agg = ConsensusAggregator(weighting="gram", ridge=0.25, comm=comm)
        got = np.concatenate(agg.aggregate(split(every[0], SIZES)))
        check_close(got, every[0] / 1.25, rtol=1e-13, msg="N=1 gram")
    # empty buffer
    agg = ConsensusAggregator(comm=comm)
    out = agg.aggregate([np.zeros(0)])
    check(out[0].shape == (0,), "empty tensor")


def check_nonfinite(comm):
    """NaN/Inf on one rank: raise on every rank (buffer untouched), or zeros everywhere; the
    state is unchanged either way."""
    N, rank = comm.size, comm.rank
    n = sum(SIZES)
    bad_rank = N - 1
    for cfg in configs():
        for mode in ("raise", "skip"):
            for value in (np.nan, np.inf):
                agg = ConsensusAggregator(momentum=0.5, nonfinite=mode, comm=comm, **cfg)
                oracle = ConsensusOracle(momentum=0.5, **cfg)
                step(comm, agg, oracle, grads_for(140, n, N), SIZES, what="before nan")
                before = agg.state_dict()
                every = grads_for(141, n, N)
                every[bad_rank][1003] = value  # inside tensor 3 (layer granularity)
                try:
                    oracle.copy().step(every, offsets_of(SIZES))
                    check(False, "oracle missed the NaN")
                except NonFinite:
                    pass
                for dtype in ("float64", "float32"):
                    buf = make(every[rank], dtype)
                    keep = buf.copy()
                    if mode == "raise":
                        try:
                            agg.aggregate_flat_(buf, offsets_of(SIZES))
                        except FloatingPointError as e:
                            check("NaN or Inf" in str(e), f"unexpected message: {e}")
                        else:
                            check(False, f"{value} on rank {bad_rank} did not raise")
                        check_equal(buf, keep, "the buffer must be unchanged after the raise")
                    else:
                        agg.aggregate_flat_(buf, offsets_of(SIZES))
                        check(np.all(buf == 0), "skip must return zeros")
                        check(np.all(agg.last_weights == 0), "skip weights")
                    check(agg.state_dict()["entries"] == before["entries"],
                          "momentum changed on a non-finite step")
                if mode == "skip":
                    check(agg.skipped_steps == 2, f"skipped_steps {agg.skipped_steps}")
                # the next good step continues from the untouched state
                step(comm, agg, oracle, grads_for(142, n, N), SIZES, what="after nan")
    # a NaN in bfloat16 through torch
    if torch is not None:
        agg = ConsensusAggregator(comm=comm)
        mine = grads_for(143, n, N)[rank]
        if rank == bad_rank:
            mine[0] = np.nan
        try:
            agg.aggregate([make(mine, "bfloat16")])
        except FloatingPointError:
            pass
        else:
            check(False, "bfloat16 NaN did not raise")


def check_errors(comm):
    N, rank = comm.size, comm.rank
    if N > 1:
        cases = [
            ("shape", lambda a: a.aggregate([np.ones(5 if rank == 0 else 6)])),
            ("flat shape", lambda a: a.aggregate_flat_(np.ones(8 if rank == 0 else 9),
                                                       [0, 8 if rank == 0 else 9])),
            ("offsets", lambda a: a.aggregate_flat_(np.ones(8), [0, 3 if rank == 0 else 4, 8])),
            ("dtype", lambda a: a.aggregate([np.ones(4, np.float32 if rank else np.float64)])),
        ]
        for what, fn in cases:
            try:
                fn(ConsensusAggregator(comm=comm))
            except ValueError as e:
                check("different arguments" in str(e), f"{what}: unexpected message: {e}")
            else:
                check(False, f"mismatched {what} did not raise")
        try:  # settings differ between ranks
            ConsensusAggregator(momentum=0.9 if rank else 0.5, comm=comm).aggregate([np.ones(3)])
        except ValueError as e:
            check("different arguments" in str(e), f"settings: unexpected message: {e}")
        else:
            check(False, "mismatched settings did not raise")
    for kwargs in (dict(momentum=1.5), dict(granularity="x"), dict(weighting="x"),
                   dict(ridge=-1), dict(eps=float("nan")), dict(nonfinite="x"),
                   dict(weighting="gram", keep_scale=True)):
        try:
            ConsensusAggregator(comm=comm, **kwargs)
        except ValueError:
            pass
        else:
            check(False, f"bad arguments {kwargs} accepted")
    try:
        ConsensusAggregator(comm=comm).aggregate([np.ones(3, np.int32)])
    except TypeError as e:
        check("int32" in str(e), f"unexpected message: {e}")
    else:
        check(False, "int32 accepted")
    try:
        ConsensusAggregator(comm=comm).aggregate([np.ones(3), np.ones(3, np.float32)])
    except TypeError as e:
        check("share one dtype" in str(e), f"unexpected message: {e}")
    else:
        check(False, "mixed dtypes accepted")
    try:
        ConsensusAggregator(comm=comm).aggregate_flat_(np.ones((4, 2)).T, [0, 8])
    except ValueError as e:
        check("contiguous" in str(e), f"unexpected message: {e}")
    else:
        check(False, "non-contiguous buffer accepted")
    # comm=None: the process-wide communicator
    agg = ConsensusAggregator()
    every = grads_for(150, 20, N)
    step(comm, agg, ConsensusOracle(), every, [20], what="comm=None")
    comm.barrier()


def bench(comm, mib, iters=7):
    """Median time of aggregate_flat_ vs MPI Allreduce(SUM) of the same float32 buffer; the
    methods alternate within every iteration so that machine load hits them alike."""
    import time

    from mpi4py import MPI
    n = mib * 1024 * 1024 // 4
    src = np.random.default_rng(comm.rank).standard_normal(n).astype(np.float32)
    buf = src.copy()
    offsets = np.array([0, n], dtype=np.int64)
    mpi = MPI.COMM_WORLD
    methods = {
        "mpi_allreduce": lambda: mpi.Allreduce(MPI.IN_PLACE, [buf, MPI.FLOAT], MPI.SUM),
        "acga_diagonal": lambda a=ConsensusAggregator(comm=comm): a.aggregate_flat_(buf, offsets),
        "acga_gram": lambda a=ConsensusAggregator(comm=comm, weighting="gram"):
            a.aggregate_flat_(buf, offsets),
    }
    times = {k: [] for k in methods}
    if "--collectives" in sys.argv:
        transport(False)
    for it in range(iters + 2):  # 2 warm-up iterations
        for name, fn in methods.items():
            buf[...] = src
            mpi.Barrier()
            t0 = time.perf_counter()
            fn()
            dt = mpi.allreduce(time.perf_counter() - t0, MPI.MAX)
            if it >= 2:
                times[name].append(dt)
    if comm.rank == 0:
        med = {k: float(np.median(v)) for k, v in times.items()}
        print(f"bench {mib} MiB float32, {comm.size} ranks, median of {iters}: " + ", ".join(
            f"{k} {v * 1e3:.1f} ms" for k, v in med.items())
            + f"; acga_diagonal/mpi {med['acga_diagonal'] / med['mpi_allreduce']:.2f}")


def main():
    comm = setup()
    accord.init(comm)
    if "--bench" in sys.argv:
        bench(comm, int(sys.argv[sys.argv.index("--bench") + 1]))
        return
    check_rules(comm)
    check_gram_ridge0(comm)
    check_state_roundtrip(comm)
    check_inverse_permutation(comm)
    check_degenerate(comm)
    check_nonfinite(comm)
    check_errors(comm)
    comm.barrier()
    if comm.rank == 0:
        print(f"consensus_worker: all checks passed on {comm.size} ranks ({backend()})")


if __name__ == "__main__":
    worker_main(main)
