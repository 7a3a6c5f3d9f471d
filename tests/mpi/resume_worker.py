"""Checkpoint mid-training and resume: the resumed run must follow the uninterrupted one bit for
bit, for every training method. Launched by tests/test_resume.py (any number of ranks).

Each method trains a small MLP for T steps without interruption; then again from scratch for K
steps, saves the model, the optimizer and accord's state through ``torch.save`` (every object
is then thrown away: the wrapper is closed), builds everything anew, loads the checkpoint and
trains the remaining T - K steps. Parameters, optimizer state and accord's own state must be
identical (bitwise) to the uninterrupted run's.
"""
from __future__ import annotations

import io
import sys

import numpy as np
import torch
from _worker import check, check_equal, setup, worker_main

import accord

T, K = 24, 11
METHODS = ("average", "adasum", "consensus", "leader", "cpsgd", "adpsgd")


class Run:
    """One method's model, optimizer and accord object, built fresh."""

    def __init__(self, method: str, comm):
        self.method, self.comm = method, comm
        torch.manual_seed(0)  # the same initial model on every rank
        self.model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(),
                                         torch.nn.Linear(16, 3))
        base = torch.optim.SGD(self.model.parameters(), lr=0.05, momentum=0.9)
        self.opt, self.face = base, None
        named = self.model.named_parameters()
        if method == "average":
            self.opt = accord.DistributedOptimizer(base, named, op=accord.Average)
        elif method == "adasum":
            self.opt = accord.DistributedOptimizer(base, named, op=accord.Adasum)
        elif method == "consensus":
            agg = accord.ConsensusAggregator(momentum=0.9, granularity="layer", keep_scale=True)
            self.opt = accord.DistributedOptimizer(base, named, op=accord.Consensus,
                                                   consensus=agg)
        elif method == "leader":
            self.face = accord.LeaderSGD(self.model, period=2, global_period=4,
                                         group_size=2)
        elif method == "cpsgd":
            self.face = accord.PeriodicAverager(3, warmup_steps=2, track_variance=True,
                                                average_optimizer_state=True, optimizer=base)
        elif method == "adpsgd":
            self.face = accord.AdaptivePeriodicAverager(total_steps=T, budget=T // 3,
                                                        warmup_steps=2, min_period=1)

    def step(self, t: int) -> None:
        # each rank its own data, a function of (rank, step) only
        rng = np.random.default_rng(1000 * t + self.comm.rank)
        x = torch.from_numpy(rng.standard_normal((8, 6)).astype(np.float32))
        y = torch.from_numpy(rng.integers(0, 3, 8))
        self.opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(self.model(x), y)
        loss.backward()
        self.opt.step()
        if self.method == "leader":
            self.face.step(loss.item())
        elif self.face is not None:
            self.face.average_parameters(self.model.parameters())

    def accord_state(self):
        if self.method == "consensus":
            return self.opt.consensus.state_dict()
        return None if self.face is None else self.face.state_dict()

    def save(self) -> bytes:
        buf = io.BytesIO()
        torch.save({"model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                    "accord": self.accord_state()}, buf)
        return buf.getvalue()

    def load(self, blob: bytes) -> None:
        ckpt = torch.load(io.BytesIO(blob), weights_only=True)
        self.model.load_state_dict(ckpt["model"])
        self.opt.load_state_dict(ckpt["optimizer"])
        if self.method == "consensus":
            self.opt.consensus.load_state_dict(ckpt["accord"])
        elif self.face is not None:
            self.face.load_state_dict(ckpt["accord"])

    def close(self) -> None:
        if hasattr(self.opt, "close"):
            self.opt.close()


def flat_params(model) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def momentum_buffers(run) -> list:
    return [run.opt.state[p]["momentum_buffer"].clone() for p in run.model.parameters()
            if "momentum_buffer" in run.opt.state[p]]


def main():
    comm = setup()
    accord.init(comm)
    methods = sys.argv[1:] or METHODS
    for method in methods:
        ref = Run(method, comm)
        for t in range(T):
            ref.step(t)
        first = Run(method, comm)
        for t in range(K):
            first.step(t)
        blob = first.save()
        first.close()
        del first
        resumed = Run(method, comm)
        resumed.load(blob)
        for t in range(K, T):
            resumed.step(t)
        check_equal(flat_params(resumed.model), flat_params(ref.model),
                    f"{method}: parameters after resuming at step {K} of {T}")
        for a, b in zip(momentum_buffers(resumed), momentum_buffers(ref)):
            check_equal(a, b, f"{method}: optimizer momentum")
        check(resumed.accord_state() == ref.accord_state(),
              f"{method}: accord state differs:\n {resumed.accord_state()}\n "
              f"{ref.accord_state()}")
        # the run really moved (a resume that loads nothing would be caught above)
        check(not torch.equal(flat_params(ref.model), flat_params(Run(method, comm).model)),
              f"{method}: training changed the parameters")
        ref.close()
        resumed.close()
        if comm.rank == 0:
            print(f"resume {method}: bitwise identical after {T} steps (checkpoint at {K})",
                  flush=True)
    accord.shutdown()
    if comm.rank == 0:
        print(f"resume_worker OK: {len(methods)} methods, size={comm.size}")


if __name__ == "__main__":
    worker_main(main)
