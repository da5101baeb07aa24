"""Loss aggregation and the policy losses every algorithm shares (docs/algorithms.md, "Losses").

`agg_loss` reduces a per-token loss to a scalar. When the update splits an optimizer step's batch into
micro-batches it passes an `AggScale` holding the counts of the WHOLE optimizer-step batch, so that the sum
of the micro-batch losses equals the loss of the unsplit batch exactly
(docs/algorithms.md, "Micro-batches and mini-batches").
`clipped_surrogate` is the one clipped-ratio objective (PPO, arXiv 1707.06347 Eq. 7; TRePO Eq. 33); GRPO's
sequence and sentence ratios reuse it on segment-level tensors.
"""

from __future__ import annotations

import torch

from rlx.algos.base import LOSS_AGG_MODES, AggScale  # noqa: F401  (re-exported)
from rlx.algos.kl import kl_loss_term
from rlx.algos.stats import masked_mean, masked_sum


def agg_loss(loss_mat: torch.Tensor, mask: torch.Tensor, mode: str, scale: AggScale | None = None) -> torch.Tensor:
    """Reduce a per-token loss [B, T] to a scalar (docs/algorithms.md, "Loss aggregation").

    token_mean               sum over all valid tokens / number of valid tokens (TRePO Eq. 33's E_t)
    seq_mean_token_mean      1/G sum_i 1/|o_i| sum_t (GRPO, arXiv 2402.03300 Eq. 3); rows with no valid token
                             are left out of the mean (0/0 otherwise)
    seq_mean_token_sum_norm  Dr.GRPO (arXiv 2503.20783): sum_t / T_max with one constant T_max (the padded
                             width), then the mean over all rows
    With `scale`, the denominators are the whole optimizer step's (micro-batch accumulation).
    """
    if mode == "token_mean":
        if scale is None:
            return masked_mean(loss_mat, mask)
        return masked_sum(loss_mat, mask) / max(scale.tokens, 1.0)
    if mode == "seq_mean_token_mean":
        seq_len = mask.sum(dim=1)  # [B]
        seq_loss = masked_sum(loss_mat, mask, dim=1) / seq_len.clamp(min=1.0)  # [B]
        nonempty = (seq_len > 0).to(loss_mat.dtype)  # [B]
        seqs = nonempty.sum().clamp(min=1.0) if scale is None else max(scale.seqs, 1.0)
        return (seq_loss * nonempty).sum() / seqs
    if mode == "seq_mean_token_sum_norm":
        width = loss_mat.shape[1] if scale is None else scale.width
        seq_loss = masked_sum(loss_mat, mask, dim=1) / width  # [B]
        if scale is not None:
            return seq_loss.sum() / max(scale.rows, 1.0)
        return seq_loss.mean() if seq_loss.numel() else seq_loss.sum()
    raise ValueError(f"loss_agg must be one of {LOSS_AGG_MODES}, got {mode!r}")


