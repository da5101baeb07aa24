"""REINFORCE (TRePO arXiv 2506.02553 Corollary 1, Eq. 27; docs/algorithms.md, "REINFORCE").

  full return   A_t = R(W) - b on every token, R = G^gamma_1 = sum_t gamma^(t-1) r_t
  reward_to_go  A_t = G^gamma_t - b, G^gamma_t = sum_{j>=t} gamma^(j-t) r_j (causality)
  baseline      none | batch_mean | group_mean: b = mean of R over the batch / the prompt's group (a constant
                baseline; it includes the sample itself)
Loss: plain -A log pi (no ratio), one on-policy step per batch. gamma only matters with per-token rewards
(e.g. kl.mode=reward_token) or gamma < 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from rlx.algos.base import AdvantageInputs, AlgoConfig, Algorithm, KLConfig, register
from rlx.algos.checks import check_choice
from rlx.algos.gae import discounted_returns
from rlx.algos.losses import plain_policy_loss
from rlx.algos.stats import first_valid, group_stats

BASELINES = ("none", "batch_mean", "group_mean")


@dataclass(frozen=True)
class REINFORCEConfig(AlgoConfig):
    name: str = "reinforce"
    gamma: float = 1.0
    reward_to_go: bool = False
    baseline: str = "none"  # none | batch_mean | group_mean
    kl: KLConfig = field(default_factory=lambda: KLConfig(beta=0.0, estimator="k1", mode="reward_response"))

    def group_baseline(self) -> str | None:
        return "baseline=group_mean" if self.baseline == "group_mean" else super().group_baseline()

    def validate(self) -> None:
        super().validate()
        check_choice("baseline", self.baseline, BASELINES)
        check_choice("reward_to_go", self.reward_to_go, (True, False))


def constant_baseline(returns: torch.Tensor, group_ids: torch.Tensor, mode: str) -> torch.Tensor:
    """b per trajectory from the trajectory returns [B] -> [B]."""
    if mode == "none":
        return torch.zeros_like(returns)
    if mode == "batch_mean":
        return returns.mean().expand_as(returns) if returns.numel() else returns
    if mode == "group_mean":
        g = group_stats(returns, group_ids)
        return g.mean[g.inv]
    raise ValueError(f"algo.baseline must be one of {list(BASELINES)}, got {mode!r}")


def reinforce_advantages(inp: AdvantageInputs, cfg: REINFORCEConfig) -> torch.Tensor:
    mask = inp.response_mask  # [B, T]
    to_go = discounted_returns(inp.token_rewards, mask, cfg.gamma)  # [B, T] G^gamma_t
    full = first_valid(to_go, mask)  # [B] R = G^gamma_1 (0 for empty rows)
    b = constant_baseline(full, inp.group_ids, cfg.baseline)  # [B]
    weight = to_go if cfg.reward_to_go else full.unsqueeze(1).expand_as(mask)  # [B, T]
    return (weight - b.unsqueeze(1)) * mask


REINFORCE = register(
    Algorithm(
        name="reinforce",
        config_cls=REINFORCEConfig,
        advantages=reinforce_advantages,
        policy_loss=plain_policy_loss,
    )
)
