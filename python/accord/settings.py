"""Process-wide settings of accord, read once from the environment and changeable at run time.

    ACCORD_FUSION_THRESHOLD   bytes per fusion buffer (default 64 MiB)
    ACCORD_CHECK_CONSISTENCY  0 turns off the cross-rank argument check of every collective
"""
from __future__ import annotations

import os

__all__ = ["fusion_threshold", "set_fusion_threshold", "consistency_check",
           "set_consistency_check"]

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


_fusion = _env_positive_int("ACCORD_FUSION_THRESHOLD", DEFAULT_FUSION_THRESHOLD)
_check = os.environ.get("ACCORD_CHECK_CONSISTENCY", "1").strip().lower() not in ("0", "false",
                                                                                  "off", "no")


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
