"""Process-wide settings of accord, read once from the environment and changeable at run time.

    ACCORD_FUSION_THRESHOLD   bytes per fusion buffer (default 64 MiB)
    ACCORD_CHECK_CONSISTENCY  0 turns off the cross-rank argument check of every collective
    ACCORD_NONFINITE          what allreduce/grouped_allreduce do with a NaN/Inf result:
                              propagate (default), raise or skip (see set_nonfinite)
"""
from __future__ import annotations

import os

__all__ = ["fusion_threshold", "set_fusion_threshold", "consistency_check",
           "set_consistency_check", "nonfinite", "set_nonfinite", "NONFINITE_POLICIES"]

DEFAULT_FUSION_THRESHOLD = 64 * 1024 * 1024


def _env_positive_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value <= 0:
        raise ValueError(f"{name}={raw!r} is not a positive integer; set a number of bytes "
                         f"(default {default}) or unset it")
    return value


#: the NaN/Inf policies of :func:`set_nonfinite`; the first is the default
NONFINITE_POLICIES = ("propagate", "raise", "skip")


def _env_choice(name: str, choices: tuple) -> str:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return choices[0]
    value = raw.strip().lower()
    if value not in choices:
        raise ValueError(f"{name}={raw!r} is not one of {', '.join(choices)}; set one of them "
                         f"or unset it (default {choices[0]})")
    return value


_fusion = _env_positive_int("ACCORD_FUSION_THRESHOLD", DEFAULT_FUSION_THRESHOLD)
_check = os.environ.get("ACCORD_CHECK_CONSISTENCY", "1").strip().lower() not in ("0", "false",
                                                                                  "off", "no")
_nonfinite = _env_choice("ACCORD_NONFINITE", NONFINITE_POLICIES)


def set_fusion_threshold(nbytes: int) -> None:
    """Largest fusion buffer in bytes for grouped reductions (env ACCORD_FUSION_THRESHOLD)."""
    global _fusion
    if isinstance(nbytes, bool) or not isinstance(nbytes, int) or nbytes <= 0:
        raise ValueError(f"fusion threshold must be a positive number of bytes, got {nbytes!r}")
    _fusion = nbytes


def fusion_threshold() -> int:
    """Largest fusion buffer in bytes (see :func:`set_fusion_threshold`)."""
    return _fusion


def set_consistency_check(enabled: bool) -> None:
    """Turn the cross-rank signature check of every collective on or off."""
    global _check
    _check = bool(enabled)


def consistency_check() -> bool:
    """Whether collectives compare their arguments across ranks before moving data."""
    return _check


def set_nonfinite(policy: str) -> None:
    """What ``allreduce``/``allreduce_``/``grouped_allreduce(_)`` do when the reduced result holds
    NaN or Inf (env ``ACCORD_NONFINITE``). Every rank must use the same policy (the collectives'
    consistency check compares it).

    * ``"propagate"`` (default): the NaN/Inf is returned like any value (Sum/Average element-wise,
      Adasum for the whole tensor), so a loss scaler (GradScaler) sees it on every rank. Free.
    * ``"raise"``: ``FloatingPointError`` on every rank; the inputs are left unchanged (in-place
      calls reduce into a scratch copy first, which costs one copy of the data).
    * ``"skip"``: the call's result is all zeros on every rank (in place: the tensors are zeroed),
      as a skipped gradient step; :func:`accord.nonfinite_skips` counts such calls.

    ``raise`` and ``skip`` decide from the reduced values with one 8-byte max-allreduce of a
    "this rank's result is non-finite" flag, so the ranks never disagree.
    """
    global _nonfinite
    if policy not in NONFINITE_POLICIES:
        raise ValueError(f"policy must be one of {NONFINITE_POLICIES}, got {policy!r}")
    _nonfinite = policy


def nonfinite() -> str:
    """The NaN/Inf policy of the collectives (see :func:`set_nonfinite`)."""
    return _nonfinite
