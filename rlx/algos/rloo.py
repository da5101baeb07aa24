"""RLOO (S002 Eqs. 36-37; spec §2.3), with the leave-one-out erratum fixed:

    b_k = 1/(K-1) sum_{j != k} r_j,   A_k = r_k - b_k = K/(K-1) (r_k - mean r)

(S002 prints the sum over all k, which shadows the index and keeps r_k in its own baseline.) r_k = sum of
the trajectory's token_rewards. The loss is the plain policy gradient -A log pi, no ratio and no clipping
("does not use an important sampling clipping strategy"), so run one on-policy step per batch
(optimization_num = 1).
A group with a single member has no leave-one-out baseline: its advantage is 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from rlx.algos.base import AdvantageInputs, Algorithm, KLConfig, register
from rlx.algos.common import check_common, plain_policy_loss, sequence_scores


@dataclass(frozen=True)
class RLOOConfig:
    name: str = "rloo"
    samples_per_prompt: int = 4  # K >= 2
    loss_agg: str = "token_mean"
    optimization_num: int = 1
    kl: KLConfig = field(default_factory=lambda: KLConfig(beta=0.0, estimator="k1", mode="reward_response"))
    entropy_coef: float = 0.0

    def validate(self) -> None:
        check_common(self)
        if self.samples_per_prompt < 2:
            raise ValueError(f"algo.samples_per_prompt must be >= 2 for RLOO, got {self.samples_per_prompt}")


def leave_one_out(scores: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
    """r_k - mean_{j != k, same group} r_j -> [N]; 0 for singleton groups."""
    _, inv = torch.unique(group_ids, return_inverse=True)  # [N]
    n_groups = int(inv.max()) + 1 if inv.numel() else 0
    zeros = scores.new_zeros(n_groups)
    total = zeros.scatter_add(0, inv, scores)[inv]  # [N] group sums
    count = zeros.scatter_add(0, inv, torch.ones_like(scores))[inv]  # [N] K
    baseline = (total - scores) / (count - 1).clamp(min=1)  # [N]
    return torch.where(count > 1, scores - baseline, torch.zeros_like(scores))


def rloo_advantages(inp: AdvantageInputs, cfg: RLOOConfig) -> torch.Tensor:
    scores = sequence_scores(inp.token_rewards, inp.response_mask)  # [B]
    return leave_one_out(scores, inp.group_ids).unsqueeze(1) * inp.response_mask  # [B, T]


RLOO = register(
    Algorithm(
        name="rloo",
        config_cls=RLOOConfig,
        advantages=rloo_advantages,
        policy_loss=plain_policy_loss,
        citation="S002 Eqs. 36-37 (leave-one-out erratum fixed); spec §2.3",
    )
)
