"""Knot selection by entropy and by sampler probability, on constructed per-token scores."""

from __future__ import annotations

import math

import pytest
import torch

from rlx.algos.branching import entropy_knots, low_prob_knots, top_score_knots
from rlx.algos.trepo import select_knots


def test_entropy_picks_the_argmax_entropy_positions():
    # response of 8 tokens; the three most uncertain tokens are t = 6 (2.0), t = 3 (1.5), t = 8 (1.2)
    entropy = torch.tensor([0.1, 0.2, 1.5, 0.3, 0.0, 2.0, 0.4, 1.2])
    assert entropy_knots(entropy, 4) == [1, 3, 6, 8]
    assert entropy_knots(entropy, 2) == [1, 6]
    # t = 1 is always a knot and counts, even when its own entropy is the highest of all
    assert entropy_knots(torch.tensor([9.0, 0.5, 0.1, 0.7]), 2) == [1, 4]


def test_low_prob_picks_the_least_likely_sampled_tokens():
    probs = [0.9, 0.05, 0.8, 0.6, 0.01, 0.7]  # lowest: t = 5 (0.01), t = 2 (0.05), then t = 4 (0.6)
    logprobs = [math.log(p) for p in probs]
    assert low_prob_knots(logprobs, 3) == [1, 2, 5]
    assert low_prob_knots(logprobs, 4) == [1, 2, 4, 5]
    assert low_prob_knots(torch.tensor(logprobs), 1) == [1]


def test_ties_break_to_the_earlier_position_and_counts_clamp():
    flat = torch.zeros(6)
    assert top_score_knots(flat, 3) == [1, 2, 3]  # all tied: earliest positions win
    scores = torch.tensor([0.0, 1.0, 5.0, 1.0, 1.0])  # 3 first, then the tie 2 < 4 < 5
    assert top_score_knots(scores, 3) == [1, 2, 3]
    assert top_score_knots(scores, 10) == [1, 2, 3, 4, 5]  # clamped to T
    assert top_score_knots(scores, "all") == [1, 2, 3, 4, 5]
    assert top_score_knots(torch.zeros(0), 4) == []
    assert low_prob_knots([-math.inf, -1.0, -math.inf], 2) == [1, 3]  # -inf is the least likely token


def test_select_knots_dispatches_and_demands_scores():
    entropy = [0.1, 0.2, 1.5, 0.3, 0.0, 2.0, 0.4, 1.2]
    assert select_knots(8, 3, "entropy", scores=entropy) == [1, 3, 6]
    assert select_knots(3, 2, "low_prob", scores=[-0.1, -3.0, -0.2]) == [1, 2]
    with pytest.raises(ValueError, match="branch_selection='entropy' needs per-token scores"):
        select_knots(8, 3, "entropy")
    with pytest.raises(ValueError, match="5 scores for a response of 8 tokens"):
        select_knots(8, 3, "low_prob", scores=[0.0] * 5)
    with pytest.raises(ValueError, match="NaN"):
        entropy_knots(torch.tensor([0.0, float("nan")]), 2)
