"""TRePO unit and algebraic tests (docs/algorithms.md, "TRePO"), knot selection, validation, padding."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from rlx.algos import AdvantageInputs, LossInputs, get
from rlx.algos.gae import gae
from rlx.algos.grpo import GRPOConfig, outcome_advantages
from rlx.algos.losses import clipped_policy_loss
from rlx.algos.trepo import (
    TRePOConfig,
    interpolate,
    knot_values,
    plan_branches,
    select_knots,
    temperature_schedule,
    trepo_advantages,
)
from rlx.record import knot_prefix

from .algo_helpers import DT, LAYOUTS, knot_rows, layout_columns, mask_of, nested_close, pack, t, terminal, unpack

RAW = dict(adv_norm="none", gamma=1.0, lam=0.0)


def run(rewards_rows, knots, branches, layout="right", group_ids=None, **cfg_kw):
    """trepo_advantages on ragged rows; returns per-row lists of the valid tokens' advantages."""
    T, cols = layout_columns([len(r) for r in rewards_rows], layout)
    inp = AdvantageInputs(
        token_rewards=pack(rewards_rows, cols, T),
        response_mask=mask_of(cols, T),
        group_ids=torch.tensor(group_ids if group_ids is not None else list(range(len(rewards_rows)))),
        rows=knot_rows(knots, branches),
        branch_rewards=[[[t(x) for x in rollouts] for rollouts in row] for row in branches],
    )
    adv = trepo_advantages(inp, TRePOConfig(**{**RAW, **cfg_kw}))
    pad = adv * (1 - inp.response_mask)
    assert torch.all(pad == 0), "advantages must be 0 on padding"
    return unpack(adv, cols)


# ---------------------------------------------------------------------------------------------- B1


def test_b1_pool_membership_eq31():
    # knots {1,4,7}, gamma = 1, zero intermediate reward: G_t(X) = RM(X). Rollout returns per knot:
    ret_self = [1.0] * 9  # W has RM = 1
    rollouts = [[0.0, 0.2], [0.4, 0.6], [0.8, 1.0]]
    knots = [1, 4, 7]
    vb, vq = knot_values(knots, ret_self, rollouts, TRePOConfig(**RAW))
    assert vb == pytest.approx([(0 + 0.2 + 0.4 + 0.6 + 0.8 + 1.0 + 1) / 7, (0.4 + 0.6 + 0.8 + 1.0 + 1) / 5, 2.8 / 3])
    assert vq == vb  # paper: one pool
    vb, _ = knot_values(knots, ret_self, rollouts, TRePOConfig(**RAW, include_self=False))
    assert vb == pytest.approx([3.0 / 6, 2.8 / 4, 1.8 / 2])  # pool(4) = rollouts at 4 and 7 only
    vb, vq = knot_values(knots, ret_self, rollouts, TRePOConfig(**RAW, pooling="unbiased"))
    assert vb == pytest.approx([0.1, 0.5, 0.9])  # baseline: k == t only
    assert vq == pytest.approx([4.0 / 7, 3.8 / 5, 2.8 / 3])  # Q-part: k >= t plus W
    vb, vq = knot_values(knots, ret_self, rollouts, TRePOConfig(**RAW, pooling="none"))
    assert vb == vq == pytest.approx([0.1, 0.5, 0.9])


def test_b1_discounted_rollout_uses_own_prefix_rewards():
    # gamma = 0.9; W has rewards .1 .2 .3 .4 .5(+RM 1); a rollout at knot 1 (G = 2.0), one at knot 3
    # (G_3(X) = 0.7). Seen from t = 1 the knot-3 rollout is r_1 + g r_2 + g^2 * 0.7.
    g = 0.9
    r = [0.1, 0.2, 0.3, 0.4, 1.5]
    ret_self = [sum(g ** (j - s) * r[j] for j in range(s, 5)) for s in range(5)]
    vb, _ = knot_values([1, 3], ret_self, [[2.0], [0.7]], TRePOConfig(**{**RAW, "gamma": g}))
    x3_from_1 = 0.1 + g * 0.2 + g**2 * 0.7
    assert vb[0] == pytest.approx((2.0 + x3_from_1 + ret_self[0]) / 3, abs=1e-12)
    assert vb[1] == pytest.approx((0.7 + ret_self[2]) / 2, abs=1e-12)


