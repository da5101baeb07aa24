"""Branch-request scheduling (pure logic): token-id prefixes, budgets, greedy dedup flagged on the drafts,
exact scatter-back."""

from __future__ import annotations

import pytest

from rlx.algos.base import Knot
from rlx.data.base import Problem
from rlx.record import step_starts
from rlx.sampling.base import Generation, request_seed
from rlx.train.rollout.drafts import Draft, DraftTree, freeze
from rlx.train.rollout.drafts import responses as response_drafts
from rlx.train.rollout.generate import add_branches, schedule_branch_requests

PROBLEM = Problem(id="p", question="1+1=?", answer="2")


def trees(prompt, *responses):
    """One draft tree of `prompt` with the given responses; its responses as (tree, index) in order."""
    tree = DraftTree(PROBLEM, 0, tuple(prompt))
    tree.nodes += [Draft(-1, 0, Generation(list(r), [0.0] * len(r), True), 1.0, 1) for r in responses]
    return response_drafts([tree])


def test_prefixes_are_token_ids_and_budgets_match_the_original():
    trajs = trees([7, 8], [10, 11, 12, 13, 14])
    plans = [[Knot(1, (0.0, 1.0)), Knot(4, (0.0, 0.5))]]
    requests, index_map = schedule_branch_requests(trajs, plans, max_new_tokens=9, seed=3, step=2)
    assert [r.prompt_ids for r in requests] == [(7, 8), (7, 8), (7, 8, 10, 11, 12), (7, 8, 10, 11, 12)]
    assert [r.max_new_tokens for r in requests] == [9, 9, 6, 6]  # prefix + continuation <= 9
    assert [r.temperature for r in requests] == [0.0, 1.0, 0.0, 0.5]
    assert index_map == [[[0, 1], [2, 3]]]


def test_identical_greedy_requests_are_generated_once_and_sampled_ones_never_share_a_seed():
    # two samples of one prompt: knot 1 is the same prompt for both, so the greedy rollout is shared
    trajs = trees([5], [1, 2, 3], [1, 9, 9])
    plans = [[Knot(1, (0.0, 1.0)), Knot(2, (0.0,))], [Knot(1, (0.0, 1.0)), Knot(2, (0.0,))]]
    requests, index_map = schedule_branch_requests(trajs, plans, max_new_tokens=3, seed=0, step=1)
    # greedy at t=1 shared; greedy at t=2 shared too (both prefixes are [5, 1]); tau=1 never shared
    assert len(requests) == 4
    assert index_map[0][0][0] == index_map[1][0][0]
    assert index_map[0][1][0] == index_map[1][1][0]
    assert index_map[0][0][1] != index_map[1][0][1]
    sampled = [r for r in requests if r.temperature > 0]
    assert len({r.seed for r in sampled}) == len(sampled) == 2


def test_identical_greedy_rollouts_are_flagged_duplicates_after_their_first_use():
    trajs = trees([5], [1, 2, 3], [1, 9, 9])
    plans = [[Knot(1, (0.0, 1.0))], [Knot(1, (0.0,))]]
    requests, index_map = schedule_branch_requests(trajs, plans, max_new_tokens=3, seed=0, step=1)
    generations = [Generation(token_ids=[100 + j], logprobs=[0.0], finished=True) for j in range(len(requests))]
    add_branches(trajs, plans, index_map, generations)
    tree = trajs[0][0]
    assert [(d.parent, d.gen.token_ids, d.duplicate) for d in tree.nodes[2:]] == [
        (0, [100], False), (0, [101], False), (1, [100], True)]  # response 1's greedy rollout is response 0's


def test_scatter_back_maps_every_rollout_to_its_knot():
    trajs = trees([1], [2, 3, 4], [5, 6])
    plans = [[Knot(1, (0.5, 1.0)), Knot(3, (1.0,))], [Knot(2, (1.0, 1.0))]]
    requests, index_map = schedule_branch_requests(trajs, plans, max_new_tokens=4, seed=0, step=0)
    # a fake "generation" that records which request produced it
    generations = [Generation(token_ids=[100 + j], logprobs=[0.0], finished=True) for j in range(len(requests))]
    added = add_branches(trajs, plans, index_map, generations)
    tree = trajs[0][0]
    for b, (_, r) in enumerate(trajs):
        for i, knot in enumerate(plans[b]):
            assert [tree.nodes[j].fork for j in added[b][i]] == [knot.t - 1] * len(knot.temperatures)
            for m, j in enumerate(added[b][i]):
                request = requests[tree.nodes[j].gen.token_ids[0] - 100]
                assert request.prompt_ids == tuple([1] + tree.nodes[r].gen.token_ids[: knot.t - 1])
                assert request.temperature == knot.temperatures[m] == tree.nodes[j].temperature


def test_a_second_round_of_a_knot_is_placed_after_its_first_and_freezing_needs_every_score():
    trajs = trees([1], [2, 3, 4])
    tree = trajs[0][0]
    first = [[Knot(1, (1.0,)), Knot(2, (1.0,))]]
    for round_, plans in enumerate((first, [[Knot(1, (1.0, 1.0)), Knot(2, ())]])):
        requests, index_map = schedule_branch_requests(trajs, plans, max_new_tokens=4, seed=0, step=0)
        generations = [Generation([10 * round_ + j], [0.0], True) for j in range(len(requests))]
        add_branches(trajs, plans, index_map, generations)
    assert [(d.knot, d.gen.token_ids) for d in tree.nodes[1:]] == [(0, [0]), (0, [10]), (0, [11]), (1, [1])]
    with pytest.raises(RuntimeError, match="node 0 of prompt group 0 was never scored"):
        freeze([tree], policy_version=0)


def test_step_starts_follow_newlines():
    newline = 99
    assert step_starts([1, 2, newline, 3, newline, 4], frozenset({newline})) == [1, 4, 6]
    assert step_starts([1, 2, newline], frozenset({newline})) == [1]  # a trailing newline starts nothing


def test_request_seeds_are_distinct_and_reproducible():
    seeds = {request_seed(0, step, "policy", i) for step in range(3) for i in range(100)}
    assert len(seeds) == 300
    assert request_seed(5, 1, "policy", 2) == request_seed(5, 1, "policy", 2)
