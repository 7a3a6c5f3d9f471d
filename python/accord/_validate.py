"""Argument checks shared by the public constructors: errors name the argument."""
from __future__ import annotations

from numbers import Integral

__all__ = ["check_int"]


def check_int(name: str, value, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)
