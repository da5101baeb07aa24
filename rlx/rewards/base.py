"""Reward functions: `(problems, completions) -> list[float]`, one score per completion.

A reward sees only the problem and the completion *text*. Model output is untrusted: rewards never
`eval`/`exec`/`sympify` it; math equivalence goes through math-verify in a sandboxed, time-limited worker.

A reward that grades answers (`math_verify`, `gsm8k`, `arith`, `arith_steps`, a composite holding one of them)
also defines `score(problems, completions) -> Scores`, whose `verdicts` are the grades its rewards were computed
from: the rollout phase takes a training sample's verdict from there, so each sample is graded once
(docs/algorithms.md, "The rollout record"). Other rewards (`hf_rm`, `format`) leave the verdict to the task.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from rlx.data.base import Problem


class RewardFn(Protocol):
    def __call__(self, problems: Sequence[Problem], completions: Sequence[str]) -> list[float]: ...


REWARDS: dict[str, Callable[..., RewardFn]] = {}  # name -> factory(**config) -> RewardFn


def register_reward(name: str):
    def deco(factory: Callable[..., RewardFn]) -> Callable[..., RewardFn]:
        if name in REWARDS:
            raise ValueError(f"reward {name!r} registered twice")
        REWARDS[name] = factory
        return factory

    return deco


@dataclass(frozen=True)
class Scores:
    """One scoring call: a reward per completion, the verdicts they were graded to (None: the reward grades no
    answer), and the process reward's per-step rewards when they were asked for."""

    rewards: list[float]
    verdicts: list[bool] | None = None
    step_rewards: list[list[float]] | None = None


def score(reward_fn: RewardFn, problems: Sequence[Problem], completions: Sequence[str], steps: bool = False) -> Scores:
    """`reward_fn`'s Scores of `completions`: its own `score` where it grades answers, else its rewards alone;
    with `steps` also its `step_rewards` (a process reward)."""
    own = getattr(reward_fn, "score", None)
    result = own(problems, completions) if own is not None else Scores(list(reward_fn(problems, completions)))
    if steps and result.step_rewards is None:
        result = replace(result, step_rewards=reward_fn.step_rewards(problems, completions))
    return result
