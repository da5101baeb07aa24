"""Tree advantages: every node of a prompt's rollout tree is a training row (docs/algorithms.md, "Training on
every branch").

A rollout tree (rlx/sampling/tree.py) holds the responses to one prompt and the rollouts branched from them
(and from each other). Every node is a complete sample with outcome R(n). A *state* is a point of the tree:
the prompt (the root), or position p of node n (n's first p own tokens generated). The leaves through a
state are its *pool*: for (n, p) with p >= 1, n itself plus the whole subtree of every child of n that forks
at p' >= p (they share n's tokens up to p'); for the root, every node. V(state) = the mean outcome of its pool
(Monte Carlo, TreeRL arXiv 2506.11902 §3.2; TRePO arXiv 2506.02553 Eq. 31's pooling, generalised to trees).
Position 0 of a node is its parent's state at its fork (the root for a response).

Node n's own tokens are cut into segments at the positions where its children fork; token j of segment
[b, b') gets, by `algo.tree.advantage`:
  local         V(n, b') - V(n, b), with V(n, L_n) = R(n): the value gain of the segment (TRePO Theorem 2,
                Eq. 28, between neighbouring forks, at every node; SPO-tree arXiv 2505.23564 Eq. 9)
  global        R(n) - V(root): the outcome against the mean of all leaves of the prompt (TreeRL Eq. 5)
  global_local  their sum (TreeRL Eq. 7, without its 1/sqrt(|leaves|) re-weighting)
  subgroup      sum_s |pool(s)| (R(n) - V(s)) / sum_s |pool(s)| over the branching states s on n's path, the
                root included: each leaf against the size-weighted means of every subgroup it belongs to
                (TreePO arXiv 2508.17445 §3.3, rlx's size-weighted reading)
Then, optionally, `algo.tree.sibling_norm` divides a node's advantages by the standard deviation of the
outcomes of its siblings (the nodes that start from the same state; TreeRPO arXiv 2506.05183's
group-relative normalisation within each sibling group; left unscaled when that deviation is 0), and
`algo.adv_norm` whitens none | batch | group (the rows of one tree).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from rlx.algos.base import AdvantageInputs
from rlx.algos.checks import check_choice, check_int
from rlx.algos.stats import normalize_advantages, valid_positions

TREE_ADVANTAGES = ("local", "global", "global_local", "subgroup")
OFF_TEMPERATURE = ("refuse", "exclude")
ROOT = (-1, 0)  # the state of the prompt


@dataclass(frozen=True)
class TreeConfig:
    """`algo.tree`: how the rollout tree is grown and trained on (with `algo.train_on_branches=true`)."""

    advantage: str = "global_local"  # local | global | global_local | subgroup
    sibling_norm: bool = False  # divide by the std of the sibling group's outcomes (TreeRPO)
    drop_zero_adv: bool = False  # rows whose advantages are all zero leave the loss and its normalisers
    # rollouts sampled at a temperature other than train.temperature: refuse the config | exclude them from
    # training (they still count in the values). rlx's samplers record temperature-1 log-probs only, so an
    # importance weight against their own sampling distribution is not available.
    off_temperature: str = "refuse"
    depth: int = 1  # fork levels: 1 = forks of the responses; 2 = also forks of those rollouts; ...
    forks_per_node: int = 2  # forks of each rollout at levels >= 2 (positions by algo.branch_selection)
    width: int = 0  # rollouts per fork at levels >= 2; 0 = algo.rollouts_per_branch
    fork_budget: int | None = None  # at most this many branch rollouts per prompt, all levels; null = no cap

    def validate(self) -> None:
        check_choice("tree.advantage", self.advantage, TREE_ADVANTAGES)
        check_choice("tree.sibling_norm", self.sibling_norm, (True, False))
        check_choice("tree.drop_zero_adv", self.drop_zero_adv, (True, False))
        check_choice("tree.off_temperature", self.off_temperature, OFF_TEMPERATURE)
        check_int("tree.depth", self.depth, 1)
        check_int("tree.forks_per_node", self.forks_per_node, 1)
        check_int("tree.width", self.width, 0)
        if self.fork_budget is not None:
            check_int("tree.fork_budget", self.fork_budget, 1)

    def changed(self) -> list[str]:
        """The keys that only act with train_on_branches=true and are not at their defaults."""
        default = TreeConfig()
        keys = ("advantage", "sibling_norm", "drop_zero_adv", "depth", "fork_budget")
        return [f"algo.tree.{k}" for k in keys if getattr(self, k) != getattr(default, k)]


class TreeValues:
    """Pools and values of one rollout tree's states, in float64."""

    def __init__(self, tree):
        self.tree = tree
        n = len(tree.nodes)
        self.rewards = [float(node.reward) for node in tree.nodes]
        self.sub_sum, self.sub_count = list(self.rewards), [1] * n  # subtree of each node (itself included)
        for i in reversed(range(n)):  # parents come before children
            p = tree.nodes[i].parent
            if p >= 0:
                self.sub_sum[p] += self.sub_sum[i]
                self.sub_count[p] += self.sub_count[i]
        self.children = [[] for _ in range(n)]
        for i, node in enumerate(tree.nodes):
            if node.parent >= 0:
                self.children[node.parent].append(i)
        roots = tree.responses()
        self.root_pool = (sum(self.sub_sum[i] for i in roots), sum(self.sub_count[i] for i in roots))

    def state(self, i: int, p: int) -> tuple[int, int]:
        """The canonical name of position p of node i: position 0 is the parent's state at the fork."""
        while p == 0:
            node = self.tree.nodes[i]
            if node.parent < 0:
                return ROOT
            i, p = node.parent, node.fork
        return i, p

    def pool(self, state: tuple[int, int]) -> tuple[float, int]:
        """(sum of outcomes, count) of the leaves through `state`."""
        if state == ROOT:
            return self.root_pool
        i, p = state
        total, count = self.rewards[i], 1
        for c in self.children[i]:
            if self.tree.nodes[c].fork >= p:
                total, count = total + self.sub_sum[c], count + self.sub_count[c]
        return total, count

    def value(self, state: tuple[int, int]) -> float:
        total, count = self.pool(state)
        return total / count

    def forks(self, i: int) -> list[int]:
        """Sorted positions p >= 1 of node i where at least one child forks."""
        return sorted({self.tree.nodes[c].fork for c in self.children[i] if self.tree.nodes[c].fork >= 1})


