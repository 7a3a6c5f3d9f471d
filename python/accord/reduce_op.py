"""The reduction operations accepted by accord's collectives and training faces."""
from __future__ import annotations

import enum

__all__ = ["ReduceOp", "Sum", "Average", "Adasum", "Consensus", "Min", "Max", "Product",
           "parse_op"]


class ReduceOp(enum.Enum):
    SUM = "sum"
    AVERAGE = "average"
    ADASUM = "adasum"
    #: Stateful (momentum across steps): only for DistributedOptimizer and the hooks, through a
    #: ConsensusAggregator; a stateless allreduce refuses it.
    CONSENSUS = "consensus"
    #: Element-wise reductions (Horovod's Min, Max, Product): collectives only.
    MIN = "min"
    MAX = "max"
    PRODUCT = "product"

    # Members are singletons compared by identity; Enum's own __hash__ runs Python code, and
    # the op is part of several per-call cache keys.
    __hash__ = object.__hash__


Sum, Average, Adasum = ReduceOp.SUM, ReduceOp.AVERAGE, ReduceOp.ADASUM
Consensus = ReduceOp.CONSENSUS
Min, Max, Product = ReduceOp.MIN, ReduceOp.MAX, ReduceOp.PRODUCT
#: What gradient aggregation (DistributedOptimizer, hooks) accepts: Min/Max/Product of
#: gradients is not a training rule.
GRADIENT_OPS = (ReduceOp.AVERAGE, ReduceOp.SUM, ReduceOp.ADASUM, ReduceOp.CONSENSUS)


def _names(allowed) -> str:
    names = [f"accord.{op.name.title()}" for op in allowed]
    return ", ".join(names[:-1]) + " or " + names[-1] if len(names) > 1 else names[0]


def parse_op(op, allowed=tuple(ReduceOp), name: str = "op") -> ReduceOp:
    """``op`` as a :class:`ReduceOp` (enum member or its name, any case), one of ``allowed``;
    ValueError naming the argument and the accepted values otherwise."""
    parsed = op
    if isinstance(op, str):
        try:
            parsed = ReduceOp(op.lower())
        except ValueError:
            parsed = None
    if isinstance(parsed, ReduceOp) and parsed in allowed:
        return parsed
    hint = ""
    if parsed is ReduceOp.CONSENSUS:
        # Consensus keeps momentum across steps, so it cannot be a stateless allreduce op.
        hint = ("; accord.Consensus is not an allreduce op (it keeps state across steps): "
                "use accord.ConsensusAggregator(...).aggregate(tensors) or "
                "accord.DistributedOptimizer(opt, op=accord.Consensus)")
    raise ValueError(f"{name} must be {_names(allowed)}, got {op!r}{hint}")
