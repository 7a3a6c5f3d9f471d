"""accord.DistributedOptimizer and broadcast_optimizer_state, for one rank count (any N), against
numpy references built from every rank's local gradients. Launched by tests/test_optimizer.py."""
from __future__ import annotations

import copy
import gc
import math
import threading
import time
import warnings

import numpy as np
import torch
import torch.utils.checkpoint
from _worker import backend, check, check_close, check_equal, setup, worker_main
from torch import nn
from tree_oracle import adasum_tree

import accord
from accord.consensus import ConsensusAggregator

LR = 0.1


class Net(nn.Module):
    """Three layers, a parameter only some ranks use, and a frozen one."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Linear(6, 8), nn.Linear(8, 5), nn.Linear(5, 3)
        self.spare = nn.Parameter(torch.randn(4))
        self.frozen = nn.Parameter(torch.randn(3), requires_grad=False)

    def forward(self, x, extra=False, reentrant=False):
        h = torch.tanh(self.a(x))
        if reentrant:  # nested backwards inside the outer one, the first gradients in one
            ckpt = torch.utils.checkpoint.checkpoint
            y = ckpt(self.c, torch.tanh(ckpt(self.b, h, use_reentrant=True)), use_reentrant=True)
        else:
            y = self.c(torch.tanh(self.b(h)))
        y = y + self.frozen
        loss = (y ** 2).mean()
        if extra:
            loss = loss + (self.spare ** 2).sum() / 7
        return loss


def make_model(dtype=torch.float64):
    torch.manual_seed(0)  # identical initial parameters on every rank
    return Net().to(dtype)


def batch(rank, step, dtype=torch.float64):
    g = torch.Generator().manual_seed(1000 * rank + step)
    return torch.randn(7, 6, generator=g).to(dtype)


def trainable(model):
    return [p for p in model.parameters() if p.requires_grad]


def flat(tensors):
    return np.concatenate([t.detach().double().reshape(-1).numpy() for t in tensors])


def grads_of(model):
    return flat([p.grad if p.grad is not None else torch.zeros_like(p) for p in trainable(model)])


def local_grads(model, x, extra=False, scale=1.0):
    """This rank's own gradient (on a private copy of the model), flattened."""
    m = copy.deepcopy(model)
    for p in m.parameters():
        p.grad = None
    (m(x, extra) * scale).backward()
    return grads_of(m)


def gather(comm, v):
    v = np.ascontiguousarray(v, dtype=np.float64)
    out = np.empty(comm.size * v.size)
    comm.allgather(v, out)
    return out.reshape(comm.size, v.size)


def offsets_of(model):
    return np.concatenate([[0], np.cumsum([p.numel() for p in trainable(model)])])


def identical_everywhere(comm, v, msg):
    every = gather(comm, v)
    for r in range(comm.size):
        check(np.array_equal(every[r], every[0], equal_nan=True),
              f"{msg}: rank {r} differs from rank 0")


def state_of(opt, model, key="momentum_buffer"):
    return flat([opt.state[p][key] for p in trainable(model) if key in opt.state.get(p, {})])


def wrap(model, op=accord.Average, lr=LR, momentum=0.0, **kw):
    base = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    return accord.DistributedOptimizer(base, named_parameters=model.named_parameters(), op=op,
                                       **kw)


def expect_raises(exc, fn, text):
    try:
        fn()
    except exc as e:
        check(text in str(e), f"{exc.__name__} message lacks {text!r}: {e}")
    else:
        check(False, f"expected {exc.__name__} ({text})")


# ---------------------------------------------------------------------------------------------


