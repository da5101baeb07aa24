"""DAPO's pieces (Yu et al. 2025, arXiv 2503.14476), as pure functions any algorithm's loss or the loop can use.

clip-higher        Eq. 8-10: the PPO surrogate with decoupled clip ranges,
                       L = -agg_t min(r_t A_t, clip(r_t, 1 - eps_low, 1 + eps_high) A_t),  r_t = pi_theta / pi_old,
                   eps_high > eps_low (DAPO: 0.2 / 0.28) leaves room for low-probability tokens to grow, which
                   fights entropy collapse; eps_low = eps_high is exactly `losses.clipped_surrogate`, whose
                   per-token loss (`losses.clipped_token_loss`) this reuses.
dynamic sampling   Eq. 8's constraint 0 < |{o_i correct}| < G (§3.2): a group whose rewards are all equal has zero
                   group-relative advantage and only dilutes the batch, so it is dropped and the batch refilled
                   from further prompts (bounded by max_refill_rounds).
overlong filtering §3.4: truncated responses (no EOS within the budget) are masked out of the loss, so a good
                   but long reasoning chain is not punished for being cut.
The soft overlong punishment (Eq. 13) is a reward shaper and lives in `rlx.rewards.overlong`.
Conventions as in `rlx.algos.stats`: B = trajectories, T = padded length, mask float [B, T].
"""

from __future__ import annotations

import torch

from rlx.algos.losses import agg_loss, clipped_token_loss
from rlx.algos.stats import masked_mean


def clip_higher_surrogate(
    logp: torch.Tensor, old_logp: torch.Tensor, adv: torch.Tensor, mask: torch.Tensor,
    clip_eps_low: float, clip_eps_high: float, loss_agg: str = "token_mean",
) -> tuple[torch.Tensor, dict[str, float]]:
    """DAPO Eq. 8 as a loss to minimise (token_mean = Eq. 8's 1/sum_i |o_i| sum_i sum_t, DAPO's token-level loss).

    Metrics: clip_frac_low / clip_frac_high = share of valid tokens clipped at 1-eps_low (A < 0) / 1+eps_high
    (A > 0); clip_frac = their sum."""
    if not 0.0 <= clip_eps_low < 1.0 or clip_eps_high < 0.0:
        raise ValueError(f"algo.clip_eps_low must be in [0, 1) and algo.clip_eps_high >= 0, "
                         f"got {clip_eps_low!r}, {clip_eps_high!r}")
    loss_mat, active = clipped_token_loss(logp - old_logp, adv, mask, clip_eps_low, clip_eps_high)  # [B, T]
    loss = agg_loss(loss_mat, mask, loss_agg)
    with torch.no_grad():
        low = (active & (adv < 0)).to(mask.dtype)  # [B, T]
        high = (active & (adv > 0)).to(mask.dtype)  # [B, T]
        metrics = {"clip_frac_low": masked_mean(low, mask).item(), "clip_frac_high": masked_mean(high, mask).item()}
    metrics["clip_frac"] = metrics["clip_frac_low"] + metrics["clip_frac_high"]
    return loss, metrics


# ----------------------------------------------------------------------------------------------------------
# dynamic sampling (Eq. 8's constraint, §3.2)


def informative_groups(rewards: torch.Tensor, group_ids: torch.Tensor, tol: float = 0.0) -> list[int]:
    """Sorted ids of the groups whose rewards [N] are not all equal (max - min > tol); the others are dropped.

    A single-sample group has zero variance too: dynamic sampling needs samples_per_prompt >= 2."""
    kept = []
    for gid in torch.unique(group_ids).tolist():  # sorted
        r = rewards[group_ids == gid]  # [G]
        if float(r.max() - r.min()) > tol:
            kept.append(int(gid))
    return kept


def rows_of_groups(group_ids: torch.Tensor, kept: list[int]) -> torch.Tensor:
    """Row indices [N_kept] (long, in batch order) of the trajectories whose group is in `kept`."""
    keep = torch.isin(group_ids, torch.tensor(kept, dtype=group_ids.dtype))  # [N] bool
    return torch.nonzero(keep, as_tuple=False).flatten()


def groups_still_needed(num_kept: int, target: int, refills_done: int, max_refill_rounds: int) -> int:
    """How many more informative groups to sample: 0 once the batch holds `target` groups or the refill rounds
    are spent (the step then trains on fewer groups, and logs it), else target - num_kept. DAPO keeps sampling
    until the batch is full and then trims it to exactly `target` groups."""
    if num_kept >= target or refills_done >= max_refill_rounds:
        return 0
    return target - num_kept


# ----------------------------------------------------------------------------------------------------------
# overlong filtering (§3.4)


def overlong_filter_mask(mask: torch.Tensor, finished: torch.Tensor) -> torch.Tensor:
    """The response mask [B, T] with every truncated row (finished [B] False: no EOS within max_new_tokens)
    zeroed, so those responses leave the loss (and its token_mean denominator) entirely."""
    return mask * finished.to(mask.dtype).unsqueeze(1)  # [B, T]
