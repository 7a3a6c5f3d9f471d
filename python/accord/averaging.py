"""Periodic parameter averaging: constant period (CPSGD, local SGD) and adaptive (ADPSGD).

    avg = accord.PeriodicAverager(period=8)                       # CPSGD
    avg = accord.AdaptivePeriodicAverager(total_steps=T, budget=B)  # ADPSGD, <= B syncs
    for batch in data:
        loss(...).backward(); optimizer.step()
        avg.average_parameters(model.parameters())                # after every step

"ADPSGD" is adaptive *periodic* averaging (Jiang and Agrawal, 2020), not AD-PSGD
(asynchronous decentralized parallel SGD, a different paper and algorithm).

One sync is one allreduce per fusion bucket: parameters (and, if asked, floating-point buffers
and optimizer state) are packed into flat buffers per (dtype, device) of at most
``accord.fusion_threshold()`` bytes, reused from sync to sync, summed, divided by N and copied
back once every bucket is reduced. The parameter variance across workers, V = (1/N) sum_i |x_i - xbar|^2, is
measured at no communication cost by appending each rank's float64 |x_i|^2 (minus a constant
all ranks share) to the averaged buffer. See docs/leader_and_averaging.md for the schedule, the
controller and the precision of V.

torch is required here (imported lazily; ``import accord`` does not need it).
"""
from __future__ import annotations

import numpy as np

from . import ops, topology
from ._buffers import is_tensor, torch_module
from ._params import is_module, optimizer_tensors, tensor_list
from ._validate import check_int
from .consistency import check_consistency
from .fusion import Fusion

__all__ = ["PeriodicAverager", "AdaptivePeriodicAverager"]


def _layout_key(tensors) -> tuple:
    return tuple((t.dtype, t.device, tuple(t.shape)) for t in tensors)


def _sq_norm(flat, n: int) -> float:
    """|flat[:n]|^2 accumulated in float64 by the fused kernel (one pass)."""
    if n == 0:
        return 0.0
    x = flat[:n]
    return float(ops.segment_dots(x, x, np.array([0, n], dtype=np.int64))[0, 1])


# ---------------------------------------------------------------------------------------------
# constant period


