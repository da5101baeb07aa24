"""RLOO (arXiv 2402.14740; TRePO arXiv 2506.02553 Eqs. 36-37; docs/algorithms.md, "RLOO"), with the
leave-one-out erratum fixed:

    b_k = 1/(K-1) sum_{j != k} r_j,   A_k = r_k - b_k = K/(K-1) (r_k - mean r)

(TRePO Eq. 36 prints the sum over all k, which shadows the index and keeps r_k in its own baseline.) r_k = sum of
the trajectory's token_rewards. The loss is the plain policy gradient -A log pi, no ratio and no clipping
("does not use an important sampling clipping strategy"), so run one on-policy step per batch
(optimization_num = 1).
A group with a single member has no leave-one-out baseline: its advantage is 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from rlx.algos.base import TREE_ROWS, AdvantageInputs, AlgoConfig, Algorithm, KLConfig, register
from rlx.algos.checks import check_choice
from rlx.algos.losses import plain_policy_loss
from rlx.algos.stats import group_stats, sequence_scores
from rlx.algos.tempo import prefix_td, row_tokens


@dataclass(frozen=True)
class RLOOConfig(AlgoConfig):
    name: str = "rloo"
    samples_per_prompt: int = 4  # K >= 2
    tempo: bool = False  # + TD terms at the group's branching tokens (rlx/algos/tempo.py)
    kl: KLConfig = field(default_factory=lambda: KLConfig(beta=0.0, estimator="k1", mode="reward_response"))

    def group_baseline(self) -> str | None:
        return "RLOO's leave-one-out baseline"

    def validate(self) -> None:
        check_choice("tempo", self.tempo, (True, False))
        super().validate()


def rloo_requires(cfg: RLOOConfig) -> frozenset[str]:
    """The rollout record's token ids for TEMPO's prefix tree."""
    return frozenset({TREE_ROWS}) if cfg.tempo else frozenset()


def leave_one_out(scores: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
    """r_k - mean_{j != k, same group} r_j -> [N]; 0 for singleton groups."""
    g = group_stats(scores, group_ids)
    total = g.total[g.inv]  # [N] group sums
    count = g.count[g.inv]  # [N] K
    baseline = (total - scores) / (count - 1).clamp(min=1)  # [N]
    return torch.where(count > 1, scores - baseline, torch.zeros_like(scores))


def rloo_advantages(inp: AdvantageInputs, cfg: RLOOConfig) -> torch.Tensor:
    scores = sequence_scores(inp.token_rewards, inp.response_mask)  # [B]
    adv = leave_one_out(scores, inp.group_ids).unsqueeze(1) * inp.response_mask  # [B, T]
    if cfg.tempo:  # TEMPO on RLOO: V(prefix) = mean raw reward of the responses through it
        return adv + prefix_td(row_tokens(inp), scores, inp.group_ids, inp.response_mask)
    return adv


RLOO = register(
    Algorithm(
        name="rloo",
        config_cls=RLOOConfig,
        advantages=rloo_advantages,
        policy_loss=plain_policy_loss,
        requires=rloo_requires,
    )
)
