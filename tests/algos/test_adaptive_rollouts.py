"""Adaptive rollout allocation: the extra rollouts go to the knot with the largest standard error, within budget."""

from __future__ import annotations

import math
import random

import pytest

from rlx.algos.adaptive_rollouts import (
    allocate_rollouts,
    fixed_schedule_budget,
    knot_variances,
    standard_errors,
)

# three knots, M0 = 4 binary rewards each: only knot 1 is uncertain
FIRST_ROUND = [[1.0, 1.0, 1.0, 1.0], [0.0, 1.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0]]


def test_variance_estimate_hand_computed():
    # SS = [0, 1, 0]; pooled v0 = 1 / 9 (9 degrees of freedom); var_i = (SS_i + v0) / 4
    v = knot_variances(FIRST_ROUND)
    assert v == pytest.approx([1 / 36, 10 / 36, 1 / 36])
    assert standard_errors(v, [4, 4, 4]) == pytest.approx([1 / 12, math.sqrt(10) / 12, 1 / 12])
    assert knot_variances([[0.0, 1.0]], prior_var=0.5) == pytest.approx([(0.5 + 0.5) / 2])


def test_highest_variance_knot_gets_the_extra_rollouts():
    # knot 1's SE after 8 rollouts, sqrt(10/36/8) = 0.186, still exceeds the others' 1/12: all 4 extras go there
    assert allocate_rollouts(FIRST_ROUND, budget=4) == [0, 4, 0]
    # a larger budget: knot 1 takes rollouts until its SE falls to 1/12 (n = 40), then the knots share
    extra = allocate_rollouts(FIRST_ROUND, budget=40)
    assert sum(extra) == 40 and extra[1] >= 36 and extra[0] >= 1 and extra[2] >= 1


def test_no_information_gives_round_robin():
    # M0 = 1: no within-knot variance anywhere, every SE is 0; ties go to fewer rollouts, then the earlier knot
    assert allocate_rollouts([[1.0], [0.0], [1.0]], budget=5) == [2, 2, 1]


def test_token_costs_never_exceed_the_budget():
    # costs in tokens per rollout: knot 1 twice (12 tokens), then only knot 2 (2 tokens) still fits in 15
    assert allocate_rollouts(FIRST_ROUND, budget=15, costs=[10, 6, 2]) == [0, 2, 1]
    rng = random.Random(0)
    for _ in range(200):
        K = rng.randint(1, 6)
        first = [[float(rng.random() < 0.5) for _ in range(rng.randint(1, 4))] for _ in range(K)]
        costs = [rng.randint(1, 30) for _ in range(K)]
        budget = rng.randint(0, 120)
        extra = allocate_rollouts(first, budget, costs)
        assert sum(e * c for e, c in zip(extra, costs)) <= budget
        assert budget - sum(e * c for e, c in zip(extra, costs)) < min(costs)  # nothing affordable is left over
        assert sum(allocate_rollouts(first, budget)) == budget  # unit costs: the budget is spent exactly


def test_fixed_schedule_budget_and_errors():
    assert fixed_schedule_budget(num_knots=4, rollouts_per_branch=4, first_round=2) == 8
    with pytest.raises(ValueError, match="first_round must be in"):
        fixed_schedule_budget(4, 4, 5)
    with pytest.raises(ValueError, match="at least one first-round rollout"):
        allocate_rollouts([[1.0], []], 3)
    with pytest.raises(ValueError, match="budget must be >= 0"):
        allocate_rollouts(FIRST_ROUND, -1)
