"""Sampling a step's batch and its branch rollouts: one batched generate call per phase.

Phase 1 (policy): every prompt of the step x samples_per_prompt, one call.
Phase 2 (branch): every knot of every trajectory x every temperature of the schedule, one call, as
token-id prefixes (never re-tokenised text). Identical greedy requests (same prefix, temperature 0) are
generated once and shared: greedy decoding is deterministic, so the copies would be identical anyway.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from rlx.algos.base import Knot
from rlx.data.base import Problem
from rlx.record import knot_prefix
from rlx.sampling.base import Generation, GenRequest, request_seed
from rlx.train.infra import distributed as dist


@dataclass
class Trajectory:
    problem: Problem
    group: int  # index of its prompt within the step (GRPO/RLOO groups)
    prompt_ids: list[int]
    response_ids: list[int]
    finished: bool
    text: str = ""
    reward: float = 0.0
    correct: bool = False
    # the sampler's raw log-probs of response_ids (Generation.logprobs), for rollout correction's mismatch
    sampler_logprobs: list[float] = field(default_factory=list)
    scored: bool = False  # reward, verdict and text set (by `scoring.Scorer.score`)


@dataclass
class Branches:
    """The branch rollouts of one trajectory: rollouts[i][m] continues from knots[i].t at temperature m."""

    knots: list[Knot] = field(default_factory=list)
    rollouts: list[list[Generation]] = field(default_factory=list)
    rewards: list[list[float]] = field(default_factory=list)

    def num_rollouts(self) -> int:
        return sum(len(r) for r in self.rollouts)


def policy_requests(prompt_ids: Sequence[list[int]], samples_per_prompt: int, temperature: float,
                    max_new_tokens: int, seed: int, step: int) -> list[GenRequest]:
    requests = []
    for group, ids in enumerate(prompt_ids):
        for k in range(samples_per_prompt):
            index = group * samples_per_prompt + k
            seed_i = request_seed(seed, step, "policy", index)
            requests.append(GenRequest(tuple(ids), temperature, max_new_tokens, seed_i))
    return requests


def schedule_branch_requests(trajectories: Sequence[Trajectory], plans: Sequence[list[Knot]], max_new_tokens: int,
                             seed: int, step: int, phase: str = "branch",
                             ) -> tuple[list[GenRequest], list[list[list[int]]]]:
    """Unique generation requests for all knots of all trajectories, and where each rollout finds its
    generation: index_map[b][i][m] indexes the returned request list. The rollout budget is the original's
    (prefix + continuation <= max_new_tokens). `phase` names the seed stream (a second adaptive round has its own)."""
    requests: list[GenRequest] = []
    greedy_index: dict[tuple[tuple[int, ...], int], int] = {}
    index_map: list[list[list[int]]] = []
    for b, (traj, knots) in enumerate(zip(trajectories, plans, strict=True)):
        per_knot = []
        for i, knot in enumerate(knots):
            prefix = tuple(traj.prompt_ids) + knot_prefix(traj.response_ids, knot.t)  # W_{0,t-1} as token ids
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


def gather_branches(plans: Sequence[list[Knot]], index_map: list[list[list[int]]],
                    generations: Sequence[Generation]) -> list[Branches]:
    """Scatter the generations of the unique requests back to (trajectory, knot, rollout)."""
    return [
        Branches(knots=list(knots), rollouts=[[generations[j] for j in slots] for slots in per_knot])
        for knots, per_knot in zip(plans, index_map, strict=True)
    ]


def step_starts(response_ids: Sequence[int], newline_ids: frozenset[int]) -> list[int]:
    """1-based positions t at which a reasoning step (a line) begins: t=1 and every t after a newline."""
    starts = [1]
    starts += [j + 2 for j, tok in enumerate(response_ids[:-1]) if tok in newline_ids]
    return starts


def knot_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(request_seed(seed, step, "knots", 0))


def step_ends(response_ids: Sequence[int], newline_ids: frozenset[int]) -> list[int]:
    """0-based index of the last token of every reasoning step (a line, or the response's tail)."""
    ends = [j for j, tok in enumerate(response_ids) if tok in newline_ids]
    if response_ids and (not ends or ends[-1] != len(response_ids) - 1):
        ends.append(len(response_ids) - 1)
    return ends


def sample_policy(sampler, tokenizer, task, problems, cfg, step: int) -> list[Trajectory]:
    """Phase 1: `algo.samples_per_prompt` responses to each of this rank's prompts, one batched call."""
    group, t = cfg.algo.samples_per_prompt, cfg.train
    prompts = [tokenizer.encode(task.prompt(p)) for p in problems]
    requests = policy_requests(prompts, group, t.temperature, t.max_new_tokens, cfg.seed, step)
    requests = dist.with_global_seeds(requests, group, cfg.seed, step)
    return trajectories(problems, group, requests, sampler.generate(requests))


def trajectories(problems, group: int, requests: Sequence[GenRequest], generations: Sequence[Generation],
                 ) -> list[Trajectory]:
    """One Trajectory per policy request: request i answers problems[i // group], in group i // group."""
    return [
        Trajectory(problem=problems[i // group], group=i // group, prompt_ids=list(req.prompt_ids),
                   response_ids=gen.token_ids, finished=gen.finished, sampler_logprobs=list(gen.logprobs))
        for i, (req, gen) in enumerate(zip(requests, generations))
    ]


def plan_all(algo, trajs: list[Trajectory], newline_ids: frozenset[int], cfg, step: int,
             scores: list | None = None) -> list[list[Knot]]:
    """The knots the algorithm plans for every response. `scores[b]` [T]: per-token knot scores of trajectory
    b, for the algorithms that declare them (`rlx.train.rollout.knot_scores`)."""
    rng = knot_generator(cfg.seed, step)
    extra = [{} if scores is None else {"scores": scores[b]} for b in range(len(trajs))]
    return [algo.plan_branches(tr.response_ids, step_starts(tr.response_ids, newline_ids), cfg.algo, rng, **kw)
            for tr, kw in zip(trajs, extra)]


def generate_branches(sampler, trajs: list[Trajectory], plans: list[list[Knot]], cfg, step: int,
                      phase: str = "branch") -> list[Branches]:
    """The rollouts of `plans`, one batched call."""
    requests, index_map = schedule_branch_requests(trajs, plans, cfg.train.max_new_tokens, cfg.seed, step, phase)
    generations = sampler.generate(requests) if requests else []
    return gather_branches(plans, index_map, generations)
