"""Building a step's rollout record (rlx/record.py): drafts while the rollout phase works, then frozen.

The rollout phase samples responses (`rollout.sample_policy`, or DAPO's `dynamic`), plans and generates their
branch rollouts (`rollout.generate_branches`, or `adaptive.two_rounds`), and, for deeper trees
(`algo.tree.depth` > 1), forks of those rollouts (`grow`). Until scoring is done the nodes are `Draft`s,
private to the rollout phase; `freeze` turns the scored drafts into the immutable `RolloutBatch` the
learning side reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from rlx.algos.base import Knot
from rlx.record import Node, RolloutBatch, RolloutTree, kept_prefix, knot_prefix
from rlx.sampling.base import Generation, GenRequest, request_seed
from rlx.train.rollout import generate as rollout
from rlx.train.rollout.generate import Branches, Trajectory


@dataclass
class Draft:
    """A node under construction; `reward` is None until scored."""

    parent: int
    fork: int
    gen: Generation
    temperature: float
    depth: int
    duplicate: bool = False
    reward: float | None = None
    correct: bool = False
    text: str = ""
    graded: bool = False  # text and verdict known


@dataclass
class DraftTree:
    problem: object
    group: int
    prompt_ids: tuple[int, ...]
    nodes: list[Draft] = field(default_factory=list)

    def prefix(self, i: int) -> list[int]:
        """The response tokens before draft i's own (its ancestors' kept tokens), as `RolloutTree.prefix`."""
        return list(kept_prefix(self.nodes, i, tokens=lambda draft: draft.gen.token_ids))


def draft_trees(trajs: list[Trajectory], branches: list[Branches], temperature: float) -> list[DraftTree]:
    """One draft tree per prompt group: its responses (in sample order), then each response's branch rollouts
    knot by knot (rollout m of a knot in schedule order). A Generation object seen before (a shared greedy
    request, `rollout.schedule_branch_requests`) makes its later nodes duplicates."""
    trees: dict[int, DraftTree] = {}
    seen: set[int] = set()
    for tr in trajs:
        tree = trees.setdefault(tr.group, DraftTree(tr.problem, tr.group, tuple(tr.prompt_ids)))
        tree.nodes.append(Draft(-1, 0, Generation(list(tr.response_ids), list(tr.sampler_logprobs), tr.finished),
                                temperature, 1, reward=tr.reward if tr.scored else None, correct=tr.correct,
                                text=tr.text, graded=tr.scored))  # dynamic sampling / adaptive scored them
    counts: dict[int, int] = {}
    for tr, br in zip(trajs, branches):
        tree = trees[tr.group]
        parent = counts[tr.group] = counts.get(tr.group, -1) + 1  # the response's index in its tree
        for i, (knot, gens) in enumerate(zip(br.knots, br.rollouts)):
            rewards = br.rewards[i] if i < len(br.rewards) else []
            for m, gen in enumerate(gens):
                tree.nodes.append(Draft(parent, knot.t - 1, gen, knot.temperatures[m], 2,
                                        duplicate=id(gen) in seen, reward=rewards[m] if m < len(rewards) else None))
                seen.add(id(gen))
    return [trees[g] for g in sorted(trees)]


def freeze(trees: list[DraftTree], policy_version: int) -> RolloutBatch:
    """The immutable record of scored drafts (every draft must have its reward)."""
    frozen = []
    for tree in trees:
        nodes = []
        for i, d in enumerate(tree.nodes):
            if d.reward is None:
                raise RuntimeError(f"rollout record: node {i} of prompt group {tree.group} was never scored")
            nodes.append(Node(parent=d.parent, fork=d.fork, token_ids=tuple(d.gen.token_ids),
                              logprobs=tuple(d.gen.logprobs), temperature=d.temperature, finished=d.gen.finished,
                              reward=float(d.reward), correct=bool(d.correct), text=d.text,
                              policy_version=policy_version, duplicate=d.duplicate, depth=d.depth))
        frozen.append(RolloutTree(tree.problem, tree.group, tree.prompt_ids, tuple(nodes)))
    return RolloutBatch(tuple(frozen), policy_version)


def tree_settings(algo_cfg):
    """`algo.tree` when the algorithm trains on its branches, else None (no deeper levels, no budget)."""
    return algo_cfg.tree if getattr(algo_cfg, "train_on_branches", False) else None


def trim_plans(trajs: list[Trajectory], plans: list[list[Knot]], budget: int | None) -> list[list[Knot]]:
    """The first-level plans cut to `budget` branch rollouts per prompt (`algo.tree.fork_budget`), dealt round
    robin: every response's first knot, then every response's second, ..., whole forks only."""
    if budget is None:
        return plans
    kept: list[list[Knot]] = [[] for _ in plans]
    for group in dict.fromkeys(tr.group for tr in trajs):
        members = [b for b, tr in enumerate(trajs) if tr.group == group]
        left = budget
        for depth in range(max((len(plans[b]) for b in members), default=0)):
            for b in members:
                if depth < len(plans[b]) and len(plans[b][depth].temperatures) <= left:
                    kept[b].append(plans[b][depth])
                    left -= len(plans[b][depth].temperatures)
    return [sorted(k, key=lambda knot: knot.t) for k in kept]


def level_requests(trees: list[DraftTree], level: int, algo, cfg, step: int, newline_ids: frozenset[int],
                   ) -> tuple[list[GenRequest], list[tuple[DraftTree, int, int, float]]]:
    """Requests forking every node of depth level - 1 (not a duplicate) at up to `algo.tree.forks_per_node`
    positions (the algorithm's own plan minus t = 1, which would be a sibling), `width` rollouts each, within
    the fork budget; and (tree, parent, fork, temperature) of each."""
    tree_cfg, t = cfg.algo.tree, cfg.train
    width = tree_cfg.width or cfg.algo.rollouts_per_branch
    rng = torch.Generator().manual_seed(request_seed(cfg.seed, step, f"knots/{level}", 0))  # its own stream per level
    requests, where = [], []
    for k, tree in enumerate(trees):
        left = (tree_cfg.fork_budget or 10**9) - sum(1 for n in tree.nodes if n.parent >= 0)
        for i, node in enumerate(list(tree.nodes)):
            if node.depth != level - 1 or node.duplicate:
                continue
            ids = node.gen.token_ids
            scores = {"scores": node.gen.logprobs} if cfg.algo.branch_selection == "low_prob" else {}
            knots = algo.plan_branches(ids, rollout.step_starts(ids, newline_ids), cfg.algo, rng, **scores)
            prefix = tree.prefix(i)
            for knot in [kn for kn in knots if kn.t > 1][: tree_cfg.forks_per_node]:
                budget = t.max_new_tokens - len(prefix) - (knot.t - 1)
                for m, tau in enumerate(knot.temperatures[:width]):
                    if left < 1 or budget < 1:
                        break
                    context = tree.prompt_ids + tuple(prefix) + knot_prefix(ids, knot.t)
                    seed = request_seed(cfg.seed, step, f"tree/{level}/{k}/{i}/{knot.t}", m)
                    requests.append(GenRequest(context, tau, budget, seed))
                    where.append((tree, i, knot.t - 1, tau))
                    left -= 1
    return requests, where


def grow(sampler, trees: list[DraftTree], algo, cfg, step: int, newline_ids: frozenset[int]) -> None:
    """Levels 3 .. depth + 1 of the trees (`algo.tree.depth` > 1): forks of the previous level's rollouts, one
    batched generate call per level. Seeds are a function of (run seed, step, level, tree, node, fork, m)."""
    tree_cfg = tree_settings(cfg.algo)
    if tree_cfg is None:
        return
    for level in range(3, tree_cfg.depth + 2):
        requests, where = level_requests(trees, level, algo, cfg, step, newline_ids)
        if not requests:
            return
        for (tree, parent, fork, tau), gen in zip(where, sampler.generate(requests)):
            tree.nodes.append(Draft(parent, fork, gen, tau, level))
