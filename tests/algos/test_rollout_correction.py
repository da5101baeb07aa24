"""Rollout correction on constructed log-probs: each mode weights or masks exactly the intended tokens, in the
loss weights the training step uses (rlx/train/learn/correction.loss_weights)."""

from __future__ import annotations

import math

import pytest
import torch

from rlx.algos.losses import agg_loss
from rlx.algos.rollout_correction import (
    RolloutCorrectionConfig,
    correction_metrics,
    correction_weights,
    mismatch_metrics,
    sampler_logp_tensor,
    split_weights,
)
from rlx.train.learn.correction import loss_weights

DT = torch.float64
LN = math.log


def _weighted_token_mean(loss_mat, mask, weights):
    """token_mean of a per-token loss under the step's loss weights, as rlx/train/learn/update.py applies them: the
    advantage multiplier scales the (advantage-linear) loss, the keep mask multiplies the loss mask."""
    scaled = loss_mat if weights.advantage is None else loss_mat * weights.advantage
    kept = mask if weights.keep is None else mask * weights.keep
    return agg_loss(scaled, kept, "token_mean").item()


def _batch():
    """Row 0: ratios rho = pi_old / pi_sampler of [1, 3, 0.25, 1.9] + 1 pad.
    Row 1: ratios [1.5, 1.5, 1.5] + 2 pads (geometric mean 1.5, inside [1/2, 2]).
    Row 2: ratios [4, 1, 1.9] + 2 pads (geometric mean 7.6^(1/3) = 1.966, kept). Row 3: [8, 0.9] + 3 pads
    (gm sqrt(7.2) = 2.68, dropped). 12 valid tokens."""
    ratios = [[1.0, 3.0, 0.25, 1.9], [1.5, 1.5, 1.5], [4.0, 1.0, 1.9], [8.0, 0.9]]
    mask = torch.zeros(4, 5, dtype=DT)
    old = torch.full((4, 5), -1.0, dtype=DT)
    sampler = torch.full((4, 5), -7.0, dtype=DT)  # padding holds garbage that must never matter
    for b, row in enumerate(ratios):
        mask[b, : len(row)] = 1.0
        old[b, : len(row)] = -1.0
        sampler[b, : len(row)] = torch.tensor([-1.0 - LN(r) for r in row], dtype=DT)
    return sampler, old, mask, ratios


def test_none_is_the_mask_exactly():
    sampler, old, mask, _ = _batch()
    w = correction_weights(sampler, old, mask, RolloutCorrectionConfig())
    assert torch.equal(w, mask)
    assert split_weights(w, "none") == (None, None)  # mode=none leaves today's loss untouched
    lw = loss_weights(RolloutCorrectionConfig(), mask, None, None, None)
    assert lw.advantage is None and lw.keep is None and lw.metrics is None


def test_tis_truncates_at_cap():
    sampler, old, mask, ratios = _batch()
    w = correction_weights(sampler, old, mask, RolloutCorrectionConfig(mode="tis", cap=2.0))
    expected = torch.zeros(4, 5, dtype=DT)
    for b, row in enumerate(ratios):
        expected[b, : len(row)] = torch.tensor([min(r, 2.0) for r in row], dtype=DT)
    torch.testing.assert_close(w, expected)
    # tis keeps the denominator: token_mean of a loss of ones = mean weight over the 12 valid tokens
    lw = loss_weights(RolloutCorrectionConfig(mode="tis", cap=2.0), mask, old, sampler, None)
    assert lw.keep is None and torch.equal(lw.advantage, w)
    assert _weighted_token_mean(torch.ones(4, 5, dtype=DT), mask, lw) == pytest.approx(float(expected.sum()) / 12)


def test_mis_masks_tokens_outside_band():
    sampler, old, mask, _ = _batch()
    w = correction_weights(sampler, old, mask, RolloutCorrectionConfig(mode="mis", cap=2.0))
    expected = torch.tensor([[1, 0, 0, 1, 0], [1, 1, 1, 0, 0], [0, 1, 1, 0, 0], [0, 1, 0, 0, 0]], dtype=DT)
    assert torch.equal(w, expected)  # 3, 0.25, 4 and 8 leave [0.5, 2]
    # rejected tokens leave the denominator: the 8 kept tokens of a loss of ones average to 1
    lw = loss_weights(RolloutCorrectionConfig(mode="mis", cap=2.0), mask, old, sampler, None)
    assert lw.advantage is None and torch.equal(lw.keep, expected)
    assert _weighted_token_mean(torch.ones(4, 5, dtype=DT), mask, lw) == pytest.approx(1.0)


