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
    """Raise unless lo <= value <= hi (strict on an open side); a bound of None is no bound."""
    bad_lo = lo is not None and (value <= lo if lo_open else value < lo)
    bad_hi = hi is not None and (value >= hi if hi_open else value > hi)
    if bad_lo or bad_hi:
        raise ValueError(f"algo.{key} must be {_range_text(lo, hi, lo_open, hi_open)}, got {value!r}")


def _range_text(lo: float | None, hi: float | None, lo_open: bool, hi_open: bool) -> str:
    """'in [0.0, 1.0)', '> 0.0' or '<= 1.0' (at least one bound given): a missing bound is left out, never
    printed as None."""
    if lo is None:
        return f"{'<' if hi_open else '<='} {hi}"
    if hi is None:
        return f"{'>' if lo_open else '>='} {lo}"
    return f"in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"


def check_int(key: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"algo.{key} must be an integer >= {minimum}, got {value!r}")
