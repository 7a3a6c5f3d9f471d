"""``python -m accord.bench allreduce``: raw allreduce vs accord's Sum / Average / Adasum.

    mpirun -np 4 python -m accord.bench allreduce                  # 4 KiB .. 64 MiB, float32
    mpirun -np 2 python -m accord.bench allreduce -b 1M -e 1M -n 50 --dtype float16
    mpirun -np 2 python -m accord.bench allreduce --quick --json /tmp/ar.json
    torchrun --nproc-per-node 2 -m accord.bench allreduce --backend gloo

Rows per size (nccl-tests style; every rank holds one contiguous 1-D buffer of ``size`` bytes):

    mpi-raw / gloo-raw  the transport's own in-place allreduce(SUM) (mpi4py
                        ``Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)`` on a numpy buffer, or
                        ``torch.distributed.all_reduce``); not run for 16-bit types over MPI,
                        which has no portable 16-bit float reduction
    accord-sum          accord.allreduce_(buf, op=accord.Sum)
    accord-avg          accord.allreduce_(buf, op=accord.Average)
    accord-adasum       accord.allreduce_(buf, op=accord.Adasum)
    adasum-fp16         accord.allreduce_(buf, op=accord.Adasum,
                        compression=accord.Compression.fp16): the VHDD exchanges carry float16,
                        the combine stays in the buffer's dtype (checked with float16's
                        tolerance)
    accord-consensus    accord.consensus.ConsensusAggregator().aggregate_flat_(buf, [0, n]), in
                        place like the others
    adasum-exchange     Adasum's sendrecvs alone (AdasumReducer.allreduce_(compute=False): the
                        same messages, no kernels, no dot allreduces): the transport floor under
                        accord-adasum; its output is not a reduction (#wrong -)
    adasum-compute      the rest alone (exchange=False: the kernels and dot allreduces on
                        whatever the scratch holds, no buffer sendrecvs; #wrong -)

``--framework torch`` runs the accord rows on a CPU torch tensor instead of a numpy array (row
names end in ``/torch``); ``both`` runs each accord row twice, interleaved, so the two frameworks'
times are comparable within one run. The tensor shares the numpy buffer's memory
(``torch.from_numpy``, made once per size): both see the same bytes and the same restore.

Columns: time is the max over ranks of each rank's median over ``--iters`` timed iterations
(``--warmup`` untimed ones first); before every iteration the input is restored (untimed) and
the ranks pass a barrier. Implementations are interleaved iteration by iteration, so slow
drifts hit them alike and their ratios are meaningful. algbw = size / time; busbw = algbw *
2(N-1)/N (nccl-tests' allreduce bus bandwidth). #wrong: elements, summed over ranks, of one
separate untimed call that differ from a float64 numpy oracle built from every rank's seeded
input by more than a dtype tolerance times the largest expected magnitude (sum / mean; the
Adasum tree for adasum); for consensus (stateful, no float oracle) the elements that are
non-finite or differ bitwise from rank 0's result (every rank must get identical bits); ``-``
above ``--check-max-bytes`` (default 16 MiB).

After the table: Adasum's time relative to the raw allreduce at the largest size where both ran
(with the adasum-exchange and adasum-compute rows, also each of those parts alone), Adasum's time
at the smallest size, and the count of out-of-bounds values. ``--check-targets`` adds the
performance targets (float32: Adasum at 64 MiB takes at most 0.7x the time of the raw MPI
allreduce(SUM) of the same run; Adasum at 4 KiB on 2 ranks takes under 100 us) as PASS / MISS
lines and exits with status 1 when one is missed or the sweep did not measure it.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import socket
import statistics
import sys
import time
import traceback

import numpy as np

from ..testing import adasum_tree
from .table import (Column, Table, cpu_name, human_bytes, load_average, note, parse_bytes,
                    print_metadata, write_json)

DTYPES = ("float32", "float64", "float16", "bfloat16")
# Relative to the largest expected magnitude: float64 only differs by summation order; lower
# precisions round each Adasum level's output (about log2(N)+1 roundings).
TOL = {"float64": 1e-10, "float32": 2e-5, "float16": 6e-3, "bfloat16": 5e-2}
SEED = 20240611
ADASUM_RATIO_TARGET = (64 << 20, 0.7)     # (size, max adasum/raw time ratio)
ADASUM_LATENCY_TARGET = (4 << 10, 100.0)  # (size, max adasum time in us, 2 ranks)
OPS = ("raw", "sum", "avg", "adasum", "adasum-fp16", "consensus", "exchange", "compute")
QUICK = {"minbytes": "4K", "maxbytes": "256K", "stepfactor": 4, "iters": 5, "warmup": 1}


# ---------------------------------------------------------------------------------------------
# Options


def parse_args(argv):
    ap = argparse.ArgumentParser(
        prog="python -m accord.bench allreduce",
        description="raw allreduce vs accord Sum / Average / Adasum over a size sweep "
                    "(launch with mpirun, or torchrun for --backend gloo)")
    ap.add_argument("-b", "--minbytes", default=None, help="smallest size (default 4K)")
    ap.add_argument("-e", "--maxbytes", default=None, help="largest size (default 64M)")
    ap.add_argument("-f", "--stepfactor", type=int, default=None,
                    help="multiply the size by this factor each step (default 2)")
    ap.add_argument("-n", "--iters", type=int, default=None, help="timed iterations (20)")
    ap.add_argument("-w", "--warmup", type=int, default=None, help="warmup iterations (5)")
    ap.add_argument("--dtype", choices=DTYPES, default="float32")
    ap.add_argument("--backend", choices=("mpi", "gloo"), default="mpi",
                    help="mpi (mpirun, mpi4py) or gloo (torchrun, torch.distributed)")
    ap.add_argument("--json", metavar="PATH", default=None, help="also write rows + metadata")
    ap.add_argument("--quick", action="store_true",
                    help="small sweep, few iterations (4K..256K x4, 5 iters, 1 warmup)")
    ap.add_argument("--check-max-bytes", default="16M",
                    help="largest size checked against the float64 oracle (default 16M)")
    ap.add_argument("--no-consistency-check", action="store_true",
                    help="accord.set_consistency_check(False) (one small allreduce less per call)")
    ap.add_argument("--check-targets", action="store_true",
                    help="also check the performance targets (Adasum at 64 MiB <= 0.7x the raw "
                         "allreduce; Adasum at 4 KiB < 100 us on 2 ranks) and exit 1 if one is "
                         "missed or not measured")
    ap.add_argument("--framework", choices=("numpy", "torch", "both"), default="numpy",
                    help="buffers of the accord rows over MPI: numpy arrays (default), CPU torch "
                         "tensors, or both interleaved (rows '<impl>/torch')")
    ap.add_argument("--ops", default=",".join(OPS),
                    help=f"comma list of rows to run: {','.join(OPS)}")
    a = ap.parse_args(argv)
    base = QUICK if a.quick else {"minbytes": "4K", "maxbytes": "64M", "stepfactor": 2,
                                  "iters": 20, "warmup": 5}
    for k, v in base.items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    a.minbytes, a.maxbytes = parse_bytes(a.minbytes), parse_bytes(a.maxbytes)
    a.check_max_bytes = parse_bytes(a.check_max_bytes)
    if a.minbytes <= 0 or a.maxbytes < a.minbytes:
        ap.error("need 0 < minbytes <= maxbytes")
    if a.stepfactor < 2:
        ap.error("stepfactor must be >= 2")
    if a.iters < 1 or a.warmup < 0:
        ap.error("need iters >= 1 and warmup >= 0")
    a.ops = [o.strip() for o in a.ops.split(",") if o.strip()]
    bad = set(a.ops) - set(OPS)
    if bad:
        ap.error(f"unknown --ops entries: {sorted(bad)}")
    return a


def sizes(minbytes: int, maxbytes: int, factor: int):
    s, out = minbytes, []
    while s <= maxbytes:
        out.append(s)
        s *= factor
    return out


# ---------------------------------------------------------------------------------------------
# Transport set-up


class Setup:
    """Communicator, framework and the raw baseline for one backend/dtype."""

    def __init__(self, backend: str, dtype: str):
        import accord
        self.backend, self.dtype = backend, dtype
        if backend == "mpi":
            from mpi4py import MPI
            self.MPI = MPI
            self.comm = accord.init(backend="mpi")  # a private duplicate of COMM_WORLD
            self.mpi = self.comm.mpi_comm
            self.use_torch = dtype == "bfloat16"  # numpy has no bfloat16
            lib = MPI.Get_library_version().strip().splitlines()[0].split(",")[0]
            import mpi4py
            self.transport = f"{lib} (mpi4py {mpi4py.__version__})"
            self.raw_name = "mpi-raw"
            # MPI has no portable 16-bit float reduction: no raw row for 16-bit types.
            self.raw = self._mpi_raw if dtype in ("float32", "float64") else None
        else:
            import torch
            import torch.distributed as dist
            self.owns_group = not dist.is_initialized()
            if self.owns_group:
                dist.init_process_group("gloo")
            self.dist = dist
            self.comm = accord.init()
            self.use_torch = True
            self.transport = f"torch.distributed {dist.get_backend()} (torch {torch.__version__})"
            self.raw_name = f"{dist.get_backend()}-raw"
            self.raw = self._dist_raw
        if self.use_torch:
            import torch
            self.torch = torch
            self.tdtype = getattr(torch, dtype)
        self.N, self.rank = self.comm.size, self.comm.rank
        self.itemsize = {"float32": 4, "float64": 8, "float16": 2, "bfloat16": 2}[dtype]

    def close(self) -> None:
        """Tear down what this benchmark set up (gloo's threads must stop before exit)."""
        import accord
        accord.shutdown()
        if self.backend != "mpi" and self.owns_group:
            self.dist.destroy_process_group()

    def _mpi_raw(self, buf):
        self.mpi.Allreduce(self.MPI.IN_PLACE, buf, op=self.MPI.SUM)
        return buf

    def _dist_raw(self, buf):
        self.dist.all_reduce(buf)
        return buf

    # inputs ------------------------------------------------------------------------------

    def input64(self, rank: int, count: int) -> np.ndarray:
        """Rank ``rank``'s input as it is stored (after rounding to dtype), widened to float64.
        Any rank can regenerate any other rank's input from the seed."""
        rng = np.random.default_rng((SEED, rank, count))
        base = np.float64 if self.dtype == "float64" else np.float32
        x = rng.standard_normal(count, dtype=base)
        if self.dtype == "float16":
            x = x.astype(np.float16)
        elif self.dtype == "bfloat16":
            t = self.torch.from_numpy(x).to(self.torch.bfloat16)
            return t.to(self.torch.float64).numpy()
        return x.astype(np.float64)

    def buffer(self, rank: int, count: int):
        """This rank's input buffer in the framework the benchmark runs on."""
        rng = np.random.default_rng((SEED, rank, count))
        base = np.float64 if self.dtype == "float64" else np.float32
        x = rng.standard_normal(count, dtype=base)
        if self.use_torch:
            return self.torch.from_numpy(x).to(self.tdtype)
        return x.astype(self.dtype, copy=False)

    def copy_(self, dst, src):
        if self.use_torch:
            dst.copy_(src)
        else:
            np.copyto(dst, src)

    def clone(self, src):
        return src.clone() if self.use_torch else src.copy()

    def bits(self, x) -> np.ndarray:
        """The raw bits of ``x`` as a flat unsigned-integer numpy array."""
        if self.use_torch:
            x = x.detach().reshape(-1)
            x = x.view(self.torch.int16) if x.element_size() == 2 else x
            x = x.numpy()
        a = np.ascontiguousarray(x).reshape(-1)
        return a.view(f"u{a.itemsize}")

    def as64(self, x) -> np.ndarray:
        if self.use_torch:
            return x.detach().to(self.torch.float64).numpy()
        return np.asarray(x, dtype=np.float64)


def _consensus(setup: Setup):
    """(aggregator, None) or (None, reason) for the accord-consensus row."""
    try:
        from accord.consensus import ConsensusAggregator
    except ImportError as e:
        return None, f"accord.consensus not importable ({e})"
    errors = []
    for kwargs in ({"comm": setup.comm}, {}):
        try:
            return ConsensusAggregator(**kwargs), None
        except TypeError as e:
            errors.append(str(e))
    return None, "ConsensusAggregator() could not be constructed: " + "; ".join(errors)


class Impl:
    __slots__ = ("name", "redop", "run", "times", "tol_dtype")

    def __init__(self, name, redop, run, tol_dtype=None):
        self.name, self.redop, self.run, self.times = name, redop, run, []
        self.tol_dtype = tol_dtype  # checked with this dtype's tolerance (default: the buffer's)


def _torch_view_of(setup: Setup):
    """buf -> a torch tensor sharing buf's memory, made once per buffer."""
    import torch
    views = {}

    def view(buf):
        key = (buf.ctypes.data, buf.size)
        t = views.get(key)
        if t is None:
            views.clear()  # one work buffer per size: keep only the current one
            t = views[key] = torch.from_numpy(buf)
        return t
    return view


def make_impls(setup: Setup, ops, notes, framework="numpy"):
    impls = _make_impls(setup, ops, notes)
    if setup.use_torch or framework == "numpy":
        return impls
    view = _torch_view_of(setup)
    out = []
    for impl in impls:
        torch_impl = None
        if impl.name.startswith(("accord-", "adasum-")):
            torch_impl = Impl(impl.name + "/torch", impl.redop,
                              lambda buf, run=impl.run: (run(view(buf)), buf)[1])
        if framework == "both":
            out.append(impl)
            if torch_impl is not None:
                out.append(torch_impl)
        else:
            out.append(torch_impl if torch_impl is not None else impl)
    return out


def _make_impls(setup: Setup, ops, notes):
    import accord
    impls = []
    if "raw" in ops:
        if setup.raw is not None:
            impls.append(Impl(setup.raw_name, "sum", setup.raw))
        else:
            notes.append(f"no {setup.raw_name} rows: MPI has no portable {setup.dtype} reduction")
    for key, name, op in (("sum", "accord-sum", accord.Sum), ("avg", "accord-avg", accord.Average),
                          ("adasum", "accord-adasum", accord.Adasum)):
        if key in ops:
            impls.append(Impl(name, key, lambda buf, op=op: accord.allreduce_(buf, op=op)))
    if "adasum-fp16" in ops:
        impls.append(Impl("adasum-fp16", "adasum", lambda buf: accord.allreduce_(
            buf, op=accord.Adasum, compression=accord.Compression.fp16), "float16"))
    if "consensus" in ops:
        agg, why = _consensus(setup)
        if agg is None:
            notes.append(f"no accord-consensus rows: {why}")
        else:
            impls.append(Impl("accord-consensus", "consensus", lambda buf, agg=agg: agg.aggregate_flat_(
                buf, np.array([0, len(buf)], dtype=np.int64))))
    from accord.adasum import reducer_for
    for key, flags in (("exchange", {"compute": False}), ("compute", {"exchange": False})):
        if key in ops:
            impls.append(Impl(f"adasum-{key}", "none", lambda buf, f=flags: reducer_for(
                setup.comm).allreduce_(buf, np.array([0, len(buf)], dtype=np.int64), **f)))
    return impls


# ---------------------------------------------------------------------------------------------
# One size


def expected(setup: Setup, count: int, redops):
    every = [setup.input64(r, count) for r in range(setup.N)]
    out = {}
    if "sum" in redops or "avg" in redops:
        s = np.sum(every, axis=0)
        out["sum"], out["avg"] = s, s / setup.N
    if "adasum" in redops:
        out["adasum"] = adasum_tree(every, np.array([0, count], dtype=np.int64))
    return out


def count_wrong(got64: np.ndarray, exp: np.ndarray, dtype: str) -> int:
    scale = max(float(np.abs(exp).max()), 1e-300) if exp.size else 1.0
    ok = np.abs(got64 - exp) <= TOL[dtype] * scale  # NaN compares False: counted as wrong
    return int(ok.size - np.count_nonzero(ok))


def count_not_identical(setup: Setup, result) -> int:
    """Elements of ``result`` that are non-finite or differ bitwise from rank 0's."""
    mine = setup.bits(result)
    root = mine.copy()
    setup.comm.broadcast_(root, 0)
    bad = (mine != root) | ~np.isfinite(setup.as64(result))
    return int(np.count_nonzero(bad))


def run_size(setup: Setup, impls, nbytes: int, args):
    count = max(nbytes // setup.itemsize, 1)
    nbytes = count * setup.itemsize
    pristine = setup.buffer(setup.rank, count)
    work = setup.clone(pristine)
    comm = setup.comm

    # correctness: one separate untimed call per implementation
    checked = nbytes <= args.check_max_bytes
    wrong = np.full(len(impls), -1, dtype=np.int64)
    oracle = expected(setup, count, {i.redop for i in impls}) if checked else {}
    for k, impl in enumerate(impls):
        setup.copy_(work, pristine)
        comm.barrier()
        result = impl.run(work)
        if impl.redop in oracle:
            wrong[k] = count_wrong(setup.as64(result), oracle[impl.redop],
                                   impl.tol_dtype or setup.dtype)
        elif impl.redop == "consensus" and checked:
            wrong[k] = count_not_identical(setup, result)
    del oracle
    # -1 (unchecked) stays negative after the sum because every rank agrees on what is checked
    wrong = comm.allreduce_small(wrong, "sum")

    # timing: implementations interleaved, barrier before every iteration
    for impl in impls:
        impl.times = []
    perf = time.perf_counter
    for it in range(args.warmup + args.iters):
        for impl in impls:
            setup.copy_(work, pristine)
            comm.barrier()
            t0 = perf()
            impl.run(work)
            t1 = perf()
            if it >= args.warmup:
                impl.times.append(t1 - t0)
    local = np.array([statistics.median(i.times) for i in impls], dtype=np.float64)
    worst = comm.allreduce_small(local, "max")

    rows = []
    bus = 2.0 * (setup.N - 1) / setup.N
    for k, impl in enumerate(impls):
        t = float(worst[k])
        algbw = nbytes / t / 1e9 if t > 0 else float("nan")
        rows.append({
            "size": nbytes, "count": count, "type": setup.dtype, "redop": impl.redop,
            "impl": impl.name, "time_us": t * 1e6, "algbw": algbw, "busbw": algbw * bus,
            "wrong": int(wrong[k]) if wrong[k] >= 0 else None,
        })
    return rows


# ---------------------------------------------------------------------------------------------
# Output


COLUMNS = [
    Column("size", "(B)", 12, "d"),
    Column("count", "(elements)", 12, "d"),
    Column("type", "", 9, "s"),
    Column("redop", "", 9, "s"),
    Column("impl", "", 16, "s"),
    Column("time_us", "(us)", 11, ".1f", title="time"),
    Column("algbw", "(GB/s)", 8, ".3f"),
    Column("busbw", "(GB/s)", 8, ".3f"),
    Column("wrong", "", 7, "d", title="#wrong"),
]


def metadata(setup: Setup, args, impls) -> dict:
    import accord
    info = accord.build_info()
    meta = {
        "benchmark": "accord.bench allreduce",
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "load_average": load_average(),
        "ranks": setup.N,
        "backend": setup.backend,
        "transport": setup.transport,
        "dtype": setup.dtype,
        "buffers": "torch tensors" if setup.use_torch else {
            "numpy": "numpy arrays", "torch": "CPU torch tensors (accord rows)",
            "both": "numpy arrays; rows '/torch': CPU torch tensors on the same memory"}[
            args.framework],
        "accord": info,
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "(unset)"),
        "python": f"{platform.python_version()} numpy {np.__version__}",
        "warmup/iters": f"{args.warmup}/{args.iters}",
        "sweep": f"{human_bytes(args.minbytes)} .. {human_bytes(args.maxbytes)} "
                 f"x{args.stepfactor}",
        "consistency_check": not args.no_consistency_check,
        "impls": [i.name for i in impls],
        "time": "max over ranks of the per-rank median; barrier and untimed input restore "
                "before each iteration; implementations interleaved",
        "busbw": "algbw * 2(N-1)/N",
        "#wrong": f"elements (summed over ranks) off the float64 oracle by > tol * max|expected| "
                  f"(tol {TOL[setup.dtype]:g}); consensus: non-finite or not bitwise equal to "
                  f"rank 0's; checked up to {human_bytes(args.check_max_bytes)}",
    }
    if "torch" in sys.modules:
        meta["python"] += f" torch {sys.modules['torch'].__version__}"
    return meta



def _by(rows):
    return {(r["size"], r["impl"]): r for r in rows}


def _ratio_lines(by, setup: Setup, size: int):
    """accord-adasum's time over the raw allreduce's at ``size`` (both rows must exist), and
    the share of each half of Adasum measured alone when those rows exist too."""
    a, r = by[(size, "accord-adasum")], by[(size, setup.raw_name)]
    out = [f"adasum/{setup.raw_name} at {human_bytes(size)}: {a['time_us'] / r['time_us']:.2f}x "
           f"(adasum {a['time_us'] / 1e3:.3f} ms, {setup.raw_name} {r['time_us'] / 1e3:.3f} ms, "
           f"{setup.N} ranks)"]
    parts = [(impl, by.get((size, f"adasum-{impl}"))) for impl in ("exchange", "compute")]
    if all(p is not None for _, p in parts):
        out.append("  measured alone: " + ", ".join(
            f"adasum-{impl} {p['time_us'] / r['time_us']:.2f}x" for impl, p in parts) +
            f"; sum {sum(p['time_us'] for _, p in parts) / r['time_us']:.2f}x")
    return out


def ratios(rows, setup: Setup):
    """Information lines: Adasum's time relative to the raw allreduce at the largest size
    where both ran, and Adasum's time at the smallest size."""
    by = _by(rows)
    out = []
    both = [s for (s, impl) in by if impl == "accord-adasum" and (s, setup.raw_name) in by]
    if both:
        out += _ratio_lines(by, setup, max(both))
    small = [s for (s, impl) in by if impl == "accord-adasum"]
    if small:
        size = min(small)
        t = by[(size, "accord-adasum")]["time_us"]
        out.append(f"adasum at {human_bytes(size)}: {t:.1f} us ({setup.N} ranks)")
    return out


def targets(rows, setup: Setup):
    """The performance targets (``--check-targets``) as (lines, all met).

    Adasum at 64 MiB takes at most 0.7x the raw allreduce's time, and Adasum at 4 KiB on 2
    ranks takes under 100 us (both defined for float32). A target the sweep did not measure
    counts as not met; the latency target is not applicable to other rank counts.
    """
    by = _by(rows)
    out, ok = [], True
    fp_note = "" if setup.dtype == "float32" else " (target defined for float32)"
    size, limit = ADASUM_RATIO_TARGET
    name = f"adasum/{setup.raw_name} time at {human_bytes(size)} <= {limit:g}x"
    if (size, "accord-adasum") not in by or (size, setup.raw_name) not in by:
        ok = False
        out.append(f"target {name}: NOT MEASURED (needs the accord-adasum and {setup.raw_name} "
                   f"rows at {human_bytes(size)}: include it in the sweep, e.g. -e 64M)")
    else:
        ratio = by[(size, "accord-adasum")]["time_us"] / by[(size, setup.raw_name)]["time_us"]
        ok &= ratio <= limit
        out.append(f"target {name}: {ratio:.3f}x {'PASS' if ratio <= limit else 'MISS'}{fp_note}")
    size, limit = ADASUM_LATENCY_TARGET
    name = f"adasum latency at {human_bytes(size)} < {limit:g} us (2 ranks)"
    a = by.get((size, "accord-adasum"))
    if a is None:
        ok = False
        out.append(f"target {name}: NOT MEASURED (needs the accord-adasum row at "
                   f"{human_bytes(size)}: include it in the sweep, e.g. -b 4K)")
    elif setup.N != 2:
        out.append(f"target {name}: n/a with {setup.N} ranks ({a['time_us']:.1f} us)")
    else:
        ok &= a["time_us"] < limit
        out.append(f"target {name}: {a['time_us']:.1f} us "
                   f"{'PASS' if a['time_us'] < limit else 'MISS'}{fp_note}")
    return out, bool(ok)


# ---------------------------------------------------------------------------------------------


def run(args) -> int:
    import accord
    setup = Setup(args.backend, args.dtype)
    if args.no_consistency_check:
        accord.set_consistency_check(False)
    notes: list[str] = []
    impls = make_impls(setup, args.ops, notes, args.framework)
    threads = accord.build_info().get("omp_max_threads") or 1
    cores = os.cpu_count() or 1
    if threads > 1 and threads * accord.local_size() > cores:
        notes.append(f"oversubscribed: {accord.local_size()} local ranks x {threads} OpenMP "
                     f"threads on {cores} cores; set OMP_NUM_THREADS={max(1, cores // accord.local_size())}")
    lead = setup.rank == 0
    meta = metadata(setup, args, impls)
    table = Table(COLUMNS, file=sys.stdout if lead else open(os.devnull, "w"))
    if lead:
        print_metadata(meta)
        for n in notes:
            note(n)
        table.print_header()
    all_rows = []
    for nbytes in sizes(args.minbytes, args.maxbytes, args.stepfactor):
        for row in run_size(setup, impls, nbytes, args):
            all_rows.append(table.print_row(row))
    summary = ratios(all_rows, setup)
    bad = sum(r["wrong"] for r in all_rows if r["wrong"])
    summary.append(f"out of bounds values : {bad} {'OK' if bad == 0 else 'ERROR'}")
    checked, met = targets(all_rows, setup) if args.check_targets else ([], True)
    if lead:
        note()
        for line in summary + checked:
            note(line)
        if args.json:
            doc = {"metadata": meta, "notes": notes, "rows": all_rows, "summary": summary}
            if args.check_targets:
                doc["targets"] = {"lines": checked, "met": met}
            write_json(args.json, doc)
            note(f"wrote {args.json}")
    setup.comm.barrier()
    if table.file is not sys.stdout:
        table.file.close()
    setup.close()
    return 0 if met else 1


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return run(args)
    except BaseException as e:  # one failing rank must not leave the others hanging
        if isinstance(e, SystemExit) and not e.code:
            raise
        _abort(e)
        raise


def _abort(exc) -> None:
    label = os.environ.get("OMPI_COMM_WORLD_RANK", os.environ.get("RANK", "?"))
    sys.stderr.write(f"[accord.bench rank {label}] "
                     + "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    sys.stderr.flush()
    mpi = sys.modules.get("mpi4py.MPI")
    if mpi is not None and mpi.Is_initialized() and not mpi.Is_finalized():
        if mpi.COMM_WORLD.Get_size() > 1:
            mpi.COMM_WORLD.Abort(1)
