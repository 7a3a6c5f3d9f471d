"""Periodic (CPSGD) and adaptive (ADPSGD) averaging checks for one rank count (any N).
Launched by tests/test_averaging.py; ``--train`` adds the sklearn-digits training runs.
``train_digits`` is shared with leader_worker.py."""
from __future__ import annotations

import sys

import numpy as np
import torch
from _worker import backend, check, check_close, check_equal, setup, worker_main

import accord
from accord.demo import digits_shards


def gather_flat(comm, tensors):
    """Every rank's tensors, flattened to float64: [N, n]."""
    mine = np.concatenate([t.detach().double().numpy().ravel() for t in tensors])
    every = np.empty(comm.size * mine.size)
    comm.allgather(mine, every)
    return every.reshape(comm.size, -1)


def identical_everywhere(comm, tensors, msg):
    every = gather_flat(comm, tensors)
    for r in range(comm.size):
        check(np.array_equal(every[r], every[0]), f"{msg}: rank {r} differs from rank 0")


def make_params(seed, rank, dtypes=(torch.float64, torch.float32, torch.float64)):
    g = torch.Generator().manual_seed(seed * 1000 + rank)
    shapes = [(4, 5), (7,), (3,)]
    return [torch.randn(s, generator=g, dtype=torch.float64).to(d) + 3.0
            for s, d in zip(shapes, dtypes)]


def perturb(params, seed, rank, t, scale):
    g = torch.Generator().manual_seed(seed * 100003 + rank * 1009 + t)
    with torch.no_grad():
        for p in params:
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=torch.float64).to(p.dtype))


def check_schedule(comm, period, warmup, during, T=23):
    params = make_params(1, comm.rank)
    avg = accord.PeriodicAverager(period, warmup, sync_during_warmup=during)
    synced = []
    for t in range(1, T + 1):
        perturb(params, 1, comm.rank, t, 0.1)
        before = gather_flat(comm, params)
        if avg.average_parameters(params):
            synced.append(t)
            identical_everywhere(comm, params, f"after sync at step {t}")
            check_close(gather_flat(comm, params)[0], before.mean(axis=0), rtol=1e-6,
                        atol=1e-6, msg="average")
    expected = [t for t in range(1, T + 1)
                if (t <= warmup and during) or (t > warmup and (t - warmup) % period == 0)]
    check(synced == expected, f"period {period} warmup {warmup}: synced at {synced}")
    formula = min(T, warmup) * during + max(0, T - warmup) // period
    check(avg.num_syncs == len(synced) == formula, "sync count formula")


def numpy_variance(every):
    return float(np.mean(np.sum((every - every.mean(axis=0)) ** 2, axis=1)))


def check_variance(comm, dtypes, rtol):
    params = make_params(2, comm.rank, dtypes)
    avg = accord.PeriodicAverager(3, track_variance=True)
    for t in range(1, 13):
        perturb(params, 2, comm.rank, t, 0.05 * t)
        before = gather_flat(comm, params)
        if avg.average_parameters(params):
            v = avg.variance_history[-1]
            check(v[0] == t and v[1] == 3, f"history entry {v}")
            ref = numpy_variance(before)
            check(abs(v[2] - ref) <= rtol * max(ref, 1e-300) + 1e-12,
                  f"{dtypes}: V {v[2]!r} vs numpy {ref!r}")


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(6, 4)
        self.bn = torch.nn.BatchNorm1d(4)


