"""CISPO: Clipped IS-weight Policy Optimisation (MiniMax-M1, arXiv 2506.13585, §3.1 Eqs. 4-5; docs/algorithms.md,
"CISPO").

PPO/GRPO clipping zeroes the gradient of every token whose ratio left the trust region, and in long reasoning
chains those are often the rare "fork" tokens (However, Wait, ...) that matter most. CISPO keeps every token's
gradient and clips the importance weight instead, as a stop-gradient coefficient on the REINFORCE term:

    J(theta) = E[ 1 / sum_i |o_i| * sum_i sum_t  sg(r^_{i,t}) A_{i,t} log pi_theta(o_{i,t} | q, o_{i,<t}) ]   (Eq. 4)
    r^_{i,t} = clip(r_{i,t}, 1 - eps_low, 1 + eps_high),  r_{i,t} = pi_theta / pi_old                       (Eq. 5)

with the group-relative advantages of GRPO (any algorithm's advantages work); `algo=cispo` registers exactly
that pairing: GRPO's outcome advantages (arXiv 2402.03300 §4.1.2) and this loss. MiniMax-M1 tunes only eps_high
and sets no lower bound in practice (a large eps_low); the loss here is -J, aggregated with token_mean
(Eq. 4's 1 / sum_i |o_i|) by default. At r = 1 (the first step on a fresh batch) the gradient equals the plain
policy gradient, as for PPO.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from rlx.algos.base import AggScale, Algorithm, ClippedAlgoConfig, KLConfig, LossInputs, register
from rlx.algos.checks import check_choice, check_int, check_range
from rlx.algos.grpo import outcome_advantages
from rlx.algos.losses import add_regularisers, agg_loss, ratio_metrics
from rlx.algos.stats import masked_mean


def cispo_token_loss(
    logp: torch.Tensor, old_logp: torch.Tensor, adv: torch.Tensor, mask: torch.Tensor,
    clip_eps_low: float, clip_eps_high: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-token loss -sg(r^) A log pi [B, T], the clipped weight r^ [B, T] without grad); 0 on padding."""
    with torch.no_grad():
        ratio = torch.exp((logp - old_logp) * mask)  # [B, T]; 1 on padding
        weight = torch.clamp(ratio, 1.0 - clip_eps_low, 1.0 + clip_eps_high)  # [B, T] sg(r^), Eq. 5
    return -weight * adv * logp * mask, weight


def cispo_loss(
    logp: torch.Tensor, old_logp: torch.Tensor, adv: torch.Tensor, mask: torch.Tensor,
    clip_eps_low: float, clip_eps_high: float, loss_agg: str = "token_mean", scale: AggScale | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """-Eq. 4 as a loss to minimise (`scale`: the optimizer step's counts, see `agg_loss`). Metrics:
    is_weight_mean (mean r^), clip_frac (share of valid tokens whose weight was clipped: their gradient is
    scaled, not dropped as in PPO)."""
    if clip_eps_low < 0.0 or clip_eps_high < 0.0:
        raise ValueError(f"algo.clip_eps_low and algo.clip_eps_high must be >= 0, got {clip_eps_low!r}, "
                         f"{clip_eps_high!r}")
    loss_mat, weight = cispo_token_loss(logp, old_logp, adv, mask, clip_eps_low, clip_eps_high)  # [B, T]
    loss = agg_loss(loss_mat, mask, loss_agg, scale)
    with torch.no_grad():
        ratio = torch.exp((logp - old_logp) * mask)  # [B, T]
        clipped = (weight != ratio).to(mask.dtype)  # [B, T]
        metrics = {"is_weight_mean": masked_mean(weight, mask).item(), "clip_frac": masked_mean(clipped, mask).item()}
    return loss, metrics


# ----------------------------------------------------------------------------------------------------------
# algo=cispo: GRPO's group advantages + the CISPO loss


@dataclass(frozen=True)
class CISPOConfig(ClippedAlgoConfig):
    """`algo=cispo`. clip_eps_low / clip_eps_high (null = clip_eps) bound the IS weight, not the gradient.
    MiniMax-M1 sets no effective lower bound and tunes eps_high: the defaults (0.2, 0.28 as DAPO) are
    untuned on rlx's task."""

    name: str = "cispo"
    samples_per_prompt: int = 8  # G
    loss_agg: str = "token_mean"  # Eq. 4's 1 / sum_i |o_i|
    clip_eps_high: float | None = 0.28
    scale_by_std: bool = True  # GRPO's (r - mean) / std; False: r - mean
    ddof: int = 0
    std_eps: float = 1e-6
    kl: KLConfig = field(default_factory=lambda: KLConfig(beta=0.0, estimator="k3", mode="loss"))  # as GRPO

    def validate(self) -> None:
        super().validate()
        check_choice("scale_by_std", self.scale_by_std, (True, False))
        check_int("ddof", self.ddof, 0)
        check_range("std_eps", self.std_eps, lo=0.0)

    def group_baseline(self) -> str | None:
        return "CISPO's group-normalised advantage"


def cispo_policy_loss(inp: LossInputs, cfg: CISPOConfig) -> tuple[torch.Tensor, dict[str, float]]:
    """-Eq. 4 aggregated by loss_agg over the optimizer step (micro-batch scale), + beta KL - entropy bonus."""
    mask = inp.response_mask  # [B, T]
    loss, metrics = cispo_loss(inp.logp, inp.old_logp, inp.advantages, mask, *cfg.clip_range(), cfg.loss_agg,
                               inp.scale)
    metrics["approx_kl"] = ratio_metrics(inp.logp, inp.old_logp, mask)["approx_kl"]
    return add_regularisers(inp, cfg, loss, metrics), metrics


CISPO = register(
    Algorithm(
        name="cispo",
        config_cls=CISPOConfig,
        advantages=outcome_advantages,  # GRPO's: CISPOConfig has its fields
        policy_loss=cispo_policy_loss,
    )
)
