"""Rollout correction: the sampler (vLLM, bf16 kernels) and the trainer disagree about pi_old.

The batch is sampled from pi_sampler, but every algorithm's loss treats it as a sample of pi_old, the trainer's
own log-probs at the same weights. With bf16 and large models the two differ enough to make "on-policy"
training silently off-policy (Yao et al. 2025, "Your efficient RL framework secretly brings you off-policy RL
training", https://fengyao.notion.site/off-policy-rl; verl's Rollout Correction docs, volcengine/verl
docs/algo/rollout_corr.md and rollout_corr_math.md). The fix is importance weighting with the token ratio

    rho_t = pi_old(y_t | s_t) / pi_sampler(y_t | s_t)                                 (a stop-gradient weight)

and the modes of `algo.rollout_correction.mode`:

  none      weights = mask (today's behaviour, exactly)
  tis       truncated importance sampling: w_t = min(rho_t, C)                (Yao et al. 2025, TIS)
  mis       masked importance sampling: w_t = 1 if 1/C <= rho_t <= C else 0   (verl "token rejection")
  seq_mask  drop whole sequences whose geometric-mean ratio exp(mean_t log rho_t) leaves [1/C, C]
            (verl "sequence rejection" with the geometric mean, which does not grow with length)

C = `algo.rollout_correction.cap` (default 2). The weights are a [B, T] tensor that any algorithm's per-token
loss is weighted by in the shared update code (`rlx.train.learn.correction`: TIS scales the advantage, rejections
leave the response mask, as `split_weights` states), never per algorithm.
Conventions as in `rlx.algos.stats`: B = trajectories, T = padded length, mask float [B, T].
"""

from __future__ import annotations

import torch

from rlx.algos.base import ROLLOUT_CORRECTION_MODES, RolloutCorrectionConfig  # noqa: F401  (re-exported)
from rlx.algos.kl import kl_k3
from rlx.algos.stats import masked_mean

MISMATCH_BAND = (0.5, 2.0)  # the ratio band whose out-of-band share is logged, independent of the cap
LOG_RATIO_CLAMP = 20.0  # |log rho| above this is numerical garbage (and exp would overflow); as verl clamps


def sampler_log_ratio(sampler_logp: torch.Tensor, old_logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """log rho = log pi_old - log pi_sampler [B, T], clamped to +-LOG_RATIO_CLAMP, 0 on padding, no grad."""
    log_rho = (old_logp.detach() - sampler_logp.detach()).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)  # [B, T]
    return log_rho * mask


def mismatch_metrics(sampler_logp: torch.Tensor, old_logp: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    """Sampler/trainer mismatch under the old policy, over valid tokens (samples come from the sampler).

    mismatch_k3           k3 estimate of KL(pi_sampler || pi_old): mean of (rho - 1) - log rho (Schulman's k3,
                          unbiased because the tokens were drawn from pi_sampler; >= 0; ~0 on CPU fp32)
    mismatch_ratio_max    max rho over valid tokens (1.0 when there are none)
    mismatch_ratio_min    min rho over valid tokens (1.0 when there are none)
    mismatch_outside_frac  share of valid tokens with rho outside [0.5, 2]
    """
    log_rho = sampler_log_ratio(sampler_logp, old_logp, mask)  # [B, T]
    rho = torch.exp(log_rho)  # [B, T]; 1 on padding
    valid = mask > 0  # [B, T]
    lo, hi = MISMATCH_BAND
    outside = ((rho < lo) | (rho > hi)).to(mask.dtype)  # [B, T]
    has_valid = bool(valid.any())
    # Schulman's k3 of KL(pi_sampler || pi_old) is kl_k3(sampler_logp, old_logp); it gets the clamped log rho as
    # ref_logp - 0 (exact in floating point), so an extreme ratio stays finite as in the other metrics
    k3 = kl_k3(torch.zeros_like(log_rho), log_rho)  # [B, T]
    return {
        "mismatch_k3": masked_mean(k3, mask).item(),
        "mismatch_ratio_max": rho[valid].max().item() if has_valid else 1.0,
        "mismatch_ratio_min": rho[valid].min().item() if has_valid else 1.0,
        "mismatch_outside_frac": masked_mean(outside, mask).item(),
    }


def correction_weights(
    sampler_logp: torch.Tensor, old_logp: torch.Tensor, mask: torch.Tensor, cfg: RolloutCorrectionConfig
) -> torch.Tensor:
    """Per-token weights [B, T] (0 on padding, no grad) for `cfg.mode`; see the module docstring."""
    if cfg.mode == "none":
        return mask.clone()
    log_rho = sampler_log_ratio(sampler_logp, old_logp, mask)  # [B, T]
    log_cap = torch.log(torch.tensor(float(cfg.cap), dtype=log_rho.dtype))  # [] log C
    if cfg.mode == "tis":
        return torch.exp(torch.minimum(log_rho, log_cap)) * mask  # [B, T] min(rho, C)
    if cfg.mode == "mis":
        inside = (log_rho >= -log_cap) & (log_rho <= log_cap)  # [B, T]; compared in log space: exact at the edges
        return inside.to(mask.dtype) * mask
    if cfg.mode == "seq_mask":
        seq_log_rho = masked_mean(log_rho, mask, dim=1)  # [B] log of the geometric-mean ratio
        keep = (seq_log_rho >= -log_cap) & (seq_log_rho <= log_cap)  # [B]
        return keep.to(mask.dtype).unsqueeze(1) * mask  # [B, T]
    raise ValueError(f"algo.rollout_correction.mode must be one of {list(ROLLOUT_CORRECTION_MODES)}, "
                     f"got {cfg.mode!r}")


def split_weights(weights: torch.Tensor, mode: str) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(advantage multiplier [B, T] or None, keep mask [B, T] or None): how `mode`'s weights enter the loss.

    tis scales each token's advantage and keeps the mask: every policy loss is linear in A_t per token and
    w_t >= 0 is detached, so this is exactly w_t times each token's policy-gradient loss, and the estimator
    stays an average over all sampled tokens (Yao et al. 2025; verl weights pg_losses). mis / seq_mask reject
    tokens, so their 0/1 weights leave the response mask and thereby the aggregation's denominators (verl's
    rejection sampling updates the response mask the same way). none changes nothing.
    """
    if mode == "none":
        return None, None
    if mode == "tis":
        return weights, None
    if mode in ("mis", "seq_mask"):
        return None, weights
    raise ValueError(f"algo.rollout_correction.mode must be one of {list(ROLLOUT_CORRECTION_MODES)}, got {mode!r}")


def correction_metrics(weights: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    """rc_weight_mean (mean weight over valid tokens) and rc_rejected_frac (valid tokens with weight 0)."""
    rejected = ((weights == 0) & (mask > 0)).to(mask.dtype)  # [B, T]
    return {"rc_weight_mean": masked_mean(weights, mask).item(),
            "rc_rejected_frac": masked_mean(rejected, mask).item()}


def sampler_logp_tensor(rows: list[list[float]], mask: torch.Tensor) -> torch.Tensor:
    """The samplers' per-token log-probs (`Generation.logprobs`, one list per trajectory) as [B, T] aligned with
    a right-padded response mask (response token j at column j, as `rlx.models.logprobs.pack` lays it out)."""
    out = torch.zeros_like(mask)  # [B, T]
    for b, row in enumerate(rows):
        n = int(mask[b].sum())
        if len(row) != n:
            raise ValueError(f"rollout correction: trajectory {b} has {len(row)} sampler log-probs for {n} tokens")
        out[b, :n] = torch.tensor(row, dtype=mask.dtype)
    return out
