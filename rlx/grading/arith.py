"""The exact integer answer check of the built-in arithmetic task (GSM8K-style `#### n` final lines)."""

from __future__ import annotations

import re

_ANSWER_LINE = re.compile(r"####\s*(-?\d+)\s*$")


def extract_final_integer(completion: str) -> int | None:
    """The integer of the completion's `#### n` lines, or None: none, or two that disagree (docs/rewards.md,
    "One rule for several final answers": several different final answers are a hedge). Parsed with a
    regex: never evaluated."""
    values = {int(match.group(1)) for line in completion.strip().splitlines()
              if (match := _ANSWER_LINE.search(line.strip()))}
    return values.pop() if len(values) == 1 else None


def integer_answer_correct(reference: str | int, completion: str) -> bool:
    """True when the completion's final `#### n` equals the integer reference."""
    return extract_final_integer(completion) == int(reference)


def arith_correct(problem, completion: str) -> bool:
    """The arithmetic task's correctness: `integer_answer_correct` on a Problem (anything with `.answer`)."""
    return integer_answer_correct(problem.answer, completion)