def check_average_sum(comm):
    N, rank = comm.size, comm.rank
    for op, threshold in ((accord.Average, 200), (accord.Average, None), (accord.Sum, 200)):
        default = accord.fusion_threshold()
        if threshold:
            accord.set_fusion_threshold(threshold)  # several buckets
        model = make_model()
        opt = wrap(model, op)
        accord.set_fusion_threshold(default)
        nb = len(opt._acc_buckets)
        check(nb > 3 if threshold else nb == 1, f"bucket count {nb}")
        # overlap: when the first layer's gradient (the last of backward) arrives, the buckets
        # of the later layers have been launched already
        seen = []
        model.a.weight.register_post_accumulate_grad_hook(
            lambda p: seen.append(opt._acc_buckets[0].future is not None))
        x, extra = batch(rank, 0), rank == 0  # `spare` gets a gradient on rank 0 only
        every = gather(comm, local_grads(model, x, extra))
        expected = every.mean(0) if op is accord.Average else every.sum(0)
        p0 = flat(trainable(model))
        model(x, extra).backward()
        if threshold and rank == 0:  # elsewhere `spare` (bucket 0) has no gradient: the
            # buckets wait for the end of backward (in-order launch), results are the same
            check(seen == [True], "buckets did not launch during backward")
        # reduced as soon as backward returns (end-of-backward synchronize)
        check_close(grads_of(model), expected, rtol=1e-12, atol=1e-15, msg=f"{op} grads")
        opt.step()
        check_close(flat(trainable(model)), p0 - LR * expected, rtol=1e-12, atol=1e-15,
                    msg=f"{op} step")
        identical_everywhere(comm, flat(trainable(model)), f"{op} params")
        # manual gradients, no backward: step() reduces them itself
        for p in trainable(model):
            p.grad = torch.full_like(p, float(rank + 1))
        p0 = flat(trainable(model))
        opt.step()
        s = N * (N + 1) / 2
        g = s / N if op is accord.Average else s
        check_close(flat(trainable(model)), p0 - LR * g, rtol=1e-12, msg=f"{op} manual grads")

    # reentrant checkpointing: the nested backward's end is not the end of the pass (Sum would
    # count gradients reduced there N times)
    model = make_model()
    opt = wrap(model, accord.Sum)
    x = batch(rank, 4)
    expected = gather(comm, local_grads(model, x)).sum(0)
    model(x, reentrant=True).backward()
    check_close(grads_of(model), expected, rtol=1e-12, atol=1e-15, msg="reentrant checkpoint")

    # gradient_predivide_factor: 1/f before the sum, f/N after: still the mean
    for f in (2.5, float(N)):
        model = make_model()
        opt = wrap(model, gradient_predivide_factor=f)
        x = batch(rank, 1)
        expected = gather(comm, local_grads(model, x)).mean(0)
        model(x).backward()
        check_close(grads_of(model), expected, rtol=1e-12, atol=1e-15, msg=f"predivide {f}")

    # backward_passes_per_step=2: local accumulation, then one reduction
    model = make_model()
    opt = wrap(model, backward_passes_per_step=2)
    x0, x1 = batch(rank, 2), batch(rank, 3)
    g0, g1 = local_grads(model, x0), local_grads(model, x1)
    expected = gather(comm, g0 + g1).mean(0)
    p0 = flat(trainable(model))
    model(x0).backward()
    check_close(grads_of(model), g0, rtol=1e-12, msg="bpps=2: first pass must stay local")
    model(x1).backward()
    check_close(grads_of(model), expected, rtol=1e-12, atol=1e-15, msg="bpps=2 reduced")
    opt.step()
    check_close(flat(trainable(model)), p0 - LR * expected, rtol=1e-12, msg="bpps=2 step")
    # and a second cycle works the same way
    opt.zero_grad()
    model(x1).backward()
    check_close(grads_of(model), local_grads(model, x1), rtol=1e-12, msg="bpps=2 cycle 2")
    model(x0).backward()
    opt.step()

    # momentum over several steps: parameters stay identical on every rank
    model = make_model()
    opt = wrap(model, momentum=0.9)
    for step in range(3):
        opt.zero_grad()
        model(batch(rank, 10 + step)).backward()
        opt.step()
    identical_everywhere(comm, flat(trainable(model)), "average+momentum params")


