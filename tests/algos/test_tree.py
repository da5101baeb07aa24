"""Tree advantages (rlx/algos/tree.py) against a hand-computed tree in float64, exact expectations on an
enumerable toy MDP, and the config checks of `algo.train_on_branches` / `algo.tree`."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from rlx.algos import get
from rlx.algos.base import TREE_ROWS, AdvantageInputs
from rlx.algos.grpo import GRPOConfig, grpo_advantages
from rlx.algos.rloo import RLOOConfig, rloo_advantages
from rlx.algos.tree import ROOT, TreeConfig, TreeValues, node_advantages, sibling_std, tree_advantages
from rlx.algos.tree_preset import TreeAlgoConfig
from rlx.algos.trepo import TRePOConfig
from rlx.sampling.tree import Node, RolloutBatch, RolloutTree
from tests.algos.algo_helpers import LAYOUTS, layout_columns, mask_of, unpack
from tests.algos.toy_mdp import Toy

DT = torch.float64


def node(parent: int, fork: int, length: int, reward: float, depth: int = 1, tokens=None) -> Node:
    ids = tuple(tokens) if tokens is not None else tuple(range(10, 10 + length))
    return Node(parent=parent, fork=fork, token_ids=ids, logprobs=(0.0,) * len(ids), temperature=1.0,
                finished=True, reward=reward, correct=reward > 0, text="", policy_version=0, depth=depth)


def hand_tree() -> RolloutTree:
    """n0, n1 responses; n2, n3 fork n0 at 2; n4 forks n0 at 0 (a sibling of the responses); n5 forks n2 at 1."""
    return RolloutTree(problem=None, group=0, prompt_ids=(1, 2), nodes=(
        node(-1, 0, 4, 1.0), node(-1, 0, 3, 0.0), node(0, 2, 2, 0.0, 2), node(0, 2, 3, 1.0, 2),
        node(0, 0, 3, 1.0, 2), node(2, 1, 2, 1.0, 3)))


# hand-computed: V(root) = 4/6, V(n0, 2) = (1 + 0 + 1 + 1) / 4 = 3/4 (n0, n2, n5, n3), V(n2, 1) = (0 + 1) / 2
HAND = {
    "local": [[1 / 12] * 2 + [1 / 4] * 2, [-2 / 3] * 3, [-1 / 4, -1 / 2], [1 / 4] * 3, [1 / 3] * 3, [1 / 2] * 2],
    "global": [[1 / 3] * 4, [-2 / 3] * 3, [-2 / 3] * 2, [1 / 3] * 3, [1 / 3] * 3, [1 / 3] * 2],
    # subgroup: n0 in {(n0,2): 4 leaves, root: 6}: (4 (1 - 3/4) + 6 (1 - 2/3)) / 10 = 0.3; n2: (n2,1), (n0,2), root:
    # (2 (0 - 1/2) + 4 (0 - 3/4) + 6 (0 - 2/3)) / 12 = -8/12; n5 likewise +4/12; n3: (4 (1/4) + 6 (1/3)) / 10
    "subgroup": [[0.3] * 4, [-2 / 3] * 3, [-2 / 3] * 2, [0.3] * 3, [1 / 3] * 3, [1 / 3] * 2],
}
HAND["global_local"] = [[g + loc for g, loc in zip(gs, ls)] for gs, ls in zip(HAND["global"], HAND["local"])]


def test_hand_tree_values():
    values = TreeValues(hand_tree())
    assert values.value(ROOT) == pytest.approx(4 / 6, abs=1e-15)
    assert values.value((0, 2)) == pytest.approx(3 / 4, abs=1e-15)
    assert values.value((2, 1)) == pytest.approx(1 / 2, abs=1e-15)
    assert values.state(4, 0) == ROOT and values.state(2, 0) == (0, 2) and values.state(5, 0) == (2, 1)
    assert values.forks(0) == [2] and values.forks(2) == [1] and values.forks(1) == []


@pytest.mark.parametrize("mode", sorted(HAND))
def test_hand_tree_every_mode(mode):
    values = TreeValues(hand_tree())
    for i, expected in enumerate(HAND[mode]):
        assert node_advantages(values, i, mode) == pytest.approx(expected, abs=1e-14), (mode, i)


def test_sibling_std_is_the_spread_of_outcomes_from_one_state():
    values = TreeValues(hand_tree())
    assert sibling_std(values, 0) == pytest.approx(math.sqrt(2) / 3, abs=1e-15)  # n0, n1, n4 from the root
    assert sibling_std(values, 2) == pytest.approx(0.5, abs=1e-15)  # n2, n3 from (n0, 2)
    assert sibling_std(values, 5) == 0.0  # alone at (n2, 1)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("sibling_norm", [False, True])
def test_tree_advantages_fill_rows_whatever_the_padding(layout, sibling_norm):
    tree = hand_tree()
    rows = [(tree, i) for i in range(len(tree.nodes))]
    T, cols = layout_columns([len(n.token_ids) for n in tree.nodes], layout)
    mask = mask_of(cols, T)
    inp = AdvantageInputs(token_rewards=torch.zeros_like(mask), response_mask=mask,
                          group_ids=torch.zeros(len(rows), dtype=torch.long), tree_rows=rows)
    cfg = TreeAlgoConfig(adv_norm="none", tree=TreeConfig(advantage="local", sibling_norm=sibling_norm))
    out = unpack(tree_advantages(inp, cfg), cols)
    scale = [math.sqrt(2) / 3, math.sqrt(2) / 3, 0.5, 0.5, math.sqrt(2) / 3, 1.0] if sibling_norm else [1.0] * 6
    for got, expected, s in zip(out, HAND["local"], scale):
        assert got == pytest.approx([a / s for a in expected], abs=1e-14)
    assert float(tree_advantages(inp, cfg)[mask == 0].abs().sum()) == 0.0


# ------------------------------------------------------------------------------------------------ toy MDP


def toy_tree(toy: Toy, w, x1, x2, y) -> RolloutTree:
    """Response w (4 tokens); x1, x2 fork w at 2 (2 tokens each); y forks x1 at 1 (1 token). Rewards r_final."""
    full = {0: w, 1: w[:2] + x1, 2: w[:2] + x2, 3: w[:2] + x1[:1] + y}
    parents = {0: (-1, 0, w, 1), 1: (0, 2, x1, 2), 2: (0, 2, x2, 2), 3: (1, 1, y, 3)}
    return RolloutTree(None, 0, (), tuple(node(p, f, len(tok), toy.r_final[full[i]], d, tok)
                                          for i, (p, f, tok, d) in parents.items()))


def test_toy_mdp_tree_values_are_unbiased_at_every_state():
    """E[V(s) | s reached] equals the true value of s for the root, (w, 2) and (x1, 1) (fixed fork positions):
    every leaf through a state is marginally a policy sample from it. Hence E[global advantage] = 0 for every
    node and E[local advantage of a segment | its start] = V(end) - V(start) in expectation."""
    toy = Toy(eos=False, seed=3)  # vocab {a, b}, fixed length 4
    sums: dict[tuple, list[float]] = {}
    for w in itertools.product(range(2), repeat=4):
        for x1, x2 in itertools.product(itertools.product(range(2), repeat=2), repeat=2):
            for y in itertools.product(range(2), repeat=1):
                p = toy.p(w) * toy.p(w[:2] + x1) / toy.p(w[:2]) * toy.p(w[:2] + x2) / toy.p(w[:2])
                p *= toy.p(w[:2] + x1[:1] + y) / toy.p(w[:2] + x1[:1])
                values = TreeValues(toy_tree(toy, w, x1, x2, y))
                for key, state in (((), ROOT), (w[:2], (0, 2)), (w[:2] + x1[:1], (1, 1))):
                    acc = sums.setdefault(key, [0.0, 0.0])
                    acc[0] += p * values.value(state)
                    acc[1] += p
    for prefix, (num, den) in sums.items():
        assert num / den == pytest.approx(toy.cond_exp(prefix, lambda x: toy.r_final[x]), abs=1e-12), prefix


# ------------------------------------------------------------------------------------------------ config


def test_tree_config_errors_name_the_key():
    with pytest.raises(ValueError, match="algo.tree.depth"):
        TreeAlgoConfig(tree=TreeConfig(depth=0)).validate()
    with pytest.raises(ValueError, match="algo.tree.fork_budget=1 is smaller than one fork"):
        TreeAlgoConfig(rollouts_per_branch=2, tree=TreeConfig(fork_budget=1)).validate()
    with pytest.raises(ValueError, match="algo.tree.depth acts only when branches are trained on"):
        TRePOConfig(tree=TreeConfig(depth=2)).validate()
    with pytest.raises(ValueError, match="algo.tree.advantage"):
        TreeAlgoConfig(tree=TreeConfig(advantage="leaf")).validate()


def test_temperature_mismatch_is_refused_unless_excluded():
    cfg = TRePOConfig(train_on_branches=True, temperature_schedule="linear")
    with pytest.raises(ValueError, match=r"temperatures \[0.0, 0.3333"):
        cfg.check_train_temperature(1.0)
    TRePOConfig(train_on_branches=True, tree=TreeConfig(off_temperature="exclude")).check_train_temperature(1.0)
    TreeAlgoConfig().check_train_temperature(1.0)  # constant schedule at tau_max = 1
    with pytest.raises(ValueError, match="train.temperature=0.7"):
        TreeAlgoConfig().check_train_temperature(0.7)


def test_record_is_immutable():
    batch = RolloutBatch((hand_tree(),), policy_version=3)
    with pytest.raises(AttributeError):
        batch.trees[0].nodes[0].reward = 2.0  # type: ignore[misc]
    assert batch.trees[0].prefix(5) == (10, 11, 10) and batch.trees[0].context(5) == (1, 2, 10, 11, 10)
    assert batch.trees[0].generated_tokens() == 4 + 3 + 2 + 3 + 3 + 2


# ------------------------------------------------------------------------------------------------ TEMPO


def tempo_inputs(groups: list[list[tuple[tuple[int, ...], float]]]) -> tuple[AdvantageInputs, list[list[int]]]:
    """Rows of responses (tokens, reward), one tree per group, right-padded."""
    trees = [RolloutTree(None, g, (1,), tuple(node(-1, 0, len(t), r, tokens=t) for t, r in members))
             for g, members in enumerate(groups)]
    rows = [(tree, i) for tree in trees for i in range(len(tree.nodes))]
    lengths = [len(tree.nodes[i].token_ids) for tree, i in rows]
    T, cols = layout_columns(lengths, "left")
    mask = mask_of(cols, T)
    rewards = torch.zeros_like(mask)
    for b, (tree, i) in enumerate(rows):
        rewards[b, cols[b][-1]] = tree.nodes[i].reward
    group_ids = torch.tensor([tree.group for tree, _ in rows])
    return AdvantageInputs(token_rewards=rewards, response_mask=mask, group_ids=group_ids, tree_rows=rows), cols


def test_tempo_adds_td_terms_at_branching_tokens_only():
    """Group 0: (5,6,7) -> 1, (5,6,8) -> 0, (5,9) -> 0: V(5) = 1/3, V(5,6) = 1/2, V(5,6,7) = 1, V(5,6,8) = 0,
    V(5,9) = 0; branching after (5,) and after (5,6). Group 1: (3,4) -> 1, (2,) -> 0 branch at the first token."""
    inp, cols = tempo_inputs([[((5, 6, 7), 1.0), ((5, 6, 8), 0.0), ((5, 9), 0.0)], [((3, 4), 1.0), ((2,), 0.0)]])
    loo = [1 - 0.0, 0 - 0.5, 0 - 0.5, 1.0, -1.0]  # RLOO's leave-one-out advantages
    td = [[0, 1 / 6, 1 / 2], [0, 1 / 6, -1 / 2], [0, -1 / 3], [1 / 2, 0], [-1 / 2]]
    out = unpack(rloo_advantages(inp, RLOOConfig(tempo=True)), cols)
    for got, a, terms in zip(out, loo, td):
        assert got == pytest.approx([a + t for t in terms], abs=1e-12)
    plain = unpack(rloo_advantages(inp, RLOOConfig()), cols)
    assert [row[0] for row in plain] == pytest.approx(loo, abs=1e-12)
    # GRPO: V averages the group-normalised rewards (population std): group 0 scores (1, 0, 0) -> A = (2, -1, -1)/sqrt2
    a0 = [2 / math.sqrt(2) / (1 + 1e-6 * 3 / math.sqrt(2)), -1 / math.sqrt(2) / (1 + 1e-6 * 3 / math.sqrt(2))]
    grpo = unpack(grpo_advantages(inp, GRPOConfig(tempo=True, samples_per_prompt=2)), cols)
    v5, v56 = (a0[0] + 2 * a0[1]) / 3, (a0[0] + a0[1]) / 2
    assert grpo[0] == pytest.approx([a0[0], a0[0] + v56 - v5, a0[0] + a0[0] - v56], rel=1e-5)
    assert grpo[2] == pytest.approx([a0[1], a0[1] + a0[1] - v5], rel=1e-5)


def test_tempo_declares_the_record_rows():
    assert TREE_ROWS in get("grpo").requires(GRPOConfig(tempo=True))
    assert TREE_ROWS not in get("rloo").requires(RLOOConfig())
    with pytest.raises(ValueError, match="algo.tempo=true adds TD terms to outcome advantages"):
        GRPOConfig(tempo=True, supervision="process").validate()


def test_training_rows_and_mini_batches_keep_a_tree_whole():
    """Responses first (prompt then sample order), then each tree's trainable branch nodes: a duplicate (shared
    greedy generation) and a rollout off the training temperature are not rows; a tree's rows share its group."""
    from dataclasses import replace

    from rlx.train.batch import training_rows
    from rlx.train.update import mini_batch_rows

    tree = hand_tree()
    nodes = list(tree.nodes)
    nodes[3] = replace(nodes[3], temperature=0.0)  # greedy: not at train.temperature 1.0
    nodes[4] = replace(nodes[4], duplicate=True)
    other = RolloutTree(None, 1, (3,), (node(-1, 0, 2, 1.0), node(0, 1, 1, 0.0, 2)))
    batch = RolloutBatch((replace(tree, nodes=tuple(nodes)), other), policy_version=0)
    rows = training_rows(batch, True, 1.0)
    assert [(t.group, i) for t, i in rows] == [(0, 0), (0, 1), (1, 0), (0, 2), (0, 5), (1, 1)]
    assert [(t.group, i) for t, i in training_rows(batch, False, 1.0)] == [(0, 0), (0, 1), (1, 0)]
    groups = torch.tensor([t.group for t, _ in rows])
    parts = mini_batch_rows(groups, 2, torch.Generator().manual_seed(0))
    assert sorted(sorted(p) for p in parts) == [[0, 1, 3, 4], [2, 5]]
