"""Distributed paths on one device kind, for ``make gpu-test`` (tests/gpu/run_gpu_tests.sh).

    mpirun -np 2 python tests/gpu/distributed_worker.py --device cuda   # 2 ranks share a GPU
    torchrun --nproc-per-node 1 tests/gpu/distributed_worker.py --device cuda --backend nccl
    mpirun -np 2 python tests/gpu/distributed_worker.py --device cpu    # the same checks on CPU

Checks, every result compared with a float64 oracle built from every rank's input and checked
bitwise identical across ranks: allreduce with Sum / Average / Adasum in float32, float64,
float16 and bfloat16; grouped_allreduce_ (per-tensor Adasum coefficients); hierarchical Adasum
(one node here: the node average); DistributedOptimizer with Average, Sum, Adasum (delta and
gradients) and Consensus; adasum_hook and consensus_hook on a bucket; ConsensusAggregator.
Prints "distributed_worker: all checks passed" on rank 0.
"""
from __future__ import annotations

import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "mpi"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from _worker import check, setup, worker_main  # noqa: E402
from tree_oracle import adasum_tree  # noqa: E402

import accord  # noqa: E402
from accord.consensus import ConsensusAggregator  # noqa: E402
from accord.hooks import ConsensusHookState, adasum_hook, consensus_hook  # noqa: E402

DTYPES = {"float32": (torch.float32, 2e-5), "float64": (torch.float64, 1e-10),
          "float16": (torch.float16, 6e-3), "bfloat16": (torch.bfloat16, 5e-2)}


GATHER_DEVICE = None  # NCCL moves CUDA tensors only: the oracle's gathers go through the GPU


def gather(comm, t):
    if GATHER_DEVICE is not None:
        v = t.detach().to(GATHER_DEVICE, torch.float64).reshape(-1).contiguous()
        out = torch.empty(comm.size * v.numel(), dtype=torch.float64, device=GATHER_DEVICE)
        comm.allgather(v, out)
        return out.cpu().numpy().reshape(comm.size, v.numel())
    v = np.ascontiguousarray(t.detach().to("cpu", torch.float64).reshape(-1).numpy())
    out = np.empty(comm.size * v.size)
    comm.allgather(v, out)
    return out.reshape(comm.size, v.size)


def identical(comm, t, what):
    bits = t.detach().reshape(-1).cpu()
    bits = bits.view(torch.int16) if bits.element_size() == 2 else bits
    every = gather(comm, bits.to(torch.float64))
    check(all(np.array_equal(every[0], e) for e in every), f"{what}: ranks differ")


def near(got, expected, tol, what):
    g = got.detach().to("cpu", torch.float64).reshape(-1).numpy()
    scale = max(float(np.abs(expected).max()), 1e-30)
    err = float(np.abs(g - expected).max()) if g.size else 0.0
    check(err <= tol * scale, f"{what}: max error {err:.3g} > {tol:g} x {scale:.3g}")


def check_collectives(comm, dev):
    n = 3000
    for name, (dtype, tol) in DTYPES.items():
        g = torch.Generator().manual_seed(100 + comm.rank)
        x = torch.randn(n, generator=g).to(dev, dtype)
        every = gather(comm, x)
        for op, want in ((accord.Sum, every.sum(0)), (accord.Average, every.mean(0)),
                         (accord.Adasum, adasum_tree(list(every), np.array([0, n])))):
            r = accord.allreduce(x, op=op)
            check(r.device == x.device and r.dtype == dtype, f"allreduce {op} {name}: placement")
            near(r, want, tol, f"allreduce {op} {name}")
            identical(comm, r, f"allreduce {op} {name}")
        ts = [x[:1000].clone(), x[1000:1100].clone().reshape(10, 10), x[1100:].clone()]
        accord.grouped_allreduce_(ts, op=accord.Adasum)
        got = torch.cat([t.reshape(-1) for t in ts])
        near(got, adasum_tree(list(every), np.array([0, 1000, 1100, n])), tol,
             f"grouped Adasum {name}")
        identical(comm, got, f"grouped Adasum {name}")
    x = torch.randn(n, generator=torch.Generator().manual_seed(7 + comm.rank)).to(dev)
    every = gather(comm, x)
    r = accord.allreduce(x, op=accord.Adasum, hierarchical=True)
    # every rank on one node: the node average, and Adasum over a single node leaves it
    near(r, every.mean(0), 2e-5, "hierarchical Adasum (one node)")
    identical(comm, r, "hierarchical Adasum")


