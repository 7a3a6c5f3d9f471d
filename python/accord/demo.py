"""accord demo: `mpirun -np 4 python -m accord.demo` (what `make demo` runs).

Trains the same small MLP on scikit-learn's bundled digits data set (no download) on every rank,
each rank drawing its own mini-batches, and aggregates the gradients three ways:

  average   lr tuned for one rank, gradients averaged (what DDP does)
  average*N the same with the learning rate scaled linearly by the rank count
  adasum    the single-rank lr, gradients combined with accord's Adasum

It prints test accuracy as training goes, the ratio |Adasum(g)| / |mean(g)| (about sqrt(N) while
the ranks' gradients agree, growing toward N as they decorrelate: Adasum's adaptive step size),
and a short allreduce timing of Adasum against raw MPI on this machine.
"""
from __future__ import annotations

import argparse
import time

import numpy as np


def _digits():
    """sklearn's digits (bundled with scikit-learn): float32 features in [0, 1], labels."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return (x / 16.0).astype(np.float32), y


def digits_shards(rank: int, size: int, seed: int = 0, skew: bool = False):
    """(this rank's training shard, the whole training set, the test set) as (x, y) torch
    tensor pairs: a fifth of a seeded permutation is the test set; shards take every size-th
    training sample, or with ``skew`` contiguous blocks of the label-sorted training set (each
    rank sees few classes). Used by benchmarks/averaging.py and the averaging/leader tests."""
    import torch

    if not 0 <= rank < size:
        raise ValueError(f"digits_shards: rank {rank} is not in [0, size={size}); pass this "
                         "process's rank and the number of ranks")
    x, y = _digits()
    perm = np.random.default_rng(seed).permutation(len(y))
    n_test = len(y) // 5
    test, train = perm[:n_test], perm[n_test:]
    if skew:
        shard = np.array_split(train[np.argsort(y[train], kind="stable")], size)[rank]
    else:
        shard = train[rank::size]

    def pair(idx):
        return torch.from_numpy(x[idx]), torch.from_numpy(y[idx])

    return pair(shard), pair(train), pair(test)


def _data(seed: int):
    x, y = _digits()
    order = np.random.default_rng(seed).permutation(len(y))
    x, y = x[order], y[order]
    split = int(0.8 * len(y))
    return (x[:split], y[:split]), (x[split:], y[split:])


def _train(method: str, lr: float, args, comm, train, test):
    import torch

    import accord

    torch.manual_seed(args.seed)
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    accord.broadcast_parameters(model.state_dict(), root_rank=0, comm=comm)
    params = list(model.parameters())
    rng = np.random.default_rng(args.seed + 1000 * comm.rank)
    xs, ys = torch.from_numpy(train[0]), torch.from_numpy(train[1])
    xt, yt = torch.from_numpy(test[0]), torch.from_numpy(test[1])
    op = accord.Adasum if method == "adasum" else accord.Average
    history, ratios = [], []
    for step in range(1, args.steps + 1):
        idx = torch.from_numpy(rng.integers(0, len(ys), args.batch))
        loss = torch.nn.functional.cross_entropy(model(xs[idx]), ys[idx])
        model.zero_grad()
        loss.backward()
        grads = [p.grad for p in params]
        if method == "adasum" and step % args.every == 0:
            mean = accord.grouped_allreduce(grads, op=accord.Average, comm=comm)
        accord.grouped_allreduce_(grads, op=op, comm=comm)
        if method == "adasum" and step % args.every == 0:
            num = sum(float(g.double().square().sum()) for g in grads) ** 0.5
            den = sum(float(m.double().square().sum()) for m in mean) ** 0.5
            ratios.append(num / max(den, 1e-30))
        with torch.no_grad():
            for p in params:
                p.add_(p.grad, alpha=-lr)
        if step % args.every == 0 or step == args.steps:
            with torch.no_grad():
                acc = float((model(xt).argmax(1) == yt).float().mean())
            history.append((step, acc))
    return history, ratios


def _bench(comm, nbytes: int, iters: int = 5):
    import accord

    x = np.random.default_rng(comm.rank).standard_normal(nbytes // 4).astype(np.float32)
    raw, ada = [], []
    mpi = getattr(comm, "mpi_comm", None)
    for _ in range(iters):
        buf = x.copy()
        comm.barrier()
        t0 = time.perf_counter()
        if mpi is not None:
            from mpi4py import MPI
            mpi.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
        else:
            comm.allreduce_(buf)
        raw.append(time.perf_counter() - t0)
        buf = x.copy()
        comm.barrier()
        t0 = time.perf_counter()
        accord.allreduce_(buf, op=accord.Adasum, comm=comm)
        ada.append(time.perf_counter() - t0)
    t = comm.allreduce_small(np.array([np.median(raw), np.median(ada)]), "max")
    return t[0], t[1]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch", type=int, default=32, help="samples per rank per step")
    parser.add_argument("--lr", type=float, default=0.5, help="learning rate tuned for one rank")
    parser.add_argument("--every", type=int, default=10, help="report interval (steps)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bench-mib", type=int, default=16)
    args = parser.parse_args(argv)

    import torch

    import accord

    torch.set_num_threads(1)
    comm = accord.init()
    N, rank = comm.size, comm.rank
    train, test = _data(args.seed)
    runs = {
        "average": _train("average", args.lr, args, comm, train, test),
        f"average*{N}": _train("average", args.lr * N, args, comm, train, test),
        "adasum": _train("adasum", args.lr, args, comm, train, test),
    }
    raw, ada = _bench(comm, args.bench_mib << 20)
    if rank != 0:
        return
    info = accord.build_info()
    print(f"# accord {info['version']} demo: {N} ranks ({comm.backend}), digits MLP, "
          f"{args.batch} samples/rank/step, lr {args.lr} (tuned for 1 rank), seed {args.seed}")
    print("# test accuracy by step")
    steps = [s for s, _ in runs["average"][0]]
    print(f"{'step':>6} " + " ".join(f"{name:>11}" for name in runs))
    for i, s in enumerate(steps):
        print(f"{s:>6} " + " ".join(f"{runs[name][0][i][1]:>11.3f}" for name in runs))
    ratios = runs["adasum"][1]
    if ratios:
        print("# |Adasum(g)|/|mean(g)| at the report steps: "
              + " ".join(f"{r:.2f}" for r in ratios) + f"   (sqrt(N)={N ** 0.5:.2f}, N={N})")
    print(f"# allreduce of {args.bench_mib} MiB float32 on this machine: raw MPI sum "
          f"{raw * 1e3:.1f} ms, accord Adasum {ada * 1e3:.1f} ms ({ada / raw:.2f}x)")


if __name__ == "__main__":
    main()
