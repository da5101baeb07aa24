"""Verifiable math rewards: `math_verify` (MATH-style), `gsm8k`, and the `format` bonus.

`math_verify` and `gsm8k` score 1.0 for a correct final answer and 0.0 otherwise (also for a grader timeout,
crash, a pathological answer or a hedge: several different boxed answers, "7 or 42", `42 \\approx 41.99`;
docs/pending/grader.md). By default they share one process-wide grader pool with evaluation (see
`rlx.grading.shared_grader`), so a composite of both does not start two pools. Their per-answer limit
(`timeout_s`, default 0.5 s) is shorter than evaluation's (2 s): a training batch must not wait seconds on
one hostile sample, while evaluation can afford to give a slow honest answer more time.
"""

from __future__ import annotations

from collections.abc import Sequence

from rlx.data.base import Problem
from rlx.grading.extract import extract_answer, resolve_styles
from rlx.grading.grader import TRAIN_TIMEOUT_S, Grader, GradeResult, shared_grader
from rlx.rewards.base import Scores, register_reward

GSM8K_STYLES = ("gsm8k", "last_number")  # the GSM8K convention first, then any trailing number


class GradedReward:
    """1.0/0.0 per completion from the grader; `last_results` keeps the GradeResults of the latest call."""

    def __init__(
        self,
        style: str | Sequence[str],
        timeout_s: float = TRAIN_TIMEOUT_S,
        num_workers: int | None = None,
        grader: Grader | None = None,
    ) -> None:
        self.styles = resolve_styles(style)  # fail at build time on a typo, not mid-run
        if not timeout_s > 0:
            raise ValueError(f"reward_model.timeout_s must be > 0, got {timeout_s}")
        self.timeout_s = float(timeout_s)
        self._grader = grader
        self._num_workers = num_workers
        self.last_results: list[GradeResult] = []

    @property
    def grader(self) -> Grader:
        if self._grader is None:  # lazy: building a reward must not start processes
            self._grader = shared_grader(self._num_workers)
        return self._grader

    def __call__(self, problems: Sequence[Problem], completions: Sequence[str]) -> list[float]:
        return self.score(problems, completions).rewards

    def score(self, problems: Sequence[Problem], completions: Sequence[str]) -> Scores:
        """The rewards with the verdicts of the one grading they come from."""
        answers = [p.answer for p in problems]
        self.last_results = self.grader.grade(answers, list(completions), self.styles, self.timeout_s)
        verdicts = [result.correct for result in self.last_results]
        return Scores([1.0 if correct else 0.0 for correct in verdicts], verdicts)


@register_reward("math_verify")
def math_verify_reward(
    style: str | Sequence[str] = "auto",
    timeout_s: float = TRAIN_TIMEOUT_S,
    num_workers: int | None = None,
    grader: Grader | None = None,
) -> GradedReward:
    """Config: style ("auto" = boxed, then ####, then last number; or "boxed" for strict MATH grading),
    timeout_s (per-answer limit of the training reward, default 0.5 s; evaluation uses 2 s), num_workers
    (grader processes; default min(4, cpus))."""
    return GradedReward(style, timeout_s, num_workers, grader)


@register_reward("gsm8k")
def gsm8k_reward(
    style: str | Sequence[str] = GSM8K_STYLES,
    timeout_s: float = TRAIN_TIMEOUT_S,
    num_workers: int | None = None,
    grader: Grader | None = None,
) -> GradedReward:
    """Config: as `math_verify`, but extraction defaults to `####` then the last number."""
    return GradedReward(style, timeout_s, num_workers, grader)


def has_gsm8k_final_line(text: str) -> bool:
    """Exactly one `####`, on the last non-empty line, followed by an answer."""
    if text.count("####") != 1:
        return False
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return bool(lines) and lines[-1].lstrip().startswith("####") and bool(lines[-1].strip()[4:].strip())


def has_boxed_answer(text: str) -> bool:
    return extract_answer(text, "boxed") is not None


class FormatReward:
    def __init__(self, bonus: float, accept: Sequence[str]) -> None:
        checks = {"gsm8k": has_gsm8k_final_line, "boxed": has_boxed_answer}
        unknown = set(accept) - set(checks)
        if unknown or not accept:
            message = f"format accept must be a non-empty subset of {sorted(checks)}, got {list(accept)}"
            raise ValueError(message)
        self.bonus = float(bonus)
        self.checks = [checks[name] for name in accept]

    def __call__(self, problems: Sequence[Problem], completions: Sequence[str]) -> list[float]:
        return [self.bonus if any(check(text) for check in self.checks) else 0.0 for text in completions]


@register_reward("format")
def format_reward(bonus: float = 0.1, accept: Sequence[str] = ("gsm8k", "boxed")) -> FormatReward:
    """Config: bonus (paid for a well-formed final answer, default 0.1), accept (which forms count:
    "gsm8k" = exactly one `####` line at the end, "boxed" = a balanced `\\boxed{...}`)."""
    return FormatReward(bonus, accept)
