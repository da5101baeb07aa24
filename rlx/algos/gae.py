"""Generalised advantage estimation, once (GAE, arXiv 1506.02438 Eqs. 11-16; docs/algorithms.md, "GAE on a
knot grid"). `knot_gae` is the general routine whose states are a subset of the tokens (TRePO's knots, step 4);
per-token GAE and discounted returns are its special cases."""

from __future__ import annotations

import torch


def knot_gae(
    rewards: torch.Tensor,
    baseline_values: torch.Tensor,
    next_values: torch.Tensor,
    knot_mask: torch.Tensor,
    mask: torch.Tensor,
    gamma: float,
    lam: float,
) -> torch.Tensor:
    """GAE whose states are the knots t_1 < ... < t_n of each row, with exponents counted in tokens.

    For knot t_i, with t_{n+1} = T + 1 (terminal value 0):
        delta_i = sum_{j=t_i}^{t_{i+1}-1} gamma^(j-t_i) r_j + gamma^(t_{i+1}-t_i) Vq(t_{i+1}) - Vb(t_i)
        A(t_i)  = delta_i + (gamma lam)^(t_{i+1}-t_i) A(t_{i+1})
    rewards [B, T]: r_t on valid tokens. baseline_values [B, T]: Vb read at knots. next_values [B, T]: Vq, the
    value a knot contributes as the *next* knot of the previous one (TRePO's Q-part pool; equal to Vb for
    PPO and for pooling=paper). knot_mask [B, T]: 1 at knots (a subset of mask). Returns A [B, T], non-zero
    only at knots. With knot_mask == mask this is the ordinary per-token GAE.
    Padded positions are skipped: they neither discount nor carry reward.
    """
    B, T = rewards.shape
    adv = torch.zeros_like(rewards)  # [B, T]
    # Seen from token j, `tail` is what lies behind token j+1: Vq(j+1) if j+1 is a knot, else the discounted
    # Q-part return g(j+1) still running towards the next knot; `adv_tail` is likewise A(j+1) at a knot, else
    # the (gamma lam)-discounted advantage of the next knot. Both start at the terminal value 0.
    tail = rewards.new_zeros(B)  # [B]
    adv_tail = rewards.new_zeros(B)  # [B]
    for j in reversed(range(T)):
        valid = mask[:, j] > 0  # [B]
        is_knot = valid & (knot_mask[:, j] > 0)  # [B]
        g = rewards[:, j] + gamma * tail  # [B] Q-part return from token j to the next knot
        carry = gamma * lam * adv_tail  # [B]
        a = g - baseline_values[:, j] + carry  # [B] advantage if j is a knot
        adv[:, j] = torch.where(is_knot, a, torch.zeros_like(a))
        tail = torch.where(is_knot, next_values[:, j], torch.where(valid, g, tail))
        adv_tail = torch.where(is_knot, a, torch.where(valid, carry, adv_tail))
    return adv


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token GAE(gamma, lam) (arXiv 1506.02438 Eq. 16) with V_{T+1} = 0; every valid token is a knot.

    delta_t = r_t + gamma V_{t+1} - V_t,  A_t = delta_t + gamma lam A_{t+1}. rewards, values, mask: [B, T].
    Returns (advantages [B, T], returns = A + V [B, T], the lambda-return value target); both 0 on padding.
    """
    adv = knot_gae(rewards, values, values, mask, mask, gamma, lam)  # [B, T]
    return adv, (adv + values) * mask


def discounted_returns(rewards: torch.Tensor, mask: torch.Tensor, gamma: float) -> torch.Tensor:
    """Reward-to-go G_t = sum_{j>=t} gamma^(j-t) r_j over valid tokens [B, T] (= GAE with V = 0, lam = 1)."""
    zeros = torch.zeros_like(rewards)
    return knot_gae(rewards, zeros, zeros, mask, mask, gamma, 1.0)
