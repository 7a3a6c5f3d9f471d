"""Exercise every Communicator method at any job size (launched by tests/test_comm.py).

Every rank derives its inputs from a seed and its rank, so each rank can compute what every
other rank sent and check results exactly. Integer-valued data keeps float sums exact in any
summation order, in float16 and bfloat16 too.

Usage: comm_worker.py [all|fail]   ("fail": the last rank raises while the others wait in a
barrier; the launcher must see the job die rather than hang).
"""

import sys

import numpy as np
from _worker import backend, check, check_equal, setup, worker_main

try:
    import torch
except ImportError:
    torch = None


def data(rank, n, salt, signed=True):
    """Rank ``rank``'s integer-valued float64 input: in [-30, 30) or [0, 60)."""
    rng = np.random.default_rng([salt, rank])
    lo, hi = (-30, 30) if signed else (0, 60)
    return rng.integers(lo, hi, size=n).astype(np.float64)


# Buffer kinds: (label, make(values_float64) -> buffer, empty(n) -> buffer, signed).
def _np_kind(dt):
    dt = np.dtype(dt)
    return (
        f"np.{dt.name}",
        lambda v: v.astype(dt),
        lambda n: np.full(n, 99, dt),
        dt.kind != "u",
    )


def _torch_kind(dt):
    return (
        f"torch.{str(dt).split('.')[-1]}",
        lambda v: torch.tensor(v, dtype=dt),  # a copy, never a view of v
        lambda n: torch.full((n,), 99, dtype=dt),
        True,
    )


KINDS = [_np_kind(d) for d in (np.float32, np.float64, np.float16, np.int64, np.int32, np.uint8)]
if torch is not None:
    KINDS += [
        _torch_kind(d)
        for d in (torch.float32, torch.float64, torch.bfloat16, torch.float16, torch.int64,
                  torch.int16)
    ]


def test_basics(comm):
    kind = backend()
    if kind == "mpi":
        from mpi4py import MPI

        check(comm.rank == MPI.COMM_WORLD.rank and comm.size == MPI.COMM_WORLD.size, "rank/size")
        check(comm.backend == "mpi", comm.backend)
    else:
        import torch.distributed as dist

        check(comm.rank == dist.get_rank() and comm.size == dist.get_world_size(), "rank/size")
        check(comm.backend == kind, comm.backend)
    check(0 <= comm.rank < comm.size, "rank range")
    check(f"rank={comm.rank}" in repr(comm), repr(comm))


def test_sendrecv(comm):
    r, n = comm.rank, comm.size
    dest, src = (r + 1) % n, (r - 1) % n

    def length(rank, salt):
        # Differing send/recv lengths; some ranks send nothing at all.
        return 0 if (rank + salt) % 3 == 0 else 3 + 5 * rank + salt

    for i, (label, make, empty, signed) in enumerate(KINDS):
        send = make(data(r, length(r, i), i, signed))
        recv = empty(length(src, i))
        comm.sendrecv(send, dest, recv, src)
        check_equal(recv, make(data(src, length(src, i), i, signed)), f"ring sendrecv {label}")
        check_equal(send, make(data(r, length(r, i), i, signed)), f"send buffer kept {label}")

    # Pairwise exchange as in Adasum's levels, with a larger message and mixed buffer types.
    partner = r ^ 1
    if partner < n:
        big = 1 << 16
        send = data(r, big, 100).astype(np.float32)
        recv = np.empty(big, np.float32) if torch is None else torch.empty(big)
        comm.sendrecv(send, partner, recv, partner)
        check_equal(recv, data(partner, big, 100).astype(np.float32), "pairwise sendrecv")

    # Exchange with self.
    send = data(r, 7, 101)
    recv = np.zeros(7)
    comm.sendrecv(send, r, recv, r)
    check_equal(recv, send, "self sendrecv")


