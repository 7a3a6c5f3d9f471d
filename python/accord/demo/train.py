"""The demo's methods and the training loop they share.

Every method trains the same MLP from the same initial weights on the same per-rank batch
sequence with plain SGD (no momentum); only the aggregation differs. Each gets its own
CountingCommunicator, so the bytes it sends are measured, not estimated.
"""
from __future__ import annotations

import copy
import time

import numpy as np

from .counting import CountingCommunicator

# key: (label, one line). The label's {N} is the rank count.
METHODS = {
    "average": ("average", "mean gradient every step, lr tuned for one rank"),
    "average-xN": ("average lr*{N}", "mean gradient every step, lr scaled linearly by N"),
    "adasum": ("adasum", "DistributedOptimizer(op=accord.Adasum), single-rank lr"),
    "acga": ("acga", "DistributedOptimizer(op=accord.Consensus), keep_scale=True, "
                     "single-rank lr"),
    "lsgd": ("lsgd", "local SGD + LeaderSGD pulls toward the lowest-loss worker"),
    "cpsgd": ("cpsgd", "local SGD + PeriodicAverager (every --period steps)"),
    "adpsgd": ("adpsgd", "local SGD + AdaptivePeriodicAverager (budget: cpsgd's syncs)"),
}


def mlp(hidden: int):
    import torch

    return torch.nn.Sequential(torch.nn.Linear(64, hidden), torch.nn.ReLU(),
                               torch.nn.Linear(hidden, 10))


def build(key, model, args, comm, N):
    """(optimizer, after_step(loss) or None, lr, info() -> dict) for method ``key``;
    ``comm`` is the counting communicator every accord object of the method runs on."""
    import torch

    import accord

    lr = args.lr * N if key == "average-xN" else args.lr
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    named = model.named_parameters()
    if key in ("average", "average-xN"):
        return (accord.DistributedOptimizer(opt, named_parameters=named, op=accord.Average,
                                            comm=comm), None, lr, dict)
    if key == "adasum":
        return (accord.DistributedOptimizer(opt, named_parameters=named, op=accord.Adasum,
                                            comm=comm), None, lr, dict)
    if key == "acga":
        # keep_scale: the aggregated direction keeps the mean gradient norm, so the single-rank
        # lr carries over (without it |G| <= 1 and the lr would have to be re-tuned).
        agg = accord.ConsensusAggregator(keep_scale=True, comm=comm)
        return (accord.DistributedOptimizer(opt, named_parameters=named, op=accord.Consensus,
                                            consensus=agg, comm=comm), None, lr, dict)
    if key == "lsgd":
        lsgd = accord.LeaderSGD(model.parameters(), comm=comm)
        return (opt, lsgd.step, lr,
                lambda: {"syncs": lsgd.num_local_rounds, "global_syncs": lsgd.num_global_rounds})
    if key == "cpsgd":
        avg = accord.PeriodicAverager(args.period, comm=comm)
    elif key == "adpsgd":
        avg = accord.AdaptivePeriodicAverager(total_steps=args.steps,
                                              budget=args.steps // args.period, comm=comm)
    else:
        raise ValueError(f"unknown method {key!r}; choose from {', '.join(METHODS)}")
    return (opt, lambda loss: avg.average_parameters(model.parameters()), lr,
            lambda: {"syncs": avg.num_syncs})


class _Evaluator:
    """Test accuracy of the mean of the workers' parameters (for the synchronous methods every
    worker holds that model already; for the local ones it is the model one would deploy).
    The averaging runs on the uncounted communicator: it is measurement, not training."""

    def __init__(self, model, comm, data):
        self.model, self.comm = model, comm
        self.eval_model = copy.deepcopy(model)
        _, self.train, self.test = data

    def __call__(self, with_loss=False):
        import torch

        import accord

        params = [p.detach() for p in self.model.parameters()]
        mean = accord.grouped_allreduce(params, op=accord.Average, comm=self.comm)
        with torch.no_grad():
            for p, v in zip(self.eval_model.parameters(), mean):
                p.copy_(v)
            finite = all(bool(torch.isfinite(v).all()) for v in mean)
            acc = float((self.eval_model(self.test[0]).argmax(1) == self.test[1]).float().mean())
            loss = (float(torch.nn.functional.cross_entropy(self.eval_model(self.train[0]),
                                                            self.train[1]))
                    if with_loss else None)
        return acc, loss, finite


def train(key, args, comm, data, progress=None):
    """Train one method; collective. Returns a dict (identical on every rank except
    ``curve`` bytes, which are this rank's until ``finish`` averages them)."""
    import torch

    import accord

    N, rank = comm.size, comm.rank
    shard = data[0]
    torch.manual_seed(args.seed)
    model = mlp(args.hidden)
    accord.broadcast_parameters(model.state_dict(), root_rank=0, comm=comm)  # setup, uncounted
    counted = CountingCommunicator(comm)
    opt, after_step, lr, info = build(key, model, args, counted, N)
    evaluate = _Evaluator(model, comm, data)
    rng = np.random.default_rng(1000 * args.seed + rank)  # the same batches for every method
    every = max(1, args.steps // args.evals)
    acc, _, _ = evaluate()
    curve = [(0, acc, 0.0)]
    times, diverged_at = [], None
    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        idx = torch.from_numpy(rng.integers(0, len(shard[1]), args.batch))
        t0 = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(shard[0][idx]), shard[1][idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        loss = loss.item()
        if after_step is not None:
            after_step(loss)
        times.append(time.perf_counter() - t0)
        if step % every == 0 or step == args.steps:
            acc, _, finite = evaluate()
            curve.append((step, acc, counted.bytes))
            if progress is not None:
                progress(key, step, acc, loss, counted.bytes)
            if not finite:  # the mean is identical on every rank: all stop here together
                diverged_at = step
                break
    wall = time.perf_counter() - start
    acc, train_loss, _ = evaluate(with_loss=True)

    # Bytes per rank = mean over ranks of what each sent; a step's time = the slowest rank's.
    sent = comm.allreduce_small(np.array([c[2] for c in curve], dtype=np.float64)) / N
    curve = [(s, a, float(b)) for (s, a, _), b in zip(curve, sent)]
    mine = np.asarray(times, dtype=np.float64)
    every_rank = np.empty(N * len(mine))
    comm.allgather(mine, every_rank)
    step_s = every_rank.reshape(N, -1).max(axis=0)
    return dict(method=key, lr=lr, steps=len(times), diverged_at=diverged_at, test_acc=acc,
                train_loss=train_loss, bytes_per_rank=curve[-1][2], curve=curve,
                step_ms_median=1e3 * float(np.median(step_s)),
                step_ms_p25=1e3 * float(np.percentile(step_s, 25)),
                step_ms_p75=1e3 * float(np.percentile(step_s, 75)),
                step_ms_mean=1e3 * float(np.mean(step_s)), wall_s=wall, **info())
