"""The Adasum allreduce, written once against :class:`accord.comm.Communicator`.

Algorithm (vector-halving distance-doubling, VHDD, as in Horovod's ``adasum.h``, generalised):

Fold. With N ranks, p the largest power of two <= N and r = N - p, the first 2r ranks pair up:
rank 2i+1 sends its whole buffer to rank 2i, which combines the two with the pair rule. Rank 2i
then stands for 2 inputs; ranks 2i+1 sit out the core. The p remaining ranks are the core,
core index c = i for rank 2i (i < r) and c = q - r for rank q >= 2r.

Reduce-scatter (levels l = 1, 2, 4, ... p/2). Core partners c and c^l hold the same slice
[lo, hi) of the buffer. The lower one keeps [lo, mid) and sends [mid, hi), the upper one the
reverse (one sendrecv). Each rank now holds, for its kept slice, the partial results of the left
half-block (core indices with bit l clear) and of the right half-block. It computes per layer
the partial (left.right, |left|^2, |right|^2) over that slice with the fused kernel, and ONE
allreduce of the 3L float64 partials over the aligned block of 2l core ranks (which together
hold the full vectors) gives every rank of the block the exact per-layer dots. Each rank then
combines its slice with the weighted pair rule, weights = number of inputs under each half
(n_left, n_right): parallel inputs still give the mean of all N and orthogonal ones the sum,
also when the tree is unbalanced. A layer may straddle slices and ranks; its coefficients are
still exact because they come from the block-wide sums.

Allgather (levels in reverse). Partners swap their kept slices straight into the buffer; the
folded ranks then receive the final buffer from their partner. Every element is computed by one
rank only, so every rank ends with identical bits.

The tree this computes: leaves (2i, 2i+1) for i < r combined first, then the adjacent-pair
binary tree over the p core inputs ((c0, c1), (c2, c3)), ... For N a power of two it is exactly
Horovod's tree. Bytes sent per rank: 2 n (p-1)/p (bandwidth-optimal), plus n twice for the
folded pairs, plus log2(p) allreduces of 3L float64.

Compressed exchange (``wire="float16"`` or ``"bfloat16"``, from ``accord.Compression``): every
sendrecv above moves 16-bit values. The sender narrows its slice into a 16-bit scratch and also
rounds its own copy of that slice to the same values; the receiver widens into the float32 /
float64 scratch or buffer. The dots (float64) and the combine (the buffer's dtype) are
unchanged, and since a rank's final slice is rounded exactly as its partners receive it, every
rank still ends with identical bits.

Small buffers (all ranks' inputs together at most ``GATHER_MAX_BYTES``) take another route
to the same tree: one allgather of every rank's buffer, then every rank computes the whole tree
locally (fold pairs, then the adjacent-pair levels, same weights) with full-vector dots. One
synchronisation point instead of 2 log2(p) + 1 (+2 with a fold): latency, not bandwidth, is
what such buffers pay for. Every rank runs the same kernels on the same gathered bytes, so all
end with identical bits; the values differ from the VHDD route only by float64 rounding of the
dots (partial sums over slices there, one pass here).

Not thread-safe: one call at a time per process (scratch and dot buffers are reused).
"""
from __future__ import annotations

import functools
import math
import sys

import numpy as np

from . import _C, profiling
from ._buffers import BoundedCache, is_tensor, scale_, torch_module
from ._kernels import BFLOAT16, CPU, Flat, Plan, addr

__all__ = ["adasum_allreduce_", "adasum_tree_core_layout", "GATHER_MAX_BYTES"]

#: The allgather route is taken when size * buffer bytes is at most this (module doc).
GATHER_MAX_BYTES = 1 << 20


def adasum_tree_core_layout(size: int):
    """(p, r): the power-of-two core size and the number of folded pairs for ``size`` ranks."""
    p = 1 << (size.bit_length() - 1)
    return p, size - p


def _core_to_rank(c: int, r: int) -> int:
    return 2 * c if c < r else c + r


class _Level:
    __slots__ = ("partner", "lower", "lo", "mid", "hi", "group", "plan", "wa", "wb", "dots",
                 "dots_addr", "klo", "khi", "olo", "ohi")

    def combine_range(self):
        return (self.lo, self.mid) if self.lower else (self.mid, self.hi)

    def other_range(self):
        return (self.mid, self.hi) if self.lower else (self.lo, self.mid)


