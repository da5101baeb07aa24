"""A task bundles a data set's splits with its prompt format and its correctness check."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from rlx.data import arith
from rlx.data.base import Problem


@dataclass(frozen=True)
class Task:
    name: str
    train: list[Problem]
    test: list[Problem]
    prompt: Callable[[Problem], str]  # problem -> prompt text fed to the model
    is_correct: Callable[[Problem, str], bool]  # (problem, completion text) -> exact-answer verdict


def build_task(data_cfg, train_size: int, seed: int) -> Task:
    if data_cfg.name == "arith":
        spec = data_cfg.spec()
        from rlx.rewards.arith import arith_correct

        return Task("arith", arith.train_problems(train_size, seed, spec), arith.test_problems(spec),
                    arith.format_prompt, arith_correct)
    raise ValueError(f"data.name: unknown data set {data_cfg.name!r}")
