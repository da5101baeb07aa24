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
from rlx.train.rollout import drafts, generate
from rlx.train.rollout.drafts import DraftTree
from rlx.train.rollout.scoring import Scorer


def two_rounds(sampler, trees: list[DraftTree], plans: list[list[Knot]], cfg, step: int, scorer: Scorer,
               ) -> dict[str, float]:
    """Both rounds as drafts of `trees` (round 2's rollouts placed after their knot's round-1 rollouts); round 1
    and the responses are scored by one `scorer.score` call, which the record keeps (round 2's rollouts are
    scored with the record's other nodes)."""
    m0 = cfg.algo.first_round_rollouts()
    responses = drafts.responses(trees)
    head = [[replace(k, temperatures=k.temperatures[:m0]) for k in knots] for knots in plans]
    added = generate.generate_branches(sampler, responses, head, cfg, step)
    scorer.score(trees)
    where = [(b, i) for b, knots in enumerate(head) for i in range(len(knots))]
    if not where:
        return {}
    nodes = [[responses[b][0].nodes[j] for j in added[b][i]] for b, i in where]
    rewards = [[d.score.reward for d in knot] for knot in nodes]
    costs = [max(1.0, sum(len(d.gen.token_ids) for d in knot) / len(knot)) for knot in nodes]
    budget = sum(max(0, len(plans[b][i].temperatures) - m0) * c for (b, i), c in zip(where, costs))
    extra = allocate_rollouts(rewards, int(budget), costs)
    tail: list[list[Knot]] = [[] for _ in responses]
    for (b, i), n in zip(where, extra):
        temps = plans[b][i].temperatures
        tail[b].append(replace(plans[b][i], temperatures=tuple(temps[min(m, len(temps) - 1)]
                                                                for m in range(m0, m0 + n))))
    generate.generate_branches(sampler, responses, tail, cfg, step, phase="branch2")
    variances = knot_variances(rewards)
    before = standard_errors(variances, [len(r) for r in rewards])
    after = standard_errors(variances, [len(r) + n for r, n in zip(rewards, extra)])
    return {"adaptive_se_before": sum(before) / len(before), "adaptive_se_after": sum(after) / len(after),
            "adaptive_se_max_before": max(before), "adaptive_se_max_after": max(after),
            "adaptive_extra_rollouts": float(sum(extra))}