def check_adasum(comm):
    N, rank = comm.size, comm.rank
    model = make_model()
    opt = wrap(model, accord.Adasum)
    off = offsets_of(model)
    for step in range(2):
        x, extra = batch(rank, 20 + step), rank == N - 1
        g = local_grads(model, x, extra)
        every = gather(comm, g)
        p0 = flat(trainable(model))
        opt.zero_grad()
        model(x, extra).backward()
        check_close(grads_of(model), g, rtol=1e-12, msg="adasum: gradients stay local")
        opt.step()
        # plain SGD: p_before + Adasum(-lr g_i) = p - lr * Adasum(g_i) (homogeneity)
        expected = p0 - LR * adasum_tree(every, off) if N > 1 else p0 - LR * g
        check_close(flat(trainable(model)), expected, rtol=1e-9, atol=1e-12,
                    msg=f"adasum step {step}")
        identical_everywhere(comm, flat(trainable(model)), "adasum params")

    # momentum: the state stays local, the parameters identical
    model = make_model()
    opt = wrap(model, accord.Adasum, momentum=0.9)
    for step in range(3):
        opt.zero_grad()
        model(batch(rank, 30 + step)).backward()
        opt.step()
    identical_everywhere(comm, flat(trainable(model)), "adasum+momentum params")
    if N > 1:
        every = gather(comm, state_of(opt, model))
        check(not np.array_equal(every[0], every[1]), "adasum momentum must stay local")
    check_adasum_gradients(comm)


def check_adasum_gradients(comm):
    """adasum_mode="gradients": p.grad becomes Adasum(g) on every rank (reduced during backward);
    with plain SGD the step equals delta mode's; with momentum the state is identical too."""
    N, rank = comm.size, comm.rank
    model = make_model()
    opt = wrap(model, accord.Adasum, adasum_mode="gradients")
    off = offsets_of(model)
    for step in range(2):
        x, extra = batch(rank, 20 + step), rank == N - 1
        g = local_grads(model, x, extra)
        every = gather(comm, g)
        p0 = flat(trainable(model))
        combined = adasum_tree(every, off) if N > 1 else g
        opt.zero_grad()
        model(x, extra).backward()
        check_close(grads_of(model), combined, rtol=1e-9, atol=1e-12,
                    msg=f"adasum gradients: p.grad = Adasum(g) after backward, step {step}")
        identical_everywhere(comm, grads_of(model), "adasum gradients: p.grad")
        opt.step()
        check_close(flat(trainable(model)), p0 - LR * combined, rtol=1e-9, atol=1e-12,
                    msg=f"adasum gradients step {step} (= delta mode with plain SGD)")
        identical_everywhere(comm, flat(trainable(model)), "adasum gradients params")
    model = make_model()
    opt = wrap(model, accord.Adasum, momentum=0.9, adasum_mode="gradients")
    for step in range(3):
        opt.zero_grad()
        model(batch(rank, 30 + step)).backward()
        opt.step()
    identical_everywhere(comm, flat(trainable(model)), "adasum gradients+momentum params")
    identical_everywhere(comm, state_of(opt, model), "adasum gradients: momentum is shared")


