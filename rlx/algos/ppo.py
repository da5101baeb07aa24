"""PPO with a critic (spec §2.1): S002 Eqs. 32-33, S003 Eq. 2.18 (clipped policy + value + entropy), GAE
S003 Eqs. 2.14-2.17, per-token KL reward S003 Eq. 3.9 / §3.5.1.

Advantages: GAE(gamma, lam) over every valid token with the critic V_old(s_t) (state before token t),
V_{T+1} = 0, through the SAME `common.knot_gae` routine as TRePO (spec §1.14), then `adv_norm`.
Value target [OWN, the seeds leave it undefined]: V_targ = A + V_old (lambda-return, before normalisation).
Loss (Eq. 2.18, minimised): -L^CLIP + vf_coef * L^VF - entropy_coef * S, where the value part is returned by
`value_loss` separately so the critic can have its own optimiser (`critic_lr`); add them for a shared trunk.
No value clipping by default (not in the seeds); `vf_clip > 0` turns on PPO2-style clipping around V_old.
KL: `kl.mode=reward_token` (default) adds r_t = -beta * k1(pi_old, pi_ref) to the rewards via
`common.kl_token_rewards`, before `advantages` is called (S003 §3.5.1).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from rlx.algos.base import AdvantageInputs, Algorithm, KLConfig, register
from rlx.algos.common import (
    agg_loss,
    check_common,
    check_range,
    clipped_policy_loss,
    gae,
    masked_mean,
    normalize_advantages,
)


@dataclass(frozen=True)
class PPOConfig:
    name: str = "ppo"
    gamma: float = 1.0  # gamma = 1 in LLM practice (S002 §2.1)
    lam: float = 0.95  # S002 Remark 6: 0.9-0.95
    clip_eps: float = 0.2
    vf_coef: float = 0.5  # c1 of Eq. 2.18
    vf_clip: float = 0.0  # 0 = off; > 0: clip V to V_old +- vf_clip (not in the seeds)
    critic_lr: float = 1e-5
    entropy_coef: float = 0.0  # c2 of Eq. 2.18
    optimization_num: int = 1  # K epochs (S003 Alg. 2)
    loss_agg: str = "token_mean"
    adv_norm: str = "batch"
    samples_per_prompt: int = 1
    kl: KLConfig = field(default_factory=lambda: KLConfig(beta=0.0, estimator="k1", mode="reward_token"))

    def validate(self) -> None:
        check_common(self)
        check_range("vf_coef", self.vf_coef, lo=0.0)
        check_range("vf_clip", self.vf_clip, lo=0.0)
        check_range("critic_lr", self.critic_lr, lo=0.0, lo_open=True)


def _values(inp: AdvantageInputs) -> torch.Tensor:
    if inp.values is None:
        raise ValueError("PPO needs AdvantageInputs.values (critic V(s_t) per token)")
    return inp.values.detach()


def ppo_advantages(inp: AdvantageInputs, cfg: PPOConfig) -> torch.Tensor:
    """GAE(gamma, lam) with the critic, then adv_norm -> [B, T]."""
    adv, _ = gae(inp.token_rewards, _values(inp), inp.response_mask, cfg.gamma, cfg.lam)  # [B, T]
    return normalize_advantages(adv, inp.response_mask, inp.group_ids, cfg.adv_norm)


def ppo_value_targets(inp: AdvantageInputs, cfg: PPOConfig) -> torch.Tensor:
    """V_targ = A^GAE + V_old (un-normalised) -> [B, T]; 0 on padding."""
    _, returns = gae(inp.token_rewards, _values(inp), inp.response_mask, cfg.gamma, cfg.lam)
    return returns


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    cfg: PPOConfig,
) -> tuple[torch.Tensor, dict[str, float]]:
    """vf_coef * agg (V - V_targ)^2 (L^VF of S003 Eq. 2.18). values [B, T] with grad; old_values, returns
    [B, T] frozen. With vf_clip > 0: max of the clipped and unclipped squared errors (PPO2 practice)."""
    err = (values - returns) ** 2  # [B, T]
    if cfg.vf_clip > 0:
        clipped = old_values + torch.clamp(values - old_values, -cfg.vf_clip, cfg.vf_clip)  # [B, T]
        err = torch.maximum(err, (clipped - returns) ** 2)
    vf = agg_loss(err, mask, cfg.loss_agg)
    metrics = {
        "vf_loss": vf.item(),
        "value_mean": masked_mean(values.detach(), mask).item(),
        "return_mean": masked_mean(returns, mask).item(),
    }
    return cfg.vf_coef * vf, metrics


PPO = register(
    Algorithm(
        name="ppo",
        config_cls=PPOConfig,
        advantages=ppo_advantages,
        policy_loss=clipped_policy_loss,
        needs_critic=True,
        value_loss=value_loss,
        value_targets=ppo_value_targets,
        citation="S002 Eqs. 32-33, Eq. 29; S003 Eqs. 2.14-2.18, 3.9; spec §2.1",
    )
)
