"""Adasum / Sum / Average allreduce checks for one rank count (any N), against the float64
oracle built from every rank's seeded input. Launched by tests/test_adasum.py."""
from __future__ import annotations

import numpy as np
import torch
from _worker import (backend, check, check_close, check_identical_across_ranks, setup,
                     worker_main)
from tree_oracle import adasum_tree

import accord
from accord.comm import MPICommunicator


def inputs_for(seed, sizes, N, kind="random"):
    """Every rank's list of tensors (float64 numpy), identical on every rank."""
    rng = np.random.default_rng(seed)
    n = sum(sizes)
    out = []
    for r in range(N):
        if kind == "random":
            v = rng.standard_normal(n)
        elif kind == "orthogonal":
            v = np.zeros(n)
            v[r::N] = rng.standard_normal(len(range(r, n, N)))
        elif kind == "parallel":
            v = (r + 1) * (-1) ** r * np.linspace(1, 2, n)
        elif kind == "one_zero":
            v = rng.standard_normal(n) if r != N - 1 else np.zeros(n)
        elif kind == "tiny":
            v = rng.standard_normal(n) * 1e-30
        elif kind == "wide":
            v = rng.standard_normal(n) * 10.0 ** (4 * (r % 3) - 4)
        out.append(v)
    return out


def split(v, sizes):
    return np.split(v, np.cumsum(sizes)[:-1])


def accord_np(t):
    if isinstance(t, torch.Tensor):
        return (t.float() if t.dtype == torch.bfloat16 else t).numpy()
    return t


# Tolerances: float64 results differ from the oracle only by the order of float64 sums
# (tile partials vs numpy's pairwise sum), ~1e-12 relative. Lower precisions round every
# intermediate level's output to the storage type: about log2(N)+1 roundings of 2^-24 (fp32),
# 2^-11 (fp16) or 2^-8 (bf16) relative to the largest input magnitude.
TOL = {"float64": 1e-10, "float32": 2e-5, "float16": 6e-3, "bfloat16": 5e-2}


def make(v, dtype):
    if dtype == "bfloat16":
        return torch.from_numpy(v).to(torch.bfloat16)
    if dtype.startswith("torch_"):
        return torch.from_numpy(v.astype(dtype[6:]))
    return v.astype(dtype)


def stored(v, dtype):
    """The input as the rank actually holds it, widened exactly to float64."""
    return np.asarray(accord_np(make(v, dtype)), dtype=np.float64)


def check_adasum(comm, sizes, kind, dtype, seed, grouped=True):
    N, rank = comm.size, comm.rank
    every = inputs_for(seed, sizes, N, kind)
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    name = dtype if dtype != "bfloat16" else "bfloat16"
    expected = adasum_tree([stored(v, dtype) for v in every], offsets)
    mine = [make(p, dtype) for p in split(every[rank], sizes)]
    if grouped:
        result = accord.grouped_allreduce(mine, op=accord.Adasum, comm=comm)
    else:
        check(len(mine) == 1, "ungrouped check takes one tensor")
        result = [accord.allreduce(mine[0], op=accord.Adasum, comm=comm)]
    got = np.concatenate([np.ravel(accord_np(t)).astype(np.float64) for t in result])
    scale = max(1e-300, np.abs(expected).max()) if expected.size else 1.0
    tol = TOL[name.replace("torch_", "")]
    check(np.all(np.abs(got - expected) <= tol * scale + 1e-300),
          f"adasum {kind} {dtype} sizes={sizes[:6]}: max err {np.abs(got - expected).max():.3g}"
          f" vs scale {scale:.3g}")
    check_identical_across_ranks(comm, result)
    return expected, got