def test_seq_mask_drops_whole_sequences_by_geometric_mean():
    sampler, old, mask, _ = _batch()
    w = correction_weights(sampler, old, mask, RolloutCorrectionConfig(mode="seq_mask", cap=2.0))
    # gm: row0 1.425^(1/4)=1.093 kept; row1 1.5 kept; row2 7.6^(1/3)=1.966 kept; row3 sqrt(7.2)=2.68 dropped
    expected = mask.clone()
    expected[3] = 0.0
    torch.testing.assert_close(w, expected)
    lw = loss_weights(RolloutCorrectionConfig(mode="seq_mask", cap=2.0), mask, old, sampler, None)
    assert lw.advantage is None and torch.equal(lw.keep, w)  # the dropped row leaves the loss mask
    # a tighter cap of 1.4 drops row 1 (gm 1.5) and row 2 (gm 1.966) but keeps row 0 (gm 1.093)
    w_tight = correction_weights(sampler, old, mask, RolloutCorrectionConfig(mode="seq_mask", cap=1.4))
    assert w_tight.sum(1).tolist() == [4.0, 0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="algo.rollout_correction.mode"):
        split_weights(w, "bogus")


def test_mismatch_metrics_hand_computed():
    sampler, old, mask, ratios = _batch()
    m = mismatch_metrics(sampler, old, mask)
    flat = [r for row in ratios for r in row]
    k3 = sum((r - 1) - LN(r) for r in flat) / len(flat)
    assert m["mismatch_k3"] == pytest.approx(k3)
    assert m["mismatch_ratio_max"] == pytest.approx(8.0)
    assert m["mismatch_ratio_min"] == pytest.approx(0.25)
    assert m["mismatch_outside_frac"] == pytest.approx(4 / 12)  # 3, 0.25, 4, 8


def test_identical_logprobs_give_zero_mismatch_and_unit_weights():
    logp = torch.log(torch.tensor([[0.5, 0.25, 0.9], [0.1, 0.3, 0.2]], dtype=DT))
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]], dtype=DT)
    m = mismatch_metrics(logp, logp, mask)
    assert m == {"mismatch_k3": 0.0, "mismatch_ratio_max": 1.0, "mismatch_ratio_min": 1.0,
                 "mismatch_outside_frac": 0.0}
    for mode in ("tis", "mis", "seq_mask"):
        w = correction_weights(logp, logp, mask, RolloutCorrectionConfig(mode=mode))
        assert torch.equal(w, mask)
        assert correction_metrics(w, mask) == {"rc_weight_mean": 1.0, "rc_rejected_frac": 0.0}


def test_weights_carry_no_gradient():
    sampler, old, mask, _ = _batch()
    old = old.clone().requires_grad_(True)
    w = correction_weights(sampler, old, mask, RolloutCorrectionConfig(mode="tis"))
    assert not w.requires_grad


def test_extreme_log_ratio_stays_finite():
    mask = torch.ones(1, 2, dtype=DT)
    sampler = torch.tensor([[-200.0, -1.0]], dtype=DT)  # log rho = 199: clamped to 20, exp stays finite
    old = torch.tensor([[-1.0, -1.0]], dtype=DT)
    m = mismatch_metrics(sampler, old, mask)
    assert m["mismatch_ratio_max"] == pytest.approx(math.exp(20.0))
    w = correction_weights(sampler, old, mask, RolloutCorrectionConfig(mode="tis", cap=2.0))
    assert w.tolist() == [[2.0, 1.0]]


def test_sampler_logp_tensor_aligns_right_padded_rows():
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]], dtype=DT)
    out = sampler_logp_tensor([[-0.5, -1.5], [-1.0, -2.0, -3.0]], mask)
    assert out.tolist() == [[-0.5, -1.5, 0.0], [-1.0, -2.0, -3.0]]
    with pytest.raises(ValueError, match="trajectory 0 has 1 sampler log-probs for 2 tokens"):
        sampler_logp_tensor([[-0.5], [-1.0, -2.0, -3.0]], mask)


@pytest.mark.parametrize(("kwargs", "key"), [
    ({"mode": "is"}, "algo.rollout_correction.mode"),
    ({"cap": 0.5}, "algo.rollout_correction.cap"),
    ({"cap": "2"}, "algo.rollout_correction.cap"),
])
def test_validation_names_the_key(kwargs, key):
    with pytest.raises(ValueError, match=key):
        RolloutCorrectionConfig(**kwargs).validate()
