"""The parameter lists the training faces (averagers, Leader SGD) accept, as tensor lists."""
from __future__ import annotations

from ._buffers import is_tensor, torch_module

__all__ = ["tensor_list", "is_module", "optimizer_tensors"]


def tensor_list(params, what: str = "params") -> list:
    """Tensors from a Module, a tensor, an iterable of tensors / (name, tensor) pairs / param
    group dicts, or a dict name -> tensor. Order is the caller's (identical on every rank for
    the same model), which is what makes the fused layout agree across ranks."""
    torch = torch_module()
    if isinstance(params, torch.nn.Module):
        return list(params.parameters())
    if isinstance(params, torch.Tensor):
        return [params]
    if isinstance(params, dict):
        return tensor_list(params["params"], what) if "params" in params else \
            tensor_list(list(params.values()), what)
    out = []
    for p in params:
        if isinstance(p, torch.Tensor):
            out.append(p)
        elif isinstance(p, tuple) and len(p) == 2 and isinstance(p[1], torch.Tensor):
            out.append(p[1])
        elif isinstance(p, dict) and "params" in p:
            out.extend(tensor_list(p["params"], what))
        else:
            raise TypeError(f"{what}: expected tensors, (name, tensor) pairs or param groups, "
                            f"got {type(p).__name__}")
    for i, t in enumerate(out):
        if not t.is_floating_point():
            raise TypeError(f"{what}[{i}] has dtype {t.dtype}; only floating-point tensors "
                            "can be averaged or pulled")
    return out


def is_module(x) -> bool:
    """A torch.nn.Module (False without torch loaded)."""
    import sys
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.nn.Module)


def optimizer_tensors(optimizer) -> list:
    """Floating-point state tensors in param-group order, keys sorted (same order on every
    rank). ``step`` counters are identical across ranks and stay out."""
    out = []
    for group in optimizer.param_groups:
        for p in group["params"]:
            state = optimizer.state.get(p, {})
            for key in sorted(state):
                v = state[key]
                if key != "step" and is_tensor(v) and v.is_floating_point() and v.numel():
                    out.append(v)
    return out
