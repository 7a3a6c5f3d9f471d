"""Hierarchical Adasum: average within each node, Adasum across nodes.

As Horovod's GPU Adasum mode, but the node-local part stays on the device when the transport is
NCCL (no host copies) and the cross-node part is accord's VHDD on shards:

1. allreduce (sum) over the node's ranks, scaled by 1/local_size: every local rank holds the
   node average;
2. local rank j takes shard j of the buffer (n / local_size elements) and runs the Adasum VHDD
   with the local rank j of every other node. The per-level dot groups span all local ranks of
   the nodes involved, so layers cut by shard boundaries still get whole-layer coefficients;
3. allgather within the node reassembles the buffer.

The result is the Adasum tree over node averages (the tree of accord.adasum with one input per
node). Every node must run the same number of ranks.
"""
from __future__ import annotations

import numpy as np

from ._buffers import is_tensor, torch_module
from .adasum import reducer_for


def _topology(comm):
    """(node communicator, cross-node communicator, cross-node reducer), cached on ``comm``."""
    return comm.derived("hierarchical", lambda: _make_topology(comm))


def _make_topology(comm):
    local = comm.local_split()
    sizes = comm.allgather_object(local.size)
    if len(set(sizes)) != 1:
        raise ValueError(f"hierarchical Adasum needs the same number of ranks on every node, "
                         f"got local sizes {sorted(set(sizes))}; use hierarchical=False")
    cross = comm.split(local.rank, key=comm.rank)
    return local, cross, reducer_for(cross, outer=comm)


def hierarchical_adasum_(flat, offsets: np.ndarray, comm):
    # One unit for the guard of ``comm`` (the sub-communicators are only used from here).
    with comm.operation("hierarchical_adasum", (flat,)):
        return _hierarchical_adasum_(flat, offsets, comm)


def _hierarchical_adasum_(flat, offsets: np.ndarray, comm):
    local, cross, reducer = _topology(comm)
    ls, n = local.size, offsets[-1]
    if ls > 1:
        local.allreduce_(flat, "sum", scale=1.0 / ls)  # scaled before 16-bit rounding
    if cross.size == 1:
        return flat
    if ls == 1:
        return reducer.allreduce_(flat, offsets)
    shard = -(-int(n) // ls)
    j = local.rank
    lo, hi = min(j * shard, n), min((j + 1) * shard, n)
    reducer.allreduce_(flat[lo:hi], np.clip(offsets, lo, hi) - lo)
    gathered = _new_like(flat, ls * shard)
    send = _new_like(flat, shard)
    send[:hi - lo] = flat[lo:hi]
    local.allgather(send, gathered)
    flat[:] = gathered[:n]
    return flat


def _new_like(flat, n):
    if is_tensor(flat):
        return torch_module().empty(n, dtype=flat.dtype, device=flat.device)
    return np.empty(n, dtype=flat.dtype)