def test_allreduce_small(comm):
    r, n = comm.rank, comm.size
    for dt in (np.float64, np.int64):
        everyone = np.stack([data(q, 12, 200).astype(dt) for q in range(n)])
        mine = everyone[r].copy()
        for op, ref in (("sum", np.sum), ("max", np.max), ("min", np.min)):
            out = comm.allreduce_small(mine, op)
            check(isinstance(out, np.ndarray) and out is not mine, "returns a new array")
            check_equal(out, ref(everyone, axis=0).astype(dt), f"allreduce_small {op} {dt}")
            check_equal(mine, everyone[r], "input untouched")
    check_equal(comm.allreduce_small(np.ones(3)), np.full(3, float(n)), "default op is sum")
    check_equal(comm.allreduce_small(np.zeros(0)), np.zeros(0), "empty")
    two = comm.allreduce_small(np.array([2.0, -1.0]), "prod")
    check_equal(two, np.array([2.0 ** n, (-1.0) ** n]), "allreduce_small prod")
    try:
        comm.allreduce_small(np.ones(1), "median")
    except ValueError:
        pass
    else:
        check(False, "unknown op must raise ValueError")


def test_allreduce(comm):
    r, n = comm.rank, comm.size
    for i, (label, make, _, signed) in enumerate(KINDS):
        for length in (0, 1, 1000):
            everyone = np.stack([data(q, length, 300 + i, signed) for q in range(n)])
            for op, ref in (("sum", np.sum), ("max", np.max), ("min", np.min)):
                buf = make(everyone[r])
                out = comm.allreduce_(buf, op)
                check(out is buf, "allreduce_ returns its argument")
                check_equal(buf, make(ref(everyone, axis=0)), f"allreduce_ {op} {label} n={length}")
    if torch is not None:
        # Parameters (leaves requiring grad) are reduced in place, outside autograd.
        for dt in (torch.float32, torch.bfloat16):
            w = torch.full((4,), float(r), dtype=dt, requires_grad=True)
            comm.allreduce_(w)
            comm.broadcast_(w, n - 1)
            check_equal(w.detach(), torch.full((4,), float(n * (n - 1) // 2), dtype=dt),
                        f"allreduce_/broadcast_ of a leaf requiring grad ({dt})")


def test_allgather(comm):
    r, n = comm.rank, comm.size
    for i, (label, make, empty, signed) in enumerate(KINDS):
        for length in (0, 5):
            recv = empty(n * length)
            comm.allgather(make(data(r, length, 400 + i, signed)), recv)
            expected = np.concatenate([data(q, length, 400 + i, signed) for q in range(n)])
            check_equal(recv, make(expected), f"allgather {label} n={length}")
    try:
        comm.allgather(np.zeros(2), np.zeros(2 * n + 1))
    except ValueError:
        pass
    else:
        check(False, "allgather with a wrong recvbuf size must raise ValueError")


def test_allgather_object(comm):
    r, n = comm.rank, comm.size
    got = comm.allgather_object({"rank": r, "name": f"r{r}", "x": [r] * r})
    check(got == [{"rank": q, "name": f"r{q}", "x": [q] * q} for q in range(n)], str(got))


def test_broadcast(comm):
    r, n = comm.rank, comm.size
    for i, (label, make, _, signed) in enumerate(KINDS):
        for root in range(n):
            for length in (0, 17):
                buf = make(data(r, length, 500 + i, signed))
                out = comm.broadcast_(buf, root)
                check(out is buf, "broadcast_ returns its argument")
                check_equal(buf, make(data(root, length, 500 + i, signed)),
                            f"broadcast_ {label} root={root}")


def test_alltoall(comm):
    r, n = comm.rank, comm.size
    for i, (label, make, empty, signed) in enumerate(KINDS):
        for block in (0, 3):
            recv = empty(n * block)
            comm.alltoall(make(data(r, n * block, 600 + i, signed)), recv)
            expected = np.concatenate(
                [data(q, n * block, 600 + i, signed)[r * block:(r + 1) * block] for q in range(n)]
            )
            check_equal(recv, make(expected), f"alltoall {label} block={block}")


def test_barrier(comm):
    for _ in range(3):
        comm.barrier()


def check_members(sub, members, me, what):
    """``sub`` must hold exactly the parent ranks ``members``, in that order; ``me`` is this
    process's parent rank."""
    check(sub is not None, f"{what}: got None")
    check(sub.size == len(members), f"{what}: size {sub.size} != {len(members)}")
    got = sub.allgather_object(me)
    check(got == members, f"{what}: members {got} != {members}")
    total = sub.allreduce_small(np.array([float(me)]))
    check_equal(total, np.array([float(sum(members))]), f"{what}: allreduce_small")
    if sub.size > 1:
        r = sub.rank
        recv = np.empty(1)
        sub.sendrecv(np.array([float(me)]), (r + 1) % sub.size, recv, (r - 1) % sub.size)
        check_equal(recv, np.array([float(members[(r - 1) % sub.size])]), f"{what}: sendrecv")


def test_split(comm):
    r, n = comm.rank, comm.size
    # Parity classes, reversed by key.
    sub = comm.split(r % 2, key=-r)
    members = sorted((q for q in range(n) if q % 2 == r % 2), reverse=True)
    check_members(sub, members, r, "split by parity")
    check(comm.split(r % 2, key=-r) is sub, "repeated split must return the cached communicator")
    # Split of a split (for torch: a group that may not span the world). Done before any
    # split leaves a rank out, which torch cannot follow with subgroup splits (documented).
    subsub = sub.split(0, key=sub.rank)
    check_members(subsub, list(range(sub.size)), sub.rank, "nested split")
    check_members(sub.split(sub.rank % 2), [q for q in range(sub.size) if q % 2 == sub.rank % 2],
                  sub.rank, "nested split in two")
    # Equal keys: ordered by parent rank.
    check_members(comm.split(7, key=0), list(range(n)), r, "split with equal keys")
    # The last rank opts out.
    last = comm.split(None if r == n - 1 else 3)
    if r == n - 1:
        check(last is None, "color=None must give None")
    else:
        check_members(last, list(range(n - 1)), r, "split with an opted-out rank")
    if comm.backend != "mpi" and n >= 3:
        # The opt-out gave rank n-1 one process group fewer: torch cannot split a subgroup
        # holding it and ranks with more groups; that must raise everywhere, not hang.
        holds_last = (n - 1) % 2 == r % 2
        try:
            sub.split(1, key=-sub.rank)
        except RuntimeError:
            check(holds_last, "subgroup split raised needlessly")
        else:
            check(not holds_last, "subgroup split with diverged histories must raise")
    try:
        comm.split(-2)
    except ValueError:
        pass
    else:
        check(False, "negative color must raise ValueError")


def test_local_split(comm):
    local = comm.local_split()
    # All ranks of these tests run on one host.
    check(local.size == comm.size and local.rank == comm.rank, "local_split on one host")
    check(comm.local_split() is local, "local_split is cached")


def test_topology(comm):
    import accord.topology as topo
    from accord.comm import Communicator

    topo.shutdown()
    check(not topo.is_initialized(), "not initialised")
    for fn in (topo.rank, topo.size, topo.local_rank, topo.local_size, topo.communicator):
        try:
            fn()
        except RuntimeError as e:
            check("accord.init() has not been called" in str(e), str(e))
        else:
            check(False, f"{fn.__name__}() before init must raise")
    check(topo.init(comm) is comm, "init(Communicator) uses it as is")
    check(topo.is_initialized() and topo.communicator() is comm, "initialised")
    check((topo.rank(), topo.size()) == (comm.rank, comm.size), "rank/size")
    check((topo.local_rank(), topo.local_size()) == (comm.rank, comm.size), "local rank/size")
    # Default choice: torch.distributed when initialised, else MPI.COMM_WORLD.
    default = topo.init()
    check(isinstance(default, Communicator) and default is not comm, "init() re-initialises")
    check(default.backend == comm.backend, f"default backend {default.backend}")
    check((topo.rank(), topo.size()) == (comm.rank, comm.size), "default rank/size")
    if comm.backend == "mpi":
        from mpi4py import MPI

        check(topo.init(MPI.COMM_WORLD).backend == "mpi", "init(mpi4py comm)")
    topo.shutdown()
    check(not topo.is_initialized(), "shutdown")


def main(mode="all"):
    comm = setup()
    if mode == "fail":
        if comm.rank == comm.size - 1:
            raise RuntimeError("deliberate failure on the last rank")
        comm.barrier()  # never completes: the launcher must still end the job
        return
    for test in (test_basics, test_sendrecv, test_allreduce_small, test_allreduce,
                 test_allgather, test_allgather_object, test_broadcast, test_alltoall,
                 test_barrier, test_split, test_local_split, test_topology):
        test(comm)
    comm.barrier()
    if comm.rank == 0:
        print(f"comm_worker OK: backend={comm.backend} size={comm.size}")


if __name__ == "__main__":
    worker_main(main, *sys.argv[1:])
