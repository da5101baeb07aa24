"""Reward functions: `(problems, completions) -> list[float]`, one score per completion.

A reward sees only the problem and the completion *text*. Model output is untrusted: rewards never
`eval`/`exec`/`sympify` it; math equivalence goes through math-verify in a sandboxed, time-limited worker.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
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