def check_buffers_and_optimizer(comm):
    N, rank = comm.size, comm.rank
    torch.manual_seed(0)
    net = Net().double()
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    torch.manual_seed(100 + rank)  # rank-specific batch -> different momentum and BN stats
    x = torch.randn(8, 6, dtype=torch.float64) * (rank + 1)
    net.bn(net.fc(x)).sum().backward()
    opt.step()
    momenta = [opt.state[p]["momentum_buffer"] for p in net.parameters()]
    bufs = [net.bn.running_mean, net.bn.running_var]
    tracked = net.bn.num_batches_tracked.clone()
    every = {name: gather_flat(comm, ts) for name, ts in
             (("params", list(net.parameters())), ("momenta", momenta), ("bufs", bufs))}
    avg = accord.PeriodicAverager(1, average_buffers=True, average_optimizer_state=True,
                                  optimizer=opt)
    check(avg.average_parameters(net), "period 1 syncs")
    for name, ts in (("params", list(net.parameters())), ("momenta", momenta), ("bufs", bufs)):
        check_close(gather_flat(comm, ts)[rank], every[name].mean(axis=0), rtol=1e-12,
                    atol=1e-12, msg=f"{name} averaged")
        identical_everywhere(comm, ts, name)
    check_equal(net.bn.num_batches_tracked, tracked, "integer buffer untouched")
    # buffers given as a module / a list; Adam moments averaged, its step untouched
    adam = torch.optim.Adam(net.parameters(), lr=1e-3)
    net.bn(net.fc(x)).sum().backward()
    adam.step()
    moments = [adam.state[p][k] for p in net.parameters() for k in ("exp_avg", "exp_avg_sq")]
    steps = [adam.state[p]["step"].clone() for p in net.parameters()]
    before = gather_flat(comm, moments)
    accord.PeriodicAverager(1, average_buffers=net.bn, average_optimizer_state=True,
                            optimizer=adam).average_parameters(net.parameters())
    check_close(gather_flat(comm, moments)[rank], before.mean(axis=0), rtol=1e-12, atol=1e-15,
                msg="adam moments")
    for p, s in zip(net.parameters(), steps):
        check_equal(adam.state[p]["step"], s, "adam step untouched")
    net.bn.running_mean.add_(rank)
    before = gather_flat(comm, [net.bn.running_mean])
    accord.PeriodicAverager(1, average_buffers=[net.bn.running_mean]).average_parameters(net)
    check_close(net.bn.running_mean, before.mean(axis=0), rtol=1e-12, atol=1e-12,
                msg="buffer list")
    # param groups and named parameters are accepted too
    accord.PeriodicAverager(1).average_parameters(opt.param_groups)
    accord.PeriodicAverager(1).average_parameters(net.named_parameters())
    try:
        accord.PeriodicAverager(1, average_buffers=True).average_parameters(net.parameters())
    except ValueError as e:
        check("module" in str(e), str(e))
    else:
        check(False, "average_buffers=True without a module did not raise")


def adaptive_run(comm, avg, params, scale_at, T, seed=3, check_v=True):
    for t in range(1, T + 1):
        perturb(params, seed, comm.rank, t, scale_at(t))
        before = gather_flat(comm, params) if check_v else None
        if avg.average_parameters(params):
            identical_everywhere(comm, params, f"adaptive sync at {t}")
            if check_v:
                ref = numpy_variance(before)
                v = avg.variance_history[-1][2]
                check(abs(v - ref) <= 1e-9 * ref + 1e-14, f"adaptive V {v} vs {ref}")


