#!/usr/bin/env python
"""Time of one DistributedOptimizer training step: Adasum (gradients / delta) against Average.

    mpirun -np 4 --oversubscribe --bind-to none -x OMP_NUM_THREADS=1 \\
        python benchmarks/training_step.py                      # results/training_step.json
    mpirun -np 4 ... python benchmarks/training_step.py --steps 50 --hidden 256 --momentum 0.9

One MLP (64 -> hidden -> hidden -> 10) on sklearn's digits shards, plain SGD by default; three
copies of it, one per configuration (op=Average; op=Adasum, adasum_mode="gradients";
op=Adasum, adasum_mode="delta"), each wrapped in its own DistributedOptimizer over the same
communicator. A step is zero_grad + forward + backward + step on the same batch for every
configuration; the configurations are interleaved step by step (a barrier before each), so slow
drifts of a loaded machine hit them alike, and their ratios come from one run. Reported: the
max over ranks of each rank's median step time, and each Adasum mode's ratio to Average.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import accord  # noqa: E402
from accord.demo import digits_shards  # noqa: E402
from _common import Column, Table, collect_metadata, note, print_metadata, write_json  # noqa: E402

CONFIGS = (("average", accord.Average, None), ("adasum-gradients", accord.Adasum, "gradients"),
           ("adasum-delta", accord.Adasum, "delta"))
TARGETS = {"adasum-gradients": 1.15, "adasum-delta": 1.3}  # max step-time ratio to Average

COLUMNS = [Column("config", "", 18, "s"), Column("ranks", "", 5, "d"),
           Column("step_ms", "(ms)", 9, ".3f", "step"), Column("ratio", "(x avg)", 8, ".3f"),
           Column("target", "(x)", 6, ".2f"), Column("verdict", "", 7, "s")]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=60, help="timed steps per configuration")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--momentum", type=float, default=0.0)
    p.add_argument("--json", default="results/training_step.json")
    return p.parse_args(argv)


def build(hidden, op, mode, lr, momentum, comm):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, hidden), torch.nn.ReLU(),
                                torch.nn.Linear(hidden, hidden), torch.nn.ReLU(),
                                torch.nn.Linear(hidden, 10))
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    kwargs = {"adasum_mode": mode} if mode else {}
    return model, accord.DistributedOptimizer(opt, named_parameters=model.named_parameters(),
                                              op=op, comm=comm, **kwargs)


def main(argv=None) -> int:
    args = parse_args(argv)
    comm = accord.init()
    torch.set_num_threads(1)
    (x, y), _, _ = digits_shards(comm.rank, comm.size)
    runs = [(name, *build(args.hidden, op, mode, args.lr, args.momentum, comm))
            for name, op, mode in CONFIGS]
    rng = np.random.default_rng(comm.rank)
    times = {name: [] for name, _, _ in runs}
    loss_fn = torch.nn.functional.cross_entropy
    for it in range(args.warmup + args.steps):
        idx = torch.from_numpy(rng.integers(0, len(y), args.batch))
        xb, yb = x[idx], y[idx]
        for name, model, opt in runs:
            comm.barrier()
            t0 = time.perf_counter()
            opt.zero_grad()
            loss_fn(model(xb), yb).backward()
            opt.step()
            t1 = time.perf_counter()
            if it >= args.warmup:
                times[name].append(t1 - t0)
    local = np.array([statistics.median(times[name]) for name, _, _ in runs])
    worst = comm.allreduce_small(local, "max")
    if comm.rank == 0:
        nparams = sum(p.numel() for p in runs[0][1].parameters())
        meta = collect_metadata(ranks=comm.size, model=f"MLP 64-{args.hidden}-{args.hidden}-10 "
                                f"({nparams} parameters, float32)",
                                optimizer=f"SGD lr={args.lr} momentum={args.momentum}",
                                batch=args.batch, steps=f"{args.steps} timed, {args.warmup} "
                                "warm-up, configurations interleaved step by step",
                                time="max over ranks of the per-rank median step time",
                                fusion_threshold=accord.fusion_threshold())
        print_metadata(meta)
        table = Table(COLUMNS)
        table.print_header()
        avg = float(worst[0])
        for (name, _, _), t in zip(runs, worst):
            ratio = float(t) / avg
            target = TARGETS.get(name)
            verdict = "-" if target is None else ("PASS" if ratio <= target else "MISS")
            table.print_row({"config": name, "ranks": comm.size, "step_ms": float(t) * 1e3,
                             "ratio": ratio, "target": target, "verdict": verdict})
        if args.json:
            write_json(args.json, {"metadata": meta, "rows": table.rows})
            note(f"wrote {args.json}")
    for _, _, opt in runs:
        opt.close()
    accord.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
