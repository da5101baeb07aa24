"""Decoupled PPO: the clipped objective for batches sampled by an older policy than the one being updated.

With asynchronous rollouts (`train.max_staleness` k >= 1, docs/pending/async.md) three policies meet:

  behaviour  pi_behav: the sampler's weights when it generated the tokens (up to k updates old); its log-probs
             are the sampler's own, kept in every rollout-record node (`Node.logprobs`);
  proximal   pi_prox: the trainer's weights before this step's update (pi_old, recomputed by a no-grad forward);
  current    pi_theta: the weights being optimised.

Standard PPO treats the batch as a sample of pi_prox and silently trains off-policy. Decoupled PPO (Hilton et
al. 2022, "Batch size-invariance for policy optimization", arXiv 2110.00641, Eq. 2; AReaL, arXiv 2505.24298,
Eq. 5) clips around the proximal policy and corrects for the behaviour policy with a stop-gradient weight:

    J(theta) = E_{y ~ pi_behav} [ w_t * min(r_t A_t, clip(r_t, 1 - eps_low, 1 + eps_high) A_t) ]
    w_t = pi_prox(y_t | s_t) / pi_behav(y_t | s_t)      r_t = pi_theta(y_t | s_t) / pi_prox(y_t | s_t)

Because w_t >= 0 is detached, w_t * min(r A, clip(r) A) = min(r (w A), clip(r) (w A)): the weight can multiply
the advantage before any algorithm's loss, which is how the update applies it (`rlx.train.learn.correction`), the
same way rollout correction's TIS weight enters (w_t is exactly rollout correction's rho_t =
pi_old / pi_sampler). The rollout-correction modes therefore compose: `tis` caps w_t at C, `mis` / `seq_mask`
reject tokens / sequences out of band and keep w_t on the rest; `none` uses w_t uncapped (its log clamped to
+-20 as every ratio here).
"""

from __future__ import annotations

import math

import torch

from rlx.algos.losses import AggScale, clipped_surrogate
from rlx.algos.rollout_correction import sampler_log_ratio
from rlx.algos.stats import masked_mean


def behaviour_weights(prox_logp: torch.Tensor, behav_logp: torch.Tensor, mask: torch.Tensor,
                      cap: float | None = None) -> torch.Tensor:
    """w_t = pi_prox / pi_behav per token [B, T] (0 on padding, no grad), capped at `cap` when given."""
    log_w = sampler_log_ratio(behav_logp, prox_logp, mask)  # [B, T] log pi_prox - log pi_behav, clamped
    if cap is not None:
        log_w = torch.clamp(log_w, max=math.log(cap))
    return torch.exp(log_w) * mask  # [B, T]


def decoupled_ppo_loss(logp: torch.Tensor, prox_logp: torch.Tensor, behav_logp: torch.Tensor, adv: torch.Tensor,
                       mask: torch.Tensor, clip_eps: float | tuple[float, float], loss_agg: str,
                       cap: float | None = None, scale: AggScale | None = None,
                       ) -> tuple[torch.Tensor, dict[str, float]]:
    """-agg w_t min(r_t A_t, clip(r_t) A_t) with r_t = pi_theta / pi_prox and w_t = pi_prox / pi_behav (module doc).

    logp [B, T] carries the gradient; prox_logp and behav_logp [B, T] are frozen. Metrics: the clipped
    surrogate's (clip_frac, approx_kl, ratio_mean, all against pi_prox) and behav_weight_mean."""
    weights = behaviour_weights(prox_logp, behav_logp, mask, cap)  # [B, T]
    loss, metrics = clipped_surrogate(logp, prox_logp.detach(), adv * weights, mask, clip_eps, loss_agg, scale)
    metrics["behav_weight_mean"] = masked_mean(weights, mask).item()
    return loss, metrics
