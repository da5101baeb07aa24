"""ReMax (arXiv 2310.10505; TRePO arXiv 2506.02553 Eqs. 38-39; docs/algorithms.md, "ReMax").
The baseline b = r_greedy is the reward of a temperature-0 decode of the same prompt, shared by all tokens:
A_t = r(W) - r_greedy,  loss = -A log pi (no clipping).

The greedy decode is requested through the branch machinery: `plan_branches` returns one knot at t = 1 (keep
no response token) with temperature 0.0, and the advantage reads its reward from branch_rewards[b][0][0].
This is TRePO with D = {1}, M = 1, tau = 0, pooling = none.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from rlx.algos.base import BRANCH_ROLLOUTS, AdvantageInputs, AlgoConfig, Algorithm, KLConfig, Knot, register
from rlx.algos.losses import plain_policy_loss
from rlx.algos.stats import sequence_scores


@dataclass(frozen=True)
class ReMaxConfig(AlgoConfig):
    name: str = "remax"
    kl: KLConfig = field(default_factory=lambda: KLConfig(beta=0.0, estimator="k1", mode="reward_response"))


def needs_branches(cfg: AlgoConfig) -> frozenset[str]:
    return frozenset({BRANCH_ROLLOUTS})


def remax_plan_branches(
    response_ids: Sequence[int], step_starts: Sequence[int], cfg: ReMaxConfig, rng: torch.Generator
) -> list[Knot]:
    """One greedy (tau = 0) decode from the prompt."""
    return [Knot(t=1, temperatures=(0.0,))]


def remax_advantages(inp: AdvantageInputs, cfg: ReMaxConfig) -> torch.Tensor:
    """r(W) - r_greedy on every valid token -> [B, T]."""
    scores = sequence_scores(inp.token_rewards, inp.response_mask)  # [B]
    greedy = []
    for b, rollouts in enumerate(inp.branch_rewards):
        if not rollouts or not rollouts[0]:
            raise ValueError(f"ReMax: trajectory {b} has no greedy rollout at knot 1")
        greedy.append(float(rollouts[0][0].sum()))
    baseline = torch.tensor(greedy, dtype=scores.dtype, device=scores.device)  # [B]
    return (scores - baseline).unsqueeze(1) * inp.response_mask  # [B, T]


REMAX = register(
    Algorithm(
        name="remax",
        config_cls=ReMaxConfig,
        advantages=remax_advantages,
        policy_loss=plain_policy_loss,
        plan_branches=remax_plan_branches,
        requires=needs_branches,
    )
)
