"""Masked and grouped statistics shared by every algorithm (docs/algorithms.md, "Conventions").

B = trajectories, T = padded length; `mask` is a float [B, T] tensor with 1.0 on valid response tokens.
Padding may sit anywhere (right, left, inside a row): every function here skips masked positions.
`group_stats` is the one place group sums, counts and means are computed; GRPO, RLOO, REINFORCE's group
baseline and group whitening all read it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rlx.algos.base import ADV_NORMS


def masked_sum(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    return (x * mask).sum() if dim is None else (x * mask).sum(dim=dim)


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of x over positions where mask == 1 (0 when there are none, never NaN)."""
    total = masked_sum(x, mask, dim)
    count = mask.sum() if dim is None else mask.sum(dim=dim)
    return total / count.clamp(min=1.0)


def masked_var(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Population variance (ddof=0) over valid positions: whitened values then have std exactly 1."""
    mean = masked_mean(x, mask)
    return masked_mean((x - mean) ** 2, mask)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """(x - mean) / (std + eps) over all valid tokens (TRePO Remark 4 normalisation); 0 on padding.

    An input constant up to rounding gives exactly 0: dividing its rounding error by std + eps would give
    noise of up to O(1) (see `equal_up_to_rounding`)."""
    mean = masked_mean(x, mask)  # []
    std = masked_var(x, mask).sqrt()  # []
    out = (x - mean) / (std + eps) * mask  # [B, T]
    if equal_up_to_rounding(x[mask > 0]):
        return torch.zeros_like(out)
    return out


def equal_up_to_rounding(values: torch.Tensor) -> bool:
    """All of `values` [N] within 16 ulps of their largest magnitude (docs/algorithms.md, "Conventions"):
    values computed as different float sums of equal quantities (a mean of 0.7s against 0.7) differ by a few
    ulps, any difference a reward means is far larger."""
    if values.numel() == 0:
        return False
    spread = values.max() - values.min()
    return bool(spread <= 16 * torch.finfo(values.dtype).eps * values.abs().max())


@dataclass
class GroupStats:
    """Per-group aggregates of values [N] with group ids [N]; `inv` maps each item to its group."""

    inv: torch.Tensor  # [N] long, group index of every item
    count: torch.Tensor  # [G]
    total: torch.Tensor  # [G]
    constant: torch.Tensor  # [G] bool, all members equal

    @property
    def mean(self) -> torch.Tensor:
        return self.total / self.count  # [G]


def group_stats(values: torch.Tensor, group_ids: torch.Tensor) -> GroupStats:
    """Counts, sums and constancy of `values` within groups (rows sharing a group id)."""
    _, inv = torch.unique(group_ids, return_inverse=True)  # [N]
    n_groups = int(inv.max()) + 1 if inv.numel() else 0
    zeros = values.new_zeros(n_groups)  # [G]
    count = zeros.scatter_add(0, inv, torch.ones_like(values))  # [G]
    total = zeros.scatter_add(0, inv, values)  # [G]
    hi = zeros.scatter_reduce(0, inv, values, "amax", include_self=False)  # [G]
    lo = zeros.scatter_reduce(0, inv, values, "amin", include_self=False)  # [G]
    return GroupStats(inv, count, total, hi == lo)


def group_whiten(x: torch.Tensor, mask: torch.Tensor, group_ids: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """masked_whiten within each group (rows sharing a group id); a constant group becomes all zeros."""
    out = torch.zeros_like(x)  # [B, T]
    for gid in torch.unique(group_ids):
        rows = group_ids == gid  # [B]
        out[rows] = masked_whiten(x[rows], mask[rows], eps)
    return out


def normalize_advantages(
    adv: torch.Tensor, mask: torch.Tensor, group_ids: torch.Tensor, mode: str, eps: float = 1e-8
) -> torch.Tensor:
    """adv_norm in {none, batch, group} (docs/algorithms.md, "TRePO" step 6); always zero on padding."""
    if mode == "none":
        return adv * mask
    if mode == "batch":
        return masked_whiten(adv, mask, eps)
    if mode == "group":
        return group_whiten(adv, mask, group_ids, eps)
    raise ValueError(f"adv_norm must be one of {ADV_NORMS}, got {mode!r}")


def terminal_rewards(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Zero-Reward Assumption (TRePO, arXiv 2506.02553 §1): put scores[B] on the last valid token of each
    row -> [B, T]. Rows with no valid token get nothing."""
    T = mask.shape[1]
    positions = torch.arange(T, device=mask.device).expand_as(mask)  # [B, T]
    last = torch.where(mask > 0, positions, -1).max(dim=1).values  # [B]; -1 for empty rows
    onehot = (positions == last.unsqueeze(1)).to(scores.dtype)  # [B, T]
    return onehot * scores.unsqueeze(1)  # [B, T]


def sequence_scores(token_rewards: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Response-level reward of each row: the sum of its valid per-token rewards -> [B]."""
    return masked_sum(token_rewards, mask, dim=1)


def first_valid(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """x at the first valid column of each row -> [B] (0 for empty rows)."""
    B, T = mask.shape
    if T == 0:
        return x.new_zeros(B)
    positions = torch.arange(T, device=mask.device).expand_as(mask)  # [B, T]
    first = torch.where(mask > 0, positions, T).min(dim=1).values.clamp(max=T - 1)  # [B]
    values = x.gather(1, first.unsqueeze(1)).squeeze(1)  # [B]
    return torch.where(mask.sum(1) > 0, values, torch.zeros_like(values))


def valid_positions(mask_row: torch.Tensor) -> torch.Tensor:
    """0-based column of the t-th valid token, t = 1..T (handles padding anywhere) -> [T_valid] long."""
    return torch.nonzero(mask_row > 0, as_tuple=False).flatten()