def check_clipping(comm):
    """synchronize() + clip_grad_norm_ + skip_synchronize(), for Average, Sum and Adasum."""
    N, rank = comm.size, comm.rank
    max_norm = 0.05
    for op in (accord.Average, accord.Sum, accord.Adasum):
        model = make_model()
        opt = wrap(model, op)
        x = batch(rank, 40)
        every = gather(comm, local_grads(model, x))
        p0 = flat(trainable(model))
        opt.zero_grad()
        model(x).backward()
        opt.synchronize()
        opt.synchronize()  # idempotent
        torch.nn.utils.clip_grad_norm_(trainable(model), max_norm)
        with opt.skip_synchronize():
            opt.step()

        def clip(v):
            return v * min(1.0, max_norm / (np.linalg.norm(v) + 1e-6))
        if op is accord.Adasum:
            clipped = [clip(v) for v in every]
            update = adasum_tree(clipped, offsets_of(model)) if N > 1 else clipped[0]
        else:
            update = clip(every.mean(0) if op is accord.Average else every.sum(0))
        check_close(flat(trainable(model)), p0 - LR * update, rtol=1e-9, atol=1e-12,
                    msg=f"clip {op}")
        if op is accord.Adasum:
            continue
        # step() after an explicit synchronize() (no skip_synchronize) must not reduce twice
        opt.zero_grad()
        model(x).backward()
        opt.synchronize()
        g = grads_of(model)
        p0 = flat(trainable(model))
        opt.step()
        check_close(flat(trainable(model)), p0 - LR * g, rtol=1e-12, atol=1e-15,
                    msg=f"{op}: step after synchronize reduced again")


def consensus_opt(model, **kw):
    agg = ConsensusAggregator(**kw)
    return wrap(model, accord.Consensus, consensus=agg), ConsensusAggregator(**kw)


def check_consensus(comm):
    rank = comm.rank
    for kw, threshold in (({}, 200), ({"granularity": "layer", "momentum": 0.5}, 200),
                          ({"weighting": "gram", "granularity": "layer"}, None)):
        default = accord.fusion_threshold()
        accord.set_fusion_threshold(threshold or default)
        model = make_model()
        if kw:
            opt, ref = consensus_opt(model, **kw)
        else:  # default-constructed aggregator (granularity="model": one bucket)
            opt, ref = wrap(model, accord.Consensus), ConsensusAggregator()
        accord.set_fusion_threshold(default)
        if kw.get("granularity") == "layer" and threshold:
            check(len(opt._acc_buckets) > 3, "layer granularity keeps several buckets")
        else:
            check(len(opt._acc_buckets) == 1, "model granularity must use one bucket")
        for step in range(3):
            x, extra = batch(rank, 50 + step), rank == 0
            mine = copy.deepcopy(model)
            mine(x, extra).backward()
            grads = [p.grad if p.grad is not None else torch.zeros_like(p)
                     for p in trainable(mine)]
            # the optimizer's single bucket holds the parameters in reverse order
            expected = flat(ref.aggregate(grads[::-1])[::-1] if not kw else ref.aggregate(grads))
            opt.zero_grad()
            model(x, extra).backward()
            check_close(grads_of(model), expected, rtol=1e-9, atol=1e-12,
                        msg=f"consensus {kw} step {step}")
            opt.step()
        identical_everywhere(comm, flat(trainable(model)), f"consensus {kw} params")
        check(opt.consensus.state_dict()["entries"], "aggregator state is kept")


