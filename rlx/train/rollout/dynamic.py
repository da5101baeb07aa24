"""DAPO's dynamic sampling in the step driver (arXiv 2503.14476 §3.2, Eq. 8's 0 < |{o_i correct}| < G).

With `train.dynamic_sampling`, the step's responses are scored right after sampling; every group whose rewards
are all equal (zero group-relative advantage) is dropped, and further prompts are sampled to refill the batch,
for at most `train.max_refill_rounds` rounds; the batch is then trimmed to `train.prompts_per_step` groups (or
trains on fewer when the rounds ran out). Deterministic under the seed, and independent of the run's history
(so a resumed run refills identically): round r of step s draws its prompts from the training stream with a
generator seeded by (seed, s, r), and samples with the request seeds of phase `refill/r`. Dropped (and trimmed)
groups still count as generated tokens (`tokens_dropped`), since the budgets measure compute. The kept
responses carry their rewards into the step's rollout record (rlx/train/rollout/drafts.py): no response is scored twice.
Single process only for now: with several ranks each would refill on its own, so a torchrun job with
`train.dynamic_sampling` stops at its first step with an error naming the key.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from rlx.algos.dapo import groups_still_needed, informative_groups
from rlx.sampling.base import request_seed
from rlx.train.infra import distributed as dist
from rlx.train.rollout import generate
from rlx.train.rollout.drafts import DraftTree
from rlx.train.rollout.scoring import Scorer


def refill_problems(task, seed: int, step: int, round_: int, count: int) -> list:
    """`count` training problems for refill round `round_` of `step`, a function of (seed, step, round) only."""
    rng = np.random.RandomState(request_seed(seed, step, "refill", round_) % 2**32)
    picks = rng.choice(len(task.train), size=min(count, len(task.train)), replace=False)
    return [task.train[int(i)] for i in picks]


def sample_round(sampler, tokenizer, task, problems, cfg, step: int, round_: int) -> list[DraftTree]:
    """generate.sample_responses for round 0; a refill round draws its own request seeds (phase `refill/r`)."""
    if round_ == 0:
        return generate.sample_responses(sampler, tokenizer, task, problems, cfg, step)
    group = cfg.algo.samples_per_prompt
    prompts = [tokenizer.encode(task.prompt(p)) for p in problems]
    requests = generate.policy_requests(prompts, group, cfg.train.temperature, cfg.train.max_new_tokens, cfg.seed,
                                        step)
    requests = [dataclasses.replace(r, seed=request_seed(cfg.seed, step, f"refill/{round_}", i))
                for i, r in enumerate(requests)]
    return generate.response_trees(problems, group, requests, sampler.generate(requests))


def informative(trees: list[DraftTree]) -> list[bool]:
    """Whether each tree's (scored) responses have unequal rewards: a non-zero group-relative advantage."""
    rewards = torch.tensor([d.score.reward for tree in trees for d in tree.nodes])  # [N]
    groups = torch.tensor([k for k, tree in enumerate(trees) for _ in tree.nodes])  # [N]
    good = set(informative_groups(rewards, groups))
    return [k in good for k in range(len(trees))]


def tokens(trees: list[DraftTree]) -> int:
    return sum(len(d.gen.token_ids) for tree in trees for d in tree.nodes)


def sample_informative(sampler, tokenizer, task, problems, cfg, step: int, scorer: Scorer,
                       ) -> tuple[list[DraftTree], dict[str, float]]:
    """The step's response trees with only informative groups (renumbered 0..n-1), and the dynamic-sampling
    metrics: dynamic_dropped_groups, dynamic_refill_rounds, dynamic_kept_groups, tokens_dropped. Each round's
    responses are scored by one `scorer.score` call (the run's reward and overlong shape)."""
    if dist.world_size() > 1:
        raise ValueError("train.dynamic_sampling: not supported under torchrun yet (each rank would refill its own "
                         "groups); run one process or set train.dynamic_sampling=false")
    target, kept, dropped, dropped_tokens, round_ = len(problems), [], 0, 0, 0
    last = []  # the last round's groups: trained on (with zero advantages) if no group was informative at all
    while True:
        last = sample_round(sampler, tokenizer, task, problems, cfg, step, round_)
        scorer.score(last)
        for tree, good in zip(last, informative(last)):
            if good:
                kept.append(tree)
            else:
                dropped += 1
                dropped_tokens += tokens([tree])
        need = groups_still_needed(len(kept), target, round_, cfg.train.max_refill_rounds)
        if need == 0:
            break
        round_ += 1
        problems = refill_problems(task, cfg.seed, step, round_, need)
    if not kept:
        kept, dropped = last, dropped - len(last)
        dropped_tokens -= tokens(last)
    dropped_tokens += tokens(kept[target:])  # trimmed
    out = [dataclasses.replace(tree, group=gid) for gid, tree in enumerate(kept[:target])]
    return out, {"dynamic_dropped_groups": float(dropped), "dynamic_refill_rounds": float(round_),
                 "dynamic_kept_groups": float(min(len(kept), target)), "tokens_dropped": float(dropped_tokens)}
