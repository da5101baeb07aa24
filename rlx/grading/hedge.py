"""Hedged answers: an extracted answer that offers a second value in a form math-verify would not see.

math-verify reads several values joined by `,`, "or", "and" or `\\pm` as a set (so `7 or 42` does not match
the reference 42; `rlx.grading.extract` turns several boxes and prose "or" into that set too), but two forms
slip through it: it reads `42 \\approx 41.99` as 42, and its unit stripping drops a trailing `\\text{...}`
whatever it says, so `42 \\text{ (or 7)}` reads as 42. `hedge_reason` names those two forms; the grader
scores such an answer 0 with status "hedged" (docs/pending/grader.md).

`answer_value` removes the decorations around a single value that math-verify does not parse itself: a
leading "approximately" (`\\approx 42`, `x \\approx 42`) and the degree sign `°` (read as `^\\circ`, which
math-verify drops like a unit).

Pure string scanning, linear in the answer: runs in the caller's process on untrusted output.
"""

from __future__ import annotations

import re

from rlx.grading.extract import matching_braces

# "Approximately equal" in LaTeX and Unicode (`\sim` is left out: it also means "similar", and math-verify
# does not parse it, so `42 \sim 41` already grades incorrect).
_APPROX = re.compile(r"\\(?:approx|approxeq|thickapprox|simeq)(?![A-Za-z])|[≈≃]")
# The name of the unknown on the left of `x \approx 3.14`: a letter or a Greek letter, maybe subscripted.
_UNKNOWN = re.compile(r"\s*(?:[A-Za-z]|\\[A-Za-z]+)(?:_\{?\w+\}?)?\s*")
# Text annotations (units, remarks) that math-verify's unit stripping drops.
_TEXT_HEAD = re.compile(r"\\(?:text(?:bf|it|rm|sf|tt|up|normal)?|mbox|mathrm)\s*(?=\{)")
_DIGIT = re.compile(r"\d")


def _text_groups(answer: str) -> list[tuple[int, int]]:
    """(start, end) of every `\\text{...}`-like group whose braces close."""
    heads = list(_TEXT_HEAD.finditer(answer))
    if not heads:
        return []
    partner = matching_braces(answer, heads[0].end())
    return [(head.start(), partner[head.end()] + 1) for head in heads if head.end() in partner]


def _number_in_a_remark(answer: str) -> bool:
    """A text annotation holding a number beside a value outside it: `42 \\text{ (or 7)}`. An answer that is
    all text (`\\text{42 dollars}`, `\\text{(C)}`) is one value, not a hedge."""
    groups = _text_groups(answer)
    if not any(_DIGIT.search(answer, start, end) for start, end in groups):
        return False
    outside, pos = [], 0
    for start, end in groups:
        outside.append(answer[pos:start])
        pos = max(pos, end)
    outside.append(answer[pos:])
    return bool("".join(outside).strip())


def hedge_reason(answer: str) -> str | None:
    """Why `answer` is a hedge (a short reason), or None."""
    sides = _APPROX.split(answer)
    if len(sides) > 2 or (len(sides) == 2 and sides[0].strip() and not _UNKNOWN.fullmatch(sides[0])):
        return "two values joined by an approximately-equal sign"
    if _number_in_a_remark(answer):
        return "a number inside a text remark beside the answer"
    return None


def answer_value(answer: str) -> str:
    """`answer` without a leading "approximately" (`\\approx 42`, `x \\approx 42` -> `42`) and with `°` read
    as `^\\circ`. A hedge (`hedge_reason`) is never graded, so only these one-value forms reach here."""
    sides = _APPROX.split(answer)
    if len(sides) == 2 and (not sides[0].strip() or _UNKNOWN.fullmatch(sides[0])):
        answer = sides[1].strip()
    return answer.replace("°", "^\\circ")
