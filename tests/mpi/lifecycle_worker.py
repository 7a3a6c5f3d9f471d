"""init/shutdown cycles and the lifetime of what accord creates: communicators, process groups,
cached reducers, fusion scratch, step counters. Launched by tests/test_lifecycle.py.

``cycles`` init/shutdown rounds each run collectives that make accord build its derived state
(the node split, Adasum's level sub-communicators, hierarchical topology, fusion scratch); every
communicator accord made must be freed at shutdown, and resident memory must stay flat.
"""
from __future__ import annotations

import gc
import resource
import sys

import numpy as np
from _worker import backend, check, setup, worker_main

import accord
from accord.comm.base import Communicator


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def live_accord_communicators() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects()
               if isinstance(o, Communicator) and not o.closed)


def one_cycle(world, step: int):
    comm = accord.init()  # MPI: a duplicate of COMM_WORLD; gloo: the default group
    x = np.full(1000, float(comm.rank + 1))
    accord.allreduce_(x, op=accord.Adasum)
    accord.grouped_allreduce_([x[:10].copy(), x[10:].copy()], op=accord.Average)
    if comm.size > 1 and backend() == "mpi":
        accord.allreduce_(x, op=accord.Adasum, hierarchical=True)
    accord.shutdown()
    return comm


def main():
    world = setup()
    cycles = int(sys.argv[1])
    baseline = live_accord_communicators()
    first = one_cycle(world, 0)
    check(first.closed, "shutdown() must close the communicator init() made")
    if backend() == "mpi":
        from mpi4py import MPI
        check(first.mpi_comm == MPI.COMM_NULL, "the duplicate of COMM_WORLD must be freed")
    for i in range(5):  # warm up allocator pools
        one_cycle(world, i)
    rss0 = rss_mib()
    for i in range(cycles):
        one_cycle(world, i)
    rss1 = rss_mib()
    leaked = live_accord_communicators() - baseline
    check(leaked == 0, f"{leaked} accord communicators still open after {cycles} cycles")
    check(rss1 - rss0 < 20, f"resident memory grew {rss1 - rss0:.1f} MiB over {cycles} cycles")
    # A communicator the program passed in stays usable after shutdown.
    accord.init(world)
    accord.shutdown()
    check(not world.closed, "shutdown() must not close the program's communicator")
    y = np.ones(3)
    world.allreduce_(y, "sum")
    check(np.all(y == world.size), "the program's communicator still works")
    world.barrier()
    if world.rank == 0:
        print(f"lifecycle_worker OK: {cycles} cycles, backend={backend()} size={world.size}, "
              f"rss {rss0:.1f} -> {rss1:.1f} MiB")


if __name__ == "__main__":
    worker_main(main)