class PeriodicAverager:
    """Constant-period parameter averaging (CPSGD / local SGD), torch ``PeriodicModelAverager``
    style: call :meth:`average_parameters` after every ``optimizer.step()``.

    Schedule (calls numbered t = 1, 2, ...): during warm-up (t <= warmup_steps) every call
    averages (``sync_during_warmup=True``, the default: accord has no DDP hook averaging the
    gradients meanwhile, unlike torch's post-local SGD) or none does (``False``, torch's
    behaviour, for use behind a DDP gradient allreduce); after it, call t averages iff
    ``(t - warmup_steps) % period == 0``. Over T calls that is
    ``min(T, w) * sync_during_warmup + max(0, T - w) // period`` syncs.

    ``average_buffers``: False, a Module (its floating-point buffers, e.g. BatchNorm running
    stats; integer ones such as ``num_batches_tracked`` are left alone), an iterable of tensors,
    or True (the Module passed to :meth:`average_parameters`). ``average_optimizer_state``:
    average every floating-point tensor in ``optimizer.state`` (momentum, Adam moments; not
    ``step``). Everything of one dtype goes into the same single allreduce.

    ``track_variance``: measure V = (1/N) sum_i |x_i - xbar|^2 over the parameters at each
    sync (no extra communication) into ``variance_history``.
    """

    def __init__(self, period: int, warmup_steps: int = 0, *, average_buffers=False,
                 average_optimizer_state: bool = False, optimizer=None,
                 sync_during_warmup: bool = True, track_variance: bool = False, comm=None):
        self.period = check_int("period", period, 1)
        self._init_common(warmup_steps, average_buffers, average_optimizer_state, optimizer,
                          sync_during_warmup, track_variance, comm)

    def _init_common(self, warmup_steps, average_buffers, average_optimizer_state, optimizer,
                     sync_during_warmup, track_variance, comm):
        self.warmup_steps = check_int("warmup_steps", warmup_steps, 0)
        if average_optimizer_state and optimizer is None:
            raise ValueError("average_optimizer_state=True needs optimizer=")
        if average_buffers is None:
            average_buffers = False
        if not isinstance(average_buffers, bool) and not is_module(average_buffers):
            average_buffers = list(average_buffers)  # a generator would be used up once
            if not all(is_tensor(b) for b in average_buffers):
                raise TypeError("average_buffers must be a bool, a Module or tensors")
        self.average_buffers = average_buffers
        self.average_optimizer_state = bool(average_optimizer_state)
        self.optimizer = optimizer
        self.sync_during_warmup = bool(sync_during_warmup)
        self.track_variance = bool(track_variance)
        self.comm = comm if comm is not None else topology.communicator()
        self.step = 0          # calls of average_parameters so far
        self.num_syncs = 0
        self.last_sync_step = 0
        self.variance_history: list = []  # (step, period ending here, V)
        self._offset = 0.0     # |xbar|^2 of the last sync: shared by all ranks (see _sync)
        self._fusion = None    # buckets and buffers of the last layout seen, reused

    # -- schedule ------------------------------------------------------------------------

    def _due(self, t: int) -> bool:
        """Whether call number ``t`` averages."""
        w = self.warmup_steps
        if t <= w:
            return self.sync_during_warmup
        return (t - w) % self.period == 0

    def _after_sync(self, variance) -> None:
        pass

    def average_parameters(self, params) -> bool:
        """Count one step; average if the schedule says so. Returns True if it synchronised.
        Collective: every rank calls it after every optimizer step. The counters advance only
        once the sync succeeded: a call that raises can be repeated."""
        t = self.step + 1
        if not self._due(t):
            self.step = t
            return False
        elapsed = t - self.last_sync_step
        v = self._sync(params)
        self.step = t
        self.num_syncs += 1
        self.last_sync_step = self.step
        if v is not None:
            self.variance_history.append((self.step, elapsed, v))
        self._after_sync(v)
        return True

    # -- the sync ------------------------------------------------------------------------

    def _tensors(self, params):
        tensors = tensor_list(params)
        n_params = len(tensors)
        spec = self.average_buffers
        if spec is True:
            if not is_module(params):
                raise ValueError("average_buffers=True needs average_parameters(module); pass "
                                 "the module, or give average_buffers=module / a tensor list")
            spec = params
        if spec is not False:
            bufs = spec.buffers() if is_module(spec) else spec
            tensors += [b for b in bufs if b.is_floating_point()]
        if self.average_optimizer_state:
            tensors += optimizer_tensors(self.optimizer)
        return tensors, n_params

    def _sync(self, params):
        """One allreduce per dtype group; returns V (float) when measuring, else None.

        Variance at no communication cost: each rank appends d_i = |x_i|^2 - c (float64 on the
        host, via the fused segment_dots kernel) to one group's buffer; after averaging,
        V = c + mean(d_i) - |xbar|^2. c is |xbar|^2 of the previous sync, the same number on
        every rank; subtracting it keeps the appended value small (drift since the last sync,
        not the whole norm), which is what makes float32 slots usable (docs: precision).
        """
        tensors, n_params, err = [], 0, None
        try:
            tensors, n_params = self._tensors(params)
            for i, t in enumerate(tensors):
                if not is_tensor(t) or not t.is_floating_point():
                    what = (str(t.dtype).replace("torch.", "") if is_tensor(t)
                            else type(t).__name__)
                    raise TypeError(f"average_parameters: tensor #{i} to average is {what}; "
                                    "only floating-point torch tensors are averaged (the mean "
                                    "of integers is not an integer)")
        except (TypeError, ValueError) as e:
            err = e  # raised on every rank by the exchange, before anything moves
        check_consistency(self.comm, "PeriodicAverager", tensors, local_error=err)
        # Where the appended scalar goes: a float64 bucket (exact), else a float32 bucket as an
        # exact hi/lo pair, else (half-precision-only models) a separate small allreduce. Every
        # bucket gets the room; only the chosen one sends it.
        measure = self.track_variance
        slots = 0
        if measure:
            dtypes = {t.dtype for t in tensors}
            torch = torch_module()
            slots = 1 if torch.float64 in dtypes else 2 if torch.float32 in dtypes else 0
        fusion = self._fusion_for(tensors, slots)
        slot_bucket = None
        if slots:
            want = torch.float64 if slots == 1 else torch.float32
            slot_bucket = next(b for b in fusion.buckets if b.dtype == want)
        # params come first in `tensors`, so they lead the buckets that hold them
        n_par = [sum(tensors[i].numel() for i in b.members if i < n_params)
                 for b in fusion.buckets]
        bufs, sq = [], 0.0
        for b in fusion.buckets:
            buf = fusion.pack(b, tensors)
            if measure:
                sq += _sq_norm(buf, n_par[b.index])
            bufs.append(buf[:b.numel + (slots if b is slot_bucket else 0)])
        d = sq - self._offset
        if slot_bucket is not None:
            n = slot_bucket.numel
            hi = float(np.float32(d)) if slots == 2 else d
            bufs[slot_bucket.index][n] = hi
            if slots == 2:
                bufs[slot_bucket.index][n + 1] = float(np.float32(d - hi))
        size = self.comm.size
        # Reduce every bucket before writing any back: a failure leaves the model untouched.
        for buf in bufs:
            self.comm.allreduce_(buf, "sum", scale=1.0 / size)  # scaled before 16-bit rounding
        for b, buf in zip(fusion.buckets, bufs):
            fusion.unpack(b, buf, tensors)
        if not measure:
            return None
        if slot_bucket is not None:
            n = slot_bucket.numel
            mean_d = float(bufs[slot_bucket.index][n:n + slots].double().sum())
        else:
            mean_d = float(self.comm.allreduce_small(np.array([d]), "sum")[0]) / size
        sq_bar = sum(_sq_norm(buf, n_par[i]) for i, buf in enumerate(bufs))
        v = (self._offset - sq_bar) + mean_d
        self._offset = sq_bar
        return max(v, 0.0)  # rounding can give a tiny negative number

    def _fusion_for(self, tensors, extra: int) -> Fusion:
        """The Fusion of this layout: rebuilt only when the tensors' layout changes (e.g. once,
        when an optimizer creates its state at the first step)."""
        key = (_layout_key(tensors), extra)
        if self._fusion is None or self._fusion[0] != key:
            fusion = Fusion(tensors, extra=extra)
            fusion.tensors = None  # the caller's tensors are passed in at each sync
            self._fusion = (key, fusion)
        return self._fusion[1]

    # -- state ---------------------------------------------------------------------------

    def state_dict(self) -> dict:
        return {"step": self.step, "num_syncs": self.num_syncs,
                "last_sync_step": self.last_sync_step, "period": self.period,
                "variance_history": [tuple(h) for h in self.variance_history],
                "variance_offset": self._offset}

    def load_state_dict(self, state: dict) -> None:
        self.step = check_int("state['step']", state["step"], 0)
        self.num_syncs = check_int("state['num_syncs']", state["num_syncs"], 0)
        self.last_sync_step = check_int("state['last_sync_step']", state["last_sync_step"], 0)
        self.variance_history = [tuple(h) for h in state.get("variance_history", [])]
        # c (see _sync) cancels mathematically but not in rounding: restoring it makes a resumed
        # run measure the same V bit for bit, hence (ADPSGD) choose the same periods. Older
        # states lack it: 0 is exact up to rounding.
        self._offset = float(state.get("variance_offset", 0.0))

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(period={self.period}, step={self.step}, "
                f"num_syncs={self.num_syncs})")