class _Schedule:
    """Every rank's role for one (communicator, length, layout, device): built once, reused."""

    def __init__(self, comm, groups, offsets: np.ndarray, flat: Flat):
        n, N, rank = flat.n, comm.size, comm.rank
        p, r = adasum_tree_core_layout(N)
        self.fold_partner = None
        self.donor = False
        if rank < 2 * r:
            self.fold_partner = rank + 1 if rank % 2 == 0 else rank - 1
            self.donor = rank % 2 == 1
        self.full_plan = Plan(offsets, flat.device, flat.cuda_index, False)
        self.fold_dots = flat.new(3 * (offsets.shape[0] - 1), float64=True)
        self.fold_dots_addr = addr(self.fold_dots)
        self.levels = []
        if self.donor:
            return
        c = rank // 2 if rank < 2 * r else rank - r
        counts = [2 if i < r else 1 for i in range(p)]
        lo, hi, level = 0, n, 1
        while level < p:
            lv = _Level()
            lv.partner = _core_to_rank(c ^ level, r)
            lv.lower = (c & level) == 0
            lv.lo, lv.hi, lv.mid = lo, hi, lo + (hi - lo) // 2
            lv.group = groups[level]
            block = (c // (2 * level)) * 2 * level
            n_left = sum(counts[block:block + level])
            n_right = sum(counts[block + level:block + 2 * level])
            lv.wa, lv.wb = n_left / (n_left + n_right), n_right / (n_left + n_right)
            klo, khi = lv.combine_range()
            local = np.clip(offsets, klo, khi) - klo
            lv.plan = Plan(local, flat.device, flat.cuda_index, False)
            lv.dots = flat.new(3 * (offsets.shape[0] - 1), float64=True)
            lv.dots_addr = addr(lv.dots)
            lv.klo, lv.khi = klo, khi
            lv.olo, lv.ohi = lv.other_range()
            self.levels.append(lv)
            lo, hi = klo, khi
            level *= 2


class AdasumReducer:
    """Adasum over one communicator: caches the level sub-communicators and schedules.

    ``outer`` (default: ``comm``) is the communicator the per-level dot groups are split from.
    The hierarchical mode passes the world here while ``comm`` links one local rank per node:
    each node's local ranks then hold disjoint shards of the same vector, and a level's group is
    every rank of the nodes in the block, so the dots still cover whole layers.
    """

    def __init__(self, comm, outer=None):
        self.comm = comm
        outer = comm if outer is None else outer
        self.sharded = outer is not comm
        N, rank = comm.size, comm.rank
        p, r = adasum_tree_core_layout(N)
        donor = rank < 2 * r and rank % 2 == 1
        c = None if donor else (rank // 2 if rank < 2 * r else rank - r)
        # Splits are collective over `outer`: every rank takes part, donors with color None.
        self.fold_group = None
        if outer is not comm:
            self.fold_group = outer.split(rank // 2 if rank < 2 * r and not donor else None)
        self.groups = {}
        level = 1
        while level < p:
            color = None if c is None else c // (2 * level)
            self.groups[level] = outer.split(color, key=None if outer is not comm else c)
            level *= 2
        self._schedules = BoundedCache(256)
        self._scratch: dict = {}

    def _schedule(self, offsets: np.ndarray, flat: Flat) -> _Schedule:
        key = (offsets.tobytes(), flat.device, flat.cuda_index)
        return self._schedules.get_or_make(
            key, lambda: _Schedule(self.comm, self.groups, offsets, flat))

    def _scratch_for(self, flat: Flat, n: int, host_views: bool = False):
        """(scratch[:n], its address): one reusable buffer per framework/dtype/device;
        ``host_views``: the scratch as :func:`_host_view` gives it (what the transport moves)."""
        key = (type(flat.obj), flat.code, flat.device, flat.cuda_index)
        entry = self._scratch.get(key)
        if entry is None or len(entry[0]) < n:
            buf = flat.new(max(n, 1))
            entry = self._scratch[key] = (buf, addr(buf), _host_view(buf, flat.code))
        return (entry[2] if host_views else entry[0])[:n], entry[1]

    def _wire_sendrecv(self, buf, wire: str, sendrecv):
        """(exchange, publish): sendrecvs moving 16-bit values (module doc: compressed
        exchange). ``publish`` also rounds the sender's own copy of what it sends, for the
        final slices; ``exchange`` skips that for data the sender discards afterwards."""
        n = buf.shape[0]
        torch = sys.modules.get("torch")
        if is_tensor(buf):
            key = ("wire", wire, buf.device)
            dev = buf.device
        else:
            if wire != "float16":
                raise TypeError(f"compression to {wire} needs torch tensors (numpy has no "
                                f"{wire}); use Compression.fp16 for numpy arrays")
            key = ("wire", wire, None)
            dev = None
        entry = self._scratch.get(key)
        if entry is None or entry[0].shape[0] < n:
            if dev is not None:
                dt = getattr(torch, wire)
                entry = (torch.empty(n, dtype=dt, device=dev),
                         torch.empty(n, dtype=dt, device=dev))
            else:
                entry = (np.empty(n, np.float16), np.empty(n, np.float16))
            self._scratch[key] = entry
        send16, recv16 = entry
        if dev is None and torch is not None:
            # numpy's float32 <-> float16 casts are several times slower than torch's
            # vectorised ones; torch views share the memory, so use them when torch is loaded.
            def cast(dst, src):
                torch.from_numpy(dst).copy_(torch.from_numpy(src))
        elif dev is None:
            def cast(dst, src):
                np.copyto(dst, src, casting="unsafe")
        else:
            def cast(dst, src):
                dst.copy_(src)

        def exchange(sendbuf, dest, recvbuf, source, publish=False):
            k, m = sendbuf.shape[0], recvbuf.shape[0]
            if k:
                cast(send16[:k], sendbuf)
                if publish:
                    cast(sendbuf, send16[:k])  # keep what the partner gets: identical bits
            sendrecv(send16[:k], dest, recv16[:m], source)
            if m:
                cast(recvbuf, recv16[:m])

        def publish(sendbuf, dest, recvbuf, source):
            exchange(sendbuf, dest, recvbuf, source, True)
        return exchange, publish

    def allreduce_(self, buf, offsets: np.ndarray, *, compute: bool = True,
                   exchange: bool = True, wire: str | None = None):
        """Replace the 1-D contiguous ``buf`` by the Adasum of every rank's ``buf``, in place.

        ``offsets`` (validated host int64, L+1 values) splits it into layers; coefficients are
        per layer. Every rank must pass the same length, dtype and offsets.

        Benchmark switches (the result is then meaningless): ``compute=False`` moves the same
        data and skips the kernels and the dot allreduces, ``exchange=False`` runs those on stale
        scratch and skips the buffer sendrecvs. Their times split Adasum's into its transport
        floor and its compute (``python -m accord.bench allreduce``).

        ``wire``: ``"float16"`` / ``"bfloat16"`` to exchange 16-bit values (module doc); ignored
        for buffers that are not float32/float64.
        """
        comm = self.comm
        flat = Flat(buf, "tensor")
        # A sharded reducer must run even on an empty shard: its dot groups include other nodes.
        if comm.size == 1 or (flat.n == 0 and not self.sharded):
            return buf
        s = self._schedule(offsets, flat)
        sendrecv = comm.sendrecv if exchange else _no_sendrecv
        if wire is not None and str(buf.dtype).split(".")[-1] not in ("float32", "float64"):
            wire = None
        # Over MPI a CPU tensor travels as a numpy view of its memory: the per-level slices
        # then cost numpy's slicing (a fraction of torch's), and MPI takes them unconverted.
        host_views = flat.device == CPU and type(buf) is not np.ndarray and wire is None and \
            getattr(comm, "backend", None) == "mpi"
        result, buf = buf, (_host_view(buf, flat.code) if host_views else buf)
        if (compute and exchange and wire is None and not self.sharded
                and flat.n * flat.itemsize * comm.size <= GATHER_MAX_BYTES):
            self._gathered_tree(flat, buf, s, host_views)
            return result
        publish = sendrecv  # the sends of final values (allgather, fold-back)
        if wire is not None:
            sendrecv, publish = self._wire_sendrecv(buf, wire, sendrecv)
        dots, combine, dot_allreduce = _dots, _combine, _dot_allreduce
        if profiling.active():  # checked once per call: the levels below stay branch-free
            sendrecv = profiling.traced(sendrecv, "accord.adasum.exchange")
            publish = profiling.traced(publish, "accord.adasum.allgather")
            dots = profiling.traced(_dots, "accord.adasum.dots")
            combine = profiling.traced(_combine, "accord.adasum.combine")
            dot_allreduce = profiling.traced(_dot_allreduce, "accord.adasum.dot_allreduce")
        if s.fold_partner is not None:
            empty = buf[:0]
            if s.donor:
                sendrecv(buf, s.fold_partner, empty, s.fold_partner)
                publish(empty, s.fold_partner, buf, s.fold_partner)
                return result
            theirs, theirs_ptr = self._scratch_for(flat, flat.n, host_views)
            sendrecv(empty, s.fold_partner, theirs, s.fold_partner)
            dots_addr = 0
            if compute and self.fold_group is not None:  # sharded: whole-layer dots need a sum
                dots(flat, flat.ptr, theirs_ptr, s.full_plan, s.fold_dots_addr)
                dot_allreduce(self.fold_group, s.fold_dots)
                dots_addr = s.fold_dots_addr
            if compute:
                combine(flat, flat.ptr, theirs_ptr, flat.ptr, s.full_plan, dots_addr, 0.5, 0.5)

        if s.levels:
            scratch, scratch_ptr = self._scratch_for(flat, flat.n - flat.n // 2, host_views)
        for lv in s.levels:
            klo = lv.klo
            sendrecv(buf[lv.olo:lv.ohi], lv.partner, scratch[:lv.khi - klo], lv.partner)
            if not compute:
                continue
            mine = flat.at(klo)
            left, right = (mine, scratch_ptr) if lv.lower else (scratch_ptr, mine)
            dots(flat, left, right, lv.plan, lv.dots_addr)
            dot_allreduce(lv.group, lv.dots)
            combine(flat, left, right, mine, lv.plan, lv.dots_addr, lv.wa, lv.wb)
        for lv in reversed(s.levels):
            publish(buf[lv.klo:lv.khi], lv.partner, buf[lv.olo:lv.ohi], lv.partner)
        if s.fold_partner is not None:
            publish(buf, s.fold_partner, buf[:0], s.fold_partner)
        return result

    def _gathered_tree(self, flat: Flat, buf, s: _Schedule, host_views: bool) -> None:
        """The small-buffer route: one allgather, then the whole tree on every rank."""
        comm, n = self.comm, flat.n
        N = comm.size
        key = ("gather", type(flat.obj), flat.code, flat.device, flat.cuda_index)
        entry = self._scratch.get(key)
        if entry is None or entry[3] < N * n:
            g = flat.new(N * n)
            entry = self._scratch[key] = (g, addr(g), _host_view(g, flat.code), N * n)
        gathered = (entry[2] if host_views else entry[0])[:N * n]
        base = entry[1]
        with profiling.span("accord.adasum.exchange"):
            comm.allgather(buf, gathered)
        with profiling.span("accord.adasum.combine"):
            for a, b, out, wa, wb in _local_tree(N):
                _combine(flat, base + a * n * flat.itemsize, base + b * n * flat.itemsize,
                         flat.ptr if out is None else base + out * n * flat.itemsize,
                         s.full_plan, 0, wa, wb)


@functools.lru_cache(maxsize=64)
def _local_tree(N: int) -> tuple:
    """The whole tree over N gathered rows as pair combines (a, b, out, wa, wb) in row numbers;
    ``out`` None is the root, which lands in the caller's buffer. The same tree as the
    distributed levels: rank 2i+1's input joins rank 2i's (i < r), then the core in rank order."""
    p, r = adasum_tree_core_layout(N)
    steps = [(2 * i, 2 * i + 1, 2 * i, 0.5, 0.5) for i in range(r)]
    vals = [2 * i for i in range(r)] + list(range(2 * r, N))
    counts = [2] * r + [1] * (p - r)
    while len(vals) > 1:
        nxt, nc = [], []
        for j in range(0, len(vals), 2):
            n1, n2 = counts[j], counts[j + 1]
            out = None if len(vals) == 2 else vals[j]
            steps.append((vals[j], vals[j + 1], out, n1 / (n1 + n2), n2 / (n1 + n2)))
            nxt.append(out)
            nc.append(n1 + n2)
        vals, counts = nxt, nc
    return tuple(steps)


def _host_view(buf, code: int):
    """A CPU tensor as a numpy array over the same memory (bfloat16 as int16, which MPI moves
    bit for bit); anything else unchanged."""
    if type(buf) is np.ndarray or not buf.is_cpu:
        return buf
    t = buf.detach() if buf.requires_grad else buf
    if code == BFLOAT16:
        t = t.view(torch_module().int16)
    return t.numpy()


def _dot_allreduce(group, dots) -> None:
    group.allreduce_(dots, "sum")


def _no_sendrecv(sendbuf, dest, recvbuf, source) -> None:
    """The exchange=False stand-in for Communicator.sendrecv."""


def _dots(flat: Flat, a: int, b: int, plan: Plan, dots_addr: int) -> None:
    """Per-layer (a.b, a.a, b.b) into the float64 buffer at ``dots_addr``."""
    keep, ws = flat.workspace("segment_dots", plan) if flat.device else (None, 0)
    _C.segment_dots(flat.code, flat.kdev, a, b, plan.layout, dots_addr, ws, flat.stream)


def _combine(flat: Flat, a: int, b: int, out: int, plan: Plan, dots_addr: int, wa: float,
             wb: float):
    """The pair rule; ``dots_addr`` 0 means the kernel computes the dots itself."""
    keep, ws = (flat.workspace("adasum_combine", plan) if flat.device and not dots_addr
                else (None, 0))
    _C.adasum_combine(flat.code, flat.kdev, a, b, out, plan.layout, dots_addr, wa, wb, ws,
                      flat.stream)


def reducer_for(comm, outer=None) -> AdasumReducer:
    """The reducer of ``comm``, cached on the communicator (creating it is collective over
    ``outer`` or ``comm``)."""
    return comm.derived(("adasum", id(outer)), lambda: AdasumReducer(comm, outer))


def adasum_allreduce_(buf, offsets: np.ndarray, comm, wire: str | None = None):
    """Adasum of the 1-D contiguous ``buf`` over ``comm``, in place (see the module doc);
    ``wire``: exchange 16-bit values (``"float16"``/``"bfloat16"``)."""
    # One unit for the communicator's guard: no other thread's call can slip between levels.
    with comm.operation("adasum", (buf,)):
        exponents = _float64_layer_exponents(buf, offsets, comm)
        if exponents is None:
            return reducer_for(comm).allreduce_(buf, offsets, wire=wire)
        _scale_layers_(buf, offsets, exponents)
        reducer_for(comm).allreduce_(buf, offsets, wire=wire)
        _scale_layers_(buf, offsets, -exponents)
        return buf


# A float64 layer whose largest |x| lies outside this range could overflow (or lose to
# underflow) in the per-level dot products, which are summed across ranks before use.
_F64_RANGE = (2.0 ** -450, 2.0 ** 450)


def _float64_layer_exponents(buf, offsets: np.ndarray, comm):
    """Per layer k such that 2^k brings float64 layers with extreme values near 1, or None.

    Adasum is homogeneous (Adasum(c a, c b) = c Adasum(a, b)) and power-of-two scaling is exact,
    so scaling a layer on every rank by the same 2^k, reducing and scaling back gives the same
    result without overflowing the cross-rank dot products: finite inputs give finite results.
    The largest |x| per layer is max-reduced first, so every rank picks the same scales. Only
    float64 buffers pay for this (one pass and one small allreduce); the other dtypes' squares
    cannot overflow float64 accumulators."""
    if comm.size == 1:
        return None
    if type(buf) is np.ndarray:  # float64 is the only 8-byte dtype the kernels take
        if buf.dtype.itemsize != 8:
            return None
    elif buf.dtype is not torch_module().float64:
        return None
    L = offsets.shape[0] - 1
    peak = np.zeros(L)
    for layer in range(L):
        seg = buf[int(offsets[layer]):int(offsets[layer + 1])]
        if seg.shape[0]:  # min and max: no |x| temporary the size of the layer
            lo, hi = (seg.aminmax() if is_tensor(seg) else (seg.min(), seg.max()))
            peak[layer] = max(-float(lo), float(hi))
    peak = comm.allreduce_small(peak, "max")
    with np.errstate(invalid="ignore"):  # NaN/Inf layers are left alone: they propagate
        extreme = np.isfinite(peak) & (peak > 0) & ((peak > _F64_RANGE[1]) |
                                                    (peak < _F64_RANGE[0]))
    if not extreme.any():
        return None
    return np.where(extreme, -np.frexp(np.where(extreme, peak, 1.0))[1], 0).astype(np.int64)


def _scale_layers_(buf, offsets: np.ndarray, exponents: np.ndarray) -> None:
    """Multiply layer l by 2^exponents[l], in steps a float64 can hold (2^1024 cannot)."""
    for layer, k in enumerate(exponents.tolist()):
        seg = buf[int(offsets[layer]):int(offsets[layer + 1])]
        while k:
            step = max(-1000, min(1000, k))
            scale_(seg, math.ldexp(1.0, step))
            k -= step

