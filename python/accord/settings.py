"""Process-wide settings of accord, read once from the environment and changeable at run time.

    ACCORD_FUSION_THRESHOLD   bytes per fusion buffer (default 64 MiB)
    ACCORD_CHECK_CONSISTENCY  0 turns off the cross-rank argument check of every collective
    ACCORD_STALL_WARNING      seconds before an operation that has not completed is reported,
                              with what every rank is doing (default 60; 0: never)
    ACCORD_TIMEOUT            seconds before such an operation ends the job with an error naming
                              it and the ranks that did not arrive (default 300; 0: never)
    ACCORD_NONFINITE          what allreduce/grouped_allreduce do with a NaN/Inf result:
                              propagate (default), raise or skip (see set_nonfinite)
"""
from __future__ import annotations

import os

__all__ = ["fusion_threshold", "set_fusion_threshold", "consistency_check",
           "set_consistency_check", "timeout", "set_timeout", "stall_warning",
           "set_stall_warning", "nonfinite", "set_nonfinite", "NONFINITE_POLICIES"]

DEFAULT_FUSION_THRESHOLD = 64 * 1024 * 1024
DEFAULT_STALL_WARNING = 60.0
DEFAULT_TIMEOUT = 300.0


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


def _seconds(value, what: str) -> float:
    if isinstance(value, bool):
        value = None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = -1.0
    if not seconds >= 0 or seconds == float("inf"):
        raise ValueError(f"{what} must be a finite number of seconds >= 0 (0 turns it off), "
                         f"got {value!r}")
    return seconds


def _env_seconds(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    return _seconds(raw.strip(), f"{name}={raw!r}")


_stall_warning = _env_seconds("ACCORD_STALL_WARNING", DEFAULT_STALL_WARNING)
_timeout = _env_seconds("ACCORD_TIMEOUT", DEFAULT_TIMEOUT)


def set_timeout(seconds: float) -> None:
    """Seconds an operation on a communicator may take before the job is ended with an error
    naming it and the ranks that did not arrive (env ACCORD_TIMEOUT, default 300; 0: never).
    A rank stuck inside MPI or gloo cannot be unblocked, so timing out aborts the job."""
    global _timeout
    _timeout = _seconds(seconds, "timeout")


def timeout() -> float:
    """See :func:`set_timeout` (0 means no timeout)."""
    return _timeout


def set_stall_warning(seconds: float) -> None:
    """Seconds before an operation that has not completed is reported on stderr, with what every
    rank is doing (env ACCORD_STALL_WARNING, default 60; 0: never). The job goes on."""
    global _stall_warning
    _stall_warning = _seconds(seconds, "stall warning")


def stall_warning() -> float:
    """See :func:`set_stall_warning` (0 means no warning)."""
    return _stall_warning
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
