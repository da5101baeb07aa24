"""A cheap pre-screen for pathological answers: score them 0 without starting a computer-algebra system.

math-verify hands answers to sympy, which evaluates what it parses: `10^{10^{10}}` asks for a number with ten
billion digits, `(10^{10})!` for a factorial beyond any memory, and deep nesting for deep recursion. Each such
answer would hold a grader worker until its wall-clock limit kills it (seconds of CPU, then a worker
restart). No real final answer looks like that: the longest MATH-500 answer has 53 characters, none has an
exponent tower, a factorial of an expression, a number above 10^4 in an exponent or more than 11 digits in a
row. So the screen rejects, in one linear pass over the extracted answer:

  * length above `max_chars` (default 400);
  * a run of more than `max_digits` digits (default 40);
  * bracket nesting deeper than `max_depth` (default 12);
  * an exponent tower (an exponent that itself holds `^`), or an exponent holding a number above
    `max_exponent` (default 10 000): `(x+1)^{100000}`, `\\sum_{n=1}^{10^{10}}`;
  * a factorial of a number above 9999 or of a group holding a power or a number above 99: `(10^{10})!`.

The verdict is "screened" (incorrect); a screened answer that is string-identical to its reference is still
graded correct, whatever its length, because the grader compares strings first (plain equality before its
`max_answer_chars` cap, then normalised strings before this screen).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from rlx.grading.extract import matching_braces

_DIGIT_RUN = re.compile(r"\d+")
_FACTORIAL = re.compile(r"(?<!\\)!")  # `\!` is LaTeX's negative thin space, not a factorial


@dataclass(frozen=True)
class ScreenLimits:
    max_chars: int = 400
    max_digits: int = 40
    max_depth: int = 12
    max_exponent: int = 10_000


def _nesting_depth(answer: str) -> int:
    depth = deepest = 0
    for ch in answer:
        if ch in "{([":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "})]" and depth:
            depth -= 1
    return deepest


def _exponents(answer: str) -> list[str]:
    """The text of every exponent: a braced group after `^`, or the digit run / single token after it."""
    found = []
    partner: dict[int, int] | None = None
    for caret in (i for i, ch in enumerate(answer) if ch == "^"):
        pos = caret + 1
        while pos < len(answer) and answer[pos] == " ":
            pos += 1
        if pos < len(answer) and answer[pos] == "{":
            partner = partner if partner is not None else matching_braces(answer, 0)
            end = partner.get(pos, len(answer))  # an unclosed exponent runs to the end
            found.append(answer[pos + 1 : end])
        else:
            run = _DIGIT_RUN.match(answer, pos)
            found.append(run.group() if run else answer[pos : pos + 1])
    return found


def _bad_factorial(answer: str) -> bool:
    """A factorial of a number above 9999, or of a group that holds a power or a number above 99."""
    for bang in _FACTORIAL.finditer(answer):
        before = answer[: bang.start()].rstrip("!").rstrip()
        run = re.search(r"\d+$", before)
        if run is not None:
            if len(run.group()) > 4:
                return True
        elif before[-1:] in (")", "}", "]"):
            group = before[-40:]  # the operand's tail is enough to see a power or a large number
            if "^" in group or re.search(r"\d{3}", group):
                return True
    return False


def screen_answer(answer: str, limits: ScreenLimits = ScreenLimits()) -> str | None:
    """Why `answer` is pathological (a short reason), or None when it may go to math-verify."""
    if len(answer) > limits.max_chars:
        return f"longer than {limits.max_chars} characters"
    if any(len(run) > limits.max_digits for run in _DIGIT_RUN.findall(answer)):
        return f"a number with more than {limits.max_digits} digits"
    if _nesting_depth(answer) > limits.max_depth:
        return f"nested deeper than {limits.max_depth}"
    for exponent in _exponents(answer):
        if "^" in exponent:
            return "an exponent tower"
        if any(int(run) > limits.max_exponent for run in _DIGIT_RUN.findall(exponent)):
            return f"an exponent above {limits.max_exponent}"
    if _bad_factorial(answer):
        return "a factorial of a huge number"
    return None
