"""The two-round branch phase of `algo.adaptive_rollouts` (rlx/algos/adaptive_rollouts.py; VinePPO arXiv
2410.01679's confidence-interval-aware rollout counts, generalised to one budget per step).

Round 1 generates the first `algo.adaptive_first_round` (M0) rollouts of every planned knot and scores them.
The rest of the fixed-M schedule's branch tokens is then handed out across ALL knots of the step by
`allocate_rollouts`, greedy on the largest standard error, with each knot's cost = the mean length of its
round-1 continuations (at least 1 token); the budget is sum_i (M_i - M0) cost_i, i.e. the tokens the fixed
schedule's remaining rollouts are expected to take, so the step spends no more branch tokens than the fixed
schedule in expectation. Round 2 generates those extra rollouts (seed stream `branch2`); rollout m of a knot
keeps the schedule's temperature tau_m (tau_{M-1} beyond M). The knot values stay the paper's means over
all of a knot's rollouts (see the module docstring of rlx/algos/adaptive_rollouts.py for the bias).
Logged: `adaptive_se_before` / `adaptive_se_after` (the mean knot standard error sqrt(var_i / n_i) with
round 1's variance estimates and the counts before / after round 2), their maxima, and `adaptive_extra_rollouts`.
"""

from __future__ import annotations

from dataclasses import replace

from rlx.algos.adaptive_rollouts import allocate_rollouts, knot_variances, standard_errors
from rlx.algos.base import Knot
from rlx.train.rollout import generate as rollout


def first_round(algo_cfg) -> int:
    """M0 when the algorithm's config turns adaptive rollouts on, else 0 (the fixed schedule)."""
    return int(getattr(algo_cfg, "adaptive_first_round", 0)) if getattr(algo_cfg, "adaptive_rollouts", False) else 0


def two_rounds(sampler, trajs, plans: list[list[Knot]], cfg, step: int, score_fn,
               ) -> tuple[list[rollout.Branches], dict[str, float]]:
    """Both rounds; `score_fn(trajs, branches)` (the trainer's `Scorer.score`) rewards round 1, whose rewards the
    rollout record keeps (round 2's rollouts are scored with the record's other nodes)."""
    m0 = first_round(cfg.algo)
    head = [[replace(k, temperatures=k.temperatures[:m0]) for k in knots] for knots in plans]
    branches = rollout.generate_branches(sampler, trajs, head, cfg, step)
    score_fn(trajs, branches)
    where = [(b, i) for b, br in enumerate(branches) for i in range(len(br.knots))]
    if not where:
        return branches, {}
    rewards = [branches[b].rewards[i] for b, i in where]
    costs = [max(1.0, sum(len(g.token_ids) for g in branches[b].rollouts[i]) / len(branches[b].rollouts[i]))
             for b, i in where]
    budget = sum(max(0, len(plans[b][i].temperatures) - m0) * c for (b, i), c in zip(where, costs))
    extra = allocate_rollouts(rewards, int(budget), costs)
    tail = [[] for _ in trajs]
    for (b, i), n in zip(where, extra):
        temps = plans[b][i].temperatures
        tail[b].append(replace(plans[b][i], temperatures=tuple(temps[min(m, len(temps) - 1)]
                                                                for m in range(m0, m0 + n))))
    more = rollout.generate_branches(sampler, trajs, tail, cfg, step, phase="branch2")
    for br, add, knots in zip(branches, more, tail):
        br.knots = [replace(k, temperatures=k.temperatures + a.temperatures) for k, a in zip(br.knots, knots)]
        br.rollouts = [gens + extra_gens for gens, extra_gens in zip(br.rollouts, add.rollouts)]
    variances = knot_variances(rewards)
    before = standard_errors(variances, [len(r) for r in rewards])
    after = standard_errors(variances, [len(r) + n for r, n in zip(rewards, extra)])
    return branches, {"adaptive_se_before": sum(before) / len(before), "adaptive_se_after": sum(after) / len(after),
                      "adaptive_se_max_before": max(before), "adaptive_se_max_after": max(after),
                      "adaptive_extra_rollouts": float(sum(extra))}
