"""Bad input and numerics of the collectives and the training faces, on any number of ranks
(>= 2). Launched by tests/test_validation.py.

Every "one rank only" case gives a bad argument on the last rank alone: every rank must raise
(the others name the faulty rank) instead of waiting forever in a collective; the launcher's
timeout turns a hang into a failure. Every refused call must leave its inputs unchanged.
"""
from __future__ import annotations

import numpy as np
import torch
from _worker import backend, check, check_equal, setup, worker_main

import accord
from accord.comm.base import Communicator


def raises(fn, exc, text: str = ""):
    """Run fn; it must raise ``exc`` whose message contains ``text``. Returns the message."""
    try:
        fn()
    except exc as e:
        msg = str(e)
        check(text in msg, f"{exc.__name__} without {text!r}: {msg}")
        return msg
    except Exception as e:  # noqa: BLE001 - the wrong error is the failure reported
        check(False, f"expected {exc.__name__} containing {text!r}, got "
                     f"{type(e).__name__}: {e}")
    check(False, f"expected {exc.__name__} containing {text!r}, nothing raised")


def one_rank(comm, bad, good, exc, text, others=None):
    """The last rank runs ``bad``, the others ``good``: all raise ``exc``; the last rank's
    message contains ``text``, the others' ``others`` (default: the last rank named)."""
    last = comm.size - 1
    if comm.rank == last:
        raises(bad, exc, text)
    else:
        raises(good, exc, f"rank(s) [{last}]" if others is None else others)


def bad_input_one_rank(comm):
    N, last = comm.size, comm.size - 1
    x = np.ones(8)
    # collectives: each check on one rank alone
    one_rank(comm, lambda: accord.broadcast_(x, root_rank=N), lambda: accord.broadcast_(x, 0),
             ValueError, "root_rank must be")
    one_rank(comm, lambda: accord.broadcast(x, root_rank=-1), lambda: accord.broadcast(x, 0),
             ValueError, "root_rank must be")
    one_rank(comm, lambda: accord.broadcast_parameters([]),
             lambda: accord.broadcast_parameters([x]), ValueError, "", "different arguments")
    one_rank(comm, lambda: accord.broadcast_parameters({"w": [1.0]}),
             lambda: accord.broadcast_parameters({"w": x}), TypeError, "params['w']")
    one_rank(comm, lambda: accord.allgather([1.0, 2.0]), lambda: accord.allgather(x),
             TypeError, "tensor must be a numpy array")
    obj = np.array([None] * 8, dtype=object)
    one_rank(comm, lambda: accord.allgather(obj), lambda: accord.allgather(x), TypeError,
             "holds Python objects")
    t = torch.ones(4, requires_grad=True)
    u = torch.ones(4)
    one_rank(comm, lambda: accord.allreduce_(t, op=accord.Sum),
             lambda: accord.allreduce_(u, op=accord.Sum), RuntimeError, "tensor requires grad")
    check_equal(t.detach(), torch.ones(4), "refused in-place call left the tensor unchanged")
    check_equal(u, torch.ones(4), "the other ranks' tensors are unchanged too")
    one_rank(comm, lambda: accord.grouped_allreduce_([u, t], op=accord.Adasum),
             lambda: accord.grouped_allreduce_([u, u.clone()], op=accord.Adasum), RuntimeError,
             "tensors[1] requires grad")
    one_rank(comm, lambda: accord.broadcast_(t), lambda: accord.broadcast_(u), RuntimeError,
             "tensor requires grad")

    # DistributedOptimizer: a bad argument on one rank
    model = torch.nn.Linear(3, 2)
    def make(named):
        return accord.DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1),
                                           named_parameters=named)
    one_rank(comm, lambda: make([("w", model.weight)]),
             lambda: make(model.named_parameters()).close(), ValueError, "not named")
    one_rank(comm, lambda: accord.DistributedOptimizer(
                 torch.optim.SGD(model.parameters(), lr=0.1), backward_passes_per_step=0),
             lambda: make(None).close(), ValueError, "backward_passes_per_step")

    # ConsensusAggregator: bad offsets, a non-contiguous buffer, incompatible loaded state
    agg = accord.ConsensusAggregator(granularity="layer")
    flat = torch.ones(12)
    off = np.array([0, 4, 12])
    one_rank(comm, lambda: agg.aggregate_flat_(flat, np.array([0, 5, 4])),
             lambda: agg.aggregate_flat_(flat, off), ValueError, "")
    strided = torch.ones(24)[::2]
    one_rank(comm, lambda: agg.aggregate_flat_(strided, off),
             lambda: agg.aggregate_flat_(flat, off), ValueError, "contiguous")
    other = accord.ConsensusAggregator(granularity="layer")
    other.aggregate_flat_(flat, off, key=0)
    state = other.state_dict()
    if comm.rank == last:  # a checkpoint of another job size on this rank only
        state["num_workers"] = N + 1
        for e in state["entries"].values():
            e["scores"] = [row + [0.0] for row in e["scores"]]
        fresh = accord.ConsensusAggregator(granularity="layer", comm=_OtherSize(comm))
        fresh.load_state_dict(state)
        fresh._comm = None
        state_agg = fresh
    else:
        state_agg = accord.ConsensusAggregator(granularity="layer")
        state_agg.load_state_dict(state)
    one_rank(comm, lambda: state_agg.aggregate_flat_(flat, off, key=0),
             lambda: state_agg.aggregate_flat_(flat, off, key=0), ValueError, "workers")
    one_rank(comm, lambda: agg.aggregate([torch.ones(3), torch.ones(3, dtype=torch.int64)]),
             lambda: agg.aggregate([torch.ones(3), torch.ones(3)]), TypeError, "tensors[1]",
             "tensors[1]")

    # averagers and Leader SGD
    avg = accord.PeriodicAverager(1, average_buffers=True)
    avg_ok = accord.PeriodicAverager(1)
    one_rank(comm, lambda: avg.average_parameters([model.weight]),
             lambda: avg_ok.average_parameters([model.weight]), ValueError, "average_buffers")
    check(avg.step == avg_ok.step == 0 and avg_ok.num_syncs == 0,
          "a refused averaging step is not counted")
    one_rank(comm, lambda: accord.LeaderSGD([]), lambda: accord.LeaderSGD(model), ValueError,
             "params is empty")
    lsgd = accord.LeaderSGD(model, period=1, global_period=1, group_size=N)
    one_rank(comm, lambda: lsgd.step(None), lambda: lsgd.step(1.0), ValueError, "loss")
    check(lsgd.step_count == 0, "a refused Leader SGD step is not counted")
    lsgd.step(1.0)
    check(lsgd.step_count == 1, "Leader SGD steps after a refused one")