def check_other_collectives(comm):
    """broadcast(_), broadcast_parameters, allgather (ragged), fusion threshold, check switch."""
    N, rank = comm.size, comm.rank
    root = N - 1
    t = torch.full((3, 2), float(rank))
    check(torch.equal(accord.broadcast(t, root, comm=comm), torch.full((3, 2), float(root))),
          "broadcast")
    check(torch.equal(t, torch.full((3, 2), float(rank))), "broadcast must not modify its input")
    a = np.arange(5.0) + rank
    accord.broadcast_(a, root, comm=comm)
    check(np.array_equal(a, np.arange(5.0) + root), "broadcast_ numpy")
    nc = torch.full((4, 4), float(rank)).t()[:, :2]  # non-contiguous
    accord.broadcast_(nc, 0, comm=comm)
    check(torch.equal(nc, torch.zeros(4, 2)), "broadcast_ non-contiguous")
    model = torch.nn.Linear(3, 2)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(rank + 1)
    accord.broadcast_parameters(model.state_dict(), root_rank=root, comm=comm)
    check(all(torch.all(p == root + 1) for p in model.parameters()), "broadcast_parameters")
    try:
        accord.broadcast_(a, N, comm=comm)
    except ValueError as e:
        check("root_rank" in str(e), f"unexpected message: {e}")
    else:
        check(False, "root_rank out of range did not raise")
    # allgather with a different first dimension on every rank
    g = accord.allgather(torch.full((rank + 1, 2), float(rank)), comm=comm)
    want = torch.cat([torch.full((r + 1, 2), float(r)) for r in range(N)])
    check(torch.equal(g, want), "allgather ragged (torch)")
    g = accord.allgather(np.full(rank % 2, rank, dtype=np.int64), comm=comm)
    check(np.array_equal(g, np.concatenate([np.full(r % 2, r) for r in range(N)])),
          "allgather ragged (numpy, empty pieces)")
    # a tiny fusion threshold splits a grouped call into several buffers: same results
    rng = np.random.default_rng(9)
    every = [[rng.standard_normal(s) for s in (10, 300, 7)] for _ in range(N)]
    whole = accord.grouped_allreduce([x.copy() for x in every[rank]], op=accord.Adasum, comm=comm)
    old = accord.fusion_threshold()
    accord.set_fusion_threshold(64)
    try:
        pieces = accord.grouped_allreduce([x.copy() for x in every[rank]], op=accord.Adasum,
                                          comm=comm)
    finally:
        accord.set_fusion_threshold(old)
    for w, p in zip(whole, pieces):  # equal up to the order of the float64 dot sums
        check_close(p, w, rtol=1e-12, atol=1e-14, msg="fusion threshold changed Adasum results")
    # with the consistency check off the call still works when the arguments agree
    accord.set_consistency_check(False)
    try:
        s = accord.allreduce(np.ones(3), op=accord.Sum, comm=comm)
    finally:
        accord.set_consistency_check(True)
    check(np.array_equal(s, np.full(3, float(N))), "sum without consistency check")


