"""Tree advantages (rlx/algos/tree.py) against a hand-computed tree in float64, exact expectations on an
enumerable toy MDP, and the config checks of `algo.train_on_branches` / `algo.tree`."""

from __future__ import annotations

import itertools
import math
import statistics
from dataclasses import replace
from fractions import Fraction

import pytest
import torch

from rlx.algos import get
from rlx.algos.base import TREE_ROWS, AdvantageInputs
from rlx.algos.grpo import GRPOConfig, grpo_advantages
from rlx.algos.rloo import RLOOConfig, rloo_advantages
from rlx.algos.stats import group_whiten, masked_whiten
from rlx.algos.tree import ROOT, TreeConfig, TreeValues, node_advantages, sibling_std, tree_advantages
from rlx.algos.tree_preset import TreeAlgoConfig
from rlx.algos.trepo import TRePOConfig
from rlx.record import Node, RolloutBatch, RolloutTree
from tests.algos.algo_helpers import LAYOUTS, layout_columns, mask_of, nested_close, unpack
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
                          group_ids=torch.zeros(len(rows), dtype=torch.long), rows=rows)
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
    return AdvantageInputs(token_rewards=rewards, response_mask=mask, group_ids=group_ids, rows=rows), cols


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
    from rlx.train.learn.batch import training_rows
    from rlx.train.learn.update import mini_batch_rows

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


# ------------------------------------------------------------------------------------------------ real-valued rewards


def real_tree(rewards) -> RolloutTree:
    """hand_tree's shape with the outcomes `rewards` (one per node)."""
    return RolloutTree(problem=None, group=0, prompt_ids=(1, 2), nodes=tuple(
        replace(n, reward=r, correct=r > 0) for n, r in zip(hand_tree().nodes, rewards)))


def expected_rows(r, mode: str, global_value: str = "outcome") -> list[list[float]]:
    """hand_tree's advantages as formulas of its outcomes r, in exact rational arithmetic (rounded once)."""
    r = [Fraction(x) for x in r]
    root, v02, v21 = sum(r) / 6, (r[0] + r[2] + r[3] + r[5]) / 4, (r[2] + r[5]) / 2
    seg_end = [[v02, r[0]], [r[1]], [v21, r[2]], [r[3]], [r[4]], [r[5]]]  # V(segment end) of each segment
    seg_start = [[root, v02], [root], [v02, v21], [v02], [root], [v21]]
    widths = [[2, 2], [3], [1, 1], [3], [3], [2]]
    if mode == "subgroup":
        pools = [[(4, v02), (6, root)], [(6, root)], [(2, v21), (4, v02), (6, root)], [(4, v02), (6, root)],
                 [(6, root)], [(2, v21), (4, v02), (6, root)]]
        return [[float(sum(n * (r[i] - v) for n, v in p) / sum(n for n, _ in p))] * sum(widths[i])
                for i, p in enumerate(pools)]
    rows = []
    for i in range(6):
        row = []
        for end, start, w in zip(seg_end[i], seg_start[i], widths[i]):
            glob = (end if global_value == "segment" else r[i]) - root
            a = {"local": end - start, "global": glob, "global_local": glob + end - start}[mode]
            row += [float(a)] * w
        rows.append(row)
    return rows


REAL = [0.7, 0.2, 0.35, 0.9, 0.7, 0.55]  # real-valued outcomes
COMPOSITE = [0.7 * 1 + 0.1 * 1, 0.7 * 0 + 0.1 * 1, 0.7 * 0 + 0.1 * 0, 0.7 * 1 + 0.1 * 0, 0.7 * 1 + 0.1 * 1,
             0.7 * 1 + 0.1 * 1]  # correctness 0.7 + format bonus 0.1 (reward_model=composite)
MODES = [(m, "outcome") for m in ("local", "global", "global_local", "subgroup")] + \
    [("global", "segment"), ("global_local", "segment")]


def tree_inputs(tree: RolloutTree, dtype=torch.float64, trees: int = 1) -> AdvantageInputs:
    rows = [(tree, i) for i in range(len(tree.nodes))] * trees
    lengths = [len(n.token_ids) for n in tree.nodes] * trees
    T, cols = layout_columns(lengths, "right")
    mask = mask_of(cols, T).to(dtype)
    return AdvantageInputs(token_rewards=torch.zeros_like(mask), response_mask=mask,
                           group_ids=torch.arange(trees).repeat_interleave(len(tree.nodes)), rows=rows)


def test_binary_hand_values_match_the_formulas():
    for mode in HAND:
        assert nested_close(expected_rows([1.0, 0.0, 0.0, 1.0, 1.0, 1.0], mode), HAND[mode], 1e-15)


@pytest.mark.parametrize("rewards", [REAL, COMPOSITE], ids=["real", "composite"])
@pytest.mark.parametrize("mode,global_value", MODES)
def test_real_and_composite_rewards_every_mode(rewards, mode, global_value):
    values = TreeValues(real_tree(rewards))
    got = [node_advantages(values, i, mode, global_value) for i in range(6)]
    assert nested_close(got, expected_rows(rewards, mode, global_value), 1e-15)


