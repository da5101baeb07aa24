"""Branch-request scheduling (pure logic): token-id prefixes, budgets, greedy dedup, exact scatter-back."""

from __future__ import annotations

from rlx.algos.base import Knot
from rlx.data.base import Problem
from rlx.sampling.base import Generation, request_seed
from rlx.train.rollout.generate import Trajectory, gather_branches, schedule_branch_requests, step_starts

PROBLEM = Problem(id="p", question="1+1=?", answer="2")


def traj(prompt, response, group=0):
    return Trajectory(problem=PROBLEM, group=group, prompt_ids=list(prompt), response_ids=list(response),
                      finished=True)


def test_prefixes_are_token_ids_and_budgets_match_the_original():
    trajs = [traj([7, 8], [10, 11, 12, 13, 14])]
    plans = [[Knot(1, (0.0, 1.0)), Knot(4, (0.0, 0.5))]]
    requests, index_map = schedule_branch_requests(trajs, plans, max_new_tokens=9, seed=3, step=2)
    assert [r.prompt_ids for r in requests] == [(7, 8), (7, 8), (7, 8, 10, 11, 12), (7, 8, 10, 11, 12)]
    assert [r.max_new_tokens for r in requests] == [9, 9, 6, 6]  # prefix + continuation <= 9
    assert [r.temperature for r in requests] == [0.0, 1.0, 0.0, 0.5]
    assert index_map == [[[0, 1], [2, 3]]]


def test_identical_greedy_requests_are_generated_once_and_sampled_ones_never_share_a_seed():
    # two samples of one prompt: knot 1 is the same prompt for both, so the greedy rollout is shared
    trajs = [traj([5], [1, 2, 3]), traj([5], [1, 9, 9])]
    plans = [[Knot(1, (0.0, 1.0)), Knot(2, (0.0,))], [Knot(1, (0.0, 1.0)), Knot(2, (0.0,))]]
    requests, index_map = schedule_branch_requests(trajs, plans, max_new_tokens=3, seed=0, step=1)
    # greedy at t=1 shared; greedy at t=2 shared too (both prefixes are [5, 1]); tau=1 never shared
    assert len(requests) == 4
    assert index_map[0][0][0] == index_map[1][0][0]
    assert index_map[0][1][0] == index_map[1][1][0]
    assert index_map[0][0][1] != index_map[1][0][1]
    sampled = [r for r in requests if r.temperature > 0]
    assert len({r.seed for r in sampled}) == len(sampled) == 2


def test_scatter_back_maps_every_rollout_to_its_knot():
    trajs = [traj([1], [2, 3, 4]), traj([1], [5, 6])]
    plans = [[Knot(1, (0.5, 1.0)), Knot(3, (1.0,))], [Knot(2, (1.0, 1.0))]]
    requests, index_map = schedule_branch_requests(trajs, plans, max_new_tokens=4, seed=0, step=0)
    # a fake "generation" that records which request produced it
    generations = [Generation(token_ids=[100 + j], logprobs=[0.0], finished=True) for j in range(len(requests))]
    branches = gather_branches(plans, index_map, generations)
    for b, (tr, br) in enumerate(zip(trajs, branches)):
        assert [k.t for k in br.knots] == [k.t for k in plans[b]]
        for i, knot in enumerate(br.knots):
            for m, gen in enumerate(br.rollouts[i]):
                request = requests[gen.token_ids[0] - 100]
                assert request.prompt_ids == tuple(tr.prompt_ids + tr.response_ids[: knot.t - 1])
                assert request.temperature == knot.temperatures[m]


def test_step_starts_follow_newlines():
    newline = 99
    assert step_starts([1, 2, newline, 3, newline, 4], frozenset({newline})) == [1, 4, 6]
    assert step_starts([1, 2, newline], frozenset({newline})) == [1]  # a trailing newline starts nothing


def test_request_seeds_are_distinct_and_reproducible():
    seeds = {request_seed(0, step, "policy", i) for step in range(3) for i in range(100)}
    assert len(seeds) == 300
    assert request_seed(5, 1, "policy", 2) == request_seed(5, 1, "policy", 2)