def check_amp(comm):
    """GradScaler on CPU: the Horovod flow (synchronize, unscale_, clip, skip_synchronize) and the
    plain flow (scaler.step right after backward), with and without an overflow on one rank."""
    N, rank = comm.size, comm.rank
    bad_rank = N - 1
    ops = [(accord.Average, {}), (accord.Adasum, {}), (accord.Adasum, {"adasum_mode": "gradients"}),
           (accord.Consensus, {"keep_scale": True, "granularity": "layer"})]
    for op, kw in ops:
        for horovod_flow in (True, False):
            model = make_model(torch.float32)
            if op is accord.Consensus:
                opt, ref = consensus_opt(model, **kw)
            else:
                opt = wrap(model, op, **kw)
            scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10, growth_interval=1000)
            for step, overflow in enumerate((False, True, False)):
                x = batch(rank, 60 + step, torch.float32)
                g = local_grads(model, x)
                every = gather(comm, g)
                p0 = flat(trainable(model))
                opt.zero_grad()
                loss = model(x)
                if overflow and rank == bad_rank:
                    loss = loss * math.inf
                scaler.scale(loss).backward()
                if horovod_flow:
                    opt.synchronize()
                    scaler.unscale_(opt)
                    torch.nn.utils.clip_grad_norm_(trainable(model), 1e3)  # finite: no-op
                    with opt.skip_synchronize():
                        scaler.step(opt)
                else:
                    scaler.step(opt)
                scale = scaler.get_scale()
                scaler.update()
                what = f"amp {op} {kw} horovod_flow={horovod_flow} step {step}"
                new = flat(trainable(model))
                identical_everywhere(comm, new, what + " params")
                identical_everywhere(comm, np.array([scaler.get_scale()]), what + " scale")
                if overflow:
                    check_equal(new, p0, what + ": the step must be skipped on every rank")
                    check(scaler.get_scale() == scale / 2, what + ": scale must back off")
                    continue
                check(scaler.get_scale() == scale, what + ": scale must stay")
                if op is accord.Average:
                    update = every.mean(0)
                elif op is accord.Adasum:
                    update = adasum_tree(every, offsets_of(model)) if N > 1 else every[0]
                else:
                    continue  # consensus values: check_consensus; here the skip logic matters
                check_close(new, p0 - LR * update, rtol=2e-4, atol=2e-6, msg=what)


def check_broadcast_state(comm):
    N, rank = comm.size, comm.rank
    # SGD with momentum: rank-dependent hyperparameters and state; odd ranks have no state
    model = make_model()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(rank)
    opt = torch.optim.SGD(model.parameters(), lr=0.1 * (rank + 1), momentum=0.9 - 0.1 * rank)
    if rank % 2 == 0:
        model(batch(rank, 70)).backward()
        opt.step()
    mine = state_of(opt, model) if rank == 0 else None
    accord.broadcast_optimizer_state(opt, root_rank=0)
    check(opt.param_groups[0]["lr"] == 0.1 and opt.param_groups[0]["momentum"] == 0.9,
          f"hyperparameters not broadcast: {opt.param_groups[0]}")
    buf = state_of(opt, model)
    check(buf.size == sum(p.numel() for p in trainable(model)) - 4, "momentum buffers missing")
    identical_everywhere(comm, buf, "momentum buffers")
    if rank == 0:
        check_equal(buf, mine, "root's own state changed")
    # the state is usable: a step runs and the optimizer's parameters are still its own
    model(batch(rank, 71)).backward()
    opt.step()

    # Adam from the last rank; the others have never stepped
    root = N - 1
    model = make_model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3 * (rank + 1), betas=(0.8, 0.9))
    if rank == root:
        for step in range(2):
            model(batch(rank, 72 + step)).backward()
            opt.step()
    accord.broadcast_optimizer_state(opt, root_rank=root)
    check(math.isclose(opt.param_groups[0]["lr"], 1e-3 * N), "adam lr")
    for p in trainable(model)[1:]:  # `spare` (the first) never had a gradient: no state
        st = opt.state[p]
        check(float(st["step"]) == 2.0, f"adam step {st.get('step')}")
        identical_everywhere(comm, flat([st["exp_avg"], st["exp_avg_sq"]]), "adam moments")
        check(st["exp_avg"].dtype == p.dtype, "state dtype follows the parameter")

    # a wrapped optimizer, and a mismatched one (fails on every rank, never hangs)
    model = make_model()
    opt = wrap(model, lr=0.5 if rank == 0 else 1.0)
    accord.broadcast_optimizer_state(opt)
    check(opt.param_groups[0]["lr"] == 0.5, "wrapped optimizer lr")
    if N > 1:
        params = trainable(model) if rank == 0 else trainable(model)[1:]
        expect_raises(ValueError,
                      lambda: accord.broadcast_optimizer_state(torch.optim.SGD(params, lr=1.0)),
                      "differ from root")