def model_on(dev):
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(),
                               torch.nn.Linear(16, 3)).to(dev)


def check_optimizer(comm, dev):
    configs = [("average", accord.Average, {}), ("sum", accord.Sum, {}),
               ("adasum-delta", accord.Adasum, {}),
               ("adasum-gradients", accord.Adasum, {"adasum_mode": "gradients"}),
               ("consensus", accord.Consensus, {})]
    for name, op, kw in configs:
        model = model_on(dev)
        opt = accord.DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1,
                                                          momentum=0.9),
                                          named_parameters=model.named_parameters(), op=op,
                                          **kw)
        g = torch.Generator().manual_seed(comm.rank)
        for _ in range(3):
            x = torch.randn(32, 8, generator=g).to(dev)
            opt.zero_grad()
            model(x).square().mean().backward()
            opt.step()
        flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
        check(bool(torch.isfinite(flat).all()), f"optimizer {name}: non-finite parameters")
        identical(comm, flat, f"optimizer {name} parameters")
        opt.close()


class _Bucket:
    def __init__(self, buf, grads):
        self._buf, self._grads = buf, grads

    def buffer(self):
        return self._buf

    def gradients(self):
        return self._grads

    def index(self):
        return 0


def check_hooks(comm, dev):
    n = 500
    x = torch.randn(n, generator=torch.Generator().manual_seed(50 + comm.rank)).to(dev)
    every = gather(comm, x)
    buf = x.clone()
    out = adasum_hook(comm, _Bucket(buf, [buf[:200], buf[200:]])).wait()
    torch.cuda.synchronize() if buf.is_cuda else None
    near(out, adasum_tree(list(every), np.array([0, 200, n])), 2e-5, "adasum_hook")
    identical(comm, out, "adasum_hook")
    state = ConsensusHookState(ConsensusAggregator(comm=comm, granularity="layer"))
    buf = x.clone()
    out = consensus_hook(state, _Bucket(buf, [buf[:200], buf[200:]])).wait()
    check(bool(torch.isfinite(out).all()), "consensus_hook: non-finite")
    identical(comm, out, "consensus_hook")


def check_consensus(comm, dev):
    x = torch.randn(1000, generator=torch.Generator().manual_seed(70 + comm.rank)).to(dev)
    agg = ConsensusAggregator(comm=comm)
    agg.aggregate_flat_(x, np.array([0, 400, 1000]))
    check(bool(torch.isfinite(x).all()), "ConsensusAggregator: non-finite")
    identical(comm, x, "ConsensusAggregator")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cuda")
    args = ap.parse_args()
    comm = setup()
    accord.init(comm)
    torch.set_num_threads(1)
    if args.device == "cuda":
        local = int(os.environ.get("LOCAL_RANK", os.environ.get("OMPI_COMM_WORLD_LOCAL_RANK", 0)))
        dev = torch.device("cuda", local % torch.cuda.device_count())
        torch.cuda.set_device(dev)
    else:
        dev = torch.device("cpu")
    if os.environ.get("ACCORD_TEST_BACKEND") == "nccl":
        global GATHER_DEVICE
        GATHER_DEVICE = dev
    check_collectives(comm, dev)
    check_optimizer(comm, dev)
    check_hooks(comm, dev)
    check_consensus(comm, dev)
    comm.barrier()
    if comm.rank == 0:
        print(f"distributed_worker: all checks passed on {comm.size} ranks "
              f"({os.environ.get('ACCORD_TEST_BACKEND', 'mpi')}, {dev})", flush=True)
    accord.shutdown()


if __name__ == "__main__":
    worker_main(main)
