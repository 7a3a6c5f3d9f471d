#!/usr/bin/env python
"""CPSGD (constant-period averaging) vs ADPSGD (accord's adaptive periodic averaging) at equal
communication, training a small MLP on sklearn's digits (bundled with scikit-learn, no download).

    mpirun -np 4 python benchmarks/averaging.py                    # results/averaging.json
    mpirun -np 4 python benchmarks/averaging.py --skew --seeds 3   # label-sorted shards
    mpirun -np 4 python benchmarks/averaging.py --lsgd --steps 300  # LSGD: leader vs average

For every seed and every period p: CPSGD averages every p steps (steps // p syncs); ADPSGD
gets budget = the number of syncs CPSGD made, over the same steps, with accord's default
controller (AdaptivePeriodicAverager(total_steps, budget)). The budget is a maximum and ADPSGD
may use fewer syncs, so a third row, cpsgd=, runs CPSGD at the period that matches ADPSGD's
actual mean sync count (round(steps / syncs)): equal communication both ways. Each rank
trains on its shard (IID: every N-th sample; --skew: label-sorted contiguous shards) with SGD +
momentum, same initial model and the same per-rank batch sequence for every method. The final model is the
average of the workers (one extra allreduce, for both methods, not counted as a sync).
Reported: training loss/accuracy of the final model on the whole training set, test accuracy,
syncs, and the mean parameter variance V measured at the syncs (mean over seeds, +- std).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import accord  # noqa: E402
from accord.demo import digits_shards  # noqa: E402
from _common import Column, Table, collect_metadata, note, print_metadata, write_json  # noqa: E402


def evaluate(model, xy):
    with torch.no_grad():
        out = model(xy[0])
        return (float(torch.nn.functional.cross_entropy(out, xy[1])),
                float((out.argmax(1) == xy[1]).float().mean()))


def run(comm, method, args, seed, period, budget, shards):
    shard, train, test = shards
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(64, args.hidden), torch.nn.ReLU(),
                                torch.nn.Linear(args.hidden, 10))
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    sched = (torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.steps)
             if args.lr_schedule == "cosine" else None)
    rng = np.random.default_rng(1000 * seed + comm.rank)
    if method in ("cpsgd", "cpsgd="):
        avg = accord.PeriodicAverager(period, track_variance=True, comm=comm)
    else:
        avg = accord.AdaptivePeriodicAverager(total_steps=args.steps, budget=budget, comm=comm)
    for _ in range(args.steps):
        idx = rng.integers(0, len(shard[1]), args.batch)
        loss = torch.nn.functional.cross_entropy(model(shard[0][idx]), shard[1][idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
        avg.average_parameters(model.parameters())
    accord.grouped_allreduce_([p.detach() for p in model.parameters()], comm=comm)
    train_loss, train_acc = evaluate(model, train)
    _, test_acc = evaluate(model, test)
    vs = [h[2] for h in avg.variance_history]
    periods = [h[1] for h in avg.variance_history]
    return dict(method=method, seed=seed, period=period, budget=budget, syncs=avg.num_syncs,
                train_loss=train_loss, train_acc=train_acc, test_acc=test_acc,
                mean_variance=float(np.mean(vs)) if vs else 0.0,
                periods=periods if method == "adpsgd" else None)


def run_lsgd(comm, args, seed, select_by, shards):
    """LSGD (group_size=2, period 4, global_period 16): test accuracy of the leader and of the
    average; select_by "common" scores workers on a fixed 64-sample training batch shared by
    every rank."""
    shard, train, test = shards
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(64, args.hidden), torch.nn.ReLU(),
                                torch.nn.Linear(args.hidden, 10))
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    idx = np.random.default_rng(123).choice(len(train[1]), 64, replace=False)
    xc, yc = train[0][idx], train[1][idx]
    common = (lambda: float(torch.nn.functional.cross_entropy(model(xc), yc).detach())) \
        if select_by == "common" else None
    lsgd = accord.LeaderSGD(model.parameters(), group_size=2, period=4, global_period=16,
                            select_by=select_by, common_loss=common, comm=comm)
    rng = np.random.default_rng(1000 * seed + comm.rank)
    for _ in range(args.steps):
        i = rng.integers(0, len(shard[1]), args.batch)
        loss = torch.nn.functional.cross_entropy(model(shard[0][i]), shard[1][i])
        opt.zero_grad()
        loss.backward()
        opt.step()
        lsgd.step(loss.item())
    models = {kind: lsgd.evaluation_parameters(kind) for kind in ("leader", "average")}
    out = {}
    for kind, params in models.items():  # only now overwrite the worker's parameters
        with torch.no_grad():
            for p, v in zip(model.parameters(), params):
                p.copy_(v)
        out[kind] = evaluate(model, test)[1]
    return out


def lsgd_table(comm, args, meta):
    cols = [Column("shards", "", 7, "s"), Column("select_by", "", 9, "s"),
            Column("leader", "(%)", 7, ".2f"), Column("+-", "(%)", 6, ".2f", title="+-"),
            Column("average", "(%)", 8, ".2f"), Column("+-a", "(%)", 6, ".2f", title="+-")]
    table = Table(cols)
    if comm.rank == 0:
        print_metadata(meta)
        table.print_header()
    for skew in (False, True):
        shards = digits_shards(comm.rank, comm.size, skew=skew)
        for sel in ("window", "common"):
            rs = [run_lsgd(comm, args, seed, sel, shards) for seed in range(args.seeds)]
            lm, ls = summary(rs, "leader")
            am, as_ = summary(rs, "average")
            row = {"shards": "sorted" if skew else "iid", "select_by": sel, "leader": 100 * lm,
                   "+-": 100 * ls, "average": 100 * am, "+-a": 100 * as_}
            if comm.rank == 0:
                table.print_row(row)
    if comm.rank == 0:
        note(f"JSON: {write_json(args.json, {'metadata': meta, 'rows': table.rows})}")


def summary(rows, key):
    xs = [r[key] for r in rows]
    return statistics.mean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=640)
    ap.add_argument("--periods", type=int, nargs="+", default=[4, 8, 16, 32])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--lr-schedule", choices=("constant", "cosine"), default="constant")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--skew", action="store_true", help="label-sorted (non-IID) shards")
    ap.add_argument("--lsgd", action="store_true",
                    help="instead: LSGD test accuracy, leader vs average, window vs common")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if args.json is None:
        args.json = "results/averaging_lsgd.json" if args.lsgd else "results/averaging.json"
    torch.set_num_threads(1)
    comm = accord.init()
    root = comm.rank == 0

    meta = collect_metadata(ranks=comm.size, steps=args.steps, seeds=args.seeds, lr=args.lr,
                            lr_schedule=args.lr_schedule, batch=args.batch, hidden=args.hidden,
                            shards="label-sorted" if args.skew else "iid",
                            definition=("LSGD group_size=2 period=4 global_period=16; test "
                                        "accuracy of evaluation_parameters(leader / average)"
                                        if args.lsgd else
                                        "ADPSGD budget = CPSGD syncs (steps // period); final "
                                        "model = average of workers; mean_V = mean of V at "
                                        "syncs"))
    if args.lsgd:
        return lsgd_table(comm, args, meta)
    shards = digits_shards(comm.rank, comm.size, skew=args.skew)
    cols = [Column("period", "", 7, "d"), Column("method", "", 7, "s"),
            Column("run_period", "", 6, "d", title="p_run"),
            Column("syncs", "", 6, ".1f"), Column("train_loss", "", 11, ".4f"),
            Column("+-", "", 7, ".4f", title="+-"), Column("train_acc", "(%)", 10, ".2f"),
            Column("test_acc", "(%)", 9, ".2f"), Column("+-acc", "(%)", 6, ".2f"),
            Column("mean_V", "", 10, ".3g"), Column("wins", "adp<", 7, "s")]
    table = Table(cols)
    if root:
        print_metadata(meta)
        table.print_header()
    raw = []
    for p in args.periods:
        budget = args.steps // p
        per = {"cpsgd": [], "adpsgd": [], "cpsgd=": []}
        for seed in range(args.seeds):
            for method in ("cpsgd", "adpsgd"):
                r = run(comm, method, args, seed, p, budget, shards)
                per[method].append(r)
                raw.append(r)
        matched = max(1, round(args.steps / summary(per["adpsgd"], "syncs")[0]))
        for seed in range(args.seeds):
            if matched == p:  # same run as the cpsgd row: reuse it
                r = dict(per["cpsgd"][seed], method="cpsgd=")
            else:
                r = run(comm, "cpsgd=", args, seed, matched, args.steps // matched, shards)
            per["cpsgd="].append(r)
            raw.append(r)
        for method, rows in per.items():
            ref = per["adpsgd"]
            wins = sum(a["train_loss"] < c["train_loss"] for a, c in zip(ref, rows))
            loss_m, loss_s = summary(rows, "train_loss")
            acc_m, acc_s = summary(rows, "test_acc")
            row = dict(period=p, method=method, syncs=summary(rows, "syncs")[0],
                       train_loss=loss_m, **{"+-": loss_s},
                       train_acc=100 * summary(rows, "train_acc")[0], test_acc=100 * acc_m,
                       **{"+-acc": 100 * acc_s}, mean_V=summary(rows, "mean_variance")[0],
                       wins=(f"{wins}/{len(rows)}" if method != "adpsgd" else ""),
                       run_period=rows[0]["period"])
            if root:
                table.print_row(row)
            else:
                table.rows.append(row)
        if root:
            periods = per["adpsgd"][0]["periods"]
            note(f"ADPSGD periods (seed 0, p={p}): {periods}")
    if root:
        note("adp<: seeds where ADPSGD's final training loss is below this row's (same seed);"
             " p_run: the period CPSGD ran at (adpsgd: the CPSGD period that set its budget)")
        path = write_json(args.json, {"metadata": meta, "rows": table.rows, "runs": raw})
        note(f"JSON: {path}")


if __name__ == "__main__":
    main()