class FakeNodes(MPICommunicator):
    """Pretends every `per_node` consecutive ranks share a node (mpi4py-style fake topology),
    so the hierarchical path's cross-node part runs on one machine."""

    def __init__(self, mpi_comm, per_node):
        super().__init__(mpi_comm)
        self.per_node = per_node
        self._fake_local = None

    def local_split(self):
        if self._fake_local is None:
            self._fake_local = self.split(self.rank // self.per_node)
        return self._fake_local


def main():
    comm = setup()
    accord.init(comm)
    N, rank = comm.size, comm.rank

    # exact tree on random inputs; many fused tensors whose boundaries fall mid-slice
    sizes = [7, 1, 1000, 33, 0, 4097, 5, 2]
    for dtype in ("float64", "float32", "float16", "bfloat16", "torch_float32"):
        check_adasum(comm, sizes, "random", dtype, seed=1)
    # a 1-element tensor and odd lengths, through the single-tensor path
    for n in (1, 3, 1001):
        check_adasum(comm, [n], "random", "float64", seed=n, grouped=False)
    # meaning-preserving cases
    exp, got = check_adasum(comm, [64, 37], "orthogonal", "float64", seed=2)
    every = inputs_for(2, [64, 37], N, "orthogonal")
    check_close(got, np.sum(every, axis=0), rtol=1e-12, atol=1e-12, msg="orthogonal -> sum")
    exp, got = check_adasum(comm, [50, 51], "parallel", "float64", seed=3)
    every = inputs_for(3, [50, 51], N, "parallel")
    check_close(got, np.mean(every, axis=0), rtol=1e-9, atol=1e-12, msg="parallel -> mean")
    for kind in ("one_zero", "tiny", "wide"):
        check_adasum(comm, [100, 300, 1], kind, "float64", seed=4)
        check_adasum(comm, [100, 300, 1], kind, "float32", seed=4)

    # float64 layers near the overflow (or underflow) edge: finite inputs give finite results,
    # equal to the Adasum of the scaled-down inputs scaled back (Adasum is homogeneous)
    if backend() == "mpi":
        from mpi4py import MPI as _MPI
        rng = np.random.default_rng(11 + rank)
        for big in (1e155, 1e300, 1e-300):
            a, b = rng.standard_normal(500) * big, rng.standard_normal(300)
            every_a = np.stack(_MPI.COMM_WORLD.allgather(a.copy()))
            ya, yb = accord.grouped_allreduce([a, b], op=accord.Adasum, comm=comm)
            ref = adasum_tree([e / big for e in every_a], np.array([0, 500])) * big
            check(np.isfinite(ya).all(), f"Adasum of finite float64 values near {big} is finite")
            check_close(ya / big, ref / big, rtol=1e-9, atol=1e-9,
                        msg=f"Adasum of float64 values near {big}")

    # Sum and Average against numpy
    rng = np.random.default_rng(5)
    every = [rng.standard_normal(257) for _ in range(N)]
    s = accord.allreduce(every[rank].copy(), op=accord.Sum, comm=comm)
    check_close(s, np.sum(every, axis=0), rtol=1e-12, msg="sum")
    a = accord.allreduce(torch.from_numpy(every[rank].astype(np.float32)), comm=comm)
    check_close(a, np.mean(every, axis=0), rtol=1e-5, atol=1e-6, msg="average")

    # in place on a non-contiguous tensor: the result lands in the caller's strided tensor
    t = torch.from_numpy(np.stack([every[rank]] * 2)).t()
    check(not t.is_contiguous(), "test setup: tensor should be non-contiguous")
    accord.allreduce_(t, op=accord.Adasum, comm=comm)
    col = every[rank].size
    tree = adasum_tree([np.stack([e] * 2).T.copy().reshape(-1) for e in every],
                       np.array([0, 2 * col])).reshape(col, 2)
    check_close(t, tree, rtol=1e-10, atol=1e-12, msg="in-place Adasum, non-contiguous tensor")

    # hierarchical: fake nodes of 2 ranks (when N is even), Adasum tree over node averages
    if N % 2 == 0 and backend() == "mpi":
        from mpi4py import MPI
        fake = FakeNodes(MPI.COMM_WORLD, 2)
        sizes = [5, 300, 2, 1111]
        offsets = np.concatenate([[0], np.cumsum(sizes)])
        every = inputs_for(6, sizes, N, "random")
        node_avgs = [(every[2 * i] + every[2 * i + 1]) / 2 for i in range(N // 2)]
        expected = adasum_tree(node_avgs, offsets) if N > 2 else node_avgs[0]
        result = accord.grouped_allreduce(split(every[rank], sizes), op=accord.Adasum, comm=fake,
                                          hierarchical=True)
        check_close(np.concatenate(result), expected, rtol=1e-9, atol=1e-12, msg="hierarchical")
        check_identical_across_ranks(fake, result)

    check_other_collectives(comm)

    # bad input: mismatched shapes fail loudly on every rank, never hang
    if N > 1:
        bad = np.ones(5 if rank == 0 else 6)
        try:
            accord.allreduce(bad, op=accord.Adasum, comm=comm)
        except ValueError as e:
            check("different arguments" in str(e), f"unexpected message: {e}")
        else:
            check(False, "mismatched shapes did not raise")
    try:
        accord.allreduce(np.ones(4, dtype=np.int32), op=accord.Adasum, comm=comm)
    except TypeError as e:
        check("int32" in str(e), f"unexpected message: {e}")
    else:
        check(False, "int32 Adasum did not raise")
    comm.barrier()
    if rank == 0:
        print(f"adasum_worker: all checks passed on {N} ranks ({backend()})")


if __name__ == "__main__":
    worker_main(main)
