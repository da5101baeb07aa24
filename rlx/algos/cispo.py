"""CISPO: Clipped IS-weight Policy Optimisation (MiniMax-M1, arXiv 2506.13585, §3.1 Eqs. 4-5).

PPO/GRPO clipping zeroes the gradient of every token whose ratio left the trust region, and in long reasoning
chains those are often the rare "fork" tokens (However, Wait, ...) that matter most. CISPO keeps every token's
gradient and clips the importance weight instead, as a stop-gradient coefficient on the REINFORCE term:

    J(theta) = E[ 1 / sum_i |o_i| * sum_i sum_t  sg(r^_{i,t}) A_{i,t} log pi_theta(o_{i,t} | q, o_{i,<t}) ]   (Eq. 4)
    r^_{i,t} = clip(r_{i,t}, 1 - eps_low, 1 + eps_high),  r_{i,t} = pi_theta / pi_old                       (Eq. 5)

with the group-relative advantages of GRPO (any algorithm's advantages work). MiniMax-M1 tunes only eps_high
and sets no lower bound in practice (a large eps_low); the loss here is -J, aggregated with token_mean
(Eq. 4's 1 / sum_i |o_i|) by default. At r = 1 (the first step on a fresh batch) the gradient equals the plain
policy gradient, as for PPO.
"""

from __future__ import annotations

import torch

from rlx.algos.losses import agg_loss
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
    clip_eps_low: float, clip_eps_high: float, loss_agg: str = "token_mean",
) -> tuple[torch.Tensor, dict[str, float]]:
    """-Eq. 4 as a loss to minimise. Metrics: is_weight_mean (mean r^), clip_frac (share of valid tokens whose
    weight was clipped: their gradient is scaled, not dropped as in PPO)."""
    if clip_eps_low < 0.0 or clip_eps_high < 0.0:
        raise ValueError(f"algo.clip_eps_low and algo.clip_eps_high must be >= 0, got {clip_eps_low!r}, "
                         f"{clip_eps_high!r}")
    loss_mat, weight = cispo_token_loss(logp, old_logp, adv, mask, clip_eps_low, clip_eps_high)
    loss = agg_loss(loss_mat, mask, loss_agg)
    with torch.no_grad():
        ratio = torch.exp((logp - old_logp) * mask)  # [B, T]
        clipped = (weight != ratio).to(mask.dtype)  # [B, T]
        metrics = {"is_weight_mean": masked_mean(weight, mask).item(), "clip_frac": masked_mean(clipped, mask).item()}
    return loss, metrics