class _OtherSize:
    """A stand-in communicator of another size, to build a checkpoint of another job."""

    def __init__(self, comm):
        self.size, self.rank = comm.size + 1, comm.rank


def half_done_calls(comm):
    N = comm.size
    # integer Average: refused everywhere, nothing written (torch and numpy)
    ti = torch.arange(5, dtype=torch.int64)
    raises(lambda: accord.allreduce_(ti, op=accord.Average), TypeError, "integer dtype int64")
    check_equal(ti, torch.arange(5), "int64 tensor unchanged after refused Average")
    ni = np.arange(5, dtype=np.int64)
    raises(lambda: accord.allreduce_(ni, op=accord.Average), TypeError, "astype(np.float64)")
    check_equal(ni, np.arange(5), "int64 array unchanged after refused Average")
    raises(lambda: accord.allreduce(ni, op=accord.Average), TypeError, "integer dtype")
    raises(lambda: accord.grouped_allreduce_([np.ones(2), ni], op=accord.Average), TypeError,
           "tensors[1]")
    # integer Sum is exact
    s = accord.allreduce(ni, op=accord.Sum)
    check_equal(s, N * np.arange(5), "int64 Sum")
    # Sum of an unsupported dtype names the argument
    raises(lambda: accord.allreduce_(np.ones(3, np.complex128), op=accord.Sum), TypeError,
           "tensor: dtype complex128")
    raises(lambda: accord.allreduce_(torch.ones(3, dtype=torch.bool), op=accord.Sum),
           TypeError, "tensor: dtype bool")
    # in-place calls on a leaf that requires grad: refused for every op, tensor unchanged
    for op in (accord.Sum, accord.Average, accord.Adasum):
        leaf = torch.full((4,), 2.0, requires_grad=True)
        raises(lambda: accord.allreduce_(leaf, op=op), RuntimeError, "tensor.detach()")
        check_equal(leaf.detach(), torch.full((4,), 2.0), f"leaf unchanged ({op})")
        with torch.no_grad():  # allowed there, as for an optimizer step
            accord.allreduce_(leaf, op=accord.Sum)
        check_equal(leaf.detach(), torch.full((4,), 2.0 * N), "in-place under no_grad")
    # out-of-place: Sum and Average carry allreduce's adjoint
    w = float(comm.rank + 1)
    total = sum(range(1, N + 1))
    for op, factor in ((accord.Sum, 1.0), (accord.Average, 1.0 / N)):
        x = torch.ones(3, requires_grad=True)
        y = accord.allreduce(x * w, op=op)
        check_equal(y.detach(), torch.full((3,), total * factor), f"{op} forward")
        (y * w).sum().backward()
        check_equal(x.grad, torch.full((3,), w * total * factor), f"{op} gradient")
        xs = [torch.ones(2, requires_grad=True), torch.ones(3, requires_grad=True)]
        ys = accord.grouped_allreduce([v * w for v in xs], op=op)
        (ys[0].sum() * w + ys[1].sum() * 2 * w).backward()
        check_equal(xs[0].grad, torch.full((2,), w * total * factor), f"{op} grouped grad 0")
        check_equal(xs[1].grad, torch.full((3,), 2 * w * total * factor), f"{op} grouped grad 1")
    x = torch.ones(3, requires_grad=True)
    check(not accord.allreduce(x, op=accord.Adasum).requires_grad, "Adasum result detached")
    check(not accord.broadcast(x).requires_grad, "broadcast result detached")
    check(not accord.allgather(x).requires_grad, "allgather result detached")