def check_wrapper_behaviour(comm):
    rank = comm.rank
    model = make_model()
    base = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)
    opt = accord.DistributedOptimizer(base, named_parameters=model.named_parameters())
    check(isinstance(opt, torch.optim.SGD), "isinstance(opt, SGD)")
    check(opt.param_groups is base.param_groups and opt.state is base.state, "shared state")
    calls = []
    opt.register_step_pre_hook(lambda *a: calls.append(1))
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*lr_scheduler.*")
        for step in range(2):
            opt.zero_grad()
            model(batch(rank, 80 + step)).backward()
            opt.step()
            sched.step()
    check(len(calls) == 2, f"step hooks ran {len(calls)} times for 2 steps")
    check(math.isclose(opt.param_groups[0]["lr"], LR / 4), "scheduler on the wrapped optimizer")
    sd = opt.state_dict()
    # round trip into a fresh wrapped optimizer over a copy of the model
    model2 = copy.deepcopy(model)
    opt2 = wrap(model2, momentum=0.9)
    opt2.load_state_dict(copy.deepcopy(sd))  # state_dict() does not copy the tensors
    check_equal(state_of(opt2, model2), state_of(opt, model), "state_dict round trip")
    check(math.isclose(opt2.param_groups[0]["lr"], LR / 4), "lr round trip")
    calls2 = []
    opt2.register_step_pre_hook(lambda *a: calls2.append(1))
    for m, o in ((model, opt), (model2, opt2)):
        o.zero_grad()
        m(batch(rank, 90)).backward()
        o.step()
    check(len(calls2) == 1, f"after load_state_dict the step hooks ran {len(calls2)} times")
    check_equal(flat(trainable(model2)), flat(trainable(model)), "same step after round trip")
    # and into a plain optimizer
    plain = torch.optim.SGD(copy.deepcopy(model).parameters(), lr=1.0, momentum=0.9)
    plain.load_state_dict(opt.state_dict())
    check(math.isclose(plain.param_groups[0]["lr"], LR / 4), "plain load")


def check_bad_input(comm):
    model = make_model()

    def sgd():
        return torch.optim.SGD(model.parameters(), lr=LR)
    D = accord.DistributedOptimizer
    expect_raises(TypeError, lambda: D(model), "torch.optim.Optimizer")
    expect_raises(ValueError, lambda: D(sgd(), op="median"), "op must be")
    expect_raises(ValueError, lambda: D(sgd(), backward_passes_per_step=0), ">= 1")
    expect_raises(ValueError, lambda: D(sgd(), backward_passes_per_step=1.5), ">= 1")
    expect_raises(ValueError, lambda: D(sgd(), gradient_predivide_factor=0.0), "positive")
    expect_raises(ValueError, lambda: D(sgd(), op=accord.Adasum, gradient_predivide_factor=2.0),
                  "only supported with op=accord.Average")
    expect_raises(ValueError, lambda: D(sgd(), consensus=ConsensusAggregator()),
                  "only used with op=accord.Consensus")
    expect_raises(ValueError, lambda: D(sgd(), op=accord.Adasum, adasum_mode="updates"),
                  "adasum_mode must be one of")
    expect_raises(ValueError, lambda: D(sgd(), adasum_mode="gradients"),
                  "only used with op=accord.Adasum")
    expect_raises(TypeError, lambda: D(sgd(), op=accord.Consensus, consensus=object()),
                  "ConsensusAggregator")
    named = list(model.named_parameters())
    expect_raises(ValueError, lambda: D(sgd(), named_parameters=named + named[:1]), "duplicate")
    expect_raises(ValueError, lambda: D(sgd(), named_parameters=named[1:]), "not named")
    expect_raises(ValueError, lambda: D(sgd(), named_parameters=[p for _, p in named]),
                  "(name, parameter)")
    wrapped = D(sgd())
    expect_raises(ValueError, lambda: D(wrapped), "already")
    lbfgs = torch.optim.LBFGS(model.parameters())
    expect_raises(ValueError, lambda: D(lbfgs), "LBFGS")
    expect_raises(ValueError, lambda: accord.allreduce(torch.ones(3), op=accord.Consensus),
                  "ConsensusAggregator")
    expect_raises(ValueError, lambda: accord.grouped_allreduce([torch.ones(3)],
                                                               op="consensus"), "not an allreduce")
    # a parameter unfrozen after wrapping would silently not be reduced: loud error instead
    # (raised by the end-of-backward synchronize, on every rank)
    opt = D(sgd())
    model.frozen.requires_grad_(True)
    expect_raises(RuntimeError, lambda: model(batch(comm.rank, 95)).backward(),
                  "wrap the optimizer after freezing")
    model.frozen.requires_grad_(False)
    opt.close()


