"""REINFORCE (S003 §2.2 Alg. 1; S002 Corollary 1 Eq. 27; spec §2.5).

  full return   A_t = R(W) - b on every token, R = G^gamma_1 = sum_t gamma^(t-1) r_t (S003 Alg. 1: gamma=1)
  reward_to_go  A_t = G^gamma_t - b, G^gamma_t = sum_{j>=t} gamma^(j-t) r_j (causality, S003 A.1.1)
  baseline      none | batch_mean | group_mean: b = mean of R over the batch / the prompt's group (the
                "suboptimal" constant baseline of S003 §2.2; it includes the sample itself, as in the seed)
Loss: plain -A log pi (no ratio), one on-policy step per batch. gamma only matters with per-token rewards
(e.g. kl.mode=reward_token) or gamma < 1 (spec §1.14).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from rlx.algos.base import AdvantageInputs, Algorithm, KLConfig, register
from rlx.algos.common import check_choice, check_common, discounted_returns, first_valid, plain_policy_loss

BASELINES = ("none", "batch_mean", "group_mean")


@dataclass(frozen=True)
class REINFORCEConfig:
    name: str = "reinforce"
    gamma: float = 1.0
    reward_to_go: bool = False
    baseline: str = "none"  # none | batch_mean | group_mean
    samples_per_prompt: int = 1
    loss_agg: str = "token_mean"
    optimization_num: int = 1
    kl: KLConfig = field(default_factory=lambda: KLConfig(beta=0.0, estimator="k1", mode="reward_response"))
    entropy_coef: float = 0.0

    def validate(self) -> None:
        check_common(self)
        check_choice("baseline", self.baseline, BASELINES)
        check_choice("reward_to_go", self.reward_to_go, (True, False))


def constant_baseline(returns: torch.Tensor, group_ids: torch.Tensor, mode: str) -> torch.Tensor:
    """b per trajectory from the trajectory returns [B] -> [B]."""
    if mode == "none":
        return torch.zeros_like(returns)
    if mode == "batch_mean":
        return returns.mean().expand_as(returns) if returns.numel() else returns
    if mode == "group_mean":
        _, inv = torch.unique(group_ids, return_inverse=True)  # [B]
        n_groups = int(inv.max()) + 1 if inv.numel() else 0
        zeros = returns.new_zeros(n_groups)
        total = zeros.scatter_add(0, inv, returns)
        count = zeros.scatter_add(0, inv, torch.ones_like(returns))
        return (total / count)[inv]
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
        citation="S003 §2.2 Alg. 1, A.1.1; S002 Corollary 1 Eq. 27; spec §2.5",
    )
)
