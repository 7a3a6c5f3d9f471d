"""Leader SGD checks for one rank count (any N), against a numpy simulation of every rank.
Launched by tests/test_leader.py; ``--train`` adds the sklearn-digits training run."""
from __future__ import annotations

import sys

import numpy as np
import torch
from _worker import backend, check, check_close, check_equal, setup, worker_main

import accord
from accord.comm.base import Communicator

SHAPES = [((3, 4), torch.float64), ((5,), torch.float32), ((6,), torch.float64)]


def initial(seed, N):
    """Every rank's parameters (float64 numpy, flat), identical on every rank."""
    rng = np.random.default_rng(seed)
    n = sum(int(np.prod(s)) for s, _ in SHAPES)
    return [rng.standard_normal(n) for _ in range(N)]


def to_tensors(flat):
    out, start = [], 0
    for shape, dtype in SHAPES:
        n = int(np.prod(shape))
        out.append(torch.tensor(flat[start:start + n].reshape(shape), dtype=dtype))
        start += n
    return out


def flat_of(tensors):
    return np.concatenate([t.detach().double().numpy().ravel() for t in tensors])


def f32_mask():
    return np.concatenate([np.full(int(np.prod(s)), d == torch.float32) for s, d in SHAPES])


def round32(x):
    """The reference keeps float32 parameters float32, like the real ones."""
    m = f32_mask()
    x = x.copy()
    x[m] = x[m].astype(np.float32).astype(np.float64)
    return x


def groups_of(N, group_size):
    gs = N if group_size is None else group_size  # None: one node = all ranks here
    return [list(range(s, min(s + gs, N))) for s in range(0, N, gs)]


def best(scores, ranks):
    return min((scores[r], r) for r in ranks)[1]


def losses_for(seed, N, T, kind):
    rng = np.random.default_rng(seed + 1000)
    if kind == "tie":
        return np.full((T, N), 0.5)
    return rng.uniform(0.0, 1.0, (T, N))


def simulate(x0, losses, deltas, *, pull, gpull, period, gperiod, window, group_size):
    """Reference LSGD: every rank's params after every step; leaders per round."""
    N, T = len(x0), len(losses)
    groups = groups_of(N, group_size)
    group_of = {r: g for g in groups for r in g}
    xs = [round32(x) for x in x0]
    history, leaders = [], []
    for t in range(1, T + 1):
        xs = [round32(xs[r] + deltas[t - 1][r]) for r in range(N)]
        lo, hi = max(0, t - window), t
        scores = [float(np.mean(losses[lo:hi, r])) for r in range(N)]
        local, glob = t % period == 0, t % gperiod == 0
        ll = {r: best(scores, group_of[r]) for r in range(N)} if local else None
        gl = best(scores, range(N)) if glob else None
        new = []
        for r in range(N):
            x = xs[r].copy()
            if local and ll[r] != r:
                x -= pull * (xs[r] - xs[ll[r]])
            if glob and gl != r:
                x -= gpull * (xs[r] - xs[gl])
            new.append(round32(x))
        xs = new
        history.append([x.copy() for x in xs])
        leaders.append((ll, gl))
    return history, leaders


class CountingComm(Communicator):
    """Delegates to a real communicator and counts the elements every method moves (shared
    counters across the sub-communicators it makes)."""

    def __init__(self, inner, counts=None):
        self.inner = inner
        self.counts = counts if counts is not None else {}
        self.backend = inner.backend

    def _count(self, name, n):
        c = self.counts.setdefault(name, [0, 0])
        c[0] += 1
        c[1] += int(n)

    rank = property(lambda self: self.inner.rank)
    size = property(lambda self: self.inner.size)

    def sendrecv(self, s, d, r, src):
        self._count("sendrecv", len(s))
        return self.inner.sendrecv(s, d, r, src)

    def allreduce_small(self, v, op="sum"):
        self._count("allreduce_small", np.size(v))
        return self.inner.allreduce_small(v, op)

    def allreduce_(self, buf, op="sum", *, scale=None):
        self._count("allreduce_", buf.numel() if hasattr(buf, "numel") else buf.size)
        return self.inner.allreduce_(buf, op, scale=scale)

    def allgather(self, s, r):
        self._count("allgather", np.size(s))
        return self.inner.allgather(s, r)

    def allgather_object(self, obj):
        self._count("allgather_object", 1)
        return self.inner.allgather_object(obj)

    def broadcast_(self, buf, root):
        self._count("broadcast_", buf.numel() if hasattr(buf, "numel") else buf.size)
        return self.inner.broadcast_(buf, root)

    def alltoall(self, s, r):
        self._count("alltoall", np.size(s))
        return self.inner.alltoall(s, r)

    def barrier(self):
        return self.inner.barrier()

    def split(self, color, key=None):
        sub = self.inner.split(color, key)
        return None if sub is None else CountingComm(sub, self.counts)

    def local_split(self):
        return CountingComm(self.inner.local_split(), self.counts)

    def abort(self, code=1):
        self.inner.abort(code)