def check_adaptive(comm):
    N = comm.size
    # (a) variance growing slower than on average -> longer periods (up to max_period);
    #     faster -> shorter (halving at most per sync)
    params = make_params(3, 0, (torch.float64,) * 3)  # same start everywhere, as in training
    avg = accord.AdaptivePeriodicAverager(initial_period=2, max_period=16, base_period=8)
    adaptive_run(comm, avg, params, lambda t: 1.0 if t <= 40 else (0.05 if t <= 120 else 5.0),
                 T=200)
    hist = avg.variance_history
    steps = [h[0] for h in hist]
    check(all(b - a == h[1] for a, b, h in zip([0] + steps, steps, hist)),
          "history periods = gaps between syncs")
    periods = [h[1] for h in hist]
    check(periods[:3] == [2, 4, 8], f"ramp from initial_period to base_period: {periods}")
    if N > 1:
        low = [h[1] for h in hist if 60 < h[0] <= 120]
        check(low and max(low) == 16, f"period did not grow under low variance: {hist}")
        jump = next(i for i, h in enumerate(hist) if h[0] > 120)  # first sync seeing high V
        check(periods[jump + 1] == periods[jump] // 2 and
              periods[jump + 2] == periods[jump + 1] // 2 and min(periods[jump:]) <= 4,
              f"period did not shrink under high variance: {periods}")
    # (b) budget: never exceeded, the last sync lands on total_steps; warm-up counted
    for budget, warmup in ((12, 0), (20, 4), (5, 3)):
        params = make_params(4, comm.rank, (torch.float64,) * 3)
        T = 100
        avg = accord.AdaptivePeriodicAverager(total_steps=T, budget=budget, warmup_steps=warmup,
                                              max_period=16)
        check(avg.num_syncs == 0, "fresh averager")
        adaptive_run(comm, avg, params, lambda t: 1.0 / t, T=T + 20, check_v=False)
        check(avg.num_syncs <= budget, f"budget {budget} exceeded: {avg.num_syncs}")
        steps = [h[0] for h in avg.variance_history]
        check(steps[:warmup] == list(range(1, warmup + 1)), f"warm-up syncs {steps}")
        check(T in steps, f"budget {budget}: no sync at total_steps: {steps}")
        check(all(s <= T for s in steps) or avg.num_syncs < budget, "synced past T")
    # (c) float32 and float16-only models measure V too (float16: a separate small allreduce)
    # V = mean|x_i|^2 - |xbar|^2 is a difference: rounding the mean to the parameters' dtype
    # (unit roundoff u) moves |xbar|^2 by up to about 2u|xbar|^2, whatever V is.
    for dtypes, rtol, u in (((torch.float32,) * 3, 1e-4, 2.0**-24),
                            ((torch.float16,) * 3, 3e-2, 2.0**-11)):
        params = make_params(5, comm.rank, dtypes)
        avg = accord.AdaptivePeriodicAverager(initial_period=2)
        for t in range(1, 7):
            perturb(params, 5, comm.rank, t, 0.1)
            before = gather_flat(comm, params)
            if avg.average_parameters(params):
                ref = numpy_variance(before)
                xbar = before.mean(axis=0)
                bound = rtol * ref + 4 * u * float(xbar @ xbar) + 1e-6
                v = avg.variance_history[-1][2]
                check(abs(v - ref) <= bound, f"{dtypes[0]}: V {v} vs {ref} (bound {bound})")


def check_state(comm):
    for make in (lambda: accord.PeriodicAverager(3, 2, track_variance=True),
                 lambda: accord.AdaptivePeriodicAverager(total_steps=40, budget=10,
                                                         max_period=8)):
        p_full = make_params(6, comm.rank, (torch.float64,) * 3)
        p_res = [p.clone() for p in p_full]
        full, res = make(), make()
        for t in range(1, 41):
            for params in (p_full, p_res):
                perturb(params, 6, comm.rank, t, 1.0 / t)
            if t == 17:
                state = res.state_dict()
                res = make()
                res.load_state_dict(state)
                check(res.state_dict() == state, "averager state round trip")
            a, b = full.average_parameters(p_full), res.average_parameters(p_res)
            check(a == b, f"resumed schedule differs at step {t}")
        check(full.num_syncs == res.num_syncs and full.period == res.period, "resumed state")
        sa, sb = [h[:2] for h in full.variance_history], [h[:2] for h in res.variance_history]
        check(sa == sb, f"history {sa} vs {sb}")
        for p, q in zip(p_full, p_res):
            check_close(p, q, rtol=1e-12, atol=1e-12, msg="resumed params")


def check_bad_input():
    bad = [lambda: accord.PeriodicAverager(0), lambda: accord.PeriodicAverager(2.5),
           lambda: accord.PeriodicAverager(2, -1),
           lambda: accord.PeriodicAverager(2, average_optimizer_state=True),
           lambda: accord.AdaptivePeriodicAverager(budget=10),
           lambda: accord.AdaptivePeriodicAverager(initial_period=64, max_period=32),
           lambda: accord.AdaptivePeriodicAverager(min_period=0),
           lambda: accord.AdaptivePeriodicAverager(exponent=-1),
           lambda: accord.AdaptivePeriodicAverager(base_period=0),
           lambda: accord.AdaptivePeriodicAverager(total_steps=100, budget=3, warmup_steps=5),
           lambda: accord.AdaptivePeriodicAverager(total_steps=0)]
    for i, make in enumerate(bad):
        try:
            make()
        except ValueError:
            pass
        else:
            check(False, f"bad input #{i} did not raise ValueError")


# ---------------------------------------------------------------------------------------------
# training on sklearn digits (accord.demo.digits_shards; also used by leader_worker.py)

