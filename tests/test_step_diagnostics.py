"""The step diagnostics of docs/frontier.md ("The compute-matched comparison") against hand-computed values."""

import torch

from rlx.train.metrics import sign_agreement


def test_sign_agreement_counts_nonzero_response_tokens_against_the_outcome():
    advantages = torch.tensor([[0.5, -0.2, 0.0, 9.0],  # correct: + agrees, - disagrees, 0 not counted, 9.0 is pad
                               [-1.0, -0.3, 0.0, 0.0]])  # incorrect: both negative tokens agree
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    assert sign_agreement(advantages, mask, [True, False]) == 3 / 4
    assert sign_agreement(advantages, mask, [False, True]) == 1 / 4  # flipping the outcomes flips agreement


def test_sign_agreement_is_zero_without_a_nonzero_advantage():
    assert sign_agreement(torch.zeros(2, 3), torch.ones(2, 3), [True, False]) == 0.0
