"""Tree advantages: every node of a prompt's rollout tree is a training row (docs/algorithms.md, "Training on
every branch").

A rollout tree (rlx/record.py) holds the responses to one prompt and the rollouts branched from them
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
  global        R(n) - V(root): the outcome against the mean of all leaves of the prompt; with
                `algo.tree.global_value=segment`, V(n, b') - V(root): the mean outcome of the leaves below the
                segment (TreeRL arXiv 2506.11902 Eq. 5, its V(s_n) with s_n the segment)
  global_local  their sum (TreeRL Eq. 7, without its 1/sqrt(|leaves|) re-weighting)
  subgroup      sum_s |pool(s)| (R(n) - V(s)) / sum_s |pool(s)| over the branching states s on n's path, the
                root included: each leaf against the size-weighted means of every subgroup it belongs to
                (TreePO arXiv 2508.17445 §3.3, rlx's size-weighted reading)
Then, optionally, `algo.tree.sibling_norm` divides a node's advantages by the standard deviation of the
outcomes of its siblings (the nodes that start from the same state; TreeRPO arXiv 2506.05183's
group-relative normalisation within each sibling group; left unscaled when that deviation is 0), and
`algo.adv_norm` whitens none | batch | group (the rows of one tree).

Real-valued outcomes (docs/algorithms.md, "Training on every branch", "Real-valued rewards"): everything stays
in float64 until the returned tensor; a difference of values within ROUNDING of the tree's largest |outcome|
is float rounding of equal means and is exactly 0, and so is the spread of sibling outcomes equal up to
rounding. With `algo.tree.drop_zero_adv` a row whose *raw* advantages are all 0 leaves the whitening and comes
out as exact zeros, which is what the loss weights read (rlx/train/learn/correction.py).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

import torch

from rlx.algos.base import AdvantageInputs
from rlx.algos.checks import check_choice, check_int
from rlx.algos.stats import normalize_advantages, valid_positions

TREE_ADVANTAGES = ("local", "global", "global_local", "subgroup")
GLOBAL_VALUES = ("outcome", "segment")  # the global term's value: R(n), or the segment's V(n, b') (TreeRL Eq. 5)
OFF_TEMPERATURE = ("refuse", "exclude")
ROOT = (-1, 0)  # the state of the prompt
# float64 means of equal outcomes differ by a few ulps (3 x 0.7 / 3 != 0.7); 1e-12 of the largest |outcome|
# is far above that rounding and far below any reward difference a task means
ROUNDING = 1e-12


@dataclass(frozen=True)
class TreeConfig:
    """`algo.tree`: how the rollout tree is grown and trained on (with `algo.train_on_branches=true`)."""

    advantage: str = "global_local"  # local | global | global_local | subgroup
    global_value: str = "outcome"  # the global term: R(n) - V(root) | segment: V(n, b') - V(root) (TreeRL Eq. 5)
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
        check_choice("tree.global_value", self.global_value, GLOBAL_VALUES)
        if self.global_value == "segment" and self.advantage not in ("global", "global_local"):
            raise ValueError(f"algo.tree.global_value=segment sets the global term, which "
                             f"algo.tree.advantage={self.advantage} does not have: use global or global_local")
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
        keys = ("advantage", "global_value", "sibling_norm", "drop_zero_adv", "depth", "fork_budget")
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
        self.tolerance = ROUNDING * max(map(abs, self.rewards), default=0.0)

    def exact(self, x: float) -> float:
        """x, or exactly 0 when it is rounding of 0 (see ROUNDING)."""
        return 0.0 if abs(x) <= self.tolerance else x

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


def node_advantages(values: TreeValues, i: int, mode: str, global_value: str = "outcome") -> list[float]:
    """Per-token advantages [L_i] of node i's own tokens under `mode` (see the module docstring)."""
    length = len(values.tree.nodes[i].token_ids)
    reward = values.rewards[i]
    if mode == "subgroup":
        return [values.exact(subgroup_advantage(values, i))] * length
    if mode not in TREE_ADVANTAGES:
        raise ValueError(f"algo.tree.advantage must be one of {list(TREE_ADVANTAGES)}, got {mode!r}")
    bounds = [0, *[p for p in values.forks(i) if p < length], length]
    root, out = values.value(ROOT), []
    for b, b_next in zip(bounds, bounds[1:]):
        end = reward if b_next >= length else values.value((i, b_next))  # V(n, b'), V(n, L_n) = R(n)
        glob = (end if global_value == "segment" else reward) - root
        local = end - values.value(values.state(i, b))
        a = {"local": local, "global": glob, "global_local": glob + local}[mode]
        out += [values.exact(a)] * (b_next - b)
    return out


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
    """Standard deviation (population) of the outcomes of the nodes that start from node i's start state;
    exactly 0 when they are equal up to rounding (dividing by a rounding-level deviation would blow up)."""
    start = values.state(i, 0)
    outcomes = [values.rewards[j] for j in range(len(values.rewards)) if values.state(j, 0) == start]
    if max(outcomes) - min(outcomes) <= values.tolerance:
        return 0.0
    return statistics.pstdev(outcomes)  # exact rational arithmetic, one rounding at the end


def raw_tree_advantages(inp: AdvantageInputs, tree_cfg: TreeConfig) -> torch.Tensor:
    """Unnormalised advantages [B, T] float64 of the rows `inp.rows` (0 on padding)."""
    mask = inp.response_mask  # [B, T]
    adv = torch.zeros(mask.shape, dtype=torch.float64)  # [B, T]
    cache: dict[int, TreeValues] = {}
    for b, (tree, i) in enumerate(inp.rows):
        values = cache.setdefault(id(tree), TreeValues(tree))
        cols = valid_positions(mask[b])  # [L_i]
        row = node_advantages(values, i, tree_cfg.advantage, tree_cfg.global_value)
        if tree_cfg.sibling_norm:
            std = sibling_std(values, i)
            row = [a / std for a in row] if std > 0 else row
        adv[b, cols] = torch.tensor(row[: cols.numel()], dtype=torch.float64)
    return adv


def tree_advantages(inp: AdvantageInputs, cfg) -> torch.Tensor:
    """Advantages [B, T] of the rows `inp.rows` (0 on padding), see the module docstring: whitened in
    float64, cast to the mask's dtype once at the end."""
    mask = inp.response_mask  # [B, T]
    adv = raw_tree_advantages(inp, cfg.tree)  # [B, T] float64
    trained = mask.to(torch.float64)  # [B, T]
    if cfg.tree.drop_zero_adv:  # SPO-tree: an all-zero row leaves the loss, so it leaves the whitening too
        trained = trained * (adv != 0).any(dim=1, keepdim=True)  # [B, T]
    return normalize_advantages(adv, trained, inp.group_ids, cfg.adv_norm).to(mask.dtype)