THRESHOLD = 0.85  # test accuracy every method must reach (typically ~0.95)


def mlp(seed=0):
    torch.manual_seed(seed)  # same initial model on every rank
    return torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))


def evaluate(model, params, data):
    with torch.no_grad():
        saved = [p.clone() for p in model.parameters()]
        for p, q in zip(model.parameters(), params):
            p.copy_(q)
        out = model(data[0])
        loss = float(torch.nn.functional.cross_entropy(out, data[1]))
        acc = float((out.argmax(1) == data[1]).float().mean())
        for p, q in zip(model.parameters(), saved):
            p.copy_(q)
    return loss, acc


def train_digits(comm, method, *, steps=300, batch=16, lr=0.05, period=8, seed=0,
                 skew=False, check_threshold=True, averager=None, lsgd_kwargs=None):
    """Train the MLP with `method` ('lsgd', 'cpsgd', 'adpsgd'); returns a dict of results.
    Final model: LSGD -> the leader's (evaluation_parameters('leader')), averaging -> the
    average of the workers (one extra allreduce, not counted as a sync)."""
    torch.set_num_threads(1)
    shard, train, test = digits_shards(comm.rank, comm.size, skew=skew)
    model = mlp(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    rng = np.random.default_rng(1000 * seed + comm.rank)
    if method == "lsgd":
        kw = dict(group_size=2 if comm.size >= 2 else None, period=4, global_period=16)
        kw.update(lsgd_kwargs or {})
        if "common_batch" in kw:  # select the leader by the loss on a batch shared by all ranks
            xc, yc = kw.pop("common_batch")
            kw.update(select_by="common", common_loss=lambda: float(
                torch.nn.functional.cross_entropy(model(xc), yc).detach()))
        sync = accord.LeaderSGD(model.parameters(), comm=comm, **kw)
    elif averager is not None:
        sync = averager
    elif method == "cpsgd":
        sync = accord.PeriodicAverager(period, comm=comm)
    else:
        sync = accord.AdaptivePeriodicAverager(total_steps=steps, budget=steps // period,
                                               comm=comm)
    for _ in range(steps):
        idx = rng.integers(0, len(shard[1]), batch)
        loss = torch.nn.functional.cross_entropy(model(shard[0][idx]), shard[1][idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if method == "lsgd":
            sync.step(loss.item())
        else:
            sync.average_parameters(model.parameters())
    result = {"method": method}
    if method == "lsgd":
        final = sync.evaluation_parameters("leader")
        result["test_acc_average"] = evaluate(model, sync.evaluation_parameters("average"),
                                              test)[1]
        result["rounds"] = (sync.num_local_rounds, sync.num_global_rounds)
    else:
        final = accord.grouped_allreduce([p.detach() for p in model.parameters()], comm=comm)
        result["syncs"] = sync.num_syncs
    result["train_loss"], result["train_acc"] = evaluate(model, final, train)
    result["test_loss"], result["test_acc"] = evaluate(model, final, test)
    if check_threshold:
        for key in ("test_acc", "test_acc_average"):
            if key in result:
                check(result[key] >= THRESHOLD,
                      f"{method}: {key} {result[key]:.3f} < {THRESHOLD}")
    return result


def main():
    comm = setup()
    accord.init(comm)
    N, rank = comm.size, comm.rank
    for period, warmup, during in ((1, 0, True), (4, 0, True), (5, 3, True), (3, 4, False),
                                   (30, 0, True)):
        check_schedule(comm, period, warmup, during)
    check_variance(comm, (torch.float64,) * 3, 1e-9)
    check_variance(comm, (torch.float64, torch.float32, torch.float64), 1e-4)
    check_variance(comm, (torch.float32,) * 3, 1e-4)
    check_buffers_and_optimizer(comm)
    check_adaptive(comm)
    check_state(comm)
    check_bad_input()
    if "--train" in sys.argv:
        for method in ("cpsgd", "adpsgd"):
            r = train_digits(comm, method)
            if rank == 0:
                print(f"{method} digits: {r}")
    comm.barrier()
    if rank == 0:
        print(f"averaging_worker: all checks passed on {N} ranks ({backend()})")


if __name__ == "__main__":
    worker_main(main)