def test_segment_value_is_treerl_eq5():
    """TreeRL Eq. 5: n0's first segment is worth the mean of the leaves below it (n0, n2, n3, n5) minus V(root);
    its last segment, a leaf's own, R(n0) - V(root); Eq. 7 adds the local term."""
    values = TreeValues(real_tree(REAL))
    v02, root = (0.7 + 0.35 + 0.9 + 0.55) / 4, sum(REAL) / 6
    assert node_advantages(values, 0, "global", "segment") == pytest.approx(
        [v02 - root] * 2 + [0.7 - root] * 2, abs=1e-15)
    assert node_advantages(values, 0, "global") == pytest.approx([0.7 - root] * 4, abs=1e-15)
    with pytest.raises(ValueError, match="algo.tree.global_value=segment sets the global term, which "
                                         "algo.tree.advantage=local does not have"):
        TreeAlgoConfig(tree=TreeConfig(advantage="local", global_value="segment")).validate()
    with pytest.raises(ValueError, match=r"algo.tree.global_value must be one of \['outcome', 'segment'\]"):
        TreeAlgoConfig(tree=TreeConfig(global_value="leaf")).validate()


def issue_tree() -> RolloutTree:
    """Three responses rewarded 0.7, a fork of response 0 (at 2) rewarded 0."""
    return RolloutTree(problem=None, group=0, prompt_ids=(1,), nodes=(
        node(-1, 0, 4, 0.7), node(-1, 0, 3, 0.7), node(-1, 0, 3, 0.7), node(0, 2, 2, 0.0, 2)))


def test_sibling_norm_treats_equal_real_outcomes_exactly():
    """The responses' sibling outcomes (0.7, 0.7, 0.7) have deviation 0, not ~1e-16: response 0 keeps R - V(root)
    = 0.7 - 2.1/4 = 0.175 (it got 1.6e15)."""
    values = TreeValues(issue_tree())
    assert sibling_std(values, 0) == 0.0 and sibling_std(values, 3) == 0.0
    composite = TreeValues(real_tree([0.1 + 0.2, 0.3, 0.0, 0.0, 0.3, 0.0]))  # 0.30000000000000004 and 0.3
    assert sibling_std(composite, 0) == 0.0  # n0, n1, n4: equal up to rounding
    cfg = TreeAlgoConfig(adv_norm="none", tree=TreeConfig(advantage="global", sibling_norm=True))
    out = tree_advantages(tree_inputs(issue_tree()), cfg)
    assert out[0, :4].tolist() == pytest.approx([0.175] * 4, abs=1e-15)
    assert out[3, :2].tolist() == pytest.approx([-0.525] * 2, abs=1e-15)


def test_equal_up_to_rounding_whitens_to_exact_zeros():
    """Values that are equal up to rounding (2.1/3 against 0.7) whiten to exactly 0, per group and per batch."""
    x = torch.tensor([[0.7, 0.7], [0.7 + 0.1 + 1.3 - 1.4, 2.1 / 3]], dtype=torch.float64)  # [2, 2]
    assert x.unique().numel() == 3  # three different floats
    mask = torch.ones_like(x)
    assert torch.equal(masked_whiten(x, mask), torch.zeros_like(x))
    assert torch.equal(group_whiten(x, mask, torch.tensor([0, 1])), torch.zeros_like(x))
    assert torch.equal(masked_whiten(x.float(), mask.float()), torch.zeros(2, 2))
    # a tree whose values are equal up to rounding: every row exactly 0 under every normalisation
    for norm in ("none", "batch", "group"):
        cfg = TreeAlgoConfig(adv_norm=norm, tree=TreeConfig(advantage="global_local"))
        flat = RolloutTree(None, 0, (1,), (node(-1, 0, 3, 0.7), node(-1, 0, 2, 0.7), node(0, 1, 2, 0.7, 2)))
        assert torch.equal(tree_advantages(tree_inputs(flat), cfg), torch.zeros(3, 5, dtype=torch.float64))


def test_whitening_stays_in_float64_until_the_end():
    """With a float32 mask the result is the float64 whitening rounded once to float32 (casting the values to
    float32 first was off by up to 5e-7)."""
    rewards = [0.7 + 1e-6, 0.7, 0.7 - 3e-7, 0.7 + 2e-7, 0.7 - 1e-6, 0.7 + 5e-7]
    for mode, global_value in MODES:
        cfg = TreeAlgoConfig(adv_norm="batch", tree=TreeConfig(advantage=mode, global_value=global_value))
        rows = expected_rows(rewards, mode, global_value)
        flat = [a for row in rows for a in row]
        mean = sum(flat) / len(flat)
        std = math.sqrt(sum((a - mean) ** 2 for a in flat) / len(flat))
        want = [[(a - mean) / (std + 1e-8) for a in row] for row in rows]
        got = tree_advantages(tree_inputs(real_tree(rewards), torch.float32), cfg)
        assert got.dtype == torch.float32
        cols = [list(range(len(row))) for row in rows]
        assert unpack(got, cols) == [torch.tensor(row, dtype=torch.float32).tolist() for row in want], mode