def node_advantages(values: TreeValues, i: int, mode: str) -> list[float]:
    """Per-token advantages [L_i] of node i's own tokens under `mode` (see the module docstring)."""
    length = len(values.tree.nodes[i].token_ids)
    reward = values.rewards[i]
    if mode == "global":
        return [reward - values.value(ROOT)] * length
    if mode == "subgroup":
        return [subgroup_advantage(values, i)] * length
    bounds = [0, *[p for p in values.forks(i) if p < length], length]
    local = []
    for b, b_next in zip(bounds, bounds[1:]):
        end = reward if b_next >= length else values.value((i, b_next))
        local += [end - values.value(values.state(i, b))] * (b_next - b)
    if mode == "local":
        return local
    if mode == "global_local":
        base = reward - values.value(ROOT)
        return [base + a for a in local]
    raise ValueError(f"algo.tree.advantage must be one of {list(TREE_ADVANTAGES)}, got {mode!r}")


def path_states(values: TreeValues, i: int) -> list[tuple[int, int]]:
    """The branching states on node i's path from the root, the root first: every fork position of an
    ancestor up to where the path leaves it, then every fork position of node i itself."""
    states, nodes = [], values.tree.nodes
    child, limit = i, None
    while child >= 0:
        forks = values.forks(child)
        states += [(child, p) for p in forks if limit is None or p <= limit]
        limit, child = nodes[child].fork, nodes[child].parent
    return [ROOT, *reversed(states)]


def subgroup_advantage(values: TreeValues, i: int) -> float:
    """TreePO: R(i) minus the size-weighted mean of the values of every subgroup node i belongs to."""
    pools = [values.pool(s) for s in path_states(values, i)]
    weight = sum(count for _, count in pools)
    return sum(count * (values.rewards[i] - total / count) for total, count in pools) / weight


def sibling_std(values: TreeValues, i: int) -> float:
    """Standard deviation (population) of the outcomes of the nodes that start from node i's start state."""
    start = values.state(i, 0)
    outcomes = [values.rewards[j] for j in range(len(values.rewards)) if values.state(j, 0) == start]
    mean = sum(outcomes) / len(outcomes)
    return math.sqrt(sum((r - mean) ** 2 for r in outcomes) / len(outcomes))


def tree_advantages(inp: AdvantageInputs, cfg) -> torch.Tensor:
    """Advantages [B, T] of the rows `inp.tree_rows` (0 on padding), see the module docstring."""
    mask = inp.response_mask  # [B, T]
    adv = torch.zeros(mask.shape, dtype=torch.float64)  # [B, T]
    cache: dict[int, TreeValues] = {}
    for b, (tree, i) in enumerate(inp.tree_rows):
        values = cache.setdefault(id(tree), TreeValues(tree))
        cols = valid_positions(mask[b])  # [L_i]
        row = node_advantages(values, i, cfg.tree.advantage)
        if cfg.tree.sibling_norm:
            std = sibling_std(values, i)
            row = [a / std for a in row] if std > 0 else row
        adv[b, cols] = torch.tensor(row[: cols.numel()], dtype=torch.float64)
    return normalize_advantages(adv.to(mask.dtype), mask, inp.group_ids, cfg.adv_norm)
