#!/usr/bin/env python
"""Study: does Leader SGD (pull every worker toward the best one) beat periodic averaging
(CPSGD) and elastic averaging (EASGD) at the same communication, with one leader and with a
leader per group?

    python benchmarks/studies/leader.py                            # digits + teacher, 3 seeds
    python benchmarks/studies/leader.py --tasks digits --seeds 1   # quick

The driver starts `mpirun -np <ranks>` of this script (the worker, which writes <out>_runs.json),
then prints a table and writes <out>.json and <out>.png.

Setup: the demo's 64-64-10 MLP, SGD lr --lr momentum 0.9, --batch samples per rank per step,
--steps local steps, the same initial model and per-rank batches for every method; IID and
label-skewed shards; every method communicates once every --period steps:

  cpsgd      accord.PeriodicAverager(period): one allreduce of the parameters per round
  easgd      elastic averaging (Zhang, Choromanska, LeCun 2015), synchronous form, built here
             from one accord.grouped_allreduce per round: with xbar the workers' mean and c
             the center variable (identical on every rank), x_i <- x_i - a (x_i - c) and
             c <- c + N a (xbar - c), both from the pre-round values; N a = 0.9 (the paper's
             beta). Evaluated model: c.
  lsgd       accord.LeaderSGD(period, global_period=4 period, group_size=N): one leader
  lsgd-g2    the same with group_size=2 (a local leader per pair of ranks, a global leader
             every 4 rounds): the multi-leader setting
  lsgd-common  lsgd with select_by="common": workers scored on one fixed 64-sample training
             batch shared by every rank (accord's remedy for skewed shards, where the lowest
             training loss marks the easiest shard)

LSGD sends a broadcast per round (the parameters once, (N-1)/N of the model per rank),
CPSGD and EASGD an allreduce (2(N-1)/N): LSGD moves at most half their bytes at the same
number of rounds. Evaluated models: cpsgd the workers' mean (identical after the last round),
easgd the center, lsgd both the leader and the workers' mean.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

METHODS = ("cpsgd", "easgd", "lsgd", "lsgd-g2", "lsgd-common")
SHARDS = {"iid": False, "skewed": True}


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", default="digits,teacher")
    ap.add_argument("--ranks", type=int, default=4)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=240)
    ap.add_argument("--period", type=int, default=4)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--eval-every", type=int, default=20)
    ap.add_argument("--out", default="results/studies/leader")
    ap.add_argument("--replot", action="store_true",
                    help="only summarise the existing <out>_runs.json (no training)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    return ap.parse_args(argv)


# ----------------------------------------------------------------------------- worker

class EASGD:
    """Synchronous elastic averaging every ``period`` steps, one allreduce per round."""

    def __init__(self, params, period, comm, beta=0.9):
        self.params = list(params)
        self.period, self.comm, self.step_count, self.rounds = period, comm, 0, 0
        self.alpha = beta / comm.size
        self.center = [p.detach().clone() for p in self.params]  # same init on every rank

    def step(self):
        import torch

        import accord

        self.step_count += 1
        if self.step_count % self.period:
            return
        self.rounds += 1
        mean = accord.grouped_allreduce([p.detach() for p in self.params], op=accord.Average,
                                        comm=self.comm)
        n, a = self.comm.size, self.alpha
        with torch.no_grad():
            for p, c, m in zip(self.params, self.center, mean):
                # sum_i (x_i - c) = N (xbar - c); both updates use the pre-round x_i and c
                diff = p - c
                c.add_(m - c, alpha=n * a)
                p.sub_(diff, alpha=a)


def run_one(comm, args, seed, method, data):
    import numpy as np
    import torch

    import accord
    from _study import MeanEvaluator, mlp

    shard, train, test = data
    model = mlp(seed)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    evaluate = MeanEvaluator(model, comm, test)
    common = None
    if method == "lsgd-common":
        # the same 64 training samples on every rank (the seed is shared)
        i = torch.from_numpy(np.random.default_rng(123).choice(len(train[1]), 64,
                                                               replace=False))
        xc, yc = train[0][i], train[1][i]
        common = lambda: float(  # noqa: E731
            torch.nn.functional.cross_entropy(model(xc), yc).detach())
    if method == "cpsgd":
        avg = accord.PeriodicAverager(args.period, comm=comm)
        after, models = (lambda: avg.average_parameters(model.parameters())), {"mean": None}
        rounds = lambda: avg.num_syncs  # noqa: E731
    elif method == "easgd":
        ea = EASGD(model.parameters(), args.period, comm)
        after, models = ea.step, {"center": lambda: ea.center}
        rounds = lambda: ea.rounds  # noqa: E731
    else:
        lsgd = accord.LeaderSGD(model.parameters(), period=args.period,
                                global_period=4 * args.period,
                                group_size=2 if method == "lsgd-g2" else comm.size,
                                select_by="window" if common is None else "common",
                                common_loss=common, comm=comm)
        losses = []
        after = lambda: lsgd.step(losses[-1])  # noqa: E731
        models = {"leader": lambda: lsgd.evaluation_parameters("leader"), "mean": None}
        rounds = lambda: lsgd.num_local_rounds  # noqa: E731
    rng = np.random.default_rng(1000 * seed + comm.rank)
    curves = {k: [] for k in models}
    wall = 0.0
    for step in range(1, args.steps + 1):
        idx = torch.from_numpy(rng.integers(0, len(shard[1]), args.batch))
        t0 = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(shard[0][idx]), shard[1][idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if method.startswith("lsgd"):
            losses.append(loss.item())
        after()
        wall += time.perf_counter() - t0
        if step % args.eval_every == 0 or step == args.steps:
            for k, fn in models.items():
                curves[k].append((step, evaluate(None if fn is None else fn())[0]))
    return dict(seed=seed, method=method, rounds=rounds(), curves=curves,
                final={k: c[-1][1] for k, c in curves.items()}, s_per_step=wall / args.steps)


def worker(args):
    import torch

    import accord
    from _study import shards

    torch.set_num_threads(1)
    comm = accord.init()
    runs = []
    for task in args.tasks.split(","):
        for kind, skew in SHARDS.items():
            for seed in range(args.seeds):
                data = shards(task, comm.rank, comm.size, seed, skew)
                for method in METHODS:
                    r = run_one(comm, args, seed, method, data)
                    r.update(task=task, shards=kind)
                    runs.append(r)
                    if comm.rank == 0:
                        print(f"{task} {kind} seed={seed} {method}: "
                              + ", ".join(f"{k} {v:.3f}" for k, v in r["final"].items()),
                              flush=True)
    if comm.rank == 0:
        with open(args.out + "_runs.json", "w") as f:
            json.dump(dict(ranks=comm.size, args=vars(args), runs=runs), f, indent=1)


# ----------------------------------------------------------------------------- driver

def summarise(runs, tasks):
    """rows[(task, shards, method, model)] = dict(accs per seed, mean curve, rounds)."""
    import numpy as np

    rows = {}
    for task in tasks:
        for kind in SHARDS:
            for method in METHODS:
                rs = [r for r in runs if (r["task"], r["shards"], r["method"]) ==
                      (task, kind, method)]
                for model in rs[0]["curves"]:
                    rows[(task, kind, method, model)] = dict(
                        accs=[r["final"][model] for r in rs], rounds=rs[0]["rounds"],
                        steps=[s for s, _ in rs[0]["curves"][model]],
                        curve=[float(a) for a in np.mean(
                            [[a for _, a in r["curves"][model]] for r in rs], axis=0)],
                        ms_per_step=1e3 * float(np.median([r["s_per_step"] for r in rs])))
    return rows


def plot(rows, tasks, args, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from _study import savefig

    fig, axes = plt.subplots(len(tasks), 2, figsize=(9, 3.0 * len(tasks)), squeeze=False)
    for i, task in enumerate(tasks):
        for ax, kind in zip(axes[i], SHARDS):
            for (t, k, method, model), r in rows.items():
                if (t, k) == (task, kind):
                    ax.plot(r["steps"], [100 * a for a in r["curve"]],
                            ls="-" if model != "mean" or method == "cpsgd" else ":",
                            label=f"{method} ({model})")
            ax.set(title=f"{task}, {kind} shards", xlabel="step")
            ax.grid(alpha=0.3)
        axes[i][0].set_ylabel(f"test acc (%), mean of {args.seeds} seeds")
    axes[0][0].legend(fontsize=7, ncol=2)
    savefig(fig, path, dpi=60)  # ten curves per panel: 70 dpi makes a >80 kB file
    plt.close(fig)


def driver(args):
    start = time.perf_counter()
    if not args.replot:
        from _study import launch

        launch(__file__, ["--tasks", args.tasks, "--seeds", str(args.seeds), "--steps",
                          str(args.steps), "--period", str(args.period), "--lr", str(args.lr),
                          "--batch", str(args.batch), "--eval-every", str(args.eval_every),
                          "--out", args.out], args.ranks, args.out)
    with open(args.out + "_runs.json") as f:
        runs = json.load(f)["runs"]
    from _study import mean_std

    tasks = args.tasks.split(",")
    rows = summarise(runs, tasks)
    wall = time.perf_counter() - start
    print(f"\n{args.ranks} ranks, {args.steps} steps, a round every {args.period} steps: final "
          f"test accuracy, mean +- std over seeds 0..{args.seeds - 1}; total wall {wall:.0f} s\n")
    print("| task | shards | method | model | rounds | final test acc | ms/step |")
    print("|---|---|---|---|---|---|---|")
    for (task, kind, method, model), r in rows.items():
        m, s = mean_std(r["accs"])
        print(f"| {task} | {kind} | {method} | {model} | {r['rounds']} | "
              f"{100 * m:.1f} +- {100 * s:.1f} % | {r['ms_per_step']:.1f} |")
    with open(args.out + ".json", "w") as f:
        json.dump(dict(args=vars(args), wall_s=wall,
                       rows=[dict(task=t, shards=k, method=m, model=o, **r)
                             for (t, k, m, o), r in rows.items()]), f, indent=1)
    plot(rows, tasks, args, args.out + ".png")
    print(f"\n# {args.out}.json, {args.out}.png")


if __name__ == "__main__":
    a = parse()
    worker(a) if a.worker else driver(a)