def test_b1_advantages_and_interpolation_from_pools():
    # Same pools as above but through trepo_advantages on a length-9 response with RM(W) = 1.
    rows = [terminal(1.0, 9)]
    v1, v4, v7 = 4.0 / 7, 3.8 / 5, 2.8 / 3
    a1, a4, a7 = v4 - v1, v7 - v4, 1.0 - v7  # "Neighbouring knots": A_{t_i} = V_{t_{i+1}} - V_{t_i}; V_{T+1} = RM(W)
    expect = [a1, a1 + (a4 - a1) / 3, a1 + 2 * (a4 - a1) / 3, a4, a4 + (a7 - a4) / 3, a4 + 2 * (a7 - a4) / 3]
    expect += [a7, a7, a7]
    for layout in LAYOUTS:
        (adv,) = run(rows, [[1, 4, 7]], [[[[0.0], [0.2]], [[0.4], [0.6]], [[0.8], [1.0]]]], layout)
        assert adv == pytest.approx(expect, abs=1e-12)


# ---------------------------------------------------------------------------------------------- B2


def _random_case(T, knots, M, seed):
    gen = torch.Generator().manual_seed(seed)
    rm = float(torch.rand(1, generator=gen))
    branches = [
        [torch.rand(int(torch.randint(1, 4, (1,), generator=gen)), generator=gen).tolist() for _ in range(M)]
        for _ in knots
    ]
    return rm, branches


@pytest.mark.parametrize("M", [1, 3])
@pytest.mark.parametrize("pooling", ["paper", "none"])
@pytest.mark.parametrize("seed", [0, 1])
def test_b2_telescoping(M, pooling, seed):
    T, knots = 11, [1, 3, 4, 8]
    rm, branches = _random_case(T, knots, M, seed)
    rows = [terminal(rm, T)]
    all_g = [sum(x) for rollouts in branches for x in rollouts]
    v1 = (sum(all_g) + rm) / (len(all_g) + 1) if pooling == "paper" else sum(map(sum, branches[0])) / M
    (adv,) = run(rows, [knots], [branches], pooling=pooling)
    assert sum(adv[k - 1] for k in knots) == pytest.approx(rm - v1, abs=1e-12)
    (adv_v,) = run(rows, [knots], [branches], pooling=pooling, interp="value")
    assert sum(adv_v) == pytest.approx(rm - v1, abs=1e-12)


def test_b2_all_positions_is_value_difference():
    T, M = 6, 2
    knots = list(range(1, T + 1))
    rm, branches = _random_case(T, knots, M, 7)
    (adv,) = run([terminal(rm, T)], [knots], [branches], num_branch_points="all")
    # paper pool at t: rollouts at k >= t plus W; V_{T+1} = RM
    v = []
    for i in range(T):
        pool = [sum(x) for rollouts in branches[i:] for x in rollouts] + [rm]
        v.append(sum(pool) / len(pool))
    v.append(rm)
    assert adv == pytest.approx([v[i + 1] - v[i] for i in range(T)], abs=1e-12)
    assert sum(adv) == pytest.approx(rm - v[0], abs=1e-12)


# ---------------------------------------------------------------------------------------------- B3


def test_b3_remax_rloo_grpo_degenerate_cases():
    # ReMax: D = {1}, M = 1 greedy rollout, pooling none -> RM(W) - RM(greedy) on every token
    (adv,) = run([terminal(0.8, 5)], [[1]], [[[[0.0, 0.3]]]], pooling="none")
    assert adv == pytest.approx([0.5] * 5, abs=1e-12)
    # RLOO / GRPO numerator: group rewards 1, 0, 0.5; each member's rollouts at t=1 are the other members
    rms, lens = [1.0, 0.0, 0.5], [3, 2, 4]
    rows = [terminal(rm, n) for rm, n in zip(rms, lens)]
    others = [[[[rms[j]] for j in range(3) if j != k]] for k in range(3)]
    rloo = run(rows, [[1]] * 3, others, pooling="none")
    grpo = run(rows, [[1]] * 3, others, pooling="paper", include_self=True)
    for k in range(3):
        loo = sum(rms[j] for j in range(3) if j != k) / 2
        assert rloo[k] == pytest.approx([rms[k] - loo] * lens[k], abs=1e-12)
        assert grpo[k] == pytest.approx([rms[k] - 0.5] * lens[k], abs=1e-12)
    # "Siblings join the first pool": the same RLOO result when siblings are pooled automatically (no
    # explicit rollouts at t = 1)
    auto = run(rows, [[1]] * 3, [[[]]] * 3, group_ids=[0, 0, 0], pooling="none", samples_per_prompt=3)
    assert nested_close(auto, rloo)


