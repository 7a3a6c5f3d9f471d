"""Leader SGD (Teng et al., NeurIPS 2019, and its multi-leader extension).

Every worker is pulled toward the best worker of its group (local leader, every ``period``
steps) and toward the best worker overall (global leader, every ``global_period`` steps):

    x_i <- x_i - pull * (x_i - x_local_leader) - global_pull * (x_i - x_global_leader)

The pull is not scaled by the learning rate. It is applied after the optimizer step, to the
post-step parameters, with the leaders' post-step parameters::

    lsgd = accord.LeaderSGD(model.parameters(), group_size=4)
    for batch in data:
        loss = criterion(model(x), y); loss.backward(); optimizer.step()
        lsgd.step(loss.item())
    params = lsgd.evaluation_parameters("average")  # or "leader": explicit; collective

A round costs one gather of N (or group size) float64 scores and one broadcast per dtype group
of the leader's parameters (half an allreduce); nothing else moves. See
docs/leader_and_averaging.md.
"""
from __future__ import annotations

import math
from collections import deque
from numbers import Real

import numpy as np

from . import ops, topology
from ._params import tensor_list
from ._validate import check_int
from .consistency import check_consistency
from .fusion import Fusion

__all__ = ["LeaderSGD"]

_SELECT = ("window", "common")


def _scalar(value, name: str) -> float:
    """float from a number or a one-element tensor; non-finite -> +inf (never leads)."""
    if hasattr(value, "item"):
        value = value.item()
    if not isinstance(value, Real):
        raise TypeError(f"{name} must be a number or a one-element tensor, got "
                        f"{type(value).__name__}")
    value = float(value)
    return value if math.isfinite(value) else math.inf


