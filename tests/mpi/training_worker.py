"""A short real training run per gradient-aggregation method (Average, Adasum, Consensus through
accord.DistributedOptimizer) on sklearn digits; each must reach the stated test accuracy.
Launched by tests/test_training.py. Data (accord.demo.digits_shards), model and threshold are
shared with the averaging and Leader SGD runs (averaging_worker.py)."""
from __future__ import annotations

import numpy as np
import torch
from _worker import check, setup, worker_main
from averaging_worker import THRESHOLD, evaluate, mlp

import accord
from accord.demo import digits_shards


def train(comm, op, *, steps=150, batch=16, lr=0.05, **opt_kwargs):
    torch.set_num_threads(1)
    shard, _, test = digits_shards(comm.rank, comm.size)
    model = mlp(0)
    opt = accord.DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9),
                                      named_parameters=model.named_parameters(), op=op,
                                      comm=comm, **opt_kwargs)
    rng = np.random.default_rng(comm.rank)
    for _ in range(steps):
        idx = rng.integers(0, len(shard[1]), batch)
        loss = torch.nn.functional.cross_entropy(model(shard[0][idx]), shard[1][idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    params = [p.detach().clone() for p in model.parameters()]
    # every method keeps the replicas identical: check it, then evaluate rank 0's model
    for p in params:
        ref = accord.broadcast(p, 0, comm=comm)
        check(torch.equal(ref, p), f"{op}: parameters differ across ranks")
    return evaluate(model, params, test)[1]


def main():
    comm = setup()
    accord.init(comm)
    results = {
        "average": train(comm, accord.Average),
        "adasum": train(comm, accord.Adasum),
        # the published rule returns a unit-norm direction: keep_scale restores the averaging
        # scale so the same lr applies (docs/consensus.md)
        "consensus": train(comm, accord.Consensus,
                           consensus=accord.ConsensusAggregator(keep_scale=True, comm=comm)),
    }
    for name, acc in results.items():
        check(acc >= THRESHOLD, f"{name}: test accuracy {acc:.3f} < {THRESHOLD}")
    if comm.rank == 0:
        print("training_worker: " + ", ".join(f"{k} {v:.3f}" for k, v in results.items()))
        print(f"training_worker: all methods reached {THRESHOLD} on {comm.size} ranks")


if __name__ == "__main__":
    worker_main(main)
