"""The exact integer answer check of the built-in arithmetic task (GSM8K-style `#### n` final line)."""

from __future__ import annotations

import re

_ANSWER_LINE = re.compile(r"####\s*(-?\d+)\s*$")


def extract_final_integer(completion: str) -> int | None:
    """The integer on the completion's last `#### n` line, or None. Parsed with a regex: never evaluated."""
    for line in reversed(completion.strip().splitlines()):
        match = _ANSWER_LINE.search(line.strip())
        if match:
            return int(match.group(1))
    return None


def integer_answer_correct(reference: str | int, completion: str) -> bool:
    """True when the completion's final `#### n` equals the integer reference."""
    return extract_final_integer(completion) == int(reference)


def arith_correct(problem, completion: str) -> bool:
    """The arithmetic task's correctness: `integer_answer_correct` on a Problem (anything with `.answer`)."""
    return integer_answer_correct(problem.answer, completion)