def clipped_surrogate(
    logp: torch.Tensor, old_logp: torch.Tensor, adv: torch.Tensor, mask: torch.Tensor,
    clip_eps: float | tuple[float, float],
    loss_agg: str, scale: AggScale | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The clipped surrogate with token ratios r = pi_theta / pi_old (TRePO Eq. 33; PPO Eq. 7)."""
    return clipped_objective(logp - old_logp, adv, mask, clip_eps, loss_agg, scale)


def clipped_objective(
    log_ratio: torch.Tensor, adv: torch.Tensor, mask: torch.Tensor, clip_eps: float | tuple[float, float],
    loss_agg: str,
    scale: AggScale | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """-agg min(r A, clip(r, 1-eps, 1+eps) A) with r = exp(log_ratio) (PPO, arXiv 1707.06347 Eq. 7).

    log_ratio [B, T] is log pi_theta - log pi_old per token, or per segment for GRPO's sequence/sentence ratios.
    clip_eps = (eps_low, eps_high) clips r to [1 - eps_low, 1 + eps_high] (DAPO's clip-higher, arXiv 2503.14476
    Eq. 10); a float is both.
    Metrics: clip_frac = share of valid entries where the clipped branch is the active one (zero gradient);
    approx_kl = mean of k3 for KL(pi_old || pi_theta), i.e. (r - 1) - log r; ratio_mean = mean ratio.
    """
    low, high = clip_eps if isinstance(clip_eps, tuple) else (clip_eps, clip_eps)
    loss_mat, active = clipped_token_loss(log_ratio, adv, mask, low, high)  # [B, T], [B, T]
    loss = agg_loss(loss_mat, mask, loss_agg, scale)
    with torch.no_grad():
        log_ratio = log_ratio * mask  # [B, T]
        ratio = torch.exp(log_ratio)  # [B, T]
        metrics = {
            "clip_frac": masked_mean(active.to(ratio.dtype), mask).item(),
            "approx_kl": masked_mean(ratio - 1.0 - log_ratio, mask).item(),
            "ratio_mean": masked_mean(ratio, mask).item(),
        }
    return loss, metrics


def clipped_token_loss(
    log_ratio: torch.Tensor, adv: torch.Tensor, mask: torch.Tensor, low: float, high: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-token loss -min(r A, clip(r, 1 - low, 1 + high) A) [B, T], clipped-branch-active flags [B, T] bool)
    with r = exp(log_ratio); unaggregated, shared by `clipped_objective` and DAPO's clip-higher metrics."""
    ratio = torch.exp(log_ratio * mask)  # [B, T]; log_ratio 0 on padding so exp() stays finite
    unclipped = -adv * ratio  # [B, T]
    clipped = -adv * torch.clamp(ratio, 1.0 - low, 1.0 + high)  # [B, T]
    return torch.maximum(unclipped, clipped), clipped > unclipped  # max of negatives = -min of the surrogates


def pg_loss(
    logp: torch.Tensor, adv: torch.Tensor, mask: torch.Tensor, loss_agg: str, scale: AggScale | None = None
) -> tuple[torch.Tensor, dict[str, float]]:
    """Plain policy gradient -agg A_t log pi(w_t) with no ratio or clipping (RLOO, TRePO paper Eq. 37; ReMax
    Eq. 39; REINFORCE; TRePO Corollary 1 Eq. 27). Meant for one on-policy step per batch."""
    loss = agg_loss(-adv * logp, mask, loss_agg, scale)
    return loss, {"adv_mean": masked_mean(adv, mask).item()}


def entropy_bonus(entropy: torch.Tensor | None, mask: torch.Tensor, coef: float, loss_agg: str,
                  scale: AggScale | None = None) -> torch.Tensor:
    """-coef * agg S[pi](s_t): the c2 S term of PPO's objective (arXiv 1707.06347 Eq. 9), to ADD to a loss."""
    if coef == 0.0:
        return mask.new_zeros(())
    if entropy is None:
        raise ValueError("entropy_coef > 0 needs LossInputs.entropy")
    return -coef * agg_loss(entropy, mask, loss_agg, scale)


def ratio_metrics(logp: torch.Tensor, old_logp: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    """The same drift diagnostics the clipped losses log, for losses without a ratio: nothing is clipped."""
    with torch.no_grad():
        log_ratio = (logp - old_logp) * mask  # [B, T]
        ratio = torch.exp(log_ratio)
        return {"clip_frac": 0.0, "approx_kl": masked_mean(ratio - 1.0 - log_ratio, mask).item(),
                "ratio_mean": masked_mean(ratio, mask).item()}


def add_regularisers(inp, cfg, loss: torch.Tensor, metrics: dict) -> torch.Tensor:
    """loss + beta * KL (kl.mode == "loss") - entropy bonus, with their metrics added to `metrics`."""
    mask = inp.response_mask
    kl_loss, kl_metrics = kl_loss_term(inp.logp, inp.ref_logp, mask, cfg.kl,
                                       lambda k: agg_loss(k, mask, cfg.loss_agg, inp.scale))
    ent = entropy_bonus(inp.entropy, mask, cfg.entropy_coef, cfg.loss_agg, inp.scale)
    metrics.update(kl_metrics, pg_loss=loss.item())
    return loss + kl_loss + ent


def clipped_policy_loss(inp, cfg) -> tuple[torch.Tensor, dict[str, float]]:
    """Token-ratio clipped surrogate (TRePO Eq. 33) + beta*KL when kl.mode == "loss" - entropy bonus.
    Shared by TRePO, VinePPO, PPO and token-level GRPO; reads cfg.clip_range() (clip_eps, or DAPO's
    clip_eps_low / clip_eps_high), loss_agg, kl, entropy_coef."""
    mask = inp.response_mask
    loss, metrics = clipped_surrogate(inp.logp, inp.old_logp, inp.advantages, mask, cfg.clip_range(), cfg.loss_agg,
                                      inp.scale)
    total = add_regularisers(inp, cfg, loss, metrics)
    if inp.entropy is not None:
        metrics["entropy"] = agg_loss(inp.entropy.detach(), mask, cfg.loss_agg).item()
    return total, metrics


def plain_policy_loss(inp, cfg) -> tuple[torch.Tensor, dict[str, float]]:
    """pg_loss (no ratio, no clip) + beta*KL when kl.mode == "loss" - entropy bonus (RLOO/ReMax/REINFORCE)."""
    mask = inp.response_mask
    loss, metrics = pg_loss(inp.logp, inp.advantages, mask, cfg.loss_agg, inp.scale)
    total = add_regularisers(inp, cfg, loss, metrics)
    metrics.update(ratio_metrics(inp.logp, inp.old_logp, mask))
    return total, metrics
