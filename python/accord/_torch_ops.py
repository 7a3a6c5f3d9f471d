"""torch.library registration of accord's kernels (``torch.ops.accord.*``).

Each op is a custom op with a fake (meta) implementation, so it traces under ``torch.compile``
without running; the real implementation is the validated dispatch in ``accord._op_impl``. Ops that
write into a caller's buffer are separate ``*_out`` ops declaring the mutation.
Imported lazily by ``accord.ops`` the first time a torch tensor is seen.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor

from . import _op_impl as _impl

_LIB = "accord"


def _segments(offsets: Tensor) -> int:
    return offsets.shape[0] - 1


@torch.library.custom_op(f"{_LIB}::segment_dots", mutates_args=())
def segment_dots(a: Tensor, b: Tensor, offsets: Tensor) -> Tensor:
    return _impl.segment_dots(a, b, offsets)


@segment_dots.register_fake
def _(a, b, offsets):
    return a.new_empty((_segments(offsets), 3), dtype=torch.float64)


@torch.library.custom_op(f"{_LIB}::adasum_combine", mutates_args=())
def adasum_combine(a: Tensor, b: Tensor, offsets: Tensor, dots: Optional[Tensor],
                   weights: Sequence[float]) -> Tensor:
    return _impl.adasum_combine(a, b, offsets, None, dots, tuple(weights))


@adasum_combine.register_fake
def _(a, b, offsets, dots, weights):
    return torch.empty_like(a)


@torch.library.custom_op(f"{_LIB}::adasum_combine_out", mutates_args=("out",))
def adasum_combine_out(a: Tensor, b: Tensor, offsets: Tensor, dots: Optional[Tensor],
                       weights: Sequence[float], out: Tensor) -> None:
    _impl.adasum_combine(a, b, offsets, out, dots, tuple(weights))


@adasum_combine_out.register_fake
def _(a, b, offsets, dots, weights, out):
    return None


@torch.library.custom_op(f"{_LIB}::gram", mutates_args=())
def gram(vectors: Tensor, offsets: Tensor, rhs: Optional[Tensor]) -> tuple[Tensor, Tensor]:
    g, r = _impl.gram(vectors, offsets, rhs)
    # a custom op cannot return None: "no rhs" is an empty [L, 0] tensor
    return g, r if r is not None else g.new_empty((g.shape[0], 0))


@gram.register_fake
def _(vectors, offsets, rhs):
    L, k = _segments(offsets), vectors.shape[0]
    g = vectors.new_empty((L, k, k), dtype=torch.float64)
    return g, g.new_empty((L, k if rhs is not None else 0))


@torch.library.custom_op(f"{_LIB}::solve_spd", mutates_args=())
def solve_spd(gram: Tensor, rhs: Tensor, ridge: float) -> Tensor:
    return _impl.solve_spd(gram, rhs, ridge)


@solve_spd.register_fake
def _(gram, rhs, ridge):
    return rhs.new_empty(rhs.shape, dtype=torch.float64)


@torch.library.custom_op(f"{_LIB}::weighted_sum", mutates_args=())
def weighted_sum(vectors: Tensor, weights: Tensor, offsets: Tensor) -> Tensor:
    return _impl.weighted_sum(vectors, weights, offsets, None)


@weighted_sum.register_fake
def _(vectors, weights, offsets):
    return vectors.new_empty((vectors.shape[1],))


@torch.library.custom_op(f"{_LIB}::weighted_sum_out", mutates_args=("out",))
def weighted_sum_out(vectors: Tensor, weights: Tensor, offsets: Tensor, out: Tensor) -> None:
    _impl.weighted_sum(vectors, weights, offsets, out)


@weighted_sum_out.register_fake
def _(vectors, weights, offsets, out):
    return None


@torch.library.custom_op(f"{_LIB}::axpby", mutates_args=())
def axpby(x: Tensor, y: Tensor, alpha: Tensor, beta: Tensor, offsets: Tensor) -> Tensor:
    return _impl.axpby(x, y, alpha, beta, offsets, None)


@axpby.register_fake
def _(x, y, alpha, beta, offsets):
    return torch.empty_like(x)


@torch.library.custom_op(f"{_LIB}::axpby_out", mutates_args=("out",))
def axpby_out(x: Tensor, y: Tensor, alpha: Tensor, beta: Tensor, offsets: Tensor,
              out: Tensor) -> None:
    _impl.axpby(x, y, alpha, beta, offsets, out)


@axpby_out.register_fake
def _(x, y, alpha, beta, offsets, out):
    return None