# ---------------------------------------------------------------------------------------------- B4


def test_b4_interpolation():
    a = t([1.0, 4.0, -2.0])
    assert interpolate(a, [1, 4, 6], 8, "advantage").tolist() == pytest.approx([1, 2, 3, 4, 1, -2, -2, -2])
    assert interpolate(a, [1, 4, 6], 8, "value").tolist() == pytest.approx([1 / 3] * 3 + [2.0] * 2 + [-2 / 3] * 3)
    assert interpolate(a, [1, 4, 6], 8, "constant").tolist() == pytest.approx([1] * 3 + [4] * 2 + [-2] * 3)
    # knot advantages on the line 2t - 1 -> exact at every token up to the last knot
    line = interpolate(t([1.0, 5.0, 13.0]), [1, 3, 7], 7, "advantage")
    assert line.tolist() == pytest.approx([2 * s - 1 for s in range(1, 8)])


# ---------------------------------------------------------------------------------------------- B5


def test_b5_temperature_schedule():
    taus = temperature_schedule(5, "linear", 1.0)
    assert taus == pytest.approx((0.0, 0.25, 0.5, 0.75, 1.0))
    assert taus[0] == 0.0 and taus[-1] == 1.0 and list(taus) == sorted(taus)
    assert temperature_schedule(1, "linear", 1.0) == (0.0,)
    assert temperature_schedule(3, "linear", 0.5) == pytest.approx((0.0, 0.25, 0.5))
    assert temperature_schedule(3, "constant", 1.0) == (1.0, 1.0, 1.0)
    assert sum(tau == 0.0 for tau in temperature_schedule(8, "linear", 1.0)) == 1  # one greedy rollout only


def test_b5_plan_branches_carries_schedule():
    cfg = TRePOConfig(num_branch_points=3, rollouts_per_branch=3, branch_selection="uniform_grid")
    knots = plan_branches(list(range(12)), [], cfg, torch.Generator().manual_seed(0))
    assert [k.t for k in knots] == [1, 5, 9]
    assert all(k.temperatures == pytest.approx((0.0, 0.5, 1.0)) for k in knots)


# ---------------------------------------------------------------------------------------------- B6


def _gae_reference(r, v, gamma, lam):
    """Textbook backward recursion with V_{T+1} = 0 (independent of rlx)."""
    adv, last = [0.0] * len(r), 0.0
    for i in reversed(range(len(r))):
        nxt = v[i + 1] if i + 1 < len(r) else 0.0
        last = r[i] + gamma * nxt - v[i] + gamma * lam * last
        adv[i] = last
    return adv


def test_b6_knot_gae_lambda_limits():
    g = 0.9
    kl = [-0.01, 0.02, -0.03, 0.0, 0.01, -0.02, 0.0]
    rows = [terminal(1.0, 7, kl)]
    r = rows[0]
    knots = [1, 3, 6]
    branches = [[[0.4, 0.2]], [[0.5]], [[0.9]]]  # one rollout per knot, pooling none -> V_t = G_t(rollout)
    ret_self = [sum(g ** (j - s) * r[j] for j in range(s, 7)) for s in range(7)]
    v = {1: 0.4 + g * 0.2, 3: 0.5, 6: 0.9}  # pooling none: G_t of the rollout at t
    delta1 = r[0] + g * r[1] + g**2 * v[3] - v[1]
    delta3 = r[2] + g * r[3] + g**2 * r[4] + g**3 * v[6] - v[3]
    delta6 = r[5] + g * r[6] - v[6]
    (adv0,) = run(rows, [knots], [branches], pooling="none", gamma=g, lam=0.0, interp="constant")
    assert [adv0[k - 1] for k in knots] == pytest.approx([delta1, delta3, delta6], abs=1e-12)
    (adv1,) = run(rows, [knots], [branches], pooling="none", gamma=g, lam=1.0, interp="constant")
    # lam = 1: A_{t_i} = sum_m gamma^(t_m - t_i) delta_m
    lam1 = [delta1 + g**2 * delta3 + g**5 * delta6, delta3 + g**3 * delta6, delta6]
    assert [adv1[k - 1] for k in knots] == pytest.approx(lam1, abs=1e-12)
    # in paper mode (one pool) lam = 1 telescopes to the MC return minus the knot value
    (advp,) = run(rows, [knots], [branches], pooling="paper", gamma=g, lam=1.0)
    vb, _ = knot_values(knots, ret_self, [[0.4 + g * 0.2], [0.5], [0.9]], TRePOConfig(**{**RAW, "gamma": g}))
    assert [advp[k - 1] for k in knots] == pytest.approx([ret_self[k - 1] - vb[i] for i, k in enumerate(knots)])


