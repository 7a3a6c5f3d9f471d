#!/usr/bin/env python
"""Study: does adaptive periodic averaging (ADPSGD) beat constant-period averaging (CPSGD) at
the same number of synchronisations, and periodic averaging beat fully synchronous SGD in
time to accuracy when the network is slow?

    python benchmarks/studies/adpsgd.py                                  # 4 ranks, 3 seeds
    python benchmarks/studies/adpsgd.py --seeds 1 --steps 80 --periods 8 # quick
    python benchmarks/studies/adpsgd.py --bandwidth 0                    # no simulated delay

The driver starts `mpirun -np <ranks>` of this script (the worker, which writes <out>_runs.json),
then prints a table and writes <out>.json and <out>.png.

Setup: the demo's 64-64-10 MLP on digits (--task), SGD lr --lr momentum 0.9, --batch samples
per rank per step, --steps steps, the same initial model and per-rank batches for every method,
IID and label-skewed shards:

  sync       DistributedOptimizer(op=Average): a gradient allreduce every step
  cpsgd-p    local steps + PeriodicAverager(p): steps // p parameter allreduces
  adpsgd-p   local steps + AdaptivePeriodicAverager(total_steps=steps, budget=steps // p)

Simulated slow network: after every synchronisation each rank sleeps bytes / --bandwidth, bytes
= what a bandwidth-optimal allreduce of the model sends per rank, 2 (N-1)/N x 4 x 4810 (28.9 kB
at N = 4); the default 1 MB/s adds 29 ms per sync, several times a local step here, so
communication dominates synchronous SGD. Times are the training loop's wall time on the slowest
rank (evaluation excluded), measured: they include the real allreduce latency and the load of
the machine. Evaluated model: the workers' mean (test accuracy every --eval-every steps).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

SHARDS = {"iid": False, "skewed": True}


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", choices=("digits", "teacher"), default="digits")
    ap.add_argument("--ranks", type=int, default=4)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=320)
    ap.add_argument("--periods", default="8,32")
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--bandwidth", type=float, default=1e6,
                    help="simulated bytes per second per rank (0: no delay)")
    ap.add_argument("--target", type=float, default=0.93)
    ap.add_argument("--eval-every", type=int, default=10)
    ap.add_argument("--out", default="results/studies/adpsgd")
    ap.add_argument("--replot", action="store_true",
                    help="only summarise the existing <out>_runs.json (no training)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def methods(args):
    ps = [int(p) for p in args.periods.split(",")]
    return ["sync"] + [f"{m}-{p}" for p in ps for m in ("cpsgd", "adpsgd")]


# ----------------------------------------------------------------------------- worker

def run_one(comm, args, seed, method, data):
    import numpy as np
    import torch

    import accord
    from _study import MeanEvaluator, mlp

    shard, _, test = data
    model = mlp(seed)
    n = sum(p.numel() for p in model.parameters())
    delay = (2 * (comm.size - 1) / comm.size * 4 * n / args.bandwidth
             if args.bandwidth > 0 else 0.0)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    evaluate = MeanEvaluator(model, comm, test)
    avg = None
    if method == "sync":
        opt = accord.DistributedOptimizer(opt, named_parameters=model.named_parameters(),
                                          op=accord.Average, comm=comm)
    else:
        kind, p = method.split("-")
        p = int(p)
        avg = (accord.PeriodicAverager(p, comm=comm) if kind == "cpsgd" else
               accord.AdaptivePeriodicAverager(total_steps=args.steps, budget=args.steps // p,
                                               comm=comm))
    rng = np.random.default_rng(1000 * seed + comm.rank)
    syncs, elapsed, curve = 0, 0.0, []
    for step in range(1, args.steps + 1):
        idx = torch.from_numpy(rng.integers(0, len(shard[1]), args.batch))
        t0 = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(shard[0][idx]), shard[1][idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        synced = True if avg is None else avg.average_parameters(model.parameters())
        if synced:
            syncs += 1
            time.sleep(delay)  # the simulated network: bytes / bandwidth after every sync
        elapsed += time.perf_counter() - t0
        if step % args.eval_every == 0 or step == args.steps:
            # a step ends when the slowest rank is done
            t = float(comm.allreduce_small(np.array([elapsed]), "max")[0])
            curve.append((step, t, evaluate()[0]))
    return dict(seed=seed, method=method, syncs=syncs, curve=curve, final_acc=curve[-1][2],
                train_s=curve[-1][1], delay_s=delay,
                periods=[h[1] for h in avg.variance_history]
                if method.startswith("adpsgd") else None)


def worker(args):
    import torch

    import accord
    from _study import shards

    torch.set_num_threads(1)
    comm = accord.init()
    runs = []
    for kind, skew in SHARDS.items():
        for seed in range(args.seeds):
            data = shards(args.task, comm.rank, comm.size, seed, skew)
            for method in methods(args):
                r = run_one(comm, args, seed, method, data)
                r["shards"] = kind
                runs.append(r)
                if comm.rank == 0:
                    print(f"{kind} seed={seed} {method}: acc {r['final_acc']:.3f}, "
                          f"{r['syncs']} syncs, {r['train_s']:.1f} s", flush=True)
    if comm.rank == 0:
        with open(args.out + "_runs.json", "w") as f:
            json.dump(dict(ranks=comm.size, args=vars(args), runs=runs), f, indent=1)


# ----------------------------------------------------------------------------- driver

def time_to(curve, target):
    """(step, seconds) of the first evaluation at or above target, or None."""
    for step, t, acc in curve:
        if acc >= target:
            return step, t
    return None


def summarise(runs, args):
    import numpy as np

    rows = {}
    for kind in SHARDS:
        for method in methods(args):
            rs = [r for r in runs if (r["shards"], r["method"]) == (kind, method)]
            hits = [time_to(r["curve"], args.target) for r in rs]
            rows[(kind, method)] = dict(
                syncs=float(np.mean([r["syncs"] for r in rs])),
                accs=[r["final_acc"] for r in rs], train_s=[r["train_s"] for r in rs],
                hits=hits,
                steps=[s for s, _, _ in rs[0]["curve"]],
                time=[float(x) for x in np.mean([[t for _, t, _ in r["curve"]] for r in rs], 0)],
                curve=[float(x) for x in np.mean([[a for _, _, a in r["curve"]] for r in rs], 0)],
                periods=rs[0]["periods"])
    return rows


def plot(rows, args, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from _study import savefig

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, kind in zip(axes, SHARDS):
        for (k, method), r in rows.items():
            if k == kind:
                ax.plot(r["time"], [100 * a for a in r["curve"]],
                        ls=":" if method.startswith("cpsgd") else "-",
                        label=f"{method} ({r['syncs']:.0f} syncs)")
        ax.axhline(100 * args.target, color="gray", lw=0.8, ls=":")
        ax.set(title=f"{args.task}, {kind} shards, {args.bandwidth / 1e6:g} MB/s",
               xlabel="training wall time (s, slowest rank)", ylim=(40, 100))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"test acc (%), mean of {args.seeds} seeds")
    axes[0].legend(fontsize=7)
    savefig(fig, path)
    plt.close(fig)


def driver(args):
    start = time.perf_counter()
    if not args.replot:
        from _study import launch

        launch(__file__, ["--task", args.task, "--seeds", str(args.seeds), "--steps",
                          str(args.steps), "--periods", args.periods, "--lr", str(args.lr),
                          "--batch", str(args.batch), "--bandwidth", str(args.bandwidth),
                          "--target", str(args.target), "--eval-every", str(args.eval_every),
                          "--out", args.out], args.ranks, args.out)
    with open(args.out + "_runs.json") as f:
        runs = json.load(f)["runs"]
    from _study import mean_std

    rows = summarise(runs, args)
    wall = time.perf_counter() - start
    print(f"\n{args.task}, {args.ranks} ranks, {args.steps} steps, simulated "
          f"{args.bandwidth / 1e6:g} MB/s: mean +- std over seeds 0..{args.seeds - 1}; time to "
          f"{100 * args.target:.0f}% test accuracy (evaluated every {args.eval_every} steps); "
          f"total wall {wall:.0f} s\n")
    print("| shards | method | syncs | final test acc | time to target (s) | steps to target "
          "| training time (s) |")
    print("|---|---|---|---|---|---|---|")
    for (kind, method), r in rows.items():
        m, s = mean_std(r["accs"])
        got = [h for h in r["hits"] if h is not None]
        miss = "" if len(got) == len(r["hits"]) else f" ({len(got)}/{len(r['hits'])} reached)"
        if got:
            tt = f"{mean_std([t for _, t in got])[0]:.1f}{miss}"
            st = f"{mean_std([st for st, _ in got])[0]:.0f}"
        else:
            tt, st = "never", "never"
        print(f"| {kind} | {method} | {r['syncs']:.0f} | {100 * m:.1f} +- {100 * s:.1f} % | "
              f"{tt} | {st} | {mean_std(r['train_s'])[0]:.1f} |")
    for (kind, method), r in rows.items():
        if r["periods"]:
            print(f"# {kind} {method} seed 0 periods: {r['periods']}")
    with open(args.out + ".json", "w") as f:
        json.dump(dict(args=vars(args), wall_s=wall,
                       rows=[dict(shards=k, method=m, **r) for (k, m), r in rows.items()]),
                  f, indent=1)
    plot(rows, args, args.out + ".png")
    print(f"\n# {args.out}.json, {args.out}.png")


if __name__ == "__main__":
    a = parse()
    worker(a) if a.worker else driver(a)
