#!/usr/bin/env python
"""Study: does adaptive consensus aggregation (ACGA) train faster than averaging the gradients
when each method gets its best learning rate, on IID and on label-skewed shards?

    python benchmarks/studies/consensus.py                       # 4 ranks, 3 seeds, digits
    python benchmarks/studies/consensus.py --seeds 1 --steps 40  # quick
    python benchmarks/studies/consensus.py --task teacher        # the teacher-network task

The driver starts `mpirun -np <ranks>` of this script (the worker, which writes <out>_runs.json),
then prints a table and writes <out>.json and <out>.png.

Setup: the demo's 64-64-10 MLP, plain SGD, 32 samples per rank per step, --steps steps, for
each seed, each shard kind (IID; label-skewed: contiguous blocks of the label-sorted training
set, so each rank sees ~3 classes) and each learning rate of --lrs, three methods:

  average     DistributedOptimizer(op=Average): the mean gradient
  acga        DistributedOptimizer(op=Consensus), ConsensusAggregator(keep_scale=True) with
              the default subspace momentum 0.99: the consensus-weighted mean of the normalised
              gradients, rescaled by the mean gradient norm
  uniform-norm  the control: the *uniform* mean of the normalised gradients, rescaled by the
              mean gradient norm -- ACGA with every weight forced to 1/N. ConsensusAggregator
              has no such option, so it is built here from one accord.allreduce. ACGA minus
              this control is the effect of the adaptive weights; this control minus average
              is the effect of the normalisation.

Each method's lr is the grid point with the best mean final test accuracy over the seeds (per
shard kind). All three are synchronous: every rank holds the same weights, evaluated on the
test set every --eval-every steps.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

METHODS = ("average", "acga", "uniform-norm")
SHARDS = {"iid": False, "skewed": True}


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", choices=("digits", "teacher"), default="digits")
    ap.add_argument("--ranks", type=int, default=4)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--lrs", default="0.25,0.5,1.0", help="the lr grid, every method")
    ap.add_argument("--eval-every", type=int, default=10)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--out", default="results/studies/consensus")
    ap.add_argument("--replot", action="store_true",
                    help="only summarise the existing <out>_runs.json (no training)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    return ap.parse_args(argv)


# ----------------------------------------------------------------------------- worker

def uniform_norm_step(model, comm, eps=1e-8):
    """Replace every rank's gradient by mean_i(|g_i| + eps) * mean_i(g_i / (|g_i| + eps)):
    ConsensusAggregator(keep_scale=True)'s formula with uniform weights. One allreduce of the
    normalised gradient with the norm appended (so the mean norm costs no extra message)."""
    import torch

    import accord

    grads = [p.grad for p in model.parameters()]
    flat = torch.cat([g.reshape(-1) for g in grads]).double()
    s = float(flat.norm()) + eps
    buf = torch.cat([flat / s, torch.tensor([s], dtype=torch.float64)])
    mean = accord.allreduce(buf, op=accord.Average, comm=comm)
    out = mean[:-1] * mean[-1]
    off = 0
    for g in grads:
        g.copy_(out[off:off + g.numel()].view_as(g))
        off += g.numel()


def run_one(comm, args, seed, method, lr, data):
    import numpy as np
    import torch

    import accord
    from _study import accuracy, mlp

    shard, _, test = data
    model = mlp(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    named = model.named_parameters()
    agg = None
    if method == "average":
        opt = accord.DistributedOptimizer(opt, named_parameters=named, op=accord.Average,
                                          comm=comm)
    elif method == "acga":
        agg = accord.ConsensusAggregator(keep_scale=True, comm=comm)
        opt = accord.DistributedOptimizer(opt, named_parameters=named, op=accord.Consensus,
                                          consensus=agg, comm=comm)
    rng = np.random.default_rng(1000 * seed + comm.rank)  # same batches for every method
    curve, spread = [(0, accuracy(model, test)[0])], []
    t0 = time.perf_counter()
    for step in range(1, args.steps + 1):
        idx = torch.from_numpy(rng.integers(0, len(shard[1]), args.batch))
        loss = torch.nn.functional.cross_entropy(model(shard[0][idx]), shard[1][idx])
        opt.zero_grad()
        loss.backward()
        if method == "uniform-norm":
            uniform_norm_step(model, comm)
        opt.step()
        if agg is not None and agg.last_weights is not None:
            w = np.asarray(agg.last_weights)
            spread.append(float((w.max(axis=1) - w.min(axis=1)).mean()))
        if step % args.eval_every == 0 or step == args.steps:
            acc, finite = accuracy(model, test)  # identical weights on every rank
            curve.append((step, acc))
            if not finite:
                break
    return dict(seed=seed, method=method, lr=lr, curve=curve, final_acc=curve[-1][1],
                weight_spread=float(np.mean(spread)) if spread else None,
                s_per_step=(time.perf_counter() - t0) / step)


def worker(args):
    import torch

    import accord
    from _study import shards

    torch.set_num_threads(1)
    comm = accord.init()
    lrs = [float(x) for x in args.lrs.split(",")]
    runs = []
    for kind, skew in SHARDS.items():
        for seed in range(args.seeds):
            data = shards(args.task, comm.rank, comm.size, seed, skew)
            for method in METHODS:
                for lr in lrs:
                    r = run_one(comm, args, seed, method, lr, data)
                    r["shards"] = kind
                    runs.append(r)
                    if comm.rank == 0:
                        print(f"{kind} seed={seed} {method} lr={lr:g}: {r['final_acc']:.3f} "
                              f"({r['s_per_step'] * 1e3:.0f} ms/step)", flush=True)
    if comm.rank == 0:
        with open(args.out + "_runs.json", "w") as f:
            json.dump(dict(ranks=comm.size, args=vars(args), runs=runs), f, indent=1)


# ----------------------------------------------------------------------------- driver

def summarise(runs):
    """rows[(shards, method)] = dict(lr (tuned), final accs per seed, per-lr means, curve)."""
    import numpy as np

    rows = {}
    for kind in SHARDS:
        for method in METHODS:
            mine = [r for r in runs if r["shards"] == kind and r["method"] == method]
            by_lr = {}
            for r in mine:
                by_lr.setdefault(r["lr"], []).append(r)
            means = {lr: float(np.mean([r["final_acc"] for r in rs])) for lr, rs in by_lr.items()}
            best = max(means, key=lambda lr: (means[lr], -lr))
            rs = by_lr[best]
            steps = [s for s, _ in rs[0]["curve"]]
            curve = np.mean([[a for _, a in r["curve"]] for r in rs
                             if len(r["curve"]) == len(steps)], axis=0)
            spread = [r["weight_spread"] for r in rs if r["weight_spread"] is not None]
            rows[(kind, method)] = dict(
                lr=best, accs=[r["final_acc"] for r in rs], per_lr=means,
                steps=steps, curve=[float(a) for a in curve],
                weight_spread=float(np.mean(spread)) if spread else None,
                ms_per_step=1e3 * float(np.median([r["s_per_step"] for r in mine])))
    return rows


def plot(rows, args, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from _study import savefig

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), sharey=False)
    for ax, kind in zip(axes, SHARDS):
        for method in METHODS:
            r = rows[(kind, method)]
            ax.plot(r["steps"], [100 * a for a in r["curve"]], marker=".",
                    label=f"{method} (lr {r['lr']:g})")
        ax.set(xlabel="step", title=f"{args.task}, {kind} shards, {args.ranks} ranks")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel(f"test accuracy (%), mean of {args.seeds} seeds")
    savefig(fig, path)
    plt.close(fig)


def driver(args):
    start = time.perf_counter()
    if not args.replot:
        from _study import launch

        launch(__file__, ["--task", args.task, "--seeds", str(args.seeds), "--steps",
                          str(args.steps), "--lrs", args.lrs, "--eval-every",
                          str(args.eval_every), "--batch", str(args.batch), "--out", args.out],
               args.ranks, args.out)
    with open(args.out + "_runs.json") as f:
        runs = json.load(f)["runs"]
    from _study import mean_std

    rows = summarise(runs)
    wall = time.perf_counter() - start
    print(f"\n{args.task}, {args.ranks} ranks, {args.steps} steps: final test accuracy, mean +- "
          f"std over seeds 0..{args.seeds - 1}, each method at its best lr of {args.lrs}; "
          f"total wall {wall:.0f} s\n")
    print("| shards | method | tuned lr | final test acc | per-lr mean acc | "
          "weight spread | ms/step |")
    print("|---|---|---|---|---|---|---|")
    for (kind, method), r in rows.items():
        m, s = mean_std(r["accs"])
        per = ", ".join(f"{lr:g}: {100 * a:.1f}" for lr, a in sorted(r["per_lr"].items()))
        ws = "-" if r["weight_spread"] is None else f"{r['weight_spread']:.3f}"
        print(f"| {kind} | {method} | {r['lr']:g} | {100 * m:.1f} +- {100 * s:.1f} % | {per} | "
              f"{ws} | {r['ms_per_step']:.0f} |")
    with open(args.out + ".json", "w") as f:
        json.dump(dict(args=vars(args), wall_s=wall,
                       rows=[dict(shards=k, method=m, **r) for (k, m), r in rows.items()]),
                  f, indent=1)
    plot(rows, args, args.out + ".png")
    print(f"\n# {args.out}.json, {args.out}.png")


if __name__ == "__main__":
    a = parse()
    worker(a) if a.worker else driver(a)
