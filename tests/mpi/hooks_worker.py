"""accord.hooks (DDP comm hooks) under torch.distributed for one rank count: after each backward
the gradients equal the float64 oracle of every rank's local gradients, per parameter. Launched
by tests/test_hooks.py."""
from __future__ import annotations

import copy
import math

import numpy as np
import torch
import torch.distributed as dist
from _worker import backend, check, check_close, setup, worker_main
from torch import nn
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
from torch.nn.parallel import DistributedDataParallel as DDP
from tree_oracle import adasum_tree

import accord
from accord.consensus import ConsensusAggregator
from accord.hooks import ConsensusHookState, adasum_hook, consensus_hook

# tolerance relative to the largest magnitude, per bucket dtype (see adasum_worker.py)
TOL = {"float32": 2e-5, "float16": 6e-3, "bfloat16": 5e-2}
ROUND = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def make_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 9), nn.Tanh(), nn.Linear(9, 7), nn.Tanh(), nn.Linear(7, 3))


def batch(rank, step):
    g = torch.Generator().manual_seed(100 * rank + step)
    return torch.randn(5, 6, generator=g)


def loss_fn(model, x):
    return (model(x) ** 2).mean()


def flat(tensors, dtype=torch.float64):
    return np.concatenate([t.detach().to(dtype).reshape(-1).numpy() for t in tensors])


def gather(comm, v):
    v = np.ascontiguousarray(v, dtype=np.float64)
    out = np.empty(comm.size * v.size)
    comm.allgather(v, out)
    return out.reshape(comm.size, v.size)


def local_grads(model, x):
    m = copy.deepcopy(model)
    for p in m.parameters():
        p.grad = None
    loss_fn(m, x).backward()
    return [p.grad for p in m.parameters()]


def offsets_of(model):
    return np.concatenate([[0], np.cumsum([p.numel() for p in model.parameters()])])


def identical(comm, v, msg):
    every = gather(comm, v)
    for r in range(comm.size):
        check(np.array_equal(every[r], every[0], equal_nan=True), f"{msg}: rank {r} differs")


def check_adasum(comm, wire, bucket_cap_mb, group):
    rank = comm.rank
    model = make_model()
    ddp = DDP(model, bucket_cap_mb=bucket_cap_mb, process_group=group)
    hook = adasum_hook
    if wire == "float16":
        hook = default_hooks.fp16_compress_wrapper(adasum_hook)
    elif wire == "bfloat16":
        wrapped = default_hooks.bf16_compress_wrapper(adasum_hook)

        # DDP refuses a hook *named* bf16_compress_wrapper_hook unless torch has CUDA and NCCL
        # >= 2.10 (NCCL's bf16 allreduce); adasum_hook does not use it, so rename on CPU.
        def hook(state, bucket):
            return wrapped(state, bucket)
    ddp.register_comm_hook(group, hook)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
    off = offsets_of(model)
    for step in range(3):  # DDP rebuilds its buckets after the first iteration
        x = batch(rank, step)
        # the oracle's inputs are the gradients as they travel (rounded to the wire dtype)
        mine = flat([g.to(ROUND[wire]) for g in local_grads(model, x)])
        expected = adasum_tree(gather(comm, mine), off) if comm.size > 1 else mine
        opt.zero_grad()
        loss_fn(ddp, x).backward()
        got = flat([p.grad for p in model.parameters()])
        scale = np.abs(expected).max()
        err = np.abs(got - expected).max()
        check(err <= TOL[wire] * scale, f"adasum hook {wire} cap={bucket_cap_mb} step {step}: "
              f"max err {err:.3g} vs scale {scale:.3g}")
        identical(comm, got, f"adasum hook {wire} grads")
        opt.step()
    identical(comm, flat(model.parameters()), f"adasum hook {wire} params")