def numerics(comm):
    N = comm.size
    # float16 Average whose sum overflows float16 but whose mean fits: no inf
    for make in (lambda: torch.full((5,), 6e4, dtype=torch.float16),
                 lambda: np.full(5, 6e4, dtype=np.float16)):
        for inplace in (True, False):
            v = make()
            out = accord.allreduce_(v, op=accord.Average) if inplace else \
                accord.allreduce(v, op=accord.Average)
            check_equal(out, make(), f"float16 Average of 6e4 (in place: {inplace})")
        out = accord.grouped_allreduce([make(), make()], op=accord.Average)
        check_equal(out[0], make(), "grouped float16 Average of 6e4")
    # a float16 Sum that exceeds 65504 is inf (the documented limit)
    s = accord.allreduce(torch.full((2,), 6e4, dtype=torch.float16), op=accord.Sum)
    check(bool(torch.isinf(s).all()), "float16 Sum of N x 6e4 is inf")
    # bfloat16 Average near the top of its range
    big = torch.full((3,), 1.5e38, dtype=torch.bfloat16)
    if N <= 2:
        check_equal(accord.allreduce(big, op=accord.Average), big, "bfloat16 Average 1.5e38")
    # float16 gradients through DistributedOptimizer: averaged without overflow
    p = torch.nn.Parameter(torch.zeros(4, dtype=torch.float16))
    opt = accord.DistributedOptimizer(torch.optim.SGD([p], lr=1e-4))
    p.grad = torch.full((4,), 6e4, dtype=torch.float16)
    opt.synchronize()
    check_equal(p.grad, torch.full((4,), 6e4, dtype=torch.float16), "float16 gradient Average")
    opt.close()


def nonfinite_policy(comm):
    N, last = comm.size, comm.size - 1
    def data():
        a = torch.ones(6)
        if comm.rank == last:
            a[2] = float("nan")
        return a
    try:
        # propagate (default): NaN everywhere
        check(accord.nonfinite() == "propagate", "default policy")
        out = accord.allreduce(data(), op=accord.Average)
        check(bool(torch.isnan(out[2])), "propagate: NaN reaches every rank")
        # raise: FloatingPointError on every rank, inputs unchanged
        accord.set_nonfinite("raise")
        for op in (accord.Sum, accord.Average, accord.Adasum):
            a = data()
            raises(lambda: accord.allreduce_(a, op=op), FloatingPointError, "NaN or Inf")
            check_equal(a, data(), f"raise leaves the input unchanged ({op})")
            group = [torch.ones(3), data()]
            raises(lambda: accord.grouped_allreduce_(group, op=op), FloatingPointError, "")
            check_equal(group[0], torch.ones(3), "raise leaves every grouped input unchanged")
        # an overflow made by the reduction itself counts too
        h = torch.full((2,), 6e4, dtype=torch.float16)
        raises(lambda: accord.allreduce_(h, op=accord.Sum), FloatingPointError, "")
        check_equal(h, torch.full((2,), 6e4, dtype=torch.float16), "overflow: input unchanged")
        ok = accord.allreduce(torch.ones(3), op=accord.Sum)
        check_equal(ok, torch.full((3,), float(N)), "raise: finite results pass")
        # skip: zeros on every rank, counted
        accord.set_nonfinite("skip")
        before = accord.nonfinite_skips()
        for op in (accord.Sum, accord.Adasum):
            a = data()
            accord.allreduce_(a, op=op)
            check_equal(a, torch.zeros(6), f"skip: zeros ({op})")
        check(accord.nonfinite_skips() == before + 2, "skips counted")
        # ranks with different policies are refused, not desynchronised
        accord.set_nonfinite("raise" if comm.rank == last else "skip")
        raises(lambda: accord.allreduce(torch.ones(2), op=accord.Sum), ValueError,
               "different arguments")
    finally:
        accord.set_nonfinite("propagate")


def comm_null():
    if backend() != "mpi":
        return
    from mpi4py import MPI
    raises(lambda: accord.init(MPI.COMM_NULL), ValueError, "COMM_NULL")


def main():
    world = setup()
    check(world.size >= 2, "run on 2 or more ranks")
    sections = (bad_input_one_rank, half_done_calls, numerics, nonfinite_policy)
    for section in sections:
        accord.init(world)
        section(world)
        accord.shutdown()
    comm_null()
    accord.init(world)
    accord.allreduce(np.ones(2))  # still usable after the refused init
    accord.shutdown()
    check(isinstance(world, Communicator) and not world.closed, "the world communicator is open")
    world.barrier()
    if world.rank == 0:
        print(f"validation_worker OK: backend={backend()} size={world.size}")


if __name__ == "__main__":
    worker_main(main)
