"""Sampling a step's rollout trees straight into drafts: one batched generate call per level.

Responses: every prompt of the step x `algo.samples_per_prompt`, one call, one `DraftTree` per prompt.
Branch rollouts: every knot the algorithm plans on every response x every temperature of its schedule, one
call, as token-id prefixes (never re-tokenised text). Identical greedy requests (same prefix and budget,
temperature 0) are generated once: the later drafts that share a generation are flagged `duplicate` here, where
the sharing is decided. Deeper levels (`algo.fork_levels()` > 1): forks of the previous level's rollouts where
the algorithm's `plan_forks` says, one call per level. Every request's seed is a function of (run seed, step,
phase, position), so a step samples the same whatever ran before it (docs/algorithms.md, "The rollout record").
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from rlx.algos.base import Knot
from rlx.record import knot_prefix, step_starts
from rlx.sampling.base import Generation, GenRequest, request_seed
from rlx.train.infra import distributed as dist
from rlx.train.rollout.drafts import Draft, DraftTree

Responses = list[tuple[DraftTree, int]]  # (tree, index) of each response draft: the step's trajectory order


def policy_requests(prompt_ids: Sequence[list[int]], samples_per_prompt: int, temperature: float,
                    max_new_tokens: int, seed: int, step: int) -> list[GenRequest]:
    requests = []
    for group, ids in enumerate(prompt_ids):
        for k in range(samples_per_prompt):
            index = group * samples_per_prompt + k
            seed_i = request_seed(seed, step, "policy", index)
            requests.append(GenRequest(tuple(ids), temperature, max_new_tokens, seed_i))
    return requests


def response_trees(problems, group: int, requests: Sequence[GenRequest], generations: Sequence[Generation],
                   ) -> list[DraftTree]:
    """One draft tree per problem with its `group` responses: request i answers problems[i // group]."""
    trees = [DraftTree(p, g, requests[g * group].prompt_ids) for g, p in enumerate(problems)]
    for i, (req, gen) in enumerate(zip(requests, generations, strict=True)):
        trees[i // group].nodes.append(Draft(-1, 0, gen, req.temperature, 1))
    return trees


def sample_responses(sampler, tokenizer, task, problems, cfg, step: int) -> list[DraftTree]:
    """`algo.samples_per_prompt` responses to each of this rank's prompts, one batched call."""
    group, t = cfg.algo.samples_per_prompt, cfg.train
    prompts = [tokenizer.encode(task.prompt(p)) for p in problems]
    requests = policy_requests(prompts, group, t.temperature, t.max_new_tokens, cfg.seed, step)
    requests = dist.with_global_seeds(requests, group, cfg.seed, step)
    return response_trees(problems, group, requests, sampler.generate(requests))


def knot_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(request_seed(seed, step, "knots", 0))


def plan_all(algo, responses: Responses, newline_ids: frozenset[int], cfg, step: int,
             scores: list | None = None) -> list[list[Knot]]:
    """The knots the algorithm plans on every response. `scores[b]` [T]: per-token knot scores of response b,
    for the algorithms that declare them (rlx/train/rollout/knot_scores.py)."""
    rng = knot_generator(cfg.seed, step)
    plans = []
    for b, (tree, i) in enumerate(responses):
        ids = tree.nodes[i].gen.token_ids
        extra = {} if scores is None else {"scores": scores[b]}
        plans.append(algo.plan_branches(ids, step_starts(ids, newline_ids), cfg.algo, rng, **extra))
    return plans


def trim_plans(responses: Responses, plans: list[list[Knot]], budget: int | None) -> list[list[Knot]]:
    """The first-level plans cut to `budget` branch rollouts per prompt (`algo.fork_budget()`), dealt round
    robin: every response's first knot, then every response's second, ..., whole forks only."""
    if budget is None:
        return plans
    kept: list[list[Knot]] = [[] for _ in plans]
    for tree in dict.fromkeys(id(tree) for tree, _ in responses):
        members = [b for b, (t, _) in enumerate(responses) if id(t) == tree]
        left = budget
        for depth in range(max((len(plans[b]) for b in members), default=0)):
            for b in members:
                if depth < len(plans[b]) and len(plans[b][depth].temperatures) <= left:
                    kept[b].append(plans[b][depth])
                    left -= len(plans[b][depth].temperatures)
    return [sorted(k, key=lambda knot: knot.t) for k in kept]


def schedule_branch_requests(responses: Responses, plans: Sequence[list[Knot]], max_new_tokens: int, seed: int,
                             step: int, phase: str = "branch") -> tuple[list[GenRequest], list[list[list[int]]]]:
    """Unique generation requests for all knots of all responses, and where each rollout finds its generation:
    index_map[b][i][m] indexes the returned request list. The rollout budget is the original's (prefix +
    continuation <= max_new_tokens). `phase` names the seed stream (a second adaptive round has its own)."""
    requests: list[GenRequest] = []
    greedy_index: dict[tuple[tuple[int, ...], int], int] = {}
    index_map: list[list[list[int]]] = []
    for b, ((tree, r), knots) in enumerate(zip(responses, plans, strict=True)):
        per_knot = []
        for i, knot in enumerate(knots):
            prefix = tree.prompt_ids + knot_prefix(tree.nodes[r].gen.token_ids, knot.t)  # W_{0,t-1} as token ids
            budget = max_new_tokens - (knot.t - 1)
            slots = []
            for m, tau in enumerate(knot.temperatures):
                key = (prefix, budget)
                if tau == 0.0 and key in greedy_index:
                    slots.append(greedy_index[key])
                    continue
                slots.append(len(requests))
                if tau == 0.0:
                    greedy_index[key] = len(requests)
                requests.append(GenRequest(prefix, tau, budget, request_seed(seed, step, f"{phase}/{b}/{i}", m)))
            per_knot.append(slots)
        index_map.append(per_knot)
    return requests, index_map


def add_branches(responses: Responses, plans: Sequence[list[Knot]], index_map: list[list[list[int]]],
                 generations: Sequence[Generation]) -> list[list[list[int]]]:
    """Each knot's rollouts as drafts of its response's tree (a generation used before is a duplicate); returns
    their node indices: added[b][i] for knot i of response b."""
    seen: set[int] = set()
    added = []
    for (tree, r), knots, per_knot in zip(responses, plans, index_map, strict=True):
        indices = []
        for i, (knot, slots) in enumerate(zip(knots, per_knot, strict=True)):
            drafts = [Draft(r, knot.t - 1, generations[j], tau, 2, duplicate=j in seen, knot=i)
                      for j, tau in zip(slots, knot.temperatures, strict=True)]
            seen.update(slots)
            indices.append(tree.add_fork(drafts) if drafts else [])
        added.append(indices)
    return added


def generate_branches(sampler, responses: Responses, plans: list[list[Knot]], cfg, step: int,
                      phase: str = "branch") -> list[list[list[int]]]:
    """The rollouts of `plans` as drafts, one batched call; their node indices (`add_branches`)."""
    requests, index_map = schedule_branch_requests(responses, plans, cfg.train.max_new_tokens, cfg.seed, step,
                                                   phase)
    generations = sampler.generate(requests) if requests else []
    return add_branches(responses, plans, index_map, generations)


def fork_requests(trees: list[DraftTree], level: int, algo, cfg, step: int, newline_ids: frozenset[int],
                  ) -> tuple[list[GenRequest], list[tuple[DraftTree, int, int, float]]]:
    """Requests forking every draft of depth level - 1 (not a duplicate) where the algorithm's `plan_forks`
    says, within the fork budget; and (tree, parent, fork, temperature) of each."""
    max_new = cfg.train.max_new_tokens
    rng = torch.Generator().manual_seed(request_seed(cfg.seed, step, f"knots/{level}", 0))  # its own stream per level
    requests, where = [], []
    for k, tree in enumerate(trees):
        left = (cfg.algo.fork_budget() or 10**9) - sum(1 for n in tree.nodes if n.parent >= 0)
        for i, node in enumerate(list(tree.nodes)):
            if node.depth != level - 1 or node.duplicate:
                continue
            ids = node.gen.token_ids
            prefix = tree.prefix(i)
            for knot in algo.plan_forks(ids, step_starts(ids, newline_ids), node.gen.logprobs, cfg.algo, rng):
                budget = max_new - len(prefix) - (knot.t - 1)
                for m, tau in enumerate(knot.temperatures):
                    if left < 1 or budget < 1:
                        break
                    context = tree.prompt_ids + tuple(prefix) + knot_prefix(ids, knot.t)
                    seed = request_seed(cfg.seed, step, f"tree/{level}/{k}/{i}/{knot.t}", m)
                    requests.append(GenRequest(context, tau, budget, seed))
                    where.append((tree, i, knot.t - 1, tau))
                    left -= 1
    return requests, where


def grow(sampler, trees: list[DraftTree], algo, cfg, step: int, newline_ids: frozenset[int]) -> None:
    """Levels 3 .. fork_levels + 1 of the trees: forks of the previous level's rollouts, one batched generate
    call per level. Seeds are a function of (run seed, step, level, tree, node, fork, m)."""
    if algo.plan_forks is None:
        return
    for level in range(3, cfg.algo.fork_levels() + 2):
        requests, where = fork_requests(trees, level, algo, cfg, step, newline_ids)
        if not requests:
            return
        for (tree, parent, fork, tau), gen in zip(where, sampler.generate(requests)):
            tree.nodes.append(Draft(parent, fork, gen, tau, level))