def reduce_threads():
    return [t for t in threading.enumerate() if t.name.startswith("accord-reduce")]


def check_lifecycle(comm):
    rank, N = comm.rank, comm.size
    # Wrapping again after unfreezing (the documented flow) closes the first wrapper: its hooks
    # stop firing, so the newly trainable parameter is reduced instead of raising.
    model = make_model()
    opt1 = wrap(model)
    model.frozen.requires_grad_(True)
    opt2 = wrap(model)
    check(opt1.closed and not opt2.closed, "re-wrapping must close the previous wrapper")
    x = batch(rank, 200)
    expected = gather(comm, local_grads(model, x)).mean(0)
    model(x).backward()
    check_close(grads_of(model), expected, rtol=1e-12, atol=1e-15, msg="re-wrapped backward")
    opt2.step()
    expect_raises(RuntimeError, opt1.step, "closed")
    # close(): hooks gone (gradients stay local), worker thread stopped
    opt2.close()
    opt2.close()  # idempotent
    check(not reduce_threads(), "close() must stop the background thread")
    model.zero_grad()
    model(x).backward()
    check_close(grads_of(model), local_grads(model, x), rtol=0, atol=0,
                msg="after close() the hooks must not reduce")
    model.frozen.requires_grad_(False)
    # dropping the last reference closes it too (the hooks hold it weakly)
    opt3 = wrap(model)
    model.zero_grad()
    model(x).backward()
    opt3.step()
    del opt3
    gc.collect()
    check(not reduce_threads(), "a collected wrapper must stop its thread")
    model.zero_grad()
    model(x).backward()
    check_close(grads_of(model), local_grads(model, x), rtol=0, atol=0,
                msg="a collected wrapper's hooks must be gone")


def check_exception_in_hook(comm):
    """A failure inside backward (every rank, at the second bucket) leaves the wrapper usable."""
    rank = comm.rank
    default = accord.fusion_threshold()
    accord.set_fusion_threshold(200)
    model = make_model()
    opt = wrap(model)
    accord.set_fusion_threshold(default)
    check(len(opt._acc_buckets) > 2, "test setup: several buckets")
    real_pack, calls = opt._fusion.pack_values, []

    def failing_pack(bucket, *a, **kw):
        calls.append(bucket.index)
        if bucket.index == 1 and len(calls) < 3:
            raise RuntimeError("injected failure")
        return real_pack(bucket, *a, **kw)
    opt._fusion.pack_values = failing_pack
    x = batch(rank, 300)
    expect_raises(RuntimeError, lambda: model(x).backward(), "injected failure")
    opt._fusion.pack_values = real_pack
    model.zero_grad()
    x = batch(rank, 301)
    expected = gather(comm, local_grads(model, x)).mean(0)
    p0 = flat(trainable(model))
    model(x).backward()
    check_close(grads_of(model), expected, rtol=1e-12, atol=1e-15,
                msg="backward after a failed backward")
    opt.step()
    check_close(flat(trainable(model)), p0 - LR * expected, rtol=1e-12, atol=1e-15,
                msg="step after a failed backward")
    opt.close()


