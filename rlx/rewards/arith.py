"""`reward_model=arith`: exact-answer reward for the built-in arithmetic task (GSM8K-style `#### n`)."""

from __future__ import annotations

import re
from collections.abc import Sequence

from rlx.data.base import Problem
from rlx.rewards.base import register_reward

_ANSWER_LINE = re.compile(r"####\s*(-?\d+)\s*$")


def extract_final_integer(completion: str) -> int | None:
    """The integer on the completion's last `#### n` line, or None. Parsed with a regex: never evaluated."""
    for line in reversed(completion.strip().splitlines()):
        match = _ANSWER_LINE.search(line.strip())
        if match:
            return int(match.group(1))
    return None


def arith_correct(problem: Problem, completion: str) -> bool:
    return extract_final_integer(completion) == int(problem.answer)


@register_reward("arith")
def make_arith_reward(correct: float = 1.0, incorrect: float = 0.0):
    def reward(problems: Sequence[Problem], completions: Sequence[str]) -> list[float]:
        return [correct if arith_correct(p, c) else incorrect for p, c in zip(problems, completions, strict=True)]

    return reward
