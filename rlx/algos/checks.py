"""Config validation helpers: every message names the key as `algo.<key>` (the Hydra path)."""

from __future__ import annotations


def check_choice(key: str, value, options: tuple) -> None:
    if value not in options:
        raise ValueError(f"algo.{key} must be one of {list(options)}, got {value!r}")


def check_range(
    key: str,
    value,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
    hi_open: bool = False,
) -> None:
    """Raise unless lo <= value <= hi (strict on an open side)."""
    bad_lo = lo is not None and (value <= lo if lo_open else value < lo)
    bad_hi = hi is not None and (value >= hi if hi_open else value > hi)
    if bad_lo or bad_hi:
        left = "(" if lo_open else "["
        right = ")" if hi_open else "]"
        raise ValueError(f"algo.{key} must be in {left}{lo}, {hi}{right}, got {value!r}")


def check_int(key: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"algo.{key} must be an integer >= {minimum}, got {value!r}")
