"""math-verify equivalence of two extracted answers. Runs only inside grader workers (rlx.grading.worker):
the caller's process never imports math-verify or sympy.

Only math-verify's LaTeX extraction is used, on the answer wrapped in `\\boxed{}` so that it reads the whole
answer. Its expression extraction is left out on purpose: when the LaTeX parse of an answer fails (for
example sympy raising MemoryError on `\\gcd(10^{10^{10}}, 42)` under the worker's memory cap), math-verify
falls through to the next extraction config, and the expression config then picks the answer's last number
(`42`) and grades a fragment - a false "correct". With the LaTeX config alone a failed parse leaves only
the raw string, which matches nothing but an identical reference string.
"""

from __future__ import annotations

from typing import Any

from rlx.grading.extract import strip_percent

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
    boxed = "\\boxed{" + strip_percent(answer) + "}"
    return parse(boxed, extraction_config=_parse_configs(), parsing_timeout=None)


def check_equivalence(reference: str, answer: str) -> bool:
    """True when math-verify finds the two answers equivalent."""
    from math_verify import verify

    gold, pred = parse_math(reference), parse_math(answer)
    if not gold or not pred:
        return False
    return bool(verify(gold, pred, timeout_seconds=None))
