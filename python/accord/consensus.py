"""Adaptive consensus gradient aggregation (ACGA / AdaCons), written once against
:class:`accord.comm.Communicator`.

Every rank passes its gradient; every rank gets back the same aggregated direction G, computed
from the Gram matrix of the N workers' gradients (see docs/consensus.md for the derivation and
the choices below). Per *unit* u (the whole buffer for ``granularity="model"``, each tensor /
segment for ``"layer"``), with g_i the unit's part of worker i's gradient and everything reduced
in float64:

``weighting="diagonal"`` (the published rule, with its defects fixed)::

    s_i  = |g_i|,  a_i = <gbar, g_i> / (s_i + eps),  gbar = (1/N) sum_j g_j
    v    = sort(a) ascending, p the sorting permutation (stable: ties keep worker order)
    m    = v at the unit's first step, else  m = beta m + (1 - beta) v       (subspace momentum)
    mu_i = m[k] for the worker i = p[k] with the k-th smallest score   (INVERSE permutation)
    w_i  = max(mu_i, 0) / sum_k max(mu_k, 0)         (negative smoothed scores get weight 0)
           uniform 1/N when that sum is <= 1e-12 * mean_i s_i (all scores <= 0, gbar ~ 0,
           all-zero gradients: 0/0 never happens)
    G    = sum_i w_i g_i / (s_i + eps)               (|G| <= 1: the magnitude is discarded)
    keep_scale=True: G *= mean_i (s_i + eps)          (identical gradients give back g, up to
                                                       rounding; learning rates tuned for
                                                       averaging carry over)

``weighting="gram"`` (ridge-regularised subspace solve)::

    K = Gram matrix, K_ij = <g_i, g_j>;  lam = ridge * trace(K) / N   (scale-invariant)
    (K + lam I) alpha = K (1/N) 1       (solve_spd: eigendecomposition, pseudo-inverse)
    G = sum_i alpha_i g_i

  ``ridge=0`` gives the plain average gbar (up to rounding, also for rank-deficient K). No
  momentum: the solve is a per-step projection, smoothing alpha across steps would break that
  property; ``momentum`` is ignored and the state only counts steps. ``keep_scale`` does not
  apply (G is already in gradient units) and is rejected.

Degenerate cases: N = 1 gives g / (|g| + eps) (diagonal; exactly g with keep_scale) or
g N/(N + ridge) = g/(1 + ridge) (gram). Empty units give empty output.

Non-finite gradients (NaN/Inf on any rank, any unit) are detected for free from the allreduced
Gram entries, so every rank takes the same decision: ``nonfinite="raise"`` raises
``FloatingPointError`` on every rank, before any output is written (``flat`` is unchanged);
``nonfinite="skip"`` returns zeros (a skipped step) on every rank and leaves the momentum state
and step counts unchanged (``skipped_steps`` counts them).

Communication: the volume of ONE bandwidth-optimal allreduce (2 n (N-1)/N elements per rank):

1. the buffer (zero-padded to N*block, block = ceil(n/N)) goes through ``comm.alltoall``: rank k
   then holds slice k of every worker's gradient as an [N, block] buffer;
2. one ``gram`` kernel call gives per unit (tensor offsets clipped to the slice) the partial
   Gram entries of that slice; ONE small float64 ``comm.allreduce_`` sums them (diagonal:
   units x 2N values, the norms and the row sums <g_i, sum_j g_j>; gram: units x N x N);
3. every rank derives the same weights (host float64, a few flops per unit);
4. one ``weighted_sum`` kernel call forms slice k of G; ``comm.allgather`` reassembles G.

Host buffers whose slice is at least ``_P2P_MIN_BYTES`` (64 KiB) do steps 1 and 4 with
``comm.sendrecv``: a pairwise exchange (no padding copy) and a ring allgather straight into the
caller's buffer (no self copy); the volume is the same. With N = 2 on the CPU, step 2 uses the
pair-dots kernel (``segment_dots``: a.b, a.a, b.b is the whole 2x2 Gram matrix) and step 4 the
``axpby`` kernel, the same arithmetic in faster single-pass kernels that take one pointer per
row, so the own slice is read from (and the result written to) the caller's buffer in place.

Every element of G is computed by exactly one rank, so all ranks get identical bits. A
consistency check (one 16-byte allreduce, ``accord.set_consistency_check``) runs first so that
mismatched shapes, dtypes, layouts or settings raise ``ValueError`` on every rank instead of
deadlocking. The Gram pass costs O(N n / 2) flops per rank (N(N+1)/2 products per column of an
[N, n/N] slice): negligible for the usual N <= 64, it grows linearly with N. ``weighting="gram"``
supports N <= 128 (the solve_spd limit, ``accord._C.max_solve_k``).

State: momentum is kept per *state key*: by default the buffer's layout (length + offsets), so
DDP buckets with different layouts keep separate momentum; callers fusing several buckets with
identical layouts pass ``key=`` (e.g. the bucket index) to :meth:`aggregate_flat_`.

Not thread-safe: one call at a time per aggregator (scratch buffers are reused).
"""
from __future__ import annotations