CONFIGS = [
    dict(pull=0.2, gpull=0.3, period=2, gperiod=4, window=3, group_size=2),
    dict(pull=0.1, gpull=0.1, period=1, gperiod=3, window=10, group_size=None),
    dict(pull=0.5, gpull=0.25, period=3, gperiod=2, window=2, group_size=1),
    dict(pull=0.3, gpull=0.0, period=1, gperiod=5, window=4, group_size=3),
]


def run_config(comm, cfg, seed, T=12, kind="random", lsgd_comm=None):
    N, rank = comm.size, comm.rank
    x0 = initial(seed, N)
    losses = losses_for(seed, N, T, kind)
    rng = np.random.default_rng(seed + 7)
    deltas = [[0.05 * rng.standard_normal(x0[0].size) for _ in range(N)] for _ in range(T)]
    ref, ref_leaders = simulate(x0, losses, deltas, **cfg)
    params = to_tensors(x0[rank])
    lsgd = accord.LeaderSGD(params, pull=cfg["pull"], global_pull=cfg["gpull"],
                            period=cfg["period"], global_period=cfg["gperiod"],
                            window=cfg["window"], group_size=cfg["group_size"],
                            comm=lsgd_comm or comm)
    d_tensors = lambda t: to_tensors(deltas[t][rank])  # noqa: E731
    for t in range(T):
        with torch.no_grad():
            for p, d in zip(params, d_tensors(t)):
                p.add_(d)
        before = [p.clone() for p in params]
        ran = lsgd.step(torch.tensor(losses[t, rank]))
        ll, gl = ref_leaders[t]
        check(ran == (ll is not None or gl is not None), f"step {t + 1}: round flag")
        if ll is not None:
            check(lsgd.local_leader == ll[rank], f"step {t + 1}: local leader {lsgd.local_leader}"
                  f" != {ll[rank]}")
        if gl is not None:
            check(lsgd.global_leader == gl, f"step {t + 1}: global leader")
        leads = (ll is None or ll[rank] == rank) and (gl is None or gl == rank)
        if ran and leads:  # the leader's own pull leaves it bitwise unchanged
            for p, q in zip(params, before):
                check_equal(p, q, f"step {t + 1}: leader moved")
        check_close(flat_of(params), ref[t][rank], rtol=2e-6, atol=1e-7,
                    msg=f"cfg {cfg} step {t + 1}")
    check(lsgd.num_local_rounds == T // cfg["period"], "local round count")
    check(lsgd.num_global_rounds == T // cfg["gperiod"], "global round count")
    return lsgd, params, ref, losses


def main():
    comm = setup()
    accord.init(comm)
    N, rank = comm.size, comm.rank

    # 1. pulls against the numpy reference, groups, leaders, round counts
    for i, cfg in enumerate(CONFIGS):
        run_config(comm, cfg, seed=10 + i)
    # ties: equal losses everywhere -> lowest rank of each group / of the world leads
    run_config(comm, CONFIGS[0], seed=20, kind="tie")

    # 2. traffic: only broadcasts carry parameters; selection moves N (or group) scalars
    counting = CountingComm(comm)
    cfg = dict(CONFIGS[0], group_size=2)
    lsgd, params, _, _ = run_config(comm, cfg, seed=30, T=0, lsgd_comm=counting)
    counting.counts.clear()
    T, numel = 8, sum(p.numel() for p in params)
    for t in range(T):
        lsgd.step(float(rank == t % N))  # leaders move around
    c = counting.counts
    check(set(c) <= {"allgather", "broadcast_"}, f"unexpected traffic: {c}")
    rounds = T // 2
    check(c["allgather"][0] == rounds, f"one score gather per round: {c}")
    # per round: 1 score and 1 error flag; the 2 dtype groups broadcast per leader (local
    # broadcast skipped when the group's local leader is the global one)
    check(c["allgather"][1] == 2 * rounds, f"two scalars per rank per round: {c}")
    check(c["broadcast_"][1] % numel == 0 and c["broadcast_"][1] >= rounds * numel,
          f"broadcast volume: {c} (model {numel})")

    # 3. common-batch selection: rank N-1 has the lowest training loss, rank 0 the lowest
    #    common loss
    params = to_tensors(initial(40, N)[rank])
    train_loss = float(N - rank)
    common = float(rank)
    for how in ("callable", "value"):
        lsgd = accord.LeaderSGD(params, period=1, global_period=1, group_size=1,
                                select_by="common", global_pull=0.0,
                                common_loss=(lambda: common) if how == "callable" else None)
        check(lsgd.round_due, "round_due")
        lsgd.step(train_loss, common_loss=common if how == "value" else None)
        check(lsgd.global_leader == 0, f"common-batch leader ({how}): {lsgd.global_leader}")
    window = accord.LeaderSGD(params, period=1, global_period=1, global_pull=0.0)
    window.step(train_loss)
    check(window.global_leader == N - 1, "windowed-loss leader")
    try:
        accord.LeaderSGD(params, period=1, select_by="common").step(1.0)
    except ValueError as e:
        check("common_loss" in str(e), str(e))
    else:
        check(False, "missing common loss did not raise")
    # non-finite losses never lead
    nan = accord.LeaderSGD(params, period=1, global_period=1, global_pull=0.0)
    nan.step(float("nan") if rank == 0 else 1.0)
    check(nan.global_leader == (1 if N > 1 else 0), "NaN loss led")

    # 4. state round trip: stop at step 7, rebuild, continue == uninterrupted run
    cfg, seed, T = CONFIGS[0], 50, 12
    full, full_params, ref, losses = run_config(comm, cfg, seed, T=T)
    x0 = initial(seed, N)
    rng = np.random.default_rng(seed + 7)
    deltas = [[0.05 * rng.standard_normal(x0[0].size) for _ in range(N)] for _ in range(T)]
    params = to_tensors(x0[rank])
    kw = dict(pull=cfg["pull"], global_pull=cfg["gpull"], period=cfg["period"],
              global_period=cfg["gperiod"], window=cfg["window"], group_size=cfg["group_size"])
    a = accord.LeaderSGD(params, **kw)
    for t in range(T):
        if t == 7:
            state = a.state_dict()
            a = accord.LeaderSGD(params, **kw)
            a.load_state_dict(state)
            check(a.state_dict() == state, "state_dict round trip")
        with torch.no_grad():
            for p, d in zip(params, to_tensors(deltas[t][rank])):
                p.add_(d)
        a.step(losses[t, rank])
    for p, q in zip(params, full_params):
        check_equal(p, q, "resumed run differs")
    check(a.state_dict() == full.state_dict(), "final state differs")

    # 5. evaluation models
    avg = full.evaluation_parameters("average")
    check_close(flat_of(avg), np.mean(ref[-1], axis=0), rtol=2e-6, atol=1e-7, msg="average")
    lead = full.evaluation_parameters("leader")
    scores = [float(np.mean(losses[T - cfg["window"]:, r])) for r in range(N)]
    check_close(flat_of(lead), ref[-1][best(scores, range(N))], rtol=2e-6, atol=1e-7,
                msg="leader model")

    # 6. bad input
    bad = [dict(pull=1.5), dict(pull=-0.1), dict(global_pull=2), dict(pull=0.6, global_pull=0.6),
           dict(period=0), dict(global_period=0), dict(window=0), dict(group_size=0),
           dict(select_by="best"), dict(common_loss=3.0), dict(period=1.5)]
    for kwargs in bad:
        try:
            accord.LeaderSGD(params, **kwargs)
        except ValueError:
            pass
        else:
            check(False, f"LeaderSGD({kwargs}) did not raise ValueError")
    try:
        accord.LeaderSGD(params).step()
    except ValueError:
        pass
    else:
        check(False, "step() without a loss did not raise")

    if "--train" in sys.argv:
        from averaging_worker import train_digits
        acc = train_digits(comm, "lsgd")
        if rank == 0:
            print(f"lsgd digits: {acc}")

    comm.barrier()
    if rank == 0:
        print(f"leader_worker: all checks passed on {N} ranks ({backend()})")


if __name__ == "__main__":
    worker_main(main)