@pytest.mark.parametrize("gamma,lam", [(1.0, 0.0), (0.9, 0.95), (0.97, 1.0)])
def test_b6_all_positions_equals_dense_gae(gamma, lam):
    T, M = 6, 2
    knots = list(range(1, T + 1))
    gen = torch.Generator().manual_seed(3)
    kl = (0.05 * torch.randn(T, generator=gen, dtype=DT)).tolist()
    rows = [terminal(0.7, T, kl)]
    branches = [[torch.rand(2, generator=gen, dtype=DT).tolist() for _ in range(M)] for _ in knots]
    (adv,) = run(rows, [knots], [branches], pooling="none", gamma=gamma, lam=lam)
    v_hat = [sum(x[0] + gamma * x[1] for x in b) / M for b in branches]  # V_t = mean G^gamma_t(rollouts at t)
    assert adv == pytest.approx(_gae_reference(rows[0], v_hat, gamma, lam), abs=1e-12)
    dense, returns = gae(t([rows[0]]), t([v_hat]), torch.ones(1, T, dtype=DT), gamma, lam)
    assert dense[0].tolist() == pytest.approx(adv, abs=1e-12)
    assert returns[0].tolist() == pytest.approx([a + v for a, v in zip(adv, v_hat)], abs=1e-12)


def test_b6_discounted_zero_reward_is_eq26_weighting():
    g, T, rm = 0.8, 5, 1.0
    knots = [1, 2, 4]
    branches = [[[0.5]], [[0.25]], [[1.0]]]
    (adv,) = run([terminal(rm, T)], [knots], [branches], gamma=g, lam=1.0, interp="constant")
    _, vq = knot_values(
        knots,
        [g ** (T - s) * rm for s in range(1, T + 1)],
        [[0.5], [0.25], [1.0]],
        TRePOConfig(**{**RAW, "gamma": g}),
    )
    assert [adv[k - 1] for k in knots] == pytest.approx([g ** (T - k) * rm - vq[i] for i, k in enumerate(knots)])


# ---------------------------------------------------------------------------------------------- B7


def test_b7_branch_prefix_is_token_ids():
    ids = [101, 7, 7, 42, 3]
    cfg = TRePOConfig(num_branch_points="all")
    for knot in plan_branches(ids, [], cfg, torch.Generator().manual_seed(0)):
        assert knot_prefix(ids, knot.t) == tuple(ids[: knot.t - 1])
    assert knot_prefix(ids, 1) == () and knot_prefix(ids, 5) == (101, 7, 7, 42)


# ---------------------------------------------------------------------------------------------- B8


def _norm_case(scale, adv_norm):
    rows = [terminal(scale * 1.0, 4), terminal(scale * 0.0, 3), terminal(scale * 0.5, 5)]
    branches = [[[[scale * 0.3]], [[scale * 0.9]]], [[[scale * 1.0]]], [[[scale * 0.2], [scale * 0.4]]]]
    return run(rows, [[1, 3], [1], [1]], branches, adv_norm=adv_norm, layout="scattered")


def test_b8_normalisation():
    out = [a for row in _norm_case(1.0, "batch") for a in row]
    mean = sum(out) / len(out)
    std = math.sqrt(sum((a - mean) ** 2 for a in out) / len(out))
    assert mean == pytest.approx(0.0, abs=1e-12) and std == pytest.approx(1.0, abs=1e-6)
    assert nested_close(_norm_case(3.0, "batch"), _norm_case(1.0, "batch"), 1e-6)  # up to eps = 1e-8
    raw1, raw3 = _norm_case(1.0, "none"), _norm_case(3.0, "none")
    assert nested_close([[3 * a for a in row] for row in raw1], raw3)


