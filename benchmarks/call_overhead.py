"""Host time of one collective call without the waiting: what accord adds to the transport.

The communicator here (``MirrorCommunicator``) stands for a job of ``--size`` ranks in which
every other rank holds this rank's data: its allgather copies this rank's block into every
slot, its allreduces keep the values (a max) or leave them (a sum: the values do not matter
for timing), its sendrecv copies. An accord collective on it runs every step it runs in a real
job (argument handling, validation, the consistency exchange, the guard, the reduction and its
kernels) except waiting for peers, so its time per call is accord's own cost per call; a real
job adds the transport's round trips (two for these calls: the consistency exchange and the
data). Rows: ``accord.allreduce_`` with Sum and Adasum on a numpy array and on a CPU torch
tensor, and the stub communicator's own ``allreduce_`` (what the stub itself costs). Each row
is the minimum over ``--rounds`` rounds of ``--calls`` back-to-back calls, rounds interleaving
the rows, with the garbage collector paused while timing.

    python benchmarks/call_overhead.py [--size 2] [--bytes 4096] [--json results/call_overhead.json]

Run it with ``OMP_NUM_THREADS=1`` (as under mpirun): the numbers are per call on one thread.
"""
from __future__ import annotations

import argparse
import gc
import sys
import time

import numpy as np
from _common import Column, Table, collect_metadata, note, print_metadata, write_json

import accord
from accord.comm import Communicator


class MirrorCommunicator(Communicator):
    """A communicator of ``size`` ranks whose peers hold this rank's data (module doc)."""

    backend = "mpi"  # the reductions take the route they take over MPI

    def __init__(self, size: int):
        self._rank, self._size = 0, size

    def sendrecv(self, sendbuf, dest, recvbuf, source):
        recvbuf[...] = sendbuf

    def allreduce_small(self, values, op="sum"):
        return np.array(values, copy=True)

    def allreduce_(self, buf, op="sum", *, scale=None):
        return buf

    def allgather(self, sendbuf, recvbuf):
        n = sendbuf.shape[0]
        for i in range(self._size):
            recvbuf[i * n:(i + 1) * n] = sendbuf

    def allgather_object(self, obj):
        return [obj] * self._size

    def broadcast_(self, buf, root):
        return buf

    def alltoall(self, sendbuf, recvbuf):
        recvbuf[...] = sendbuf

    def barrier(self):
        pass

    def split(self, color, key=None):
        return None if color is None else MirrorCommunicator(self._size)

    def local_split(self):
        return self

    def abort(self, code=1):
        raise SystemExit(code)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=2, help="ranks the mirror stands for")
    ap.add_argument("--bytes", type=int, default=4096, help="bytes per float32 buffer")
    ap.add_argument("--calls", type=int, default=1000, help="calls per round")
    ap.add_argument("--rounds", type=int, default=25, help="rounds (the minimum is reported)")
    ap.add_argument("--json", default=None, help="also write the rows and metadata here")
    args = ap.parse_args(argv)
    if args.size < 2 or args.bytes < 4 or args.calls < 1 or args.rounds < 1:
        ap.error("--size must be >= 2, --bytes >= 4, --calls and --rounds >= 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(1)
    comm = MirrorCommunicator(args.size)
    n = args.bytes // 4
    x = np.ones(n, np.float32)
    t = torch.ones(n)
    rows = {
        ("numpy", "sum"): lambda: accord.allreduce_(x, op=accord.Sum, comm=comm),
        ("torch", "sum"): lambda: accord.allreduce_(t, op=accord.Sum, comm=comm),
        ("numpy", "adasum"): lambda: accord.allreduce_(x, op=accord.Adasum, comm=comm),
        ("torch", "adasum"): lambda: accord.allreduce_(t, op=accord.Adasum, comm=comm),
        ("stub", "sum"): lambda: comm.allreduce_(x, "sum"),
    }
    for fn in rows.values():
        for _ in range(min(args.calls, 100)):
            fn()
    best = dict.fromkeys(rows, float("inf"))
    gc.collect()
    gc.disable()
    try:
        for _ in range(args.rounds):
            for key, fn in rows.items():
                t0 = time.perf_counter()
                for _ in range(args.calls):
                    fn()
                best[key] = min(best[key], (time.perf_counter() - t0) / args.calls)
    finally:
        gc.enable()

    meta = collect_metadata(device="cpu", ranks=args.size, calls=args.calls,
                            rounds=args.rounds, time="minimum over rounds of the mean per call")
    table = Table([Column("size", "(B)", 10, "d"), Column("ranks", "", 6, "d"),
                   Column("framework", "", 10, "s"), Column("redop", "", 7, "s"),
                   Column("time_us", "(us)", 9, ".1f", "time")])
    print_metadata(meta)
    table.print_header()
    for (framework, redop), seconds in best.items():
        table.print_row(size=args.bytes, ranks=args.size, framework=framework, redop=redop,
                        time_us=seconds * 1e6)
    note("framework 'stub': the mirror communicator's allreduce_ alone (no accord layers)")
    if args.json:
        write_json(args.json, {"metadata": meta, "rows": table.rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
