"""Horovod-signature API on N ranks, started by mpirun or torchrun with no explicit transport
set-up: ``accord.init()`` alone must find the launcher (``--expect mpi|gloo``)."""
from __future__ import annotations

import argparse
import os
import warnings

import numpy as np
import torch

import accord
from _worker import check, check_close, check_identical_across_ranks, worker_main
from tree_oracle import adasum_tree


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--expect", required=True)
    args = ap.parse_args()
    accord.init()
    comm = accord.communicator()
    n, r = accord.size(), accord.rank()
    announced = int(os.environ.get("WORLD_SIZE") or os.environ.get("OMPI_COMM_WORLD_SIZE"))
    check(n == announced, f"size {n} != launcher's {announced}")
    check(comm.backend == args.expect, f"backend {comm.backend}, expected {args.expect}")
    check(accord.cross_size() == 1 and accord.cross_rank() == 0 and accord.is_homogeneous(),
          "one node: cross_size 1")
    check(accord.local_size() == n, "one node: local_size == size")

    # element-wise ops, scale factors, average=
    x = torch.tensor([r + 1.0, -(r + 1.0), 2.0])
    check_close(accord.allreduce(x, op=accord.Min), [1.0, -n, 2.0])
    check_close(accord.allreduce(x, op=accord.Max), [n, -1.0, 2.0])
    fact = float(np.prod(np.arange(1, n + 1)))
    check_close(accord.allreduce(x, op=accord.Product), [fact, (-1) ** n * fact, 2.0 ** n])
    s = n * (n + 1) / 2
    check_close(accord.allreduce(x, op=accord.Sum, prescale_factor=2.0, postscale_factor=0.5),
                [s, -s, 2.0 * n])
    check_close(accord.allreduce(x, name="avg"), [s / n, -s / n, 2.0])
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        check_close(accord.allreduce(x, average=False), [s, -s, 2.0 * n])
    check(any(issubclass(i.category, DeprecationWarning) for i in w), "average= warns")
    check_close(accord.allreduce(np.array([1.0, 2.0]), op=accord.Sum), [n, 2.0 * n])
    try:
        accord.allreduce(x, name="my_metric", op="median")
        check(False, "bad op accepted")
    except ValueError as e:
        check("my_metric" in str(e) and "op must be" in str(e), f"message: {e}")

    # async: handles in call order, interleaved with blocking calls
    a = torch.full((1000,), float(r))
    handles = [accord.allreduce_async(a * k, op=accord.Sum, name=f"a{k}") for k in range(5)]
    h_inplace = accord.allreduce_async_(a, op=accord.Max)
    h_group = accord.grouped_allreduce_async([torch.ones(3) * r, torch.ones(2)], op=accord.Sum)
    h_b = accord.broadcast_async(torch.tensor([float(r)]), root_rank=n - 1)
    h_g = accord.allgather_async(torch.tensor([[float(r)]] * (r + 1)))
    mid = accord.allreduce(torch.tensor([1.0]), op=accord.Sum)  # queued behind the handles
    check_close(mid, [n])
    for k, h in enumerate(handles):
        check_close(accord.synchronize(h), np.full(1000, k * s - k * n))
        check(accord.poll(h), "poll after synchronize")
    check(accord.synchronize(h_inplace) is a, "in-place async returns the tensor")
    check_close(a, np.full(1000, n - 1.0))
    g0, g1 = accord.synchronize(h_group)
    check_close(g0, np.full(3, s - n)), check_close(g1, np.full(2, float(n)))
    check_close(accord.synchronize(h_b), [n - 1.0])
    check(accord.synchronize(h_g).shape == (s, 1), "allgather_async shape")

    # objects, barrier, join
    obj = accord.broadcast_object({"epoch": 3, "rank": r} if r == 0 else None, root_rank=0)
    check(obj == {"epoch": 3, "rank": 0}, f"broadcast_object: {obj}")
    check(accord.allgather_object(("r", r)) == [("r", i) for i in range(n)], "allgather_object")
    accord.barrier()
    last = accord.join()
    check(0 <= last < n and accord.allgather_object(last) == [last] * n, "join agrees")
    check(isinstance(accord.mpi_threads_supported(), bool), "mpi_threads_supported")

    # Adasum with 16-bit exchanges: close to the float64 tree, identical bits on every rank
    rng = np.random.default_rng(100 + r)
    for size_ in (1, 7, 1000, 4099):
        v = rng.standard_normal(size_).astype(np.float32)
        every = comm.allgather_object(v)
        exp = adasum_tree(every, np.array([0, size_], dtype=np.int64))
        for comp, tol in ((accord.Compression.fp16, 4e-3), (accord.Compression.bf16, 3e-2)):
            got = accord.allreduce(torch.from_numpy(v), op=accord.Adasum, compression=comp)
            check(got.dtype == torch.float32, "result stays float32")
            err = np.abs(got.numpy() - exp).max() / np.abs(exp).max()
            check(err < tol, f"adasum {comp.__name__} n={size_}: rel err {err:.2e} >= {tol}")
            check_identical_across_ranks(comm, [got.numpy()], f"adasum {comp.__name__}")
        got16 = accord.allreduce(v, op=accord.Adasum, compression=accord.Compression.fp16)
        check(got16.dtype == np.float32, "numpy result stays float32")
    plain = torch.from_numpy(rng.standard_normal(4099).astype(np.float32))
    exact = accord.allreduce(plain, op=accord.Adasum)
    comp = accord.allreduce(plain, op=accord.Adasum, compression=accord.Compression.fp16)
    check(n == 1 or not torch.equal(exact, comp), "fp16 compression changes the bits")
    ts = [torch.randn(5, 3), torch.randn(17)]
    out = accord.grouped_allreduce(ts, op=accord.Sum, compression=accord.Compression.fp16)
    ref = accord.grouped_allreduce(ts, op=accord.Sum)
    for o, e in zip(out, ref):
        check_close(o, e, rtol=0, atol=2e-2 * n)

    # DistributedOptimizer: Horovod's keywords, compression on each op
    for op, c in ((accord.Average, accord.Compression.fp16), (accord.Adasum,
                                                              accord.Compression.fp16),
                  (accord.Adasum, accord.Compression.bf16), (accord.Sum, None)):
        torch.manual_seed(0)
        model = torch.nn.Linear(4, 2)
        opt = accord.DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1),
                                          named_parameters=model.named_parameters(),
                                          compression=c or accord.Compression.none, op=op,
                                          backward_passes_per_step=2, num_groups=1)
        torch.manual_seed(r)
        for _ in range(2):
            model(torch.randn(8, 4)).pow(2).sum().backward()
        opt.step()
        check_identical_across_ranks(comm, [p.detach().numpy() for p in model.parameters()],
                                     f"optimizer {op} {c}")
        opt.close()

    if comm.backend == "gloo":  # DDP hook with 16-bit Adasum exchanges
        from accord.hooks import AdasumHookState, adasum_hook
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Linear(5, 3))
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        ddp.register_comm_hook(AdasumHookState(compression=accord.Compression.fp16),
                               adasum_hook)
        torch.manual_seed(r)
        ddp(torch.randn(4, 6)).pow(2).sum().backward()
        grads = [p.grad.detach().numpy() for p in model.parameters()]
        check_identical_across_ranks(comm, grads, "DDP adasum_hook fp16")
        check(all(np.isfinite(g).all() and g.dtype == np.float32 for g in grads), "grads")
    accord.shutdown()


if __name__ == "__main__":
    worker_main(main)