class SlowBackward(torch.autograd.Function):
    """Identity whose backward sleeps: the first layer's gradient arrives late."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        time.sleep(0.5)
        return g


def check_overlap(comm):
    """With a thread-capable transport, the last layers' bucket is reduced while backward is
    still running: its reduction has *finished* before the first layer's gradient arrives."""
    if not comm.threads_ok or comm.size == 1:
        return
    rank = comm.rank
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    default = accord.fusion_threshold()
    accord.set_fusion_threshold(8 * 8 * 3)  # last layer's weight and bias in bucket 0
    opt = accord.DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=LR))
    accord.set_fusion_threshold(default)
    check(len(opt._acc_buckets) >= 2, "test setup: several buckets")
    seen = []
    model[0].weight.register_post_accumulate_grad_hook(
        lambda p: seen.append(opt._acc_buckets[0].future.done()))
    h = model[0](batch(rank, 400))
    loss = (model[2](torch.tanh(SlowBackward.apply(h))) ** 2).mean()
    loss.backward()
    check(seen == [True], "bucket 0 was not reduced while backward ran (no overlap)")
    opt.close()


def check_no_step_allocation(comm):
    """After the first step, a step allocates no model-sized buffers (fusion scratch reused):
    the bytes a wrapped step allocates exceed a plain optimizer's step by far less than the
    model (backward's own gradient temporaries are in both)."""
    from torch.profiler import ProfilerActivity, profile
    big = nn.Sequential(nn.Linear(256, 256), nn.Tanh(), nn.Linear(256, 64)).double()
    nbytes = sum(p.numel() * p.element_size() for p in big.parameters())
    x = torch.randn(4, 256, dtype=torch.float64)

    def allocated_per_step(opt):
        def step():
            opt.zero_grad(set_to_none=False)
            big(x).pow(2).mean().backward()
            opt.step()
        step()
        step()
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            step()
        return sum(e.cpu_memory_usage for e in prof.events() if e.cpu_memory_usage > 0)

    plain = allocated_per_step(torch.optim.SGD(big.parameters(), lr=1e-3))
    for op in (accord.Average, accord.Adasum):
        opt = accord.DistributedOptimizer(torch.optim.SGD(big.parameters(), lr=1e-3), op=op)
        extra = allocated_per_step(opt) - plain
        check(extra < nbytes // 4, f"{op}: a step allocated {extra} bytes more than a plain "
              f"optimizer's (model {nbytes} bytes): fusion buffers not reused")
        opt.close()
    # the averagers and Leader SGD reuse their fusion buffers too
    faces = {"PeriodicAverager": (accord.PeriodicAverager(1),
                                  lambda f: f.average_parameters(big.parameters())),
             "AdaptivePeriodicAverager": (accord.AdaptivePeriodicAverager(initial_period=1,
                                                                          max_period=1),
                                          lambda f: f.average_parameters(big.parameters())),
             "LeaderSGD": (accord.LeaderSGD(big, period=1, global_period=1),
                           lambda f: f.step(float(comm.rank)))}
    for name, (face, call) in faces.items():
        call(face)
        call(face)
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            call(face)
        extra = sum(e.cpu_memory_usage for e in prof.events() if e.cpu_memory_usage > 0)
        check(extra < nbytes // 4, f"{name}: a sync allocated {extra} bytes (model {nbytes} "
              "bytes): fusion buffers not reused")


def main():
    comm = setup()
    accord.init(comm)
    N = comm.size
    torch.set_num_threads(1)
    check_average_sum(comm)
    check_adasum(comm)
    check_clipping(comm)
    check_consensus(comm)
    check_amp(comm)
    check_broadcast_state(comm)
    check_wrapper_behaviour(comm)
    check_bad_input(comm)
    check_lifecycle(comm)
    check_exception_in_hook(comm)
    check_overlap(comm)
    check_no_step_allocation(comm)
    comm.barrier()
    if comm.rank == 0:
        print(f"optimizer_worker: all checks passed on {N} ranks ({backend()})")


if __name__ == "__main__":
    worker_main(main)
