#!/usr/bin/env python
"""accord kernel benchmark: the fused segment kernels against (a) the per-segment torch code a user
would write without accord and (b) the memory-bandwidth bound measured in the same run.

    python benchmarks/kernels.py                      # CPU, full run, results/kernels_cpu.json
    python benchmarks/kernels.py --device cuda        # GPU (needs accord's CUDA build)
    python benchmarks/kernels.py --quick --json /tmp/k.json   # seconds-long smoke run
    python benchmarks/kernels.py --overhead           # only section 0 (per-call host time)

Sections (every buffer split into 100 segments of random sizes, 16 with --quick; fixed seed):
  0. per-call overhead: host time per call of every op at a small size (4096 elements, 4
     segments) over a loop of calls with no synchronisation inside, next to one torch op of the
     same size; on CUDA also the device time of the batch (CUDA events around it)
  1. adasum pair: ops.segment_dots + ops.adasum_combine(out=, dots=), float32, size sweep
  2. gram + solve_spd + weighted_sum for k vectors (rhs = mean of the vectors, precomputed)
  3. adasum pair in float16 / bfloat16 at the largest size

Bandwidth bound of a row (definition also printed in the metadata): with T_read = time of the
faster of torch.sum and torch.dot (BLAS) over the row's own input buffers (R0 elements read) and
T_copy = time of out.copy_(a) (n reads + n writes), a kernel sequence that reads R and writes n
elements is bound by  T_copy + (R - n) / R0 * T_read.  Both are measured with the same threads,
on the same buffers, interleaved with the kernels being timed (16-bit buffers are measured
through float32 views of the same bytes).
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from dataclasses import dataclass

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import accord  # noqa: E402
from accord import ops  # noqa: E402
from _common import (Column, Table, Timer, collect_metadata, human_bytes,  # noqa: E402
                     load_average, median, note, print_metadata, write_json)

MiB = 1 << 20
SEGMENTS = 100
SEED = 1234
DBL_MIN = float(np.finfo(np.float64).tiny)
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
TARGET_SPEEDUP = 3.0   # fused vs per-segment torch (issue target, largest float32 row)
TARGET_BOUND = 1.3     # fused time / bandwidth bound (float32; on CUDA also float16, bfloat16)
TARGET_DOTS_PEAK = 85.0   # CUDA: segment_dots GB/s as % of the measured copy bandwidth
TARGET_SOLVE_US = 300.0   # CUDA: solve_spd, k = 16, 100 systems

BOUND_DEFINITION = ("bound = T_copy + (R - n)/R0 * T_read; T_copy = out.copy_(a) [n reads + n "
                    "writes], T_read = the faster of torch.sum and torch.dot (BLAS) over the row's "
                    "own R0 input elements; R = elements the fused kernels read, n = elements "
                    "written")


# ---------------------------------------------------------------------------------------------
# Inputs


def make_offsets(n: int, segments: int, seed: int) -> np.ndarray:
    """`segments` random non-empty segment sizes summing to n (uniform random cut points)."""
    rng = np.random.default_rng(seed)
    cuts = np.sort(rng.choice(n - 1, size=segments - 1, replace=False) + 1)
    return np.concatenate([[0], cuts, [n]]).astype(np.int64)


def bounds_of(offsets: np.ndarray) -> list[tuple[int, int]]:
    return [(int(s), int(e)) for s, e in zip(offsets[:-1], offsets[1:])]


def randn(shape, dtype, device, seed):
    g = torch.Generator(device="cpu").manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float32).to(device=device, dtype=dtype)


def as_f32_bytes(t: torch.Tensor) -> torch.Tensor:
    """The same bytes seen as float32 (bandwidth probes only care about bytes)."""
    return t.reshape(-1).view(torch.float32) if t.element_size() != 4 else t.reshape(-1)


# ---------------------------------------------------------------------------------------------
# The torch code a user would write without accord (per segment, float64 reductions)


def torch_adasum_unfused(a, b, bounds, out):
    """Adasum pair rule per segment with plain torch ops (weights (1, 1): wa = wb = 1/2)."""
    for s, e in bounds:
        x, y = a[s:e], b[s:e]
        xd, yd = x.double(), y.double()
        dot, aa, bb = torch.dot(xd, yd), torch.dot(xd, xd), torch.dot(yd, yd)
        ca = torch.where(aa < DBL_MIN, 1.0, 1.0 - 0.5 * dot / aa)
        cb = torch.where(bb < DBL_MIN, 1.0, 1.0 - 0.5 * dot / bb)
        out[s:e] = ca * x + cb * y   # 0-dim float64 scalars: computed in x's dtype


def torch_gram_unfused(v, rhs, bounds, out):
    """Per segment: float64 Gram matrix and rhs products, pseudo-inverse solve, weighted sum."""
    for s, e in bounds:
        vs = v[:, s:e].double()
        g = vs @ vs.T
        r = vs @ rhs[s:e].double()
        x = torch.linalg.pinv(g, hermitian=True) @ r
        out[s:e] = x @ vs


def accord_adasum(a, b, offsets, out):
    dots = ops.segment_dots(a, b, offsets)
    ops.adasum_combine(a, b, offsets, out=out, dots=dots)


def accord_gram(v, rhs, offsets, out):
    g, r = ops.gram(v, offsets, rhs)
    x = ops.solve_spd(g, r)
    ops.weighted_sum(v, x, offsets, out=out)


def max_rel_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    x, ref = x.double(), ref.double()
    return float((x - ref).abs().max() / ref.abs().max().clamp_min(1e-300))


# ---------------------------------------------------------------------------------------------
# Device helpers


class Device:
    def __init__(self, name: str):
        self.name = name
        self.timer = Timer(name)
        self.torch_device = torch.device(name)

    def sync(self):
        if self.name == "cuda":
            torch.cuda.synchronize()

    def end_to_end(self, key: str, device_times: dict) -> float:
        """Median end-to-end seconds of one call of ``key`` in the last timing (CUDA: host clock,
        device idle before and after); on the CPU the timed samples already are that."""
        samples = self.timer.end_to_end.get(key)
        return median(samples) if samples else device_times[key]

    def peak_copy_bandwidth(self, nbytes: int, reps: int) -> float:
        """Bytes/s of dst.copy_(src) (read + write counted) on a buffer of nbytes."""
        src = torch.ones(nbytes // 4, dtype=torch.float32, device=self.torch_device)
        dst = torch.empty_like(src)
        t = median(self.timer.interleaved({"copy": lambda: dst.copy_(src)}, reps, warmup=2)["copy"])
        return 2 * nbytes / t

    def theoretical_bandwidth(self):
        """(bytes/s, how) from the device properties, or (None, why not)."""
        if self.name != "cuda":
            return None, "n/a on cpu (no portable way to read the DRAM configuration)"
        props = torch.cuda.get_device_properties(torch.cuda.current_device())
        clock_khz = getattr(props, "memory_clock_rate", 0) or 0
        bus_bits = getattr(props, "memory_bus_width", 0) or 0
        if clock_khz <= 0 or bus_bits <= 0:
            return None, "memory clock / bus width not exposed by this torch; using measured copy"
        bw = 2 * clock_khz * 1e3 * bus_bits / 8
        return bw, f"2 x {clock_khz / 1e3:.0f} MHz x {bus_bits} bit / 8"


@dataclass
class Run:
    reps: int
    warmup: int
    segments: int
    peak: float                  # bytes/s, measured copy
    theoretical: float | None    # bytes/s, from the device properties (CUDA)

    @staticmethod
    def frac(gbps: float, peak: float | None):
        return None if not peak else 100 * gbps * 1e9 / peak


# ---------------------------------------------------------------------------------------------
# Sections


# fused vs torch timing, bound and bandwidth columns, shared by both tables
TIMING_COLUMNS = [
    Column("fused_us", "(us)", 10, ".1f", "fused"),
    Column("torch_us", "(us)", 10, ".1f", "torch"),
    Column("speedup", "(x)", 7, ".2f"),
    Column("bound_us", "(us)", 9, ".1f", "bound"),
    Column("fused_over_bound", "(x)", 7, ".2f", "f/bound"),
    Column("gbps", "(GB/s)", 7, ".1f", "GB/s"),
    Column("peak_frac", "(%)", 5, ".0f", "peak"),
    Column("theo_frac", "(%)", 5, ".0f", "theo"),
]
RELERR_COLUMN = Column("max_rel_err", "", 8, ".1e", "relerr")

ADASUM_COLUMNS = [
    Column("size", "(B)", 11, "d"),
    Column("count", "(elements)", 10, "d"),
    Column("type", "", 8, "s"),
    Column("op", "", 13, "s"),
    Column("segs", "", 4, "d"),
    *TIMING_COLUMNS,
    Column("dots_us", "(us)", 9, ".1f", "dots"),
    Column("dots_peak", "(%)", 5, ".0f", "dpeak"),
    Column("combine_us", "(us)", 9, ".1f", "combine"),
    Column("fused_e2e_us", "(us)", 9, ".1f", "f e2e"),
    Column("read_gbps", "(GB/s)", 7, ".1f", "read"),
    Column("copy_gbps", "(GB/s)", 7, ".1f", "copy"),
    RELERR_COLUMN,
]

GRAM_COLUMNS = [
    Column("size", "(B)", 11, "d"),
    Column("count", "(elements)", 10, "d"),
    Column("k", "", 3, "d"),
    Column("type", "", 8, "s"),
    Column("op", "", 15, "s"),
    Column("segs", "", 4, "d"),
    *TIMING_COLUMNS,
    Column("gram_us", "(us)", 9, ".1f", "gram"),
    Column("solve_us", "(us)", 8, ".1f", "solve"),
    Column("wsum_us", "(us)", 9, ".1f", "wsum"),
    Column("fused_e2e_us", "(us)", 9, ".1f", "f e2e"),
    RELERR_COLUMN,
]


def adasum_row(dev: Device, nbytes: int, dtype_name: str, run: Run) -> dict:
    dtype = DTYPES[dtype_name]
    esize = torch.empty((), dtype=dtype).element_size()
    n = nbytes // esize
    offsets = make_offsets(n, run.segments, SEED)
    bounds = bounds_of(offsets)
    a = randn(n, dtype, dev.torch_device, SEED + 1)
    b = randn(n, dtype, dev.torch_device, SEED + 2)
    out = torch.zeros_like(a)      # pre-allocated and touched: no first-touch page faults timed
    out_t = torch.zeros_like(a)
    a32, b32, o32 = as_f32_bytes(a), as_f32_bytes(b), as_f32_bytes(out)
    dots = ops.segment_dots(a, b, offsets)

    fns = {
        "fused": lambda: accord_adasum(a, b, offsets, out),
        "torch": lambda: torch_adasum_unfused(a, b, bounds, out_t),
        "dots": lambda: ops.segment_dots(a, b, offsets),
        "combine": lambda: ops.adasum_combine(a, b, offsets, out=out, dots=dots),
        "read_sum": lambda: (torch.sum(a32), torch.sum(b32)),
        "read_dot": lambda: torch.dot(a32, b32),
        "copy": lambda: o32.copy_(a32),
    }
    t = {k: median(v) for k, v in dev.timer.interleaved(fns, run.reps, run.warmup).items()}
    t["read"] = min(t["read_sum"], t["read_dot"])
    e2e = dev.end_to_end("fused", t)
    accord_adasum(a, b, offsets, out)
    torch_adasum_unfused(a, b, bounds, out_t)
    dev.sync()

    reads, writes = 4 * n, n            # dots: a, b; combine: a, b -> out
    bound = t["copy"] + (reads - n) / (2 * n) * t["read"]
    moved = (reads + writes) * esize
    gbps = moved / t["fused"] / 1e9
    return dict(size=nbytes, count=n, type=dtype_name, op="dots+combine", segs=run.segments,
                fused_us=t["fused"] * 1e6, torch_us=t["torch"] * 1e6,
                speedup=t["torch"] / t["fused"], bound_us=bound * 1e6,
                fused_over_bound=t["fused"] / bound, gbps=gbps,
                peak_frac=run.frac(gbps, run.peak), theo_frac=run.frac(gbps, run.theoretical),
                dots_us=t["dots"] * 1e6,
                dots_peak=run.frac(2 * n * esize / t["dots"] / 1e9, run.peak),
                combine_us=t["combine"] * 1e6, fused_e2e_us=e2e * 1e6, read_gbps=2 * n * esize / t["read"] / 1e9,
                copy_gbps=2 * n * esize / t["copy"] / 1e9,
                max_rel_err=max_rel_err(out, out_t), bytes_moved=moved)


def gram_row(dev: Device, n: int, k: int, run: Run) -> dict:
    dtype_name, dtype, esize = "float32", torch.float32, 4
    offsets = make_offsets(n, run.segments, SEED)
    bounds = bounds_of(offsets)
    v = randn((k, n), dtype, dev.torch_device, SEED + 3)
    rhs = v.mean(0)                    # input of both paths, not timed
    out = torch.zeros(n, dtype=dtype, device=dev.torch_device)
    out_t = torch.zeros_like(out)
    g, r = ops.gram(v, offsets, rhs)
    x = ops.solve_spd(g, r)
    v_lo, v_hi = v.reshape(-1)[: k * n // 2], v.reshape(-1)[k * n // 2:]

    fns = {
        "fused": lambda: accord_gram(v, rhs, offsets, out),
        "torch": lambda: torch_gram_unfused(v, rhs, bounds, out_t),
        "gram": lambda: ops.gram(v, offsets, rhs),
        "solve": lambda: ops.solve_spd(g, r),
        "wsum": lambda: ops.weighted_sum(v, x, offsets, out=out),
        "read_sum": lambda: torch.sum(v),
        "read_dot": lambda: torch.dot(v_lo, v_hi),
        "copy": lambda: out.copy_(rhs),
    }
    t = {kk: median(vv) for kk, vv in dev.timer.interleaved(fns, run.reps, run.warmup).items()}
    t["read"] = min(t["read_sum"], t["read_dot"])
    e2e = dev.end_to_end("fused", t)
    accord_gram(v, rhs, offsets, out)
    torch_gram_unfused(v, rhs, bounds, out_t)
    dev.sync()

    reads, writes = (k + 1) * n + k * n, n   # gram: k vectors + rhs; weighted sum: k vectors
    bound = t["copy"] + (reads - n) / (k * n) * t["read"]
    moved = (reads + writes) * esize
    gbps = moved / t["fused"] / 1e9
    return dict(size=k * n * esize, count=n, k=k, type=dtype_name, op="gram+solve+wsum",
                segs=run.segments, fused_us=t["fused"] * 1e6, torch_us=t["torch"] * 1e6,
                speedup=t["torch"] / t["fused"], bound_us=bound * 1e6,
                fused_over_bound=t["fused"] / bound, gbps=gbps, peak_frac=run.frac(gbps, run.peak),
                theo_frac=run.frac(gbps, run.theoretical),
                gram_us=t["gram"] * 1e6, solve_us=t["solve"] * 1e6, wsum_us=t["wsum"] * 1e6,
                fused_e2e_us=e2e * 1e6,
                read_gbps=k * n * esize / t["read"] / 1e9,
                copy_gbps=2 * n * esize / t["copy"] / 1e9,
                max_rel_err=max_rel_err(out, out_t), bytes_moved=moved)


# ---------------------------------------------------------------------------------------------
# Section 0: per-call overhead

OVERHEAD_N = 4096
OVERHEAD_SEGMENTS = 4
OVERHEAD_CALLS = 1000
OVERHEAD_TARGET_US = 15.0  # host time per eager call on torch tensors at small sizes

OVERHEAD_COLUMNS = [
    Column("op", "", 15, "s"),
    Column("path", "", 22, "s"),
    Column("count", "(elements)", 10, "d"),
    Column("host_us", "(us/call)", 10, ".2f", "host"),
    Column("device_us", "(us/call)", 10, ".2f", "device"),
    Column("ref", "", 26, "s", "reference"),
    Column("ref_us", "(us/call)", 10, ".2f", "ref host"),
    Column("over_ref", "(x)", 7, ".2f", "vs ref"),
]


def overhead_cases(dev: Device):
    """(op, path, call, reference name, reference call) for every op at a small size."""
    n, k, L = OVERHEAD_N, 4, OVERHEAD_SEGMENTS
    d = dev.torch_device
    g = torch.Generator().manual_seed(SEED)
    a = torch.randn(n, generator=g).to(d)
    b = torch.randn(n, generator=g).to(d)
    out = torch.empty_like(a)
    off = make_offsets(n, L, SEED)
    off_t = torch.from_numpy(off)
    v = torch.randn(k, n, generator=g).to(d)
    gm, rhs = ops.gram(v, off, v.mean(0))
    w = torch.full((L, k), 0.25, dtype=torch.float64, device=d)
    dots = ops.segment_dots(a, b, off)
    coef = torch.full((L,), 0.5, dtype=torch.float64, device=d)
    gsq = torch.randn(L, k, k, dtype=torch.float64, generator=g).to(d)
    gsq = gsq @ gsq.transpose(1, 2) + torch.eye(k, dtype=torch.float64, device=d)
    import accord._torch_ops  # noqa: F401  registers torch.ops.accord.* (the dispatched path)
    acc = torch.ops.accord
    cases = [
        ("segment_dots", "ops (torch)", lambda: ops.segment_dots(a, b, off),
         "torch.dot(a, b)", lambda: torch.dot(a, b)),
        ("segment_dots", "ops, torch offsets", lambda: ops.segment_dots(a, b, off_t),
         "torch.dot(a, b)", lambda: torch.dot(a, b)),
        ("segment_dots", "torch.ops.accord", lambda: acc.segment_dots(a, b, off_t),
         "torch.dot(a, b)", lambda: torch.dot(a, b)),
        ("adasum_combine", "ops (torch), out=", lambda: ops.adasum_combine(a, b, off, out=out),
         "torch.add(a, b, out=)", lambda: torch.add(a, b, out=out)),
        ("adasum_combine", "ops (torch), dots=", lambda: ops.adasum_combine(a, b, off, out=out,
                                                                            dots=dots),
         "torch.add(a, b, out=)", lambda: torch.add(a, b, out=out)),
        ("adasum_combine", "torch.ops.accord", lambda: acc.adasum_combine_out(
            a, b, off_t, None, [1.0, 1.0], out),
         "torch.add(a, b, out=)", lambda: torch.add(a, b, out=out)),
        ("gram", "ops (torch), k=4", lambda: ops.gram(v, off),
         "torch.mm(v, v.T)", lambda: torch.mm(v, v.T)),
        ("solve_spd", "ops (torch), k=4", lambda: ops.solve_spd(gsq, rhs),
         "torch.linalg.solve", lambda: torch.linalg.solve(gsq, rhs)),
        ("weighted_sum", "ops (torch), out=", lambda: ops.weighted_sum(v, w, off, out=out),
         "torch.mv(v.T, w[0], out=)", lambda: torch.mv(v.T, w[0].float(), out=out)),
        ("axpby", "ops (torch), out=", lambda: ops.axpby(a, b, coef, coef, off, out=out),
         "torch.add(a, b, alpha=, out=)", lambda: torch.add(a, b, alpha=0.5, out=out)),
        ("pull_", "ops (torch)", lambda: ops.pull_(out, b, 0.5),
         "out.lerp_(b, 0.5)", lambda: out.lerp_(b, 0.5)),
    ]
    if dev.name == "cpu":
        an, bn, on = a.numpy(), b.numpy(), out.numpy()
        cases[1:1] = [("segment_dots", "ops (numpy)", lambda: ops.segment_dots(an, bn, off),
                       "numpy.dot(a, b)", lambda: np.dot(an, bn))]
        cases.insert(5, ("adasum_combine", "ops (numpy), out=",
                         lambda: ops.adasum_combine(an, bn, off, out=on),
                         "numpy.add(a, b, out=)", lambda: np.add(an, bn, out=on)))
    return cases


def per_call(dev: Device, fn, calls: int) -> tuple[float, float | None]:
    """(host seconds per call, device seconds per call or None): the loop has no
    synchronisation inside; on CUDA, events recorded around the batch give its device span."""
    import time
    for _ in range(20):
        fn()
    dev.sync()
    if dev.name == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    host = (time.perf_counter() - t0) / calls
    device = None
    if dev.name == "cuda":
        end.record()
        end.synchronize()
        device = start.elapsed_time(end) * 1e-3 / calls
    return host, device


def overhead_rows(dev: Device, reps: int, calls: int) -> list[dict]:
    rows = []
    for op, path, fn, ref_name, ref in overhead_cases(dev):
        mine, theirs, dmine = [], [], []
        for _ in range(reps):  # interleaved with the reference: drifts hit both alike
            h, dv = per_call(dev, fn, calls)
            mine.append(h)
            dmine.append(dv)
            theirs.append(per_call(dev, ref, calls)[0])
        host, refh = median(mine), median(theirs)
        rows.append({"op": op, "path": path, "count": OVERHEAD_N, "host_us": host * 1e6,
                     "device_us": None if dmine[0] is None else median(dmine) * 1e6,
                     "ref": ref_name, "ref_us": refh * 1e6, "over_ref": host / refh})
    return rows


def overhead_section(dev: Device, reps: int, calls: int) -> tuple[list[dict], bool]:
    note(f"section 0: per-call overhead, {OVERHEAD_N} float32 elements in {OVERHEAD_SEGMENTS} "
         f"segments, {calls} calls per timing, median of {reps} (host = wall time of the loop / "
         "calls, no synchronisation inside; device = CUDA events around the batch / calls)")
    t0 = Table(OVERHEAD_COLUMNS)
    t0.print_header()
    for row in overhead_rows(dev, reps, calls):
        t0.print_row(row)
    eager = [r for r in t0.rows if r["path"].startswith("ops (torch)")]
    worst = max(eager, key=lambda r: r["host_us"])
    ok = worst["host_us"] <= OVERHEAD_TARGET_US
    note(f"target eager ops on torch tensors <= {OVERHEAD_TARGET_US:g} us host time per call: "
         f"worst {worst['op']} {worst['host_us']:.1f} us  {'PASS' if ok else 'MISS'}")
    return t0.rows, ok


# ---------------------------------------------------------------------------------------------


def cuda_verdicts(adasum_rows: list[dict], gram_rows: list[dict]) -> dict:
    """The GPU targets: dots+combine within TARGET_BOUND of the bound in every dtype,
    segment_dots at TARGET_DOTS_PEAK % of the copy bandwidth, solve_spd k=16 in
    TARGET_SOLVE_US."""
    out = {}
    for r in adasum_rows:
        ok_b = r["fused_over_bound"] <= TARGET_BOUND
        ok_d = (r["dots_peak"] or 0) >= TARGET_DOTS_PEAK
        out[f"bound_{r['type']}"], out[f"dots_peak_{r['type']}"] = ok_b, ok_d
        note(f"target {r['type']} fused/bound <= {TARGET_BOUND:g}: {r['fused_over_bound']:.2f}  "
             f"{'PASS' if ok_b else 'MISS'};  segment_dots >= {TARGET_DOTS_PEAK:g}% of copy: "
             f"{r['dots_peak']:.0f}%  {'PASS' if ok_d else 'MISS'}")
    for r in gram_rows:
        if r["k"] == 16:
            ok = r["solve_us"] <= TARGET_SOLVE_US
            out["solve_k16"] = ok
            note(f"target solve_spd k=16, {r['segs']} systems <= {TARGET_SOLVE_US:g} us: "
                 f"{r['solve_us']:.1f} us  {'PASS' if ok else 'MISS'}")
    return out


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--quick", action="store_true", help="small smoke run (a few seconds)")
    p.add_argument("--json", default=None,
                   help="output path (default results/kernels_<device>[_quick].json)")
    p.add_argument("--reps", type=int, default=None, help="timed repetitions per measurement "
                   "(median reported; default 9, --quick 2)")
    p.add_argument("--overhead", action="store_true",
                   help="run only section 0 (per-call host time of every op at a small size)")
    p.add_argument("--calls", type=int, default=OVERHEAD_CALLS,
                   help=f"calls per overhead timing (default {OVERHEAD_CALLS})")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (default: accord's OpenMP threads, for a fair comparison)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    info = accord.build_info()
    omp_threads = int(info.get("omp_max_threads", 1))
    torch.set_num_threads(args.threads or omp_threads)
    if args.device == "cuda":
        if not torch.cuda.is_available():
            print("kernels.py: --device cuda but torch sees no GPU", file=sys.stderr)
            return 2
        if not info.get("cuda"):
            print("kernels.py: --device cuda but accord was built without CUDA kernels "
                  "(reinstall with ACCORD_WITH_CUDA=1)", file=sys.stderr)
            return 2
    dev = Device(args.device)

    if args.quick:
        reps, warmup, segments = args.reps or 2, 1, 16
        sizes = [256 * 1024]
        half_size = 256 * 1024
        gram_n, gram_ks = 64 * 1024, [4]
    else:
        reps, warmup, segments = args.reps or 9, 2, SEGMENTS
        sizes = [1 * MiB, 4 * MiB, 16 * MiB, 64 * MiB]
        half_size = 64 * MiB
        gram_n, gram_ks = 4 * MiB, [4, 8, 16]
    largest = max(sizes)

    # the overhead-only run moves no large buffers: no bandwidth reference needed
    peak = dev.peak_copy_bandwidth(2 * largest, reps) if not args.overhead else float("nan")
    theo, theo_how = dev.theoretical_bandwidth()
    run = Run(reps, warmup, segments, peak, theo)
    extra = {
        "device": (torch.cuda.get_device_name() if args.device == "cuda" else "cpu"),
        "torch_threads": torch.get_num_threads(),
        "omp_max_threads": omp_threads,
        "repetitions": f"{reps} timed (median), {warmup} warm-up, all measurements of a row "
                       "interleaved",
        "timing": ("host wall time of one call" if args.device == "cpu" else
                   f"device time: CUDA events around {dev.timer.batch} back-to-back calls / "
                   f"{dev.timer.batch}; 'f e2e' = end-to-end time of one fused call (device "
                   "idle before, host clock until it is idle again)"),
        "dpeak": "segment_dots GB/s (2n elements read) as % of the measured copy bandwidth",
        "segments": f"{segments}, random sizes (uniform cut points), seed {SEED}",
        "fused_path": "adasum: segment_dots + adasum_combine(out=, dots=); gram: gram(rhs) + "
                      "solve_spd + weighted_sum(out=); outputs pre-allocated",
        "torch_path": "per segment, Python loop: adasum: float64 dot/norms via .double() + "
                      "torch.dot, out[s:e] = ca*x + cb*y; gram: .double() slice, V V^T, V rhs, "
                      "linalg.pinv(hermitian) @ r, out[s:e] = x @ V",
        "bound": BOUND_DEFINITION,
        "GB/s": "bytes the fused kernels must move (adasum: 4n reads + n writes; gram: "
                "(2k+1)n reads + n writes) / fused time",
        "peak": f"GB/s as % of measured copy bandwidth dst.copy_(src) on "
                f"{human_bytes(2 * largest)}: {peak / 1e9:.1f} GB/s (read+write bytes)",
        "theo": ("GB/s as % of the theoretical DRAM bandwidth: "
                 + (f"{theo / 1e9:.1f} GB/s ({theo_how})" if theo else theo_how)),
        "relerr": "max |fused - torch| / max |torch| over the output",
    }
    meta = collect_metadata(**extra)
    print_metadata(meta)

    t0_rows, verdicts_0 = overhead_section(dev, 3 if args.quick else max(reps // 2, 3),
                                           100 if args.quick else args.calls)
    if args.overhead:
        path = args.json or f"results/overhead_{args.device}.json"
        write_json(path, {"metadata": meta, "overhead": t0_rows,
                          "targets": {"host_us_max": OVERHEAD_TARGET_US, "pass": verdicts_0}})
        note(f"wrote {path}")
        return 0
    note("")

    note("section 1: adasum pair (segment_dots + adasum_combine), float32 size sweep")
    t1 = Table(ADASUM_COLUMNS)
    t1.print_header()
    for nbytes in sizes:
        t1.print_row(adasum_row(dev, nbytes, "float32", run))
    verdicts = {"overhead": verdicts_0}
    top = next(r for r in t1.rows if r["size"] == largest and r["type"] == "float32")
    verdicts["speedup"] = top["speedup"] >= TARGET_SPEEDUP
    verdicts["bound"] = top["fused_over_bound"] <= TARGET_BOUND
    size_txt = human_bytes(largest)
    note(f"target fused >= {TARGET_SPEEDUP:g}x faster than torch at {size_txt} float32: "
         f"{top['speedup']:.2f}x  {'PASS' if verdicts['speedup'] else 'MISS'}")
    note(f"target fused/bound <= {TARGET_BOUND:g} at {size_txt} float32: "
         f"{top['fused_over_bound']:.2f}  {'PASS' if verdicts['bound'] else 'MISS'}")

    note("")
    note("section 2: gram(rhs = mean) + solve_spd + weighted_sum, float32")
    t2 = Table(GRAM_COLUMNS)
    t2.print_header()
    for k in gram_ks:
        t2.print_row(gram_row(dev, gram_n, k, run))

    note("")
    note(f"section 3: adasum pair at {human_bytes(half_size)} per buffer, 16-bit types")
    t3 = Table(ADASUM_COLUMNS)
    t3.print_header()
    for dtype_name in ("float16", "bfloat16"):
        t3.print_row(adasum_row(dev, half_size, dtype_name, run))

    if args.device == "cuda" and not args.quick:
        verdicts.update(cuda_verdicts([top] + t3.rows, t2.rows))

    meta["load_average_end"] = load_average()
    note(f"load average at the end: {meta['load_average_end']} (start: {meta['load_average']}; "
         f"above ~{os.cpu_count()} other work was competing for the cores)")
    path = args.json or f"results/kernels_{args.device}{'_quick' if args.quick else ''}.json"
    write_json(path, {"metadata": meta, "targets": {
        "speedup_min": TARGET_SPEEDUP, "fused_over_bound_max": TARGET_BOUND,
        "row": {"size": largest, "type": "float32"},
        "pass": verdicts}, "overhead": t0_rows, "adasum": t1.rows, "gram": t2.rows, "adasum_16bit": t3.rows})
    note(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