def test_drop_zero_adv_reads_the_raw_advantages():
    """Group whitening moves a row whose raw advantages are all 0 away from 0; drop_zero_adv drops it anyway,
    leaves it out of the whitening, and counts a rounding-level raw advantage (0.7 - 2.1/3) as 0."""
    from types import SimpleNamespace

    from rlx.config import TrainerConfig
    from rlx.train.learn.correction import step_weights

    tree = RolloutTree(None, 0, (1,), (node(-1, 0, 3, 0.7), node(-1, 0, 2, 0.1), node(-1, 0, 2, 1.3)))
    inp = tree_inputs(tree, torch.float32)
    assert 0.7 - (0.7 + 0.1 + 1.3) / 3 != 0  # rounding: V(root) = 0.7000000000000001
    keep = TreeAlgoConfig(adv_norm="group", tree=TreeConfig(advantage="global"))
    assert bool((tree_advantages(inp, keep)[0, :3] != 0).all())  # whitened: row 0 moves off 0
    drop = replace(keep, tree=TreeConfig(advantage="global", drop_zero_adv=True))
    adv = tree_advantages(inp, drop)
    # rows 1 and 2 (-0.6, +0.6) whiten among themselves: -1 and +1 (up to eps)
    assert adv[0].tolist() == [0.0] * 5 and adv[1:, 2:].abs().sum() == 0
    assert adv[1:, :2].tolist() == [[pytest.approx(-1.0, abs=1e-7)] * 2, [pytest.approx(1.0, abs=1e-7)] * 2]
    nodes = [SimpleNamespace(logprobs=(0.0,) * len(n.token_ids), finished=True) for n in tree.nodes]
    _, weights = step_weights(SimpleNamespace(train=TrainerConfig(), algo=drop), nodes, inp.response_mask,
                              None, adv)
    assert weights.keep.tolist() == [[0.0] * 5, [1.0] * 5, [1.0] * 5]
    assert weights.metrics["rows_dropped_zero_adv"] == 1.0


SIBLINGS = [[0, 1, 4], [0, 1, 4], [2, 3], [2, 3], [0, 1, 4], [5]]  # hand_tree's nodes from each node's start state


def expected_normalised(trees_rewards, mode, global_value, sibling_norm, adv_norm) -> list[list[float]]:
    """The rows of several hand_tree copies (one group each), divided by the sibling deviation and whitened as
    docs/algorithms.md defines it, computed independently of rlx (rationals, then floats)."""
    rows_per_tree = []
    for r in trees_rewards:
        rows = expected_rows(r, mode, global_value)
        if sibling_norm:
            stds = [statistics.pstdev([Fraction(r[j]) for j in group]) for group in SIBLINGS]
            rows = [[a / float(s) for a in row] if s > 1e-12 else row for row, s in zip(rows, stds)]
        rows_per_tree.append(rows)

    def whiten(rows):
        flat = [a for row in rows for a in row]
        mean = sum(flat) / len(flat)
        std = math.sqrt(sum((a - mean) ** 2 for a in flat) / len(flat))
        return [[(a - mean) / (std + 1e-8) for a in row] for row in rows]

    if adv_norm == "group":
        rows_per_tree = [whiten(rows) for rows in rows_per_tree]
    flat_rows = [row for rows in rows_per_tree for row in rows]
    return whiten(flat_rows) if adv_norm == "batch" else flat_rows


@pytest.mark.parametrize("adv_norm", ["none", "batch", "group"])
@pytest.mark.parametrize("sibling_norm", [False, True])
@pytest.mark.parametrize("mode,global_value", MODES)
def test_every_mode_option_and_normalisation_on_real_and_composite_trees(mode, global_value, sibling_norm,
                                                                         adv_norm):
    """Two trees in one batch (real-valued outcomes, composite ones), every advantage mode, global value,
    sibling_norm and adv_norm, against an independent float64 computation of the definitions."""
    trees = [real_tree(REAL), replace(real_tree(COMPOSITE), group=1)]
    rows = [(tree, i) for tree in trees for i in range(6)]
    T, cols = layout_columns([len(tree.nodes[i].token_ids) for tree, i in rows], "scattered")
    mask = mask_of(cols, T)
    inp = AdvantageInputs(token_rewards=torch.zeros_like(mask), response_mask=mask,
                          group_ids=torch.tensor([tree.group for tree, _ in rows]), rows=rows)
    cfg = TreeAlgoConfig(adv_norm=adv_norm, tree=TreeConfig(advantage=mode, global_value=global_value,
                                                            sibling_norm=sibling_norm))
    got = unpack(tree_advantages(inp, cfg), cols)
    assert nested_close(got, expected_normalised([REAL, COMPOSITE], mode, global_value, sibling_norm, adv_norm),
                        1e-12)