def test_b8_group_normalisation():
    rows = [terminal(1.0, 2), terminal(0.0, 2), terminal(5.0, 3), terminal(5.0, 3)]
    branches = [[[[0.5]]]] * 4
    adv = run(rows, [[1]] * 4, branches, group_ids=[0, 0, 1, 1], adv_norm="group")
    assert adv[0] == pytest.approx([1.0, 1.0], abs=1e-6) and adv[1] == pytest.approx([-1.0, -1.0], abs=1e-6)
    assert adv[2] == [0.0] * 3 and adv[3] == [0.0] * 3  # constant group: 0, not NaN


# ---------------------------------------------------------------------------------------------- B9


def test_b9_all_zero_rewards():
    mask = torch.ones(3, 4, dtype=DT)
    zero = AdvantageInputs(torch.zeros(3, 4, dtype=DT), mask, torch.tensor([0, 0, 0]))
    assert torch.equal(outcome_advantages(zero, GRPOConfig()), torch.zeros(3, 4, dtype=DT))
    # TRePO: every sampled W has reward 0, but one branched rollout at knot 3 of W_0 found reward 1
    adv = run([[0.0] * 4] * 3, [[1, 3], [1], [1]], [[[[0.0]], [[1.0]]], [[[0.0]]], [[[0.0]]]])
    assert any(a != 0.0 for a in adv[0])
    assert adv[0][0] == pytest.approx(1 / 2 - 1 / 3)  # V_3 = (1 + W's 0)/2, V_1 = (0 + 1 + W's 0)/3


# ---------------------------------------------------------------------------------------------- B10


def _tiny_policy(B, T, V, seed):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, T, V, generator=gen, dtype=DT, requires_grad=True)
    tokens = torch.randint(0, V, (B, T), generator=gen)
    return logits, tokens


def _logp(logits, tokens):
    return torch.log_softmax(logits, -1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)  # [B, T]


@pytest.mark.parametrize("loss_agg", ["token_mean", "seq_mean_token_mean"])
def test_b10_gradient_at_old_policy_is_vanilla_pg(loss_agg):
    logits, tokens = _tiny_policy(3, 5, 4, 0)
    mask = t([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 1, 1, 1, 0]])
    adv = torch.randn(3, 5, generator=torch.Generator().manual_seed(1), dtype=DT) * mask
    cfg = TRePOConfig(loss_agg=loss_agg)
    logp = _logp(logits, tokens)
    loss, _ = clipped_policy_loss(LossInputs(logp, logp.detach(), adv, mask, torch.arange(3)), cfg)
    (g_clip,) = torch.autograd.grad(loss, logits)
    # -agg A log pi, aggregation written out by hand
    if loss_agg == "token_mean":
        pg = -(adv * _logp(logits, tokens) * mask).sum() / mask.sum()
    else:
        pg = -((adv * _logp(logits, tokens) * mask).sum(1) / mask.sum(1)).mean()
    (g_pg,) = torch.autograd.grad(pg, logits)
    assert torch.allclose(g_clip, g_pg, atol=1e-12)


def test_b10_advantages_frozen_across_optimisation_steps():
    logits, tokens = _tiny_policy(2, 4, 3, 2)
    mask = torch.ones(2, 4, dtype=DT)
    rows = [terminal(1.0, 4), terminal(0.0, 4)]
    inp = AdvantageInputs(
        pack(rows, [[0, 1, 2, 3]] * 2, 4),
        mask,
        torch.tensor([0, 1]),
        rows=knot_rows([[1, 3], [1]], [[[[0.5]], [[1.0]]], [[[0.5]]]]),
        branch_rewards=[[[t([0.5])], [t([1.0])]], [[t([0.5])]]],
    )
    cfg = TRePOConfig(optimization_num=3)
    algo = get("trepo")
    adv = algo.advantages(inp, cfg)
    frozen = adv.clone()
    old_logp = _logp(logits, tokens).detach()
    opt = torch.optim.SGD([logits], lr=1.0)
    ratios = []
    for _ in range(cfg.optimization_num):
        loss, metrics = algo.policy_loss(LossInputs(_logp(logits, tokens), old_logp, adv, mask, inp.group_ids), cfg)
        opt.zero_grad()
        loss.backward()
        opt.step()
        ratios.append(metrics["ratio_mean"])
    assert torch.equal(adv, frozen)
    assert ratios[0] == pytest.approx(1.0) and ratios[-1] != pytest.approx(1.0)  # policy moved, A did not
    assert torch.equal(algo.advantages(inp, cfg), frozen)  # pure: recomputing gives the same numbers


