"""PPO with a critic (PPO arXiv 1707.06347 Eqs. 7, 9; docs/algorithms.md, "PPO"): clipped policy loss, value
loss and entropy bonus; GAE (arXiv 1506.02438 Eq. 16); per-token KL reward (docs/algorithms.md, "KL to the
reference").

Advantages: GAE(gamma, lam) over every valid token with the critic V_old(s_t) (state before token t),
V_{T+1} = 0, through the SAME `gae.knot_gae` routine as TRePO, then `adv_norm`.
Value target (the papers leave it open): V_targ = A + V_old (lambda-return, before normalisation).
Loss (Eq. 9, minimised): -L^CLIP + vf_coef * L^VF - entropy_coef * S, where the value part is returned by
`value_loss` separately so the critic can have its own optimiser (`algo.critic.lr`); add them for a shared trunk.
No value clipping by default; `critic.vf_clip > 0` turns on PPO2-style clipping around V_old.
KL: `kl.mode=reward_token` (default) adds r_t = -beta * k1(pi_old, pi_ref) to the rewards via
`kl.kl_token_rewards`, before `advantages` is called.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from rlx.algos.base import (
    CRITIC_VALUES,
    AdvantageInputs,
    Algorithm,
    ClippedAlgoConfig,
    CriticConfig,
    KLConfig,
    ValueLossInputs,
    register,
)
from rlx.algos.gae import gae
from rlx.algos.losses import agg_loss, clipped_policy_loss
from rlx.algos.stats import masked_mean, normalize_advantages


@dataclass(frozen=True)
class PPOConfig(ClippedAlgoConfig):
    name: str = "ppo"
    gamma: float = 1.0  # gamma = 1 in LLM practice (TRePO paper §2.1)
    lam: float = 0.95  # TRePO paper Remark 6: 0.9-0.95
    critic: CriticConfig = field(default_factory=CriticConfig)  # value model: lr, vf_coef, vf_clip
    adv_norm: str = "batch"
    kl: KLConfig = field(default_factory=lambda: KLConfig(beta=0.0, estimator="k1", mode="reward_token"))

    def validate(self) -> None:
        super().validate()
        self.critic.validate()


def ppo_requires(cfg: PPOConfig) -> frozenset[str]:
    return frozenset({CRITIC_VALUES})


def ppo_advantages(inp: AdvantageInputs, cfg: PPOConfig) -> torch.Tensor:
    """GAE(gamma, lam) with the critic, then adv_norm -> [B, T]."""
    adv, _ = gae(inp.token_rewards, inp.values.detach(), inp.response_mask, cfg.gamma, cfg.lam)  # [B, T]
    return normalize_advantages(adv, inp.response_mask, inp.group_ids, cfg.adv_norm)


def ppo_value_targets(inp: AdvantageInputs, cfg: PPOConfig) -> torch.Tensor:
    """V_targ = A^GAE + V_old (un-normalised) -> [B, T]; 0 on padding."""
    _, returns = gae(inp.token_rewards, inp.values.detach(), inp.response_mask, cfg.gamma, cfg.lam)
    return returns


def value_loss(inp: ValueLossInputs, cfg: PPOConfig) -> tuple[torch.Tensor, dict[str, float]]:
    """vf_coef * agg (V - V_targ)^2 (L^VF of PPO, arXiv 1707.06347 Eq. 9). With critic.vf_clip > 0: max of the
    clipped and unclipped squared errors (PPO2 practice)."""
    values, old_values, returns, mask = inp.values, inp.old_values, inp.returns, inp.response_mask  # [B, T]
    err = (values - returns) ** 2  # [B, T]
    if cfg.critic.vf_clip > 0:
        clip = cfg.critic.vf_clip
        clipped = old_values + torch.clamp(values - old_values, -clip, clip)  # [B, T]
        err = torch.maximum(err, (clipped - returns) ** 2)
    vf = agg_loss(err, mask, cfg.loss_agg, inp.scale)
    metrics = {
        "vf_loss": vf.item(),
        "value_mean": masked_mean(values.detach(), mask).item(),
        "return_mean": masked_mean(returns, mask).item(),
    }
    return cfg.critic.vf_coef * vf, metrics


PPO = register(
    Algorithm(
        name="ppo",
        config_cls=PPOConfig,
        advantages=ppo_advantages,
        policy_loss=clipped_policy_loss,
        requires=ppo_requires,
        value_loss=value_loss,
        value_targets=ppo_value_targets,
    )
)
