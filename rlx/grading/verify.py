"""math-verify equivalence of two extracted answers. Runs only inside grader workers (rlx.grading.worker):
the caller's process never imports math-verify or sympy.

Only math-verify's LaTeX extraction is used, on the answer wrapped in `\\boxed{}` so that it reads the whole
answer. Its expression extraction is left out on purpose: when the LaTeX parse of an answer fails (for
example sympy raising MemoryError on `\\gcd(10^{10^{10}}, 42)` under the worker's memory cap), math-verify
falls through to the next extraction config, and the expression config then picks the answer's last number
(`42`) and grades a fragment - a false "correct". With the LaTeX config alone a failed parse leaves only
the raw string, which matches nothing but an identical reference string.

Decorations (docs/pending/grader.md): a trailing percent sign is dropped, and a percentage also reads as its
fraction, so `42\\%` matches both 42 (MATH's convention) and 0.42 (math-verify's own reading of a percentage
against a decimal); `\\approx 42` reads as 42 and `°` as `^\\circ` (`rlx.grading.hedge.answer_value`).
Units, `^\\circ`, `(42)` and `\\pm 0` are math-verify's to read: it drops units and degree signs, reads a
parenthesised number as the number and `42 \\pm 0` as the one value 42.
"""

from __future__ import annotations

from typing import Any

from rlx.grading.extract import has_percent, strip_percent
from rlx.grading.hedge import answer_value

_CONFIGS: Any = None  # built lazily, once per worker


def _parse_configs() -> Any:
    global _CONFIGS
    if _CONFIGS is None:
        from math_verify import LatexExtractionConfig

        _CONFIGS = [LatexExtractionConfig(boxed_match_priority=0)]
    return _CONFIGS


def parse_math(answer: str) -> list[Any]:
    from math_verify import parse

    # Its own signal-based timeouts are off: the worker's wall-clock limit (enforced by the parent) rules.
    boxed = "\\boxed{" + answer_value(strip_percent(answer)) + "}"
    return parse(boxed, extraction_config=_parse_configs(), parsing_timeout=None)


def _readings(answer: str) -> list[str]:
    """The answer, and for a percentage also its fraction: `42\\%` -> `42`, `\\frac{42}{100}`."""
    if not has_percent(answer):
        return [answer]
    return [answer, "\\frac{" + strip_percent(answer) + "}{100}"]


def check_equivalence(reference: str, answer: str) -> bool:
    """True when math-verify finds the two answers equivalent (a percentage in either read either way)."""
    from math_verify import verify

    golds = [parse_math(text) for text in _readings(reference)]
    preds = [parse_math(text) for text in _readings(answer)]
    return any(gold and pred and verify(gold, pred, timeout_seconds=None) for gold in golds for pred in preds)
