#!/usr/bin/env python
"""Study: does Adasum at the single-rank learning rate keep the steps to a target accuracy low
as the rank count grows, while averaging with linearly scaled learning rates degrades?

    python benchmarks/studies/adasum_scaling.py                 # 1, 2, 4, 8 ranks, 3 seeds
    python benchmarks/studies/adasum_scaling.py --ranks 1,2 --seeds 1 --max-steps 100   # quick

The driver starts `mpirun -np N` of this script for every N (a worker per rank count; each
writes <out>_N<N>.json), then merges them into <out>.json, <out>.png and a markdown table.

Setup: sklearn digits MLP 64-64-10, IID shards (accord.demo.digits_shards), a fixed 32 samples
per rank per step (so the global batch grows with N), accord.DistributedOptimizer. Two
variants, each with a single-rank learning rate (chosen from a 1-rank sweep on this data):

  plain SGD      lr 0.5   (1 rank: 0.2 to 1.0 all train, 2.0 diverges)
  SGD momentum   lr 0.1, momentum 0.9

and per variant these methods:

  average        op=Average, the single-rank lr
  average-xN     op=Average, lr x N (linear scaling, no warm-up)
  average-tuned  op=Average, the best lr per N among the single-rank lr, lr x N and a small
                 grid (plain 1.0, 1.5; momentum 0.2, 0.4): "best" = fewest mean steps
  adasum         op=Adasum, the single-rank lr (momentum: Horovod's delta semantics)

Steps to target: the first evaluation (every --eval-every steps) at which test accuracy is at
least --target. A run stops there, at --max-steps, at non-finite weights, or when it is still
below 50% after 100 steps (a collapsed run; reported as not reaching the target).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

VARIANTS = {"plain": dict(lr=0.5, momentum=0.0, grid=(1.0, 1.5)),
            "momentum": dict(lr=0.1, momentum=0.9, grid=(0.2, 0.4))}


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ranks", default="1,2,4,8")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--target", type=float, default=0.94)
    ap.add_argument("--max-steps", type=int, default=300)
    ap.add_argument("--eval-every", type=int, default=5)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--out", default="results/studies/adasum_scaling")
    ap.add_argument("--replot", action="store_true",
                    help="only merge the existing <out>_N<N>.json files (no training)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    return ap.parse_args(argv)


# ----------------------------------------------------------------------------- worker

def run_one(comm, args, seed, variant, op_name, lr, data):
    import numpy as np
    import torch

    import accord
    from accord.demo.train import mlp

    shard, _, test = data
    torch.manual_seed(seed)
    model = mlp(64)
    accord.broadcast_parameters(model.state_dict(), root_rank=0, comm=comm)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=VARIANTS[variant]["momentum"])
    op = accord.Adasum if op_name == "adasum" else accord.Average
    opt = accord.DistributedOptimizer(opt, named_parameters=model.named_parameters(), op=op,
                                      comm=comm)
    rng = np.random.default_rng(1000 * seed + comm.rank)
    hit, acc, step, t0 = None, 0.0, 0, time.perf_counter()
    for step in range(1, args.max_steps + 1):
        idx = torch.from_numpy(rng.integers(0, len(shard[1]), args.batch))
        loss = torch.nn.functional.cross_entropy(model(shard[0][idx]), shard[1][idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % args.eval_every:
            continue
        with torch.no_grad():  # every rank holds the same weights (Average and Adasum alike)
            out = model(test[0])
            acc = float((out.argmax(1) == test[1]).float().mean())
            finite = bool(torch.isfinite(out).all())
        # The stop decision is made collectively so that no rank can leave the loop alone.
        stop = hit is None and acc >= args.target
        if stop:
            hit = step
        collapsed = not finite or (step >= 100 and acc < 0.5)
        if comm.allreduce_small(np.array([stop or collapsed], dtype=np.int64), "max")[0]:
            break
    return dict(seed=seed, variant=variant, op=op_name, lr=lr, steps_to_target=hit,
                final_acc=acc, steps=step, s_per_step=(time.perf_counter() - t0) / step)


def worker(args):
    import torch

    import accord
    from accord.demo import digits_shards

    torch.set_num_threads(1)
    comm = accord.init()
    N = comm.size
    runs = []
    for seed in range(args.seeds):
        data = digits_shards(comm.rank, N, seed=seed)
        for variant, v in VARIANTS.items():
            lrs = sorted({v["lr"], v["lr"] * N, *v["grid"]})
            for lr in lrs:
                runs.append(run_one(comm, args, seed, variant, "average", lr, data))
                if comm.rank == 0:
                    print(f"N={N} seed={seed} {variant} average lr={lr:g}: "
                          f"{runs[-1]['steps_to_target']}", flush=True)
            runs.append(run_one(comm, args, seed, variant, "adasum", v["lr"], data))
            if comm.rank == 0:
                print(f"N={N} seed={seed} {variant} adasum lr={v['lr']:g}: "
                      f"{runs[-1]['steps_to_target']}", flush=True)
    if comm.rank == 0:
        with open(f"{args.out}_N{N}.json", "w") as f:
            json.dump(dict(ranks=N, args=vars(args), runs=runs), f, indent=1)


# ----------------------------------------------------------------------------- driver

def summarise(by_n, args):
    """rows[(variant, method)][N] = dict(lr, steps list (None = not reached))."""
    rows = {}
    for N, runs in sorted(by_n.items()):
        for variant, v in VARIANTS.items():
            def steps(op, lr):
                return [r["steps_to_target"] for r in runs
                        if r["variant"] == variant and r["op"] == op and r["lr"] == lr]

            def cost(xs):  # not reached counts as 2 x max-steps: ranks lrs that never got there last
                return sum(2 * args.max_steps if x is None else x for x in xs) / len(xs)

            lrs = sorted({r["lr"] for r in runs if r["variant"] == variant and r["op"] == "average"})
            best = min(lrs, key=lambda lr: cost(steps("average", lr)))
            for method, op, lr in (("average", "average", v["lr"]),
                                   ("average-xN", "average", v["lr"] * N),
                                   ("average-tuned", "average", best),
                                   ("adasum", "adasum", v["lr"])):
                rows.setdefault((variant, method), {})[N] = dict(lr=lr, steps=steps(op, lr))
    return rows


def cell(c, n_seeds):
    xs = [x for x in c["steps"] if x is not None]
    if not xs:
        return f"never (0/{n_seeds}), lr {c['lr']:g}"
    mean = sum(xs) / len(xs)
    spread = f" [{min(xs)}-{max(xs)}]" if len(xs) > 1 else ""
    miss = f", {len(xs)}/{n_seeds} reached" if len(xs) < n_seeds else ""
    return f"{mean:.0f}{spread}{miss}, lr {c['lr']:g}"


def plot(rows, ns, args, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for ax, variant in zip(axes, VARIANTS):
        for (var, method), per_n in rows.items():
            if var != variant:
                continue
            xs, ys, lo, hi = [], [], [], []
            for N in ns:
                # a seed that never reached the target is drawn at the cap
                vals = [x if x is not None else args.max_steps for x in per_n[N]["steps"]]
                m = sum(vals) / len(vals)
                xs.append(N)
                ys.append(m)
                lo.append(m - min(vals))
                hi.append(max(vals) - m)
            ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3, label=method)
        ax.axhline(args.max_steps, color="gray", lw=0.8, ls=":")
        ax.set(xscale="log", xticks=ns, xlabel="ranks (32 samples each per step)",
               title=f"{variant} SGD (single-rank lr {VARIANTS[variant]['lr']:g})")
        ax.minorticks_off()
        ax.set_xticklabels([str(n) for n in ns])
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"steps to {100 * args.target:.0f}% test acc\n(mean, min-max over seeds;"
                       f" cap {args.max_steps} = never)")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=70)
    plt.close(fig)


def driver(args):
    ns = [int(n) for n in args.ranks.split(",")]
    os.makedirs(os.path.dirname(os.path.abspath(args.out)) or ".", exist_ok=True)
    mpirun = os.path.join(os.path.dirname(sys.executable), "mpirun")
    env = dict(os.environ, OMP_NUM_THREADS="1", OMPI_ALLOW_RUN_AS_ROOT="1",
               OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    start = time.perf_counter()
    by_n = {}
    for N in ns:
        t0 = time.perf_counter()
        cmd = [mpirun if os.path.exists(mpirun) else "mpirun", "--oversubscribe", "--bind-to",
               "none", "-x", "OMP_NUM_THREADS", "-x", "PYTHONPATH", "-np", str(N),
               sys.executable, os.path.abspath(__file__), "--worker",
               "--seeds", str(args.seeds), "--target", str(args.target),
               "--max-steps", str(args.max_steps), "--eval-every", str(args.eval_every),
               "--batch", str(args.batch), "--out", args.out]
        if not args.replot:
            subprocess.run(cmd, check=True, env=env)
        with open(f"{args.out}_N{N}.json") as f:
            by_n[N] = json.load(f)["runs"]
        print(f"# {N} ranks: {time.perf_counter() - t0:.0f} s", flush=True)
    rows = summarise(by_n, args)
    wall = time.perf_counter() - start
    print(f"\nsteps to {100 * args.target:.0f}% test accuracy: mean [min-max] over "
          f"{args.seeds} seeds (max {args.max_steps} steps); total wall {wall:.0f} s\n")
    print("| variant | method | " + " | ".join(f"{N} ranks" for N in ns) + " |")
    print("|---|---|" + "---|" * len(ns))
    for (variant, method), per_n in rows.items():
        print(f"| {variant} | {method} | "
              + " | ".join(cell(per_n[N], args.seeds) for N in ns) + " |")
    with open(args.out + ".json", "w") as f:
        json.dump(dict(args=vars(args), wall_s=wall,
                       rows=[dict(variant=v, method=m, per_ranks=p)
                             for (v, m), p in rows.items()],
                       runs={str(N): r for N, r in by_n.items()}), f, indent=1)
    plot(rows, ns, args, args.out + ".png")
    print(f"\n# {args.out}.json, {args.out}.png")


if __name__ == "__main__":
    a = parse()
    worker(a) if a.worker else driver(a)
