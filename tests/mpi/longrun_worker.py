"""Long runs stay flat: every training face runs ``steps`` steps of a tiny model; resident
memory (after a warm-up), accord communicators and file descriptors must not grow. Launched
by tests/test_longrun.py (any number of ranks).

Usage: longrun_worker.py STEPS [FACE ...]; faces: average adasum consensus leader cpsgd adpsgd.
"""
from __future__ import annotations

import gc
import os
import resource
import sys
import time

import numpy as np
import torch
from _worker import check, setup, worker_main

import accord
from accord.comm.base import Communicator

FACES = ("average", "adasum", "consensus", "leader", "cpsgd", "adpsgd")
WARMUP = 300         # steps before the baseline: allocator pools, caches, lazy imports
RSS_SLACK_MIB = 8.0  # growth allowed after warm-up (a leak of 1 KiB per step exceeds it)


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def live_communicators() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, Communicator) and not o.closed)


def make(face: str, comm, steps: int):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    base = torch.optim.SGD(model.parameters(), lr=0.01)
    opt, after = base, (lambda loss: None)
    if face in ("average", "adasum", "consensus"):
        op = {"average": accord.Average, "adasum": accord.Adasum,
              "consensus": accord.Consensus}[face]
        opt = accord.DistributedOptimizer(base, model.named_parameters(), op=op)
    elif face == "leader":
        lsgd = accord.LeaderSGD(model, period=4, global_period=16)
        after = lambda loss: lsgd.step(loss)  # noqa: E731
    elif face == "cpsgd":
        avg = accord.PeriodicAverager(4)
        after = lambda loss: avg.average_parameters(model.parameters())  # noqa: E731
    else:
        avg = accord.AdaptivePeriodicAverager(total_steps=steps + WARMUP, budget=steps // 4)
        after = lambda loss: avg.average_parameters(model.parameters())  # noqa: E731
    return model, opt, after


def run_face(face: str, comm, steps: int):
    model, opt, after = make(face, comm, steps)
    rng = np.random.default_rng(comm.rank)
    xs = torch.from_numpy(rng.standard_normal((16, 8, 4)).astype(np.float32))
    ys = torch.from_numpy(rng.integers(0, 2, (16, 8)))

    def train(n, start):
        for t in range(start, start + n):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(xs[t % 16]), ys[t % 16])
            loss.backward()
            opt.step()
            after(loss.item())

    train(WARMUP, 0)
    gc.collect()
    rss0, fds0, comms0 = rss_mib(), open_fds(), live_communicators()
    t0 = time.perf_counter()
    train(steps, WARMUP)
    wall = time.perf_counter() - t0
    gc.collect()
    rss1, fds1, comms1 = rss_mib(), open_fds(), live_communicators()
    check(all(torch.isfinite(p).all() for p in model.parameters()), f"{face}: diverged")
    check(rss1 - rss0 < RSS_SLACK_MIB,
          f"{face}: resident memory grew {rss1 - rss0:.1f} MiB over {steps} steps")
    check(fds1 <= fds0, f"{face}: file descriptors {fds0} -> {fds1}")
    check(comms1 <= comms0, f"{face}: live accord communicators {comms0} -> {comms1}")
    if hasattr(opt, "close"):
        opt.close()
    return rss0, rss1, fds0, fds1, comms0, comms1, wall


def main():
    comm = setup()
    steps = int(sys.argv[1])
    faces = sys.argv[2:] or FACES
    accord.init(comm)
    for face in faces:
        rss0, rss1, fds0, fds1, c0, c1, wall = run_face(face, comm, steps)
        if comm.rank == 0:
            print(f"longrun {face}: {steps} steps in {wall:.1f} s ({1e3 * wall / steps:.2f} "
                  f"ms/step), rss {rss0:.1f} -> {rss1:.1f} MiB, fds {fds0} -> {fds1}, "
                  f"communicators {c0} -> {c1}", flush=True)
    accord.shutdown()
    check(live_communicators() <= 1, "only the world communicator stays open after shutdown")
    if comm.rank == 0:
        print(f"longrun_worker OK: {steps} steps x {len(faces)} faces, size={comm.size}")


if __name__ == "__main__":
    worker_main(main)
