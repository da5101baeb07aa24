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


def test_step_metrics_counts_generated_trained_and_forward_tokens_by_hand():
    """One prompt (3 tokens), a response of 4 tokens and a fork of it after 2 tokens with 3 tokens of its own;
    both trained (train_on_branches): generated 4 + 3, trained 4 + 3, forward (3 + 4) + (3 + 2 + 3) = 15."""
    from rlx.data.base import Problem
    from rlx.models.logprobs import pack
    from rlx.record import Node, RolloutBatch, RolloutTree
    from rlx.train.metrics import step_metrics

    response = Node(-1, 0, (5, 6, 7, 8), (-0.1,) * 4, 1.0, True, 1.0, True, "a", 0)
    fork = Node(0, 2, (9, 10, 11), (-0.2,) * 3, 1.0, True, 0.0, False, "b", 0, depth=2)
    tree = RolloutTree(Problem("p0", "q", "1"), 0, (1, 2, 3), (response, fork))
    record = RolloutBatch((tree,), 0)
    packed = pack([[1, 2, 3], [1, 2, 3, 5, 6]], [[5, 6, 7, 8], [9, 10, 11]], pad_id=0)
    advantages = torch.tensor([[0.5, 0.5, 0.5, 0.5], [-0.5, -0.5, -0.5, 0.0]])  # [B, T] response tokens
    metrics = step_metrics(record, [(tree, 0), (tree, 1)], advantages, packed)
    assert (metrics["tokens_policy"], metrics["tokens_branch"]) == (4, 3)
    assert (metrics["tokens_trained"], metrics["tokens_forward"]) == (7, 15)
    assert (metrics["leaves_per_prompt"], metrics["tree_depth"]) == (2.0, 2.0)
    assert metrics["adv_sign_agreement"] == 1.0  # + on the correct response, - on the incorrect fork