# ---------------------------------------------------------------------------------------------
# adaptive period (ADPSGD)


class AdaptivePeriodicAverager(PeriodicAverager):
    """Adaptive periodic averaging (ADPSGD: adaptive *periodic* averaging, not AD-PSGD).

    accord's own controller (the paper's formula could not be read); the exact definition,
    and why, is in docs/leader_and_averaging.md. Warm-up as in :class:`PeriodicAverager`.
    The planned pace is round((total_steps - w) / (budget - w')) (w warm-up steps, w' warm-up
    syncs). After warm-up the period starts at ``initial_period`` (default: the pace, or
    ``base_period`` without a budget) and each sync measures the variance V
    accumulated over the period p that just ended (free, see ``_sync``). With r = V / p the
    variance growth per step and r_mean = sum(V) / sum(p) its mean over all post-warm-up
    periods so far, the next period is

        p_next = base * (r_mean / r) ** exponent      (r = 0 or r_mean = 0: p_next = base)

    rounded, limited to [p / 2, 2 p], clamped to [min_period, max_period]. base is the budget
    pace S / R (S steps left until ``total_steps``, R syncs left of ``budget``, warm-up syncs
    included), or ``base_period`` without a budget. So a worker set whose variance grows
    faster than it has on average syncs more often than the pace, and less often once it
    slows down; since S / R is recomputed at every sync, overspending early lengthens later
    periods and the budget is spent about fully. exponent = 1/2 minimises the summed variance
    for a fixed number of syncs when V grows linearly within a period; 0 is uniform pacing.

    max_period defaults to twice the pace (64 without a budget), which bounds how far a
    falling variance can stretch the period (the budget is a maximum: it may be left partly
    unspent). Budget guard: the period is raised to at least
    min(S - (R - 1) * max_period, ceil(S / R)) (keep enough syncs to average at least every
    max_period until total_steps; if the budget is too small for that, spread what is left
    evenly) and cut to at most S (the last sync lands on total_steps). With no sync left,
    averaging stops: the budget is never exceeded.

    Every input of these decisions is identical on all ranks (V comes out of the allreduce),
    so ranks agree on the schedule without extra messages.
    """

    def __init__(self, total_steps: int | None = None, budget: int | None = None,
                 warmup_steps: int = 0, *, initial_period: int | None = None,
                 min_period: int = 1, max_period: int | None = None, base_period: int = 8,
                 exponent: float = 0.5,
                 average_buffers=False, average_optimizer_state: bool = False, optimizer=None,
                 sync_during_warmup: bool = True, comm=None):
        self.min_period = check_int("min_period", min_period, 1)
        self.base_period = check_int("base_period", base_period, 1)
        if isinstance(exponent, bool) or not isinstance(exponent, (int, float)) or \
                not 0 <= exponent <= 4:
            raise ValueError(f"exponent must be a number in [0, 4], got {exponent!r}")
        self.exponent = float(exponent)
        self.total_steps = None if total_steps is None else check_int("total_steps",
                                                                       total_steps, 1)
        self.budget = None if budget is None else check_int("budget", budget, 1)
        if self.budget is not None and self.total_steps is None:
            raise ValueError("budget needs total_steps (the number of steps it is planned over)")
        self._init_common(warmup_steps, average_buffers, average_optimizer_state, optimizer,
                          sync_during_warmup, True, comm)
        if self.budget is not None and self.sync_during_warmup and \
                self.budget < min(self.warmup_steps, self.total_steps):
            raise ValueError(f"budget={self.budget} is smaller than the {self.warmup_steps} "
                             "warm-up syncs")
        # the planned pace: steps per sync if the budget left after warm-up were spread evenly
        pace = None
        if self.budget is not None:
            w = self.warmup_steps
            left = self.budget - (min(w, self.total_steps) if self.sync_during_warmup else 0)
            if left > 0 and self.total_steps > w:
                pace = max(self.min_period, round((self.total_steps - w) / left))
        if initial_period is None:
            initial_period = pace if pace is not None else self.base_period
            if max_period is not None:
                initial_period = min(initial_period, max_period)
        p0 = check_int("initial_period", initial_period, 1)
        if max_period is None:
            max_period = max(self.min_period, p0, 2 * pace if pace is not None else 64)
        self.max_period = check_int("max_period", max_period, self.min_period)
        if not self.min_period <= p0 <= self.max_period:
            raise ValueError(f"initial_period must be in [min_period, max_period] = "
                             f"[{self.min_period}, {self.max_period}], got {p0}")
        self.period = self.initial_period = p0
        self.next_sync = self.warmup_steps + p0  # step of the next post-warm-up sync
        self._v_sum = 0.0   # sum of V over post-warm-up syncs
        self._p_sum = 0     # sum of the periods they ended

    def _due(self, t: int) -> bool:
        w = self.warmup_steps
        if self.budget is not None and self.num_syncs >= self.budget:
            return False
        if t <= w:
            return self.sync_during_warmup
        return t == self.next_sync

    def _after_sync(self, v: float) -> None:
        t = self.step
        if t <= self.warmup_steps:
            self.next_sync = t + self.period
            return
        p = self.period  # the period that just ended
        self._v_sum += v
        self._p_sum += p
        rate, mean_rate = v / p, self._v_sum / self._p_sum
        left = steps = None
        if self.budget is not None:
            left, steps = self.budget - self.num_syncs, self.total_steps - t
        base = steps / left if left and steps and steps > 0 else float(self.base_period)
        new = base * (mean_rate / rate) ** self.exponent if rate > 0 and mean_rate > 0 else base
        new = int(round(min(max(new, p / 2), 2 * p)))
        new = min(max(new, self.min_period), self.max_period)
        if left and steps and steps > 0:
            new = max(new, min(steps - (left - 1) * self.max_period, -(-steps // left)))
            new = min(new, steps)
        self.period = new
        self.next_sync = t + new

    def state_dict(self) -> dict:
        s = super().state_dict()
        s.update(next_sync=self.next_sync, v_sum=self._v_sum, p_sum=self._p_sum)
        return s

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.period = check_int("state['period']", state["period"], 1)
        self.next_sync = check_int("state['next_sync']", state["next_sync"], 1)
        self._v_sum = float(state["v_sum"])
        self._p_sum = check_int("state['p_sum']", state["p_sum"], 0)
