"""`reward_model=arith`: exact-answer reward for the built-in arithmetic task (GSM8K-style `#### n`)."""

from __future__ import annotations

from collections.abc import Sequence

from rlx.data.base import Problem
from rlx.grading.arith import arith_correct
from rlx.rewards.base import Scores, register_reward

__all__ = ["ArithReward", "ArithStepReward", "arith_correct", "completion_lines"]


class ArithReward:
    """`reward_model=arith`: `correct` for the exact final integer (`#### n`), else `incorrect`."""

    def __init__(self, correct: float = 1.0, incorrect: float = 0.0):
        self.correct, self.incorrect = correct, incorrect

    def __call__(self, problems: Sequence[Problem], completions: Sequence[str]) -> list[float]:
        return self.score(problems, completions).rewards

    def score(self, problems: Sequence[Problem], completions: Sequence[str]) -> Scores:
        """The rewards with the verdicts they were graded to (the task's own check: `arith_correct`)."""
        verdicts = [arith_correct(p, c) for p, c in zip(problems, completions, strict=True)]
        return Scores([self.correct if ok else self.incorrect for ok in verdicts], verdicts)


@register_reward("arith")
def make_arith_reward(correct: float = 1.0, incorrect: float = 0.0) -> ArithReward:
    return ArithReward(correct, incorrect)


class ArithStepReward(ArithReward):
    """`reward_model=arith_steps`: the outcome reward of `arith` plus one reward per reasoning step (line).

    A step is correct when the line equals the reference solution's line at the same position (the task's
    solutions are deterministic: each line rewrites the previous one), so this is a ground-truth process
    reward model for GRPO's process supervision and sentence-level GRPO (docs/algorithms.md, "GRPO")."""

    def step_rewards(self, problems: Sequence[Problem], completions: Sequence[str]) -> list[list[float]]:
        """One reward per line of each completion (a trailing line without a newline counts)."""
        rewards = []
        for problem, completion in zip(problems, completions, strict=True):
            reference = problem.solution.split("\n")
            lines = completion_lines(completion)
            rewards.append([self.correct if j < len(reference) and line.strip() == reference[j].strip()
                            else self.incorrect for j, line in enumerate(lines)])
        return rewards


def completion_lines(completion: str) -> list[str]:
    """The completion's steps: its lines, without the empty remainder after a final newline."""
    lines = completion.split("\n")
    return lines[:-1] if lines and lines[-1] == "" else lines


@register_reward("arith_steps")
def make_arith_step_reward(correct: float = 1.0, incorrect: float = 0.0) -> ArithStepReward:
    return ArithStepReward(correct, incorrect)
