"""DAPO clip-higher, dynamic sampling, overlong filtering / soft punishment and CISPO against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from rlx.algos.cispo import cispo_loss
from rlx.algos.dapo import (
    clip_higher_surrogate,
    groups_still_needed,
    informative_groups,
    overlong_filter_mask,
    rows_of_groups,
)
from rlx.algos.losses import clipped_surrogate
from rlx.rewards.overlong import shape_overlong, soft_overlong_penalty

DT = torch.float64
LN = math.log


def _ratio_batch():
    """One row of 4 valid tokens + 1 pad with ratios r = [1.25, 1.25, 0.7, 1.1], advantages [+1, -1, -1, +2]."""
    ratios = [1.25, 1.25, 0.7, 1.1]
    old = torch.tensor([[-1.0] * 5], dtype=DT)
    logp = torch.tensor([[-1.0 + LN(r) for r in ratios] + [5.0]], dtype=DT, requires_grad=True)  # pad: garbage
    adv = torch.tensor([[1.0, -1.0, -1.0, 2.0, 9.0]], dtype=DT)
    mask = torch.tensor([[1.0, 1.0, 1.0, 1.0, 0.0]], dtype=DT)
    return logp, old, adv, mask


def test_clip_higher_hand_computed():
    logp, old, adv, mask = _ratio_batch()
    loss, m = clip_higher_surrogate(logp, old, adv, mask, clip_eps_low=0.2, clip_eps_high=0.28, loss_agg="token_mean")
    # token 1: A>0, r=1.25 < 1.28 -> unclipped 1.25; token 2: A<0, min(-1.25, -1.25) = -1.25;
    # token 3: A<0, r=0.7 < 0.8 -> clip(0.7)=0.8, min(-0.7, -0.8) = -0.8 (clipped); token 4: A=2, r=1.1 -> 2.2
    assert loss.item() == pytest.approx(-(1.25 - 1.25 - 0.8 + 2.2) / 4)
    assert m == pytest.approx({"clip_frac_low": 0.25, "clip_frac_high": 0.0, "clip_frac": 0.25})
    loss.backward()
    # d loss / d logp_t = -A_t r_t / 4 on unclipped tokens, 0 where the clipped branch is active
    expected = torch.tensor([[-1.25 / 4, 1.25 / 4, 0.0, -2.2 / 4, 0.0]], dtype=DT)
    torch.testing.assert_close(logp.grad, expected)


def test_clip_higher_symmetric_band_clips_token_one_and_matches_clipped_surrogate():
    logp, old, adv, mask = _ratio_batch()
    loss, m = clip_higher_surrogate(logp, old, adv, mask, 0.2, 0.2, "token_mean")
    assert loss.item() == pytest.approx(-(1.2 - 1.25 - 0.8 + 2.2) / 4)  # token 1 now clipped at 1.2
    assert m["clip_frac_high"] == pytest.approx(0.25)
    reference, ref_m = clipped_surrogate(logp, old, adv, mask, 0.2, "token_mean")
    assert loss.item() == pytest.approx(reference.item())
    assert m["clip_frac"] == pytest.approx(ref_m["clip_frac"])


def test_clip_higher_rejects_bad_ranges():
    logp, old, adv, mask = _ratio_batch()
    with pytest.raises(ValueError, match="algo.clip_eps_low"):
        clip_higher_surrogate(logp, old, adv, mask, 1.0, 0.28)


def test_cispo_hand_computed_value_and_gradient():
    logp, old, adv, mask = _ratio_batch()
    loss, m = cispo_loss(logp, old, adv, mask, clip_eps_low=0.2, clip_eps_high=0.2)
    weights = [1.2, 1.2, 0.8, 1.1]  # clip(r, 0.8, 1.2) of r = [1.25, 1.25, 0.7, 1.1]
    logps = [-1.0 + LN(r) for r in [1.25, 1.25, 0.7, 1.1]]
    advs = [1.0, -1.0, -1.0, 2.0]
    assert loss.item() == pytest.approx(-sum(w * a * lp for w, a, lp in zip(weights, advs, logps)) / 4)
    assert m == pytest.approx({"is_weight_mean": sum(weights) / 4, "clip_frac": 0.75})
    loss.backward()
    # every token keeps a gradient (unlike PPO's clip): -sg(w) A / 4, and nothing on the pad
    expected = torch.tensor([[-1.2 / 4, 1.2 / 4, 0.8 / 4, -2.2 / 4, 0.0]], dtype=DT)
    torch.testing.assert_close(logp.grad, expected)


def test_cispo_at_ratio_one_is_the_policy_gradient():
    logp = torch.tensor([[-0.5, -2.0, -1.0]], dtype=DT, requires_grad=True)
    adv = torch.tensor([[0.5, -1.5, 3.0]], dtype=DT)
    mask = torch.tensor([[1.0, 1.0, 0.0]], dtype=DT)
    loss, _ = cispo_loss(logp, logp.detach(), adv, mask, 0.2, 0.28)
    assert loss.item() == pytest.approx(-(0.5 * -0.5 + -1.5 * -2.0) / 2)


def test_dynamic_sampling_keeps_groups_with_reward_variance():
    rewards = torch.tensor([1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.3, 0.3, 1.0])
    group_ids = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3, 4])
    assert informative_groups(rewards, group_ids) == [1]  # all-1, all-0, constant 0.3 and a single sample drop
    assert informative_groups(torch.tensor([0.5, 0.5001, 0.0, 1.0]), torch.tensor([7, 7, 9, 9]), tol=1e-3) == [9]
    assert rows_of_groups(group_ids, [1, 3]).tolist() == [2, 3, 6, 7]
    assert groups_still_needed(num_kept=3, target=8, refills_done=0, max_refill_rounds=2) == 5
    assert groups_still_needed(num_kept=3, target=8, refills_done=2, max_refill_rounds=2) == 0
    assert groups_still_needed(num_kept=9, target=8, refills_done=0, max_refill_rounds=2) == 0


def test_overlong_filter_masks_truncated_rows():
    mask = torch.tensor([[1, 1, 1], [1, 1, 0], [1, 1, 1]], dtype=DT)
    finished = torch.tensor([True, True, False])
    assert overlong_filter_mask(mask, finished).tolist() == [[1, 1, 1], [1, 1, 0], [0, 0, 0]]


def test_soft_overlong_penalty_eq13():
    # L_max = 20, L_cache = 4: free up to 16 tokens, then -1/4 per token, -1 beyond 20
    assert [soft_overlong_penalty(n, 20, 4) for n in (10, 16, 17, 18, 20, 21)] == [0.0, 0.0, -0.25, -0.5, -1.0, -1.0]
    assert soft_overlong_penalty(20, 20, 0) == 0.0
    assert shape_overlong([1.0, 0.0], [18, 5], 20, 4) == [0.5, 0.0]
    with pytest.raises(ValueError, match="reward_model.overlong_penalty.cache"):
        soft_overlong_penalty(3, 20, 25)