# ---------------------------------------------------------------------------------------------- knots


def test_select_knots_uniform_grid_and_clamp():
    assert select_knots(10, 4, "uniform_grid") == [1, 3, 6, 8]
    assert select_knots(3, 8, "uniform_grid") == [1, 2, 3]  # n = min(|D|, T)
    assert select_knots(5, 1, "uniform_grid") == [1]
    assert select_knots(5, "all", "uniform_grid") == [1, 2, 3, 4, 5]
    assert select_knots(0, 4, "uniform_grid") == []


def test_select_knots_random():
    draws = set()
    for seed in range(20):
        knots = select_knots(30, 5, "random", rng=torch.Generator().manual_seed(seed))
        assert knots[0] == 1 and len(knots) == 5 and len(set(knots)) == 5 and knots == sorted(knots)
        assert all(2 <= k <= 30 for k in knots[1:])
        assert knots == select_knots(30, 5, "random", rng=torch.Generator().manual_seed(seed))
        draws.add(tuple(knots))
    assert len(draws) > 10
    assert select_knots(4, 9, "random", rng=torch.Generator().manual_seed(0)) == [1, 2, 3, 4]


def test_select_knots_step_boundaries():
    starts = [5, 9, 12, 1, 30, 9]
    assert select_knots(20, 3, "step_boundaries", starts) == [1, 5, 9]
    assert select_knots(20, "all", "step_boundaries", starts) == [1, 5, 9, 12]
    assert select_knots(20, 10, "step_boundaries", starts) == [1, 5, 9, 12]
    assert select_knots(20, 1, "step_boundaries", starts) == [1]


# ---------------------------------------------------------------------------------------------- misc


def test_empty_trajectory_and_padding_invariance():
    rows = [terminal(1.0, 3), [], terminal(0.0, 2)]
    knots = [[1, 2], [], [1]]
    branches = [[[[0.0]], [[1.0]]], [], [[[1.0]]]]
    results = [run(rows, knots, branches, layout=lay) for lay in LAYOUTS]
    assert results[0][1] == []
    assert results[0] == results[1] == results[2]
    # hand: row 0: V_2 = (1 + 1)/2, V_1 = (0 + 1 + 1)/3; A_1 = 1 - 2/3, A_2 = 1 - 1 = 0; token 3 = A_2
    assert results[0][0] == pytest.approx([1 / 3, 0.0, 0.0])
    assert results[0][2] == pytest.approx([-0.5, -0.5])  # V_1 = (1 + 0)/2


def test_bad_knots_raise():
    with pytest.raises(ValueError, match="knot t=1"):
        run([terminal(1.0, 3)], [[2]], [[[[0.0]]]])
    with pytest.raises(ValueError, match="strictly increasing"):
        run([terminal(1.0, 3)], [[1, 5]], [[[[0.0]], [[0.0]]]])
    with pytest.raises(ValueError, match="empty value pool"):
        run([terminal(1.0, 3)], [[1, 2]], [[[[0.0]], []]], pooling="none")


@pytest.mark.parametrize(
    "key,value",
    [
        ("rollouts_per_branch", 0),
        ("gamma", 0.0),
        ("gamma", 1.5),
        ("lam", -0.1),
        ("lam", 1.1),
        ("num_branch_points", 0),
        ("num_branch_points", "some"),
        ("clip_eps", 0.0),
        ("branch_selection", "designated"),
        ("temperature_schedule", "cosine"),
        ("pooling", "mean"),
        ("interp", "cubic"),
        ("adv_norm", "global"),
        ("loss_agg", "sum"),
        ("optimization_num", 0),
        ("tau_max", -1.0),
    ],
)
def test_config_validation(key, value):
    TRePOConfig().validate()
    with pytest.raises(ValueError, match=f"algo.{key}"):
        dataclasses.replace(TRePOConfig(), **{key: value}).validate()


def test_config_validation_kl():
    from rlx.algos import KLConfig

    for kl, key in [
        (KLConfig(beta=-1.0), "kl.beta"),
        (KLConfig(estimator="k4"), "kl.estimator"),
        (KLConfig(mode="sometimes"), "kl.mode"),
    ]:
        with pytest.raises(ValueError, match=key):
            TRePOConfig(kl=kl).validate()