def _strength(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


class LeaderSGD:
    """Leader SGD pulls, called after every optimizer step.

    params: the model's parameters (Module, iterable of tensors / (name, tensor) / param
        groups); kept for the object's lifetime, in the same order on every rank.
    pull, global_pull: lambda and lambda_G in [0, 1], pull + global_pull <= 1 (default 0.1).
    period, global_period: tau and tau_G in steps; step t (1-based) is a local round iff
        t % period == 0 and a global round iff t % global_period == 0 (both pulls at once when
        both hold). Defaults tau_G = 16, tau = max(1, tau_G // 4).
    window: number of recent losses whose mean scores a worker (default 10).
    group_size: None -> one group per node (``comm.local_split()``); k -> consecutive blocks
        of k ranks (the last may be smaller). One group spanning all ranks is plain LSGD.
    select_by: "window" (lowest windowed mean training loss leads) or "common" (lowest loss on
        a batch common to all workers, for non-IID shards where the lowest training loss
        only marks the easiest shard). The common loss comes from ``common_loss``, a callable
        evaluated at rounds only (on the current parameters), or from ``step(common_loss=)``.
    Ties go to the lowest rank; a non-finite score never leads (unless all are).
    """

    def __init__(self, params, *, pull: float = 0.1, global_pull: float = 0.1,
                 period: int | None = None, global_period: int = 16, window: int = 10,
                 group_size: int | None = None, select_by: str = "window", common_loss=None,
                 comm=None):
        self.pull = _strength("pull", pull)
        self.global_pull = _strength("global_pull", global_pull)
        if self.pull + self.global_pull > 1.0:
            raise ValueError(f"pull + global_pull must be <= 1 (a larger combined pull "
                             f"overshoots the leaders), got {pull} + {global_pull}")
        self.global_period = check_int("global_period", global_period, 1)
        self.period = (max(1, self.global_period // 4) if period is None
                       else check_int("period", period, 1))
        self.window = check_int("window", window, 1)
        if select_by not in _SELECT:
            raise ValueError(f"select_by must be one of {_SELECT}, got {select_by!r}")
        if common_loss is not None and not callable(common_loss):
            raise ValueError("common_loss must be a callable returning this worker's loss on "
                             "the common batch (or pass the value to step(common_loss=...))")
        if group_size is not None:
            group_size = check_int("group_size", group_size, 1)
        self.select_by = select_by
        self._common_fn = common_loss
        self.comm = comm if comm is not None else topology.communicator()
        self._params, err = [], None
        try:
            self._params = tensor_list(params)
            if not self._params:
                raise ValueError("params is empty")
        except (TypeError, ValueError) as e:
            err = e  # raised on every rank by the exchange below, not on this one alone
        # same model on every rank
        check_consistency(self.comm, "LeaderSGD", self._params, local_error=err)
        self.group = (self.comm.local_split() if group_size is None
                      else self.comm.split(self.comm.rank // group_size))
        #: world ranks of this rank's group, in group-rank order
        self.group_ranks = [int(r) for r in self.group.allgather_object(self.comm.rank)]

        # per bucket three buffers, allocated at first use: x (copy 0), the local leader's
        # parameters (copy 1), the global leader's (copy 2)
        self._fusion = Fusion(self._params, copies=3)
        self._losses: deque = deque(maxlen=self.window)
        self.step_count = 0
        self.num_local_rounds = 0
        self.num_global_rounds = 0
        self.local_leader = None   # world rank elected at the last local round
        self.global_leader = None  # world rank elected at the last global round

    # -- selection ----------------------------------------------------------------------

    @property
    def round_due(self) -> bool:
        """Whether the next :meth:`step` call runs a round (to compute a common loss only
        when it is needed)."""
        t = self.step_count + 1
        return t % self.period == 0 or t % self.global_period == 0

    def _score(self, common_loss) -> float:
        if self.select_by == "common":
            if common_loss is None:
                if self._common_fn is None:
                    raise ValueError("select_by='common': pass common_loss= to the constructor "
                                     "(a callable) or to step() on round steps")
                common_loss = self._common_fn()
            return _scalar(common_loss, "common_loss")
        if not self._losses:
            return math.inf
        return _scalar(float(np.mean(self._losses)), "windowed loss")

    @staticmethod
    def _gather(comm, score: float, error) -> np.ndarray:
        """Every rank's score; a rank whose score could not be computed (``error``) sends a
        flag instead, and then every rank raises: a rank failing alone would leave the others
        waiting in the next broadcast."""
        out = np.empty(2 * comm.size, dtype=np.float64)
        comm.allgather(np.array([score, float(error is not None)], dtype=np.float64), out)
        bad = np.nonzero(out[1::2])[0].tolist()
        if bad:
            if error is not None:
                raise error
            raise ValueError(f"LeaderSGD.step: rank(s) {bad} of this round could not score "
                             "their model (bad loss or common_loss there); refused on every "
                             "rank of the round")
        return out[0::2]

    @staticmethod
    def _best(scores, ranks) -> int:
        """World rank with the lowest score; ties (and all-inf) to the lowest rank."""
        return min(zip(scores, ranks))[1]

    def _select(self, score: float, global_round: bool, error=None):
        """(local leader, global leader or None), world ranks, identical on all ranks of a
        group (global: of the world)."""
        if global_round:
            scores = self._gather(self.comm, score, error)
            gl = self._best(scores, range(self.comm.size))
            ll = self._best(scores[self.group_ranks], self.group_ranks)
            return ll, gl
        scores = self._gather(self.group, score, error)
        return self._best(scores, self.group_ranks), None

    def _scored(self, common_loss):
        """(score, None) or (inf, the error computing it)."""
        try:
            return self._score(common_loss), None
        except (TypeError, ValueError) as e:
            return math.inf, e

    # -- the round ----------------------------------------------------------------------

    def step(self, loss=None, *, common_loss=None) -> bool:
        """Record this step's training loss and run a round if one is due. Collective (every
        rank calls it after every optimizer step). Returns True if parameters moved or were
        sent (a round ran)."""
        t = self.step_count + 1
        local, glob = t % self.period == 0, t % self.global_period == 0
        err, appended = None, False
        try:
            if loss is not None:
                self._losses.append(_scalar(loss, "loss"))
                appended = True
            elif self.select_by == "window":
                raise ValueError("step(loss): the training loss of this step is needed with "
                                 "select_by='window'")
        except (TypeError, ValueError) as e:
            err = e
        if not (local or glob):
            if err is not None:
                raise err  # no round this step: nobody waits on this rank
            self.step_count = t
            return False
        score, score_err = self._scored(common_loss) if err is None else (math.inf, err)
        try:
            ll, gl = self._select(score, glob, score_err)
        except (TypeError, ValueError):
            if appended:  # the step did not happen: it can be repeated
                self._losses.pop()
            raise
        self.step_count = t
        if local:
            self.num_local_rounds += 1
            self.local_leader = ll
        if glob:
            self.num_global_rounds += 1
            self.global_leader = gl
        self._pull(ll if local else None, gl)
        return True

    def _pull(self, ll, gl) -> None:
        """Broadcast the leaders' parameters (fused by dtype) and pull toward them."""
        me = self.comm.rank
        a = self.pull if ll is not None and ll != me else 0.0
        b = self.global_pull if gl is not None and gl != me else 0.0
        # When this group's local leader is the global leader, one broadcast serves both.
        local_bcast = ll is not None and ll != gl
        f = self._fusion
        for bucket in f.buckets:
            x, tl, tg = (f.buffer(bucket, copy) for copy in range(3))
            if gl is not None:
                if me == gl:
                    f.pack(bucket, copy=2)
                self.comm.broadcast_(tg, gl)
            if local_bcast:
                if me == ll:
                    f.pack(bucket, copy=1)
                self.group.broadcast_(tl, self.group_ranks.index(ll))
            if a + b == 0.0:
                continue  # a leader is not pulled toward itself: its parameters stay bitwise
            if not local_bcast or a == 0.0:
                target = tg          # global only, both leaders the same worker, or I lead locally
            elif b == 0.0:
                target = tl
            else:                    # both: pull by a+b toward (a tl + b tg)/(a+b)
                target = ops.axpby(tl, tg, a / (a + b), b / (a + b), out=tl)
            f.pack(bucket, copy=0)
            ops.pull_(x, target, a + b)  # x <- x - (a+b)(x - target): one fused pass
            f.unpack(bucket, x)

    # -- evaluation ---------------------------------------------------------------------

    def evaluation_parameters(self, kind: str, *, common_loss=None) -> list:
        """New tensors (in ``params`` order, identical on every rank) holding the model to
        evaluate. Collective; workers' own parameters are not changed. The choice is explicit
        (docs/leader_and_averaging.md has measurements of both):

        ``"leader"``: the global leader's parameters, chosen now by the current score (windowed
        loss, or common loss); ``"average"``: the mean of all workers' parameters."""
        if kind not in ("leader", "average"):
            raise ValueError(f"kind must be 'leader' or 'average', got {kind!r}")
        f = self._fusion
        out = [p.detach().clone() for p in self._params]
        gl = None
        if kind == "leader":
            score, err = self._scored(common_loss)
            gl = self._select(score, True, err)[1]
        for bucket in f.buckets:
            buf = f.pack(bucket, copy=0)  # x's scratch: free outside a round
            if kind == "leader":
                self.comm.broadcast_(buf, gl)
            else:
                self.comm.allreduce_(buf, "sum", scale=1.0 / self.comm.size)
            f.unpack(bucket, buf, out)
        return out

    # -- state --------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """This rank's state (loss windows differ between ranks: save one per rank)."""
        return {"step": self.step_count, "losses": list(self._losses),
                "num_local_rounds": self.num_local_rounds,
                "num_global_rounds": self.num_global_rounds,
                "local_leader": self.local_leader, "global_leader": self.global_leader}

    def load_state_dict(self, state: dict) -> None:
        self.step_count = check_int("state['step']", state["step"], 0)
        self._losses = deque((float(v) for v in state["losses"]), maxlen=self.window)
        self.num_local_rounds = check_int("num_local_rounds", state["num_local_rounds"], 0)
        self.num_global_rounds = check_int("num_global_rounds", state["num_global_rounds"], 0)
        self.local_leader = state.get("local_leader")
        self.global_leader = state.get("global_leader")

    def __repr__(self) -> str:
        return (f"LeaderSGD(pull={self.pull}, global_pull={self.global_pull}, "
                f"period={self.period}, global_period={self.global_period}, "
                f"group={self.group_ranks}, step={self.step_count})")