import math
import zlib
from numbers import Real

import numpy as np

from . import _C, consensus_rules, topology
from ._buffers import BoundedCache, describe, is_tensor, numel, torch_module
from ._kernels import CPU, CUDA, MAX_SOLVE_K, Flat, Plan, addr, dtype_code, host_offsets
from .consistency import check_consistency
from .fusion import Fusion

__all__ = ["ConsensusAggregator"]

_GRANULARITIES = ("model", "layer")
_WEIGHTINGS = ("diagonal", "gram")
_NONFINITE = ("raise", "skip")
_STATE_VERSION = 1
# Host buffers whose per-rank slice is at least this many bytes move through pairwise sendrecv
# (alltoall) and a ring of sendrecv (allgather) straight between the caller's buffer and the
# slice buffer: no padding copies, no allgather self copy. Smaller ones (fewer latency steps)
# and device buffers (NCCL collectives) use comm.alltoall / comm.allgather.
_P2P_MIN_BYTES = 64 * 1024


class _Layout:
    """Per (layout, rank count, rank, device): this rank's slice and its kernel plans."""

    __slots__ = ("n", "block", "units", "padded", "lens", "p2p", "gram_plan", "sum_plan",
                 "gram_ws")

    def __init__(self, offsets: np.ndarray, granularity: str, N: int, rank: int, flat: Flat):
        n = flat.n
        self.n = n
        self.block = -(-n // N) if N > 1 else n
        self.padded = N > 1 and self.block * N != n
        # valid length of every rank's slice (the last ones are short or empty when padded)
        self.lens = [max(0, min(self.block, n - j * self.block)) for j in range(N)]
        self.p2p = (N > 1 and flat.device == CPU
                    and self.block * flat.itemsize >= _P2P_MIN_BYTES)
        if granularity == "model":
            unit_offsets = np.array([0, n], dtype=np.int64)
        else:
            unit_offsets = offsets
        self.units = unit_offsets.shape[0] - 1
        if N > 1:
            lo = rank * self.block
            local = np.clip(unit_offsets, lo, lo + self.block) - lo
            local[-1] = self.block  # the zero padding joins the last unit (adds nothing)
        else:
            local = unit_offsets
        local = np.ascontiguousarray(local, dtype=np.int64)
        self.gram_plan = Plan(local, flat.device, flat.cuda_index, True)
        self.sum_plan = Plan(local, flat.device, flat.cuda_index, False)
        self.gram_ws = None
        if flat.device == CUDA:
            nbytes = _C.workspace_bytes(CUDA, "gram", self.gram_plan.layout, N, False)
            torch = torch_module()
            self.gram_ws = torch.empty(max(nbytes, 1), dtype=torch.uint8, device=flat.obj.device)


class _Scratch:
    """Reusable buffers for one (n, N, dtype, device, framework)."""

    __slots__ = ("pad", "recv", "recv_ptr", "out", "out_ptr", "gram")

    def __init__(self, flat: Flat, lay: _Layout, N: int):
        total = N * lay.block
        self.pad = self.recv = self.out = None
        self.recv_ptr = self.out_ptr = 0
        if N > 1:
            # zero once: padding (row tails, buffer tail) is never written afterwards
            self.recv = _zeros(flat, total)
            self.out = flat.new(lay.block)
            self.recv_ptr, self.out_ptr = addr(self.recv), addr(self.out)
            if lay.padded and not lay.p2p:
                self.pad = _zeros(flat, total)
        size = lay.units * N * N
        if flat.device == CUDA:
            self.gram = flat.new(max(size, 1), float64=True)
        else:
            self.gram = np.empty(max(size, 1), dtype=np.float64)


def numel_from(off) -> int:
    return int(off[-1])


def _check_flat(flat, name: str) -> None:
    """aggregate_flat_'s buffer: a contiguous array/tensor of a kernel dtype, writable."""
    if not (is_tensor(flat) or isinstance(flat, np.ndarray)):
        raise TypeError(f"{name} must be a numpy array or a torch tensor, got "
                        f"{type(flat).__name__}")
    dtype_code(flat, name)
    if not (flat.is_contiguous() if is_tensor(flat) else flat.flags.c_contiguous):
        raise ValueError(f"{name} must be contiguous (it is aggregated in place)")
    if is_tensor(flat) and flat.requires_grad and torch_module().is_grad_enabled():
        raise RuntimeError(f"{name} requires grad: aggregate_flat_ writes it in place; pass "
                           f"{name}.detach() or call it under torch.no_grad()")


def _zeros(flat: Flat, n: int):
    buf = flat.new(n)
    buf[...] = 0
    return buf


def _copy(dst, src) -> None:
    if is_tensor(dst):
        dst.copy_(src)
    else:
        np.copyto(dst, src)


class _Entry:
    __slots__ = ("scores", "step")

    def __init__(self, scores=None, step: int = 0):
        self.scores = scores  # float64 [units, N] smoothed sorted scores (diagonal), else None
        self.step = step


class ConsensusAggregator:
    """Adaptive consensus aggregation (ACGA) of every rank's gradient over a communicator.

    Parameters
    ----------
    momentum : float in [0, 1]
        beta of the subspace momentum (EMA of the *sorted* consensus scores), diagonal rule only.
    granularity : "model" or "layer"
        One set of weights for the whole buffer passed in one call, or one per tensor/segment.
    weighting : "diagonal" or "gram"
        The published rule (scores from the Gram diagonal and row sums) or the ridge-regularised
        solve ``(K + lam I) alpha = K 1/N`` with ``lam = ridge * trace(K) / N``.
    ridge : float >= 0
        Relative ridge for ``weighting="gram"`` (ignored otherwise). 0 gives plain averaging.
    eps : float >= 0
        Added to every gradient norm in the diagonal rule (``g_i / (|g_i| + eps)``).
    keep_scale : bool
        Diagonal rule: multiply G by ``mean_i (|g_i| + eps)`` so that identical gradients give
        back g and learning rates tuned for averaging carry over. Not valid with ``"gram"``.
    nonfinite : "raise" or "skip"
        NaN/Inf in any rank's gradient: raise ``FloatingPointError`` on every rank (input left
        unchanged), or return zeros on every rank without touching the momentum state.
    comm : Communicator or None
        None: the process-wide communicator (``accord.init``), looked up at every call.

    Exact rules, guards and the communication pattern: module docstring and docs/consensus.md.

    Attributes
    ----------
    last_weights : numpy float64 [units, N] or None
        The last call's weights: w_i (non-negative, summing to 1 per unit) for the diagonal rule,
        alpha_i for the gram rule; zeros after a skipped step.
    skipped_steps : int
        Steps returned as zeros because of NaN/Inf (``nonfinite="skip"``).
    """

    def __init__(self, momentum: float = 0.99, granularity: str = "model",
                 weighting: str = "diagonal", ridge: float = 1e-3, eps: float = 1e-8,
                 keep_scale: bool = False, nonfinite: str = "raise", comm=None):
        if granularity not in _GRANULARITIES:
            raise ValueError(f"granularity must be one of {_GRANULARITIES}, got {granularity!r}")
        if weighting not in _WEIGHTINGS:
            raise ValueError(f"weighting must be one of {_WEIGHTINGS}, got {weighting!r}")
        if nonfinite not in _NONFINITE:
            raise ValueError(f"nonfinite must be one of {_NONFINITE}, got {nonfinite!r}")
        for name, value, hi in (("momentum", momentum, 1.0), ("ridge", ridge, math.inf),
                                ("eps", eps, math.inf)):
            if (isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value)
                    or not 0 <= value <= hi):
                bound = "in [0, 1]" if hi == 1.0 else "a finite number >= 0"
                raise ValueError(f"{name} must be {bound}, got {value!r}")
        if keep_scale and weighting == "gram":
            raise ValueError("keep_scale applies to weighting='diagonal' only: the gram rule "
                             "already returns a vector in gradient units")
        self.momentum = float(momentum)
        self.granularity = granularity
        self.weighting = weighting
        self.ridge = float(ridge)
        self.eps = float(eps)
        self.keep_scale = bool(keep_scale)
        self.nonfinite = nonfinite
        self._comm = comm
        self._entries: dict = {}
        self._num_workers = None  # N of the loaded / accumulated state
        self._layouts = BoundedCache(256)
        self._scratch = BoundedCache(16)
        self.last_weights = None
        self.skipped_steps = 0

    # -- public API ------------------------------------------------------------------------

    @property
    def comm(self):
        return self._comm if self._comm is not None else topology.communicator()

    def aggregate(self, tensors) -> list:
        """Return the aggregated tensors (new arrays/tensors, same shapes and dtypes; views of
        one fused buffer), identical bits on every rank. All tensors must share one dtype,
        framework and device (they are fused into one buffer; ``"model"`` granularity takes
        all of them as one unit)."""
        tensors = list(tensors)
        comm = self.comm
        check_consistency(comm, self._what("aggregate", None), tensors,
                          local_error=self._aggregate_error(tensors, comm))
        if not tensors:
            return []
        # One bucket whatever its size: the weights are computed over the whole call. The
        # results are views into it, so it is fresh every call.
        fusion = Fusion(tensors, math.inf)
        bucket, = fusion.buckets
        fused = fusion.pack(bucket)
        self._run(fused, bucket.offsets, None, comm)
        return fusion.views(bucket, fused)

    def aggregate_flat_(self, flat, offsets, *, key=None):
        """Aggregate the contiguous buffer ``flat`` in place and return it.

        ``offsets`` (host int64, L+1 values from 0 to ``flat``'s length) split it into tensors
        (the ``"layer"`` units). ``key`` (optional, int or str) names the momentum state to use;
        default: derived from the length and offsets. On ``FloatingPointError`` (nonfinite=
        "raise") ``flat`` is left unchanged.
        """
        comm = self.comm
        off, err = None, None
        try:
            _check_flat(flat, "flat")
            off = host_offsets(offsets, numel(flat))
            if key is not None and not isinstance(key, (int, str)):
                raise TypeError(f"key must be an int or a str, got {type(key).__name__}")
            self._state_error(off, key, comm.size)
        except (TypeError, ValueError, RuntimeError) as e:
            err = e
        check_consistency(comm, self._what("flat", off, key), [flat], local_error=err)
        return self._run(flat, off, key, comm)

    def state_dict(self) -> dict:
        """The momentum state: plain Python types only (lists of floats, ints, strings), so it
        round-trips through ``torch.save``/``torch.load(weights_only=True)``, pickle or JSON."""
        return {
            "version": _STATE_VERSION,
            "weighting": self.weighting,
            "granularity": self.granularity,
            "momentum": self.momentum,
            "num_workers": self._num_workers,
            "skipped_steps": self.skipped_steps,
            "entries": {k: {"scores": None if e.scores is None else e.scores.tolist(),
                            "step": e.step} for k, e in self._entries.items()},
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`'s output. Raises ValueError on a checkpoint from another
        weighting/granularity, another number of workers, or malformed score arrays (the units
        per key are checked against the buffer layout at that key's next use)."""
        if not isinstance(state, dict) or "entries" not in state:
            raise ValueError("ConsensusAggregator.load_state_dict: expected the dict returned by "
                             "state_dict()")
        if state.get("version") != _STATE_VERSION:
            raise ValueError(f"ConsensusAggregator state version {state.get('version')!r} is "
                             f"not supported (expected {_STATE_VERSION})")
        for field in ("weighting", "granularity"):
            if state.get(field) != getattr(self, field):
                raise ValueError(f"ConsensusAggregator state was saved with {field}="
                                 f"{state.get(field)!r} but this aggregator has {field}="
                                 f"{getattr(self, field)!r}")
        N = state.get("num_workers")
        if N is not None and (not isinstance(N, int) or N < 1):
            raise ValueError(f"ConsensusAggregator state: num_workers must be a positive int, "
                             f"got {N!r}")
        size = self._known_size()
        if N is not None and size is not None and N != size:
            raise ValueError(f"ConsensusAggregator state was saved with {N} workers but the "
                             f"communicator has {size} ranks; the per-worker momentum cannot "
                             "be carried over to another number of workers")
        entries = {}
        for k, e in state["entries"].items():
            step = e.get("step") if isinstance(e, dict) else None
            if not isinstance(step, int) or step < 0:
                raise ValueError(f"ConsensusAggregator state entry {k!r}: step must be an int "
                                 f">= 0, got {step!r}")
            scores = e.get("scores")
            if scores is not None:
                if self.weighting == "gram":
                    raise ValueError(f"ConsensusAggregator state entry {k!r} has scores but the "
                                     "gram rule keeps none")
                scores = np.array(scores, dtype=np.float64)
                if scores.ndim != 2 or scores.shape[1] != N or scores.shape[0] < 1:
                    raise ValueError(f"ConsensusAggregator state entry {k!r}: scores must have "
                                     f"shape [units, num_workers={N}], got {scores.shape}")
                if not np.isfinite(scores).all():
                    raise ValueError(f"ConsensusAggregator state entry {k!r}: scores contain "
                                     "NaN or Inf")
            elif self.weighting == "diagonal" and step > 0:
                raise ValueError(f"ConsensusAggregator state entry {k!r}: step {step} > 0 "
                                 "but no scores")
            entries[k] = _Entry(scores, step)
        skipped = state.get("skipped_steps", 0)
        self._entries = entries
        self._num_workers = N
        self.skipped_steps = int(skipped)

    # -- internals -------------------------------------------------------------------------

    def _aggregate_error(self, tensors, comm):
        """This rank's problems with aggregate()'s arguments (joined to the exchange)."""
        try:
            for i, t in enumerate(tensors):
                if not (is_tensor(t) or isinstance(t, np.ndarray)):
                    raise TypeError(f"tensors[{i}] must be a numpy array or a torch tensor, got "
                                    f"{type(t).__name__}")
                dtype_code(t, f"tensors[{i}]")
            first = tensors[0] if tensors else None
            for i, t in enumerate(tensors[1:], 1):
                if is_tensor(t) != is_tensor(first) or t.dtype != first.dtype or (
                        is_tensor(t) and t.device != first.device):
                    raise TypeError(f"ConsensusAggregator.aggregate: tensors[{i}] is "
                                    f"{describe(t)} but tensors[0] is {describe(first)}; all "
                                    "tensors must share one dtype, framework and device")
            if tensors:
                off = np.zeros(len(tensors) + 1, dtype=np.int64)
                np.cumsum([numel(t) for t in tensors], out=off[1:])
                self._state_error(off, None, comm.size)
        except (TypeError, ValueError) as e:
            return e
        return None

    def _state_error(self, off, key, N: int) -> None:
        """Raise if the loaded state cannot serve this call (another number of workers, another
        number of units): ranks may have loaded different checkpoints, so this is checked
        before the exchange, not in the middle of the collective."""
        units = 1 if self.granularity == "model" else off.shape[0] - 1
        if numel_from(off) == 0:
            return
        self._entry(off, key, units, N)

    def _known_size(self):
        if self._comm is not None:
            return self._comm.size
        return topology.size() if topology.is_initialized() else None

    def _what(self, kind, off, key=None) -> str:
        s = (f"consensus:{kind}:{self.weighting}:{self.granularity}:{self.momentum!r}:"
             f"{self.ridge!r}:{self.eps!r}:{self.keep_scale}:{self.nonfinite}")
        if off is not None:
            s += f":{zlib.crc32(off.tobytes()):08x}:{key!r}"
        return s

    def _layout(self, off, flat: Flat, N: int, rank: int) -> _Layout:
        k = (off.tobytes(), flat.device, flat.cuda_index, N, rank)
        return self._layouts.get_or_make(k, lambda: _Layout(off, self.granularity, N, rank, flat))

    def _scratch_for(self, flat: Flat, lay: _Layout, N: int) -> _Scratch:
        k = (type(flat.obj), flat.code, flat.device, flat.cuda_index, lay.n, lay.units, N)
        return self._scratch.get_or_make(k, lambda: _Scratch(flat, lay, N))

    def _entry(self, off, key, units: int, N: int):
        """(state key, its entry or a new one, not stored until a step succeeds)."""
        if key is None:
            key = f"layout:{int(off[-1])}:{off.shape[0] - 1}:{zlib.crc32(off.tobytes()):08x}"
        if self._num_workers is not None and self._num_workers != N:
            raise ValueError(f"ConsensusAggregator state holds {self._num_workers} workers but "
                             f"the communicator has {N} ranks")
        e = self._entries.get(key)
        if e is None:
            e = _Entry()
        elif e.scores is not None and e.scores.shape != (units, N):
            raise ValueError(f"ConsensusAggregator state for key {key!r} has "
                             f"{e.scores.shape[0]} units x {e.scores.shape[1]} workers but this "
                             f"buffer has {units} units ({self.granularity} granularity) x "
                             f"{N} workers")
        return key, e

    def _run(self, buf, off: np.ndarray, key, comm):
        N, rank = comm.size, comm.rank
        if self.weighting == "gram" and N > MAX_SOLVE_K:
            raise ValueError(f"weighting='gram' supports at most {MAX_SOLVE_K} workers, got {N}; "
                             "use weighting='diagonal'")
        if not (buf.is_contiguous() if is_tensor(buf) else buf.flags.c_contiguous):
            raise ValueError("flat must be contiguous (it is aggregated in place)")
        flat_view = buf.detach().reshape(-1) if is_tensor(buf) else buf.reshape(-1)
        flat = Flat(flat_view, "flat")
        if flat.n == 0:
            return buf
        lay = self._layout(off, flat, N, rank)
        key, entry = self._entry(off, key, lay.units, N)
        scr = self._scratch_for(flat, lay, N)
        exchange = _exchange_for(lay, N)
        # N = 2 on the CPU: two rows, so the single-pass pair kernels (segment_dots gives the
        # whole 2x2 Gram matrix, axpby the weighted sum) replace gram / weighted_sum; they take
        # one pointer per row, so the own slice can stay in the caller's buffer.
        pair = N == 2 and flat.device == CPU
        rows = exchange.scatter(comm, flat, flat_view, lay, scr, own_in_place=pair)

        # partial Gram entries of this rank's slice, then one small allreduce
        part = self._partial_gram(flat, lay, scr, rows, pair, N)
        if N > 1:
            comm.allreduce_(part, "sum")

        if not np.isfinite(part).all():
            return self._nonfinite(buf, flat_view, part, lay.units, N)
        if self.weighting == "diagonal":
            weights, coef, scores = consensus_rules.diagonal_rule(
                part, entry.scores, N, self.momentum, self.eps, self.keep_scale)
            entry.scores = scores
        else:
            weights = coef = consensus_rules.gram_rule(part, N, self.ridge)
        entry.step += 1
        self._entries[key] = entry
        self._num_workers = N
        self.last_weights = weights

        # this rank's slice of G, then every slice to every rank
        out = exchange.out_ptr(flat, lay, scr, rank)
        if pair:  # out = c0 row0 + c1 row1 per unit: the elementwise axpby kernel
            c0 = np.ascontiguousarray(coef[:, 0])
            c1 = np.ascontiguousarray(coef[:, 1])
            _C.axpby(flat.code, CPU, rows.ptrs[0], rows.ptrs[1], out, lay.sum_plan.layout,
                     addr(c0), addr(c1), 0)  # elementwise: out may be a row
        else:
            coef_buf = (torch_module().as_tensor(coef, device=flat.obj.device)
                        if flat.device == CUDA else np.ascontiguousarray(coef))
            _C.weighted_sum(flat.code, flat.kdev, rows.vec, N, addr(coef_buf),
                            lay.sum_plan.layout, out, flat.stream)
        exchange.gather(comm, flat_view, lay, scr, rank)
        return buf

    def _partial_gram(self, flat: Flat, lay: _Layout, scr: _Scratch, rows, pair: bool, N: int):
        """This rank's slice's contribution to what the rule needs, float64 on the host:
        diagonal [U, 2, N] (norms^2, row sums), gram [U, N, N]."""
        U = lay.units
        if pair:
            dots = scr.gram[:3 * U]
            _C.segment_dots(flat.code, CPU, rows.ptrs[0], rows.ptrs[1], lay.sum_plan.layout,
                            addr(dots), 0, 0)
            d = dots.reshape(U, 3)
            K = np.empty((U, 2, 2))
            K[:, 0, 0], K[:, 1, 1], K[:, 0, 1], K[:, 1, 0] = d[:, 1], d[:, 2], d[:, 0], d[:, 0]
        else:
            ws = addr(lay.gram_ws) if lay.gram_ws is not None else 0
            _C.gram(flat.code, flat.kdev, rows.vec, N, 0, lay.gram_plan.layout,
                    addr(scr.gram), 0, ws, flat.stream)
            gram = scr.gram.cpu().numpy() if flat.device == CUDA else scr.gram
            K = gram[:U * N * N].reshape(U, N, N)
        if self.weighting == "gram":
            return np.ascontiguousarray(K)
        part = np.empty((U, 2, N), dtype=np.float64)
        part[:, 0] = np.diagonal(K, axis1=1, axis2=2)
        with np.errstate(invalid="ignore"):  # inf - inf with non-finite input: NaN
            part[:, 1] = K.sum(axis=2)
        return part

    def _nonfinite(self, buf, flat_view, part, U: int, N: int):
        """NaN/Inf in the allreduced entries: the same decision on every rank."""
        bad = np.nonzero(~np.isfinite(part.reshape(U, -1)).all(axis=1))[0]
        if self.nonfinite == "raise":
            raise FloatingPointError(
                "accord.consensus: the gradients contain NaN or Inf (non-finite float64 Gram "
                f"entries in unit(s) {bad[:8].tolist()}{' ...' if bad.size > 8 else ''} "
                "after the allreduce); nothing was aggregated and the momentum state is "
                "unchanged. Use nonfinite='skip' to return zeros instead.")
        self.skipped_steps += 1
        self.last_weights = np.zeros((U, N))
        if is_tensor(buf):
            flat_view.zero_()
        else:
            flat_view[...] = 0
        return buf


# ---------------------------------------------------------------------------------------------
# How the data moves: slice k of every worker's gradient to rank k, and G's slices back.


class _Rows:
    """Where the kernels find the N rows of this rank's slice: ``vec`` (an [N, block] buffer)
    and, for the pair kernels, one pointer per row."""
    __slots__ = ("vec", "ptrs")

    def __init__(self, vec: int, ptrs=None):
        self.vec, self.ptrs = vec, ptrs


class _LocalExchange:
    """N = 1: the buffer is the only row; G is written in place."""

    @staticmethod
    def scatter(comm, flat, flat_view, lay, scr, own_in_place):
        return _Rows(flat.ptr)

    @staticmethod
    def out_ptr(flat, lay, scr, rank):
        return flat.ptr

    @staticmethod
    def gather(comm, flat_view, lay, scr, rank):
        pass


class _PairwiseExchange:
    """Host buffers with large slices: N-1 pairwise sendrecvs straight from the caller's
    buffer (no padding copy) and a ring allgather straight into it (no self copy)."""

    @staticmethod
    def scatter(comm, flat, flat_view, lay, scr, own_in_place):
        N, rank, B = comm.size, comm.rank, lay.block
        L = lay.lens[rank]
        in_place = own_in_place and L == B  # the own row is read from the caller's buffer
        if not in_place:
            _copy(scr.recv[rank * B:rank * B + L], flat_view[rank * B:rank * B + L])
        for s in range(1, N):
            dest, src = (rank + s) % N, (rank - s) % N
            comm.sendrecv(flat_view[dest * B:dest * B + lay.lens[dest]], dest,
                          scr.recv[src * B:src * B + L], src)
        ptrs = None
        if own_in_place:
            ptrs = [scr.recv_ptr + j * B * flat.itemsize for j in range(N)]
            if in_place:
                ptrs[rank] = flat.at(rank * B)
        return _Rows(scr.recv_ptr, ptrs)

    @staticmethod
    def out_ptr(flat, lay, scr, rank):
        # a full-length slice is written straight into the caller's buffer
        return flat.at(rank * lay.block) if lay.lens[rank] == lay.block else scr.out_ptr

    @staticmethod
    def gather(comm, flat_view, lay, scr, rank):
        N, B = comm.size, lay.block
        L = lay.lens[rank]
        if L != B:
            _copy(flat_view[rank * B:rank * B + L], scr.out[:L])
        right, left = (rank + 1) % N, (rank - 1) % N
        for s in range(N - 1):
            sb, rb = (rank - s) % N, (rank - s - 1) % N
            comm.sendrecv(flat_view[sb * B:sb * B + lay.lens[sb]], right,
                          flat_view[rb * B:rb * B + lay.lens[rb]], left)


class _CollectiveExchange:
    """Device buffers and small slices: comm.alltoall / comm.allgather (NCCL collectives on the
    GPU; fewer latency steps for small host buffers), through a zero-padded copy when the
    length is not a multiple of N."""

    @staticmethod
    def scatter(comm, flat, flat_view, lay, scr, own_in_place):
        if lay.padded:
            scr.pad[:lay.n] = flat_view
            comm.alltoall(scr.pad, scr.recv)
        else:
            comm.alltoall(flat_view, scr.recv)
        ptrs = None
        if own_in_place:
            ptrs = [scr.recv_ptr + j * lay.block * flat.itemsize for j in range(comm.size)]
        return _Rows(scr.recv_ptr, ptrs)

    @staticmethod
    def out_ptr(flat, lay, scr, rank):
        return scr.out_ptr

    @staticmethod
    def gather(comm, flat_view, lay, scr, rank):
        if lay.padded:
            comm.allgather(scr.out, scr.pad)
            _copy(flat_view, scr.pad[:lay.n])
        else:
            comm.allgather(scr.out, flat_view)


def _exchange_for(lay: _Layout, N: int):
    if N == 1:
        return _LocalExchange
    return _PairwiseExchange if lay.p2p else _CollectiveExchange
