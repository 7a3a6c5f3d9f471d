"""``broadcast_optimizer_state``: make every rank's optimizer state the root rank's.

Typical use, right after wrapping and before the first step::

    accord.broadcast_parameters(model.state_dict(), root_rank=0)
    accord.broadcast_optimizer_state(optimizer, root_rank=0)
"""
from __future__ import annotations

import torch

from . import topology
from .collectives import broadcast_parameters

__all__ = ["broadcast_optimizer_state"]



class _TensorSlot(tuple):
    """Placeholder for the i-th tensor of a state dict: (index, dtype name, shape)."""


def _strip(obj, tensors):
    if isinstance(obj, torch.Tensor):
        tensors.append(obj)
        return _TensorSlot((len(tensors) - 1, str(obj.dtype).replace("torch.", ""),
                            tuple(obj.shape)))
    if isinstance(obj, dict):
        return type(obj)((k, _strip(v, tensors)) for k, v in obj.items())
    if isinstance(obj, list):
        return [_strip(v, tensors) for v in obj]
    if isinstance(obj, tuple) and not isinstance(obj, _TensorSlot):
        items = [_strip(v, tensors) for v in obj]
        return type(obj)(*items) if hasattr(obj, "_fields") else type(obj)(items)
    return obj


def _fill(obj, tensors):
    if isinstance(obj, _TensorSlot):
        return tensors[obj[0]]
    if isinstance(obj, dict):
        return type(obj)((k, _fill(v, tensors)) for k, v in obj.items())
    if isinstance(obj, list):
        return [_fill(v, tensors) for v in obj]
    if isinstance(obj, tuple):
        items = [_fill(v, tensors) for v in obj]
        return type(obj)(*items) if hasattr(obj, "_fields") else type(obj)(items)
    return obj


def broadcast_optimizer_state(optimizer, root_rank: int = 0, *, comm=None) -> None:
    """Make every rank's optimizer state and hyperparameters (lr, momentum, ...) ``root_rank``'s.

    Works whether or not the other ranks already have state (e.g. before the first step, when
    Adam/momentum buffers do not exist yet): the root's ``state_dict()`` structure travels as one
    small pickled object, its tensors in fused broadcasts, and the other ranks
    ``load_state_dict()`` the result (tensors are moved to each parameter's device there).
    Collective. Raises ValueError on every rank if the param_groups do not match the root's.
    """
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer, got "
                        f"{type(optimizer).__name__}")
    comm = comm if comm is not None else topology.communicator()
    if not 0 <= root_rank < comm.size:
        raise ValueError(f"root_rank must be in [0, {comm.size}), got {root_rank}")
    if comm.size == 1:
        return
    sd = optimizer.state_dict()
    tensors: list = []
    skeleton = _strip(sd, tensors)
    layout = [len(g["params"]) for g in sd["param_groups"]]
    me = comm.rank == root_rank
    every = comm.allgather_object((skeleton if me else None, layout))
    root_skeleton, root_layout = every[root_rank]
    bad = [r for r, (_, lay) in enumerate(every) if lay != root_layout]
    if bad:  # every rank sees every layout, so all raise together
        raise ValueError(f"broadcast_optimizer_state: parameters per group differ from root "
                         f"rank {root_rank}'s {root_layout} on ranks {bad}")
    if me:
        bufs = [t.detach().cpu() for t in tensors]
    else:
        bufs = []
        _collect_slots(root_skeleton, bufs)
        bufs = [torch.empty(shape, dtype=getattr(torch, dtype)) for _, dtype, shape in
                sorted(bufs)]
    broadcast_parameters(bufs, root_rank, comm=comm)
    if not me:
        optimizer.load_state_dict(_fill(root_skeleton, bufs))


def _collect_slots(obj, out):
    if isinstance(obj, _TensorSlot):
        out.append(tuple(obj))
    elif isinstance(obj, dict):
        for v in obj.values():
            _collect_slots(v, out)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _collect_slots(v, out)
