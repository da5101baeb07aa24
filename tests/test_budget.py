"""Budgets: runs stop at the right step and evaluations fall at the token intervals (pure scheduling logic)."""

from __future__ import annotations

import pytest

from rlx.config import ConfigError, TrainerConfig, to_dataclass
from rlx.train.budget import Budget, BudgetCounters


def _simulate(budget: Budget, tokens_per_step: list[int], seconds_per_step: float = 1.0):
    """Drive the budget the way the loop does: returns (steps run, stop reason, steps with an eval, counters)."""
    counters = BudgetCounters()
    evals = []
    for step, tokens in enumerate(tokens_per_step, start=1):
        before, after = counters.add(tokens, seconds_per_step)
        if budget.eval_due(before, after):
            evals.append(step)
        reason = budget.should_stop(step, counters.tokens_total, counters.wall_train_s)
        if reason:
            return step, reason, evals, counters
    raise AssertionError("the budget never stopped the run")


def test_token_budget_stops_after_the_crossing_step():
    # 300 tokens per step, budget 1000: totals 300, 600, 900, 1200 -> stops after step 4 (overshoot 200)
    steps, reason, _, counters = _simulate(Budget(steps=100, token_budget=1000), [300] * 10)
    assert (steps, reason, counters.tokens_total) == (4, "token_budget", 1200)
    steps, reason, _, _ = _simulate(Budget(steps=100, token_budget=900), [300] * 10)
    assert (steps, reason) == (3, "token_budget")  # exactly reaching the budget stops too


def test_whichever_comes_first():
    assert _simulate(Budget(steps=2, token_budget=1000), [300] * 10)[:2] == (2, "steps")
    timed = Budget(steps=50, token_budget=10**6, time_budget_s=5.0)
    assert _simulate(timed, [300] * 10, 2.0)[:2] == (3, "time_budget_s")
    assert Budget(steps=5).should_stop(4, 10**9, 10**9) is None  # budgets of 0 are off


def test_evals_fall_at_token_intervals():
    # eval every 500 tokens; per-step tokens vary: totals 200, 650, 900, 1400, 1450, 2600 -> crossings at 500
    # (step 2), 1000 (step 4), 1500 and 2000 and 2500 together (step 6: one evaluation)
    _, _, evals, _ = _simulate(Budget(steps=6, eval_every_tokens=500), [200, 450, 250, 500, 50, 1150])
    assert evals == [2, 4, 6]
    assert Budget(steps=3, eval_every_tokens=500).eval_due(0, 500)  # reaching a multiple counts
    assert not Budget(steps=3).eval_due(0, 10**6)  # off by default


def test_counters_round_trip_through_a_checkpoint():
    counters = BudgetCounters()
    counters.add(120, 1.5, 1.25)
    counters.add(80, 0.5)
    restored = BudgetCounters.from_state(counters.state())
    assert restored == BudgetCounters(200, 2.0, 1.25)
    assert BudgetCounters.from_state({}) == BudgetCounters(0, 0.0, 0.0)  # checkpoints from before budgets existed


@pytest.mark.parametrize(("kwargs", "key"), [
    ({"steps": 0}, "train.steps"),
    ({"steps": 1, "token_budget": -1}, "train.token_budget"),
    ({"steps": 1, "token_budget": 1.5}, "train.token_budget"),
    ({"steps": 1, "time_budget_s": -2.0}, "train.time_budget_s"),
    ({"steps": 1, "eval_every_tokens": -5}, "train.eval_every_tokens"),
])
def test_bad_values_name_the_key(kwargs, key):
    """The budgets are `train.*` keys: the typed config rejects bad ones before a run starts."""
    with pytest.raises(ConfigError, match=rf"^{key}\b"):
        to_dataclass(TrainerConfig, kwargs, "train")
