"""How many rollouts where (`algo.adaptive_rollouts`): spend a step's branch-rollout budget where the knot values
are least certain. VinePPO (arXiv 2410.01679) grows a state's Monte-Carlo sample until its confidence interval is
tight enough; this generalises that to a fixed budget shared by all knots of a step.

Round 1: every knot gets M0 rollouts. Round 2: the remaining budget (the fixed-M schedule's K (M - M0) rollouts
for K knots, or a token budget) goes, one rollout at a time, to the knot whose value estimate has the largest
standard error SE_i = sqrt(var_i / n_i), with n_i its current count (recomputed after every assignment). The
variance estimate of knot i from its round-1 returns x_1..x_{M0} is

    var_i = (SS_i + v0) / n_i_round1,     SS_i = sum_j (x_j - mean_i)^2,

i.e. the unbiased sample variance with one pseudo-observation of variance v0 (SS / (n - 1) for n - 1 degrees of
freedom, plus one prior degree of freedom). v0 defaults to the pooled within-knot variance of all knots, so a
knot whose M0 binary rewards happened to agree (SS = 0) still keeps a positive SE instead of never being
revisited; with M0 = 1 every knot has var = v0 and the allocation becomes round-robin. Ties go to the knot with
fewer rollouts, then to the earlier knot, so the plan is deterministic.

Estimator: the knot value stays the paper's mean over its pool (TRePO Eq. 31 for pooling=paper; the knot's own
rollouts for none / unbiased) over all n_i rollouts. Because n_i depends on the round-1 rewards, that mean is an
adaptive-sample-size mean: its bias is O(1/n) and zero when the allocation ignores the rewards (M0 = 1, or all
knots alike); the round-2 rollouts alone are an exactly unbiased estimate conditional on round 1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def fixed_schedule_budget(num_knots: int, rollouts_per_branch: int, first_round: int) -> int:
    """Round-2 rollouts that keep the step's total equal to the fixed-M schedule: K (M - M0)."""
    if not 1 <= first_round <= rollouts_per_branch:
        raise ValueError(f"algo.adaptive_rollouts: first_round must be in [1, rollouts_per_branch="
                         f"{rollouts_per_branch}], got {first_round!r}")
    return num_knots * (rollouts_per_branch - first_round)


def knot_variances(first_round: Sequence[Sequence[float]], prior_var: float | None = None) -> list[float]:
    """var_i = (SS_i + v0) / n_i per knot (module docstring); v0 = pooled within-knot variance by default."""
    if any(len(x) == 0 for x in first_round):
        raise ValueError("adaptive rollouts: every knot needs at least one first-round rollout")
    means = [sum(x) / len(x) for x in first_round]
    ss = [sum((v - m) ** 2 for v in x) for x, m in zip(first_round, means)]
    if prior_var is None:
        dof = sum(len(x) - 1 for x in first_round)
        prior_var = sum(ss) / dof if dof > 0 else 0.0
    return [(s + prior_var) / len(x) for s, x in zip(ss, first_round)]


def standard_errors(variances: Sequence[float], counts: Sequence[int]) -> list[float]:
    """SE_i = sqrt(var_i / n_i) (inf for a knot without rollouts: it is served first)."""
    return [math.sqrt(v / n) if n > 0 else math.inf for v, n in zip(variances, counts)]


def allocate_rollouts(
    first_round: Sequence[Sequence[float]],
    budget: int,
    costs: Sequence[float] | None = None,
    prior_var: float | None = None,
) -> list[int]:
    """Extra rollouts per knot [K], greedy on the largest standard error, never exceeding `budget`.

    first_round[i] = the round-1 returns of knot i. Without `costs` the budget counts rollouts; with costs[i] =
    the expected tokens of one rollout from knot i (e.g. its round-1 mean length), the budget counts tokens and
    only knots whose next rollout still fits are eligible (a cheaper knot may still use the remainder).
    """
    if budget < 0:
        raise ValueError(f"adaptive rollouts: budget must be >= 0, got {budget!r}")
    K = len(first_round)
    costs = [1.0] * K if costs is None else [float(c) for c in costs]
    if len(costs) != K or any(c <= 0 for c in costs):
        raise ValueError(f"adaptive rollouts: need {K} positive costs, got {costs}")
    variances = knot_variances(first_round, prior_var)
    counts = [len(x) for x in first_round]
    extra = [0] * K
    left = float(budget)
    while True:
        eligible = [i for i in range(K) if costs[i] <= left + 1e-9]
        if not eligible:
            return extra
        se = standard_errors(variances, counts)
        best = min(eligible, key=lambda i: (-se[i], counts[i], i))  # largest SE, then fewer rollouts, then earlier
        extra[best] += 1
        counts[best] += 1
        left -= costs[best]
