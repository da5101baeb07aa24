"""Compute budgets: stop a run after `train.steps`, `train.token_budget` generated tokens or `train.time_budget_s`
seconds of training wall time, whichever comes first, and evaluate every `train.eval_every_tokens` generated
tokens, so that the curves of algorithms with very different tokens per step (TRePO's branch rollouts vs GRPO's
group samples) line up on one x axis.

Tokens count everything the sampler generated for training: policy samples plus branch rollouts
(`tokens_policy + tokens_branch` of a step); evaluation generations are not training compute and do not count.
Training wall time likewise excludes evaluation and checkpointing, so a denser eval schedule does not shorten a
time-budgeted run. A step is never cut short: the budgets are checked after each step, so the last step may
overshoot a budget by at most one step's tokens or seconds (logged exactly in `tokens_total`, `wall_train_s`).
0 turns a budget off.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Budget:
    steps: int
    token_budget: int = 0  # stop once tokens_total >= token_budget (0 = no token budget)
    time_budget_s: float = 0.0  # stop once wall_train_s >= time_budget_s (0 = no time budget)
    eval_every_tokens: int = 0  # evaluate each time tokens_total crosses a multiple of this (0 = off)

    def should_stop(self, step: int, tokens: int, seconds: float) -> str | None:
        """After finishing `step` with `tokens` generated and `seconds` of training so far (cumulative): the name
        of the budget that is spent ("steps", "token_budget", "time_budget_s"), or None to go on."""
        if step >= self.steps:
            return "steps"
        if self.token_budget and tokens >= self.token_budget:
            return "token_budget"
        if self.time_budget_s and seconds >= self.time_budget_s:
            return "time_budget_s"
        return None

    def eval_due(self, tokens_before: int, tokens_after: int) -> bool:
        """True when the step that took tokens_total from `tokens_before` to `tokens_after` crossed (or reached)
        a multiple of eval_every_tokens: one evaluation per step even if it crossed several."""
        if not self.eval_every_tokens:
            return False
        return tokens_after // self.eval_every_tokens > tokens_before // self.eval_every_tokens


@dataclass
class BudgetCounters:
    """The cumulative counters logged every step and saved in resumable checkpoints (`state`/`from_state`)."""

    tokens_total: int = 0
    wall_train_s: float = 0.0
    # CPU seconds of the trainer's process (all its threads, the in-process vLLM engine included) in training
    # steps: unlike wall time, barely moved by other jobs sharing the machine (a sweep's parallel runs)
    cpu_train_s: float = 0.0

    def add(self, tokens: int, seconds: float, cpu_seconds: float = 0.0) -> tuple[int, int]:
        """Book one step; returns (tokens_total before, after) for `Budget.eval_due`."""
        before = self.tokens_total
        self.tokens_total += int(tokens)
        self.wall_train_s += float(seconds)
        self.cpu_train_s += float(cpu_seconds)
        return before, self.tokens_total

    def state(self) -> dict[str, float]:
        return {"tokens_total": self.tokens_total, "wall_train_s": self.wall_train_s, "cpu_train_s": self.cpu_train_s}

    @classmethod
    def from_state(cls, state: dict) -> BudgetCounters:
        return cls(int(state.get("tokens_total", 0)), float(state.get("wall_train_s", 0.0)),
                   float(state.get("cpu_train_s", 0.0)))