def check_consensus(comm, wire):
    rank = comm.rank
    kw = {"granularity": "layer", "momentum": 0.5, "keep_scale": True}
    model = make_model()
    ddp = DDP(model)
    hook = consensus_hook if wire == "float32" else default_hooks.fp16_compress_wrapper(
        consensus_hook)
    ddp.register_comm_hook(ConsensusHookState(kw), hook)
    ref = ConsensusAggregator(**kw, comm=comm)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
    for step in range(3):
        x = batch(rank, 10 + step)
        expected = flat(ref.aggregate([g.to(ROUND[wire]) for g in local_grads(model, x)]))
        opt.zero_grad()
        loss_fn(ddp, x).backward()
        got = flat([p.grad for p in model.parameters()])
        # Momentum is kept per bucket layout: DDP's bucket rebuild after the first iteration
        # restarts it, so the stateful reference only matches on the first step.
        if step == 0:
            scale = np.abs(expected).max()
            check(np.abs(got - expected).max() <= TOL[wire] * scale,
                  f"consensus hook {wire}: max err {np.abs(got - expected).max():.3g}")
        identical(comm, got, f"consensus hook {wire} grads")
        opt.step()
    identical(comm, flat(model.parameters()), f"consensus hook {wire} params")


def check_nonfinite(comm):
    """An overflow on one rank gives non-finite gradients on every rank (GradScaler skips)."""
    for hook, state in ((adasum_hook, None), (consensus_hook, ConsensusHookState())):
        model = make_model()
        ddp = DDP(model)
        ddp.register_comm_hook(state, hook)
        loss = loss_fn(ddp, batch(comm.rank, 20))
        if comm.rank == comm.size - 1:
            loss = loss * math.inf
        loss.backward()
        for p in model.parameters():
            check(not torch.isfinite(p.grad).any(), f"{hook.__name__}: finite grads left")


class _Bucket:
    """The two methods of DDP's GradBucket the hooks use."""

    def __init__(self, buf, grads):
        self._buf, self._grads = buf, grads

    def buffer(self):
        return self._buf

    def gradients(self):
        return self._grads


def check_async(comm):
    """The hook returns before its reduction has run (the worker is held busy), and the future
    completes with the Adasum of every rank's bucket once it runs."""
    import threading

    from accord.hooks import _comm_for, _worker_for
    n = 40
    buf = torch.from_numpy(np.random.default_rng(comm.rank).standard_normal(n).astype(np.float32))
    grads = [buf[:15], buf[15:]]
    every = gather(comm, buf.double().numpy())
    gate = threading.Event()
    _worker_for(_comm_for(None)).submit(gate.wait)  # the hooks' worker is busy until set
    fut = adasum_hook(None, _Bucket(buf, grads))
    check(not fut.done(), "adasum_hook must return before the reduction ran")
    gate.set()
    out = fut.wait()
    check(out is buf, "the future holds the bucket buffer")
    expected = adasum_tree(list(every), np.array([0, 15, n], dtype=np.int64))
    check_close(out.double().numpy(), expected, rtol=1e-5, atol=1e-6, msg="async adasum_hook")
    identical(comm, out.double().numpy(), "async adasum_hook result")


def main():
    comm = setup()
    accord.init(comm)
    torch.set_num_threads(1)
    group = dist.new_group(list(range(comm.size)))
    for wire, cap, pg in (("float32", 25, None), ("float32", 0.0002, None),
                          ("float32", 25, group), ("float16", 0.0002, None),
                          ("bfloat16", 25, None)):
        check_adasum(comm, wire, cap, pg)
    for wire in ("float32", "float16"):
        check_consensus(comm, wire)
    check_nonfinite(comm)
    check_async(comm)
    # bad state: a clear error
    try:
        consensus_hook(None, None)
    except TypeError as e:
        check("ConsensusHookState" in str(e), str(e))
    else:
        check(False, "consensus_hook(None, ...) did not raise")
    try:
        ConsensusHookState({"comm": comm})
    except ValueError as e:
        check("process_group" in str(e), str(e))
    else:
        check(False, "ConsensusHookState(comm=...) did not raise")
    comm.barrier()
    if comm.rank == 0:
        print(f"hooks_worker: all checks passed on {comm.size} ranks ({backend()})")


if __name__ == "__main__":
    worker_main(main)
