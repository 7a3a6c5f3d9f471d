"""`python -m accord.demo`: argument parsing and the run."""
from __future__ import annotations

import argparse
import os
import time

from . import report
from .data import digits_shards
from .train import METHODS, train


def parse(argv=None):
    ap = argparse.ArgumentParser(
        prog="python -m accord.demo",
        description="Train a digits MLP once per aggregation method on the ranks mpirun "
                    "started; print a table, write a PNG and optionally JSON.",
        epilog="methods: " + "; ".join(f"{k}: {v[1]}" for k, v in METHODS.items()))
    ap.add_argument("--methods", default=",".join(METHODS),
                    help="comma list (default: all)")
    ap.add_argument("--steps", type=int, default=200, help="optimizer steps per method")
    ap.add_argument("--batch", type=int, default=32, help="samples per rank per step")
    ap.add_argument("--lr", type=float, default=0.5,
                    help="plain-SGD learning rate tuned for one rank")
    ap.add_argument("--hidden", type=int, default=64, help="hidden units of the MLP")
    ap.add_argument("--period", type=int, default=8,
                    help="cpsgd's averaging period; adpsgd's budget is steps // period syncs")
    ap.add_argument("--skew", action="store_true",
                    help="label-skewed shards (each rank sees few classes) instead of IID")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--evals", type=int, default=20, help="test evaluations per method")
    ap.add_argument("--target", type=float, default=0.95,
                    help="test accuracy for the 'steps to' column")
    ap.add_argument("--plot", default="results/demo.png", help="PNG path ('' for none)")
    ap.add_argument("--json", default=None, help="also write the results as JSON here")
    ap.add_argument("--progress", choices=("auto", "live", "lines"), default="auto",
                    help="live: redraw one line per method with \\r; lines: print it when "
                         "the method ends; auto: live when mpirun's output is a terminal")
    args = ap.parse_args(argv)
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    bad = [m for m in args.methods if m not in METHODS]
    if bad:
        ap.error(f"unknown method(s) {', '.join(bad)}; choose from {', '.join(METHODS)}")
    if args.steps < 1 or args.period < 1 or args.evals < 1:
        ap.error("--steps, --period and --evals must be >= 1")
    return args


def main(argv=None):
    args = parse(argv)
    t_start = time.perf_counter()
    import torch

    import accord

    torch.set_num_threads(1)  # several ranks share the cores
    comm = accord.init()
    N, root = comm.size, comm.rank == 0
    data = digits_shards(comm.rank, N, seed=args.seed, skew=args.skew)
    shards = "label-skewed" if args.skew else "IID"
    title = (f"digits MLP 64-{args.hidden}-10, {N} ranks x {args.batch} samples/step, "
             f"{shards} shards, plain SGD, single-rank lr {args.lr:g}, seed {args.seed}")
    if root:
        print(f"# accord {accord.__version__} demo: {title}")
        print(f"# {len(data[1][1])} training / {len(data[2][1])} test samples; "
              f"{os.cpu_count()} CPU cores for {N} ranks")
    live = args.progress == "live" or (args.progress == "auto" and root
                                       and report.live_terminal())
    progress = report.Progress(N, args.steps, live) if root else None
    rows = []
    for key in args.methods:
        r = train(key, args, comm, data, progress)
        rows.append(r)
        if root:
            progress.done(key, r)
    if not root:
        return rows
    print()
    report.print_table(rows, N, args.target)
    print()
    for key, text in report.stories(rows, N, args.target, args.period).items():
        print(f"  {report.label(key, N)}: {text}")
    print()
    print("# test acc: the mean of the workers' weights on the 20% held-out set; train loss: "
          "that model on the whole training set.")
    print("# sent/rank: bytes each rank sent, measured by wrapping the communicator "
          "(point-to-point exact, collectives at their bandwidth-optimal per-rank volume), "
          "mean over ranks.")
    print(f"# ms/step: slowest rank per step, median [25th-75th percentile] over each "
          f"method's steps; this machine ({os.cpu_count()} cores, {N} ranks) may be shared, "
          "so timings are noisy: compare them within one run only.")
    if args.plot:
        print(f"# plot: {report.plot(rows, N, args.plot, title)}")
    wall = time.perf_counter() - t_start
    if args.json:
        meta = dict(vars(args), ranks=N, backend=comm.backend, cpus=os.cpu_count(),
                    accord=accord.__version__, wall_s=wall,
                    bytes="measured by wrapping the communicator: sendrecv exact; allreduce "
                          "2(N-1)/N n, allgather (N-1) n, alltoall and broadcast (N-1)/N n; "
                          "mean over ranks",
                    step_time="slowest rank per step; median and quartiles over steps",
                    stories=report.stories(rows, N, args.target, args.period))
        print(f"# json: {report.write_json(args.json, {'metadata': meta, 'rows': rows})}")
    print(f"# total wall time {wall:.1f} s")
    return rows
