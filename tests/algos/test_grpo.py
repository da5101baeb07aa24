"""GRPO family (docs/algorithms.md, "GRPO"): hand-computed values."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from rlx.algos import AdvantageInputs, KLConfig, LossInputs, get
from rlx.algos.grpo import GRPOConfig, grpo_advantages, outcome_advantages

from .algo_helpers import DT, LAYOUTS, layout_columns, mask_of, pack, t, terminal, unpack

EPS = 1e-6


def outcome(rms, lens, groups, layout="right", **kw):
    T, cols = layout_columns(lens, layout)
    inp = AdvantageInputs(
        pack([terminal(r, n) for r, n in zip(rms, lens)], cols, T), mask_of(cols, T), torch.tensor(groups)
    )
    adv = grpo_advantages(inp, GRPOConfig(**kw))
    assert torch.all(adv * (1 - inp.response_mask) == 0)
    return unpack(adv, cols)


# ---------------------------------------------------------------------------------------------- D1


@pytest.mark.parametrize("layout", LAYOUTS)
def test_d1_outcome_advantages(layout):
    rms, lens, groups = [1, 0, 0, 1, 2, 2, 2], [2, 3, 1, 4, 2, 2, 3], [0, 0, 0, 0, 1, 1, 1]
    adv = outcome(rms, lens, groups, layout)
    a = 0.5 / (0.5 + EPS)  # group 0: mean 0.5, population std 0.5
    expect = [a, -a, -a, a]
    for i in range(4):
        assert adv[i] == pytest.approx([expect[i]] * lens[i], abs=1e-12)  # every token shares A_i
    assert adv[4:] == [[0.0] * 2, [0.0] * 2, [0.0] * 3]  # constant group: exactly 0
    a1 = 0.5 / (math.sqrt(1 / 3) + EPS)  # ddof = 1: std = sqrt(4 * 0.25 / 3)
    adv1 = outcome(rms, lens, groups, layout, ddof=1)
    assert [row[0] for row in adv1[:4]] == pytest.approx([a1, -a1, -a1, a1], abs=1e-12)


def test_d1_group_mean_zero_std_one():
    rms = [0.3, 1.7, -0.4, 0.9, 2.0]
    adv = [row[0] for row in outcome(rms, [1] * 5, [0] * 5)]
    mean = sum(adv) / 5
    assert mean == pytest.approx(0.0, abs=1e-12)
    assert math.sqrt(sum((x - mean) ** 2 for x in adv) / 5) == pytest.approx(1.0, abs=1e-5)


def test_d1_constant_group_never_nan():
    adv = outcome([0.1, 0.1, 0.1], [2, 2, 2], [3, 3, 3])  # 0.1 * 3 / 3 != 0.1 in floating point
    assert adv == [[0.0, 0.0]] * 3
    adv = outcome([1.0], [3], [0], ddof=1)  # single-member group with ddof 1
    assert adv == [[0.0] * 3]


def test_d1_no_std_scaling():
    adv = outcome([1.0, 0.0, 0.5], [1, 1, 1], [0, 0, 0], scale_by_std=False)
    assert [r[0] for r in adv] == pytest.approx([0.5, -0.5, 0.0], abs=1e-12)


def test_d1_loss_aggregation():
    mask = t([[1, 1, 0, 0, 0], [1, 1, 1, 1, 0]])
    adv = t([[1, 3, 0, 0, 0], [2, 2, 2, -2, 0]])
    logp = torch.zeros(2, 5, dtype=DT)
    inp = LossInputs(logp, logp, adv, mask, torch.tensor([0, 0]))
    algo = get("grpo")
    loss, _ = algo.policy_loss(inp, GRPOConfig())  # 1/G sum_i 1/|o_i| sum_t at ratio 1: row means 2 and 1
    assert loss.item() == pytest.approx(-(2 + 1) / 2)
    loss, _ = algo.policy_loss(inp, GRPOConfig(loss_agg="token_mean"))
    assert loss.item() == pytest.approx(-8 / 6)
    loss, _ = algo.policy_loss(inp, GRPOConfig(loss_agg="seq_mean_token_sum_norm"))  # Dr.GRPO, T_max = 5
    assert loss.item() == pytest.approx(-(4 / 5 + 4 / 5) / 2)


# ---------------------------------------------------------------------------------------------- D2


def test_d2_sequence_ratio():
    mask = t([[1, 1, 0], [1, 0, 0], [1, 1, 1]])
    old = torch.zeros(3, 3, dtype=DT)
    logp = t([[0.05, -0.02, 0.0], [0.1, 0.0, 0.0], [0.1, 0.1, 0.1]])
    adv = t([[1, 1, 0], [-1, 0, 0], [1, 1, 1]])
    cfg = GRPOConfig(ratio_level="sequence")
    loss, m = get("grpo").policy_loss(LossInputs(logp, old, adv, mask, torch.zeros(3)), cfg)
    # r_i = exp(sum_t dlogp): e^0.03 (A=1, unclipped), e^0.1 (A=-1, inside the clip range), e^0.3 (clipped)
    expect = -(math.exp(0.03) * 1 + math.exp(0.1) * -1 + 1.2 * 1) / 3
    assert loss.item() == pytest.approx(expect, abs=1e-12)
    assert m["clip_frac"] == pytest.approx(1 / 3)


def test_d2_one_token_responses_match_token_level():
    gen = torch.Generator().manual_seed(0)
    logp = (0.3 * torch.randn(4, 1, generator=gen, dtype=DT)).requires_grad_()
    old = torch.zeros(4, 1, dtype=DT)
    adv = torch.randn(4, 1, generator=gen, dtype=DT)
    mask = torch.ones(4, 1, dtype=DT)
    grads = []
    for level in ("token", "sequence"):
        loss, _ = get("grpo").policy_loss(
            LossInputs(logp, old, adv, mask, torch.zeros(4)), GRPOConfig(ratio_level=level)
        )
        grads.append((loss.item(), torch.autograd.grad(loss, logp)[0]))
    assert grads[0][0] == pytest.approx(grads[1][0], abs=1e-12)
    assert torch.allclose(grads[0][1], grads[1][1], atol=1e-12)


def test_d2_sequence_kl_on_sequence_probabilities():
    mask = t([[1, 1]])
    logp, ref = t([[-1.0, -2.0]]), t([[-1.5, -1.0]])
    cfg = GRPOConfig(ratio_level="sequence", kl=KLConfig(beta=0.1, estimator="k3", mode="loss"))
    loss, m = get("grpo").policy_loss(
        LossInputs(logp, logp, torch.zeros(1, 2, dtype=DT), mask, torch.zeros(1), ref_logp=ref), cfg
    )
    log_r = (-1.5 - 1.0) - (-1.0 - 2.0)  # log pi_ref(o)/pi(o) = 0.5
    assert m["kl_ref"] == pytest.approx(math.exp(log_r) - log_r - 1, abs=1e-12)
    assert loss.item() == pytest.approx(0.1 * (math.exp(log_r) - log_r - 1), abs=1e-12)


# ---------------------------------------------------------------------------------------------- D3


def process_case(inclusive, layout="right"):
    lens = [6, 3]
    T, cols = layout_columns(lens, layout)
    mask = mask_of(cols, T)
    inp = AdvantageInputs(
        torch.zeros_like(mask),
        mask,
        torch.tensor([0, 0]),
        step_ends=[[1, 4], [0, 2]],
        step_rewards=[[1.0, 0.25], [0.0, 0.75]],
    )
    cfg = GRPOConfig(supervision="process", process_inclusive=inclusive)
    return unpack(grpo_advantages(inp, cfg), cols)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_d3_process_supervision(layout):
    # all four step rewards of the group are normalised together: mean 0.5, population variance 0.15625
    s = math.sqrt(0.15625) + EPS
    r0, r1, q0, q1 = 0.5 / s, -0.25 / s, -0.5 / s, 0.25 / s
    inc = process_case(True, layout)
    assert inc[0] == pytest.approx([r0 + r1, r0 + r1, r1, r1, r1, 0.0], abs=1e-12)  # token 5: after last step
    assert inc[1] == pytest.approx([q0 + q1, q1, q1], abs=1e-12)
    strict = process_case(False, layout)  # the seed's index(j) > t: a step's end token gets only later steps
    assert strict[0] == pytest.approx([r0 + r1, r1, r1, r1, 0.0, 0.0], abs=1e-12)
    assert strict[1] == pytest.approx([q1, q1, 0.0], abs=1e-12)


# ---------------------------------------------------------------------------------------------- D4


def test_d4_sentence_advantages_s004_statistics():
    rewards = [[1.0, 0.0], [0.5], [0.2, 0.4, 0.9]]
    ends = [[1, 3], [2], [0, 1, 4]]
    lens = [4, 3, 5]
    T, cols = layout_columns(lens, "scattered")
    mask = mask_of(cols, T)
    inp = AdvantageInputs(torch.zeros_like(mask), mask, torch.tensor([0, 0, 0]), step_ends=ends, step_rewards=rewards)
    adv = unpack(grpo_advantages(inp, GRPOConfig(supervision="sentence")), cols)
    mu = (0.5 + 0.5 + 0.5) / 3  # mean of the per-output means
    var = ((0.25 + 0.25) / 2 + 0.0 + (0.09 + 0.01 + 0.16) / 3) / 3
    a = [[(r - mu) / (math.sqrt(var) + EPS) for r in row] for row in rewards]
    assert adv[0] == pytest.approx([a[0][0], a[0][0], a[0][1], a[0][1]], abs=1e-12)
    assert adv[1] == pytest.approx([a[1][0]] * 3, abs=1e-12)
    assert adv[2] == pytest.approx([a[2][0], a[2][1], a[2][2], a[2][2], a[2][2]], abs=1e-12)


def test_d4_one_sentence_equals_outcome_level():
    rms, lens = [0.3, 1.0, 0.0, 0.6], [2, 4, 3, 1]
    T, cols = layout_columns(lens, "left")
    mask = mask_of(cols, T)
    rewards = pack([terminal(r, n) for r, n in zip(rms, lens)], cols, T)
    inp = AdvantageInputs(
        rewards,
        mask,
        torch.tensor([1, 1, 1, 1]),
        step_ends=[[n - 1] for n in lens],
        step_rewards=[[r] for r in rms],
    )
    sent = grpo_advantages(inp, GRPOConfig(supervision="sentence"))
    out = outcome_advantages(inp, GRPOConfig(ddof=0))
    assert torch.allclose(sent, out, atol=1e-12)


def test_d4_sentence_ratio_is_product_of_token_ratios():
    mask = t([[1, 1, 1], [1, 1, 0]])
    old = torch.zeros(2, 3, dtype=DT)
    logp = t([[0.05, 0.05, -0.1], [0.02, 0.03, 0.0]])
    adv = t([[1.0, 1.0, -1.0], [0.5, 0.5, 0.0]])
    inp = LossInputs(logp, old, adv, mask, torch.zeros(2), step_ends=[[1, 2], [1]])
    loss, _ = get("grpo").policy_loss(inp, GRPOConfig(ratio_level="sentence"))
    # row 0: sentences {0,1} ratio e^0.1 (A=1), {2} ratio e^-0.1 (A=-1, in [0.8, 1.2]); row 1: e^0.05 * 0.5
    row0 = (math.exp(0.1) * 1 + math.exp(-0.1) * -1) / 2
    row1 = math.exp(0.05) * 0.5
    assert loss.item() == pytest.approx(-(row0 + row1) / 2, abs=1e-12)


def test_d4_weights_and_components():
    with pytest.raises(ValueError, match="sum to 1"):
        GRPOConfig(w_corr=0.5, w_logic=0.3, w_fmt=0.3).validate()
    GRPOConfig(w_corr=0.5, w_logic=0.3, w_fmt=0.2).validate()
    mask = torch.ones(2, 2, dtype=DT)
    cfg = GRPOConfig(supervision="sentence", w_corr=0.5, w_logic=0.3, w_fmt=0.2, scale_by_std=False)
    inp = AdvantageInputs(
        torch.zeros(2, 2, dtype=DT),
        mask,
        torch.tensor([0, 0]),
        step_ends=[[1], [1]],
        step_rewards=[[(1.0, 1.0, 0.0)], [(0.0, 0.0, 1.0)]],
    )
    adv = grpo_advantages(inp, cfg)  # sentence rewards 0.8 and 0.2 -> mean 0.5
    assert adv[:, 0].tolist() == pytest.approx([0.3, -0.3], abs=1e-12)


@pytest.mark.parametrize(
    "key,value",
    [
        ("clip_eps", -0.1),
        ("ddof", -1),
        ("ratio_level", "word"),
        ("supervision", "token"),
        ("loss_agg", "mean"),
        ("samples_per_prompt", 0),
        ("std_eps", -1.0),
    ],
)
def test_config_validation(key, value):
    GRPOConfig().validate()
    with pytest.raises(ValueError, match=f"algo.{key}"):
        dataclasses.replace(GRPOConfig(), **{key: value}).validate()


def test_grpo_has_no_gamma_or_lam():
    fields = {f.name for f in dataclasses.fields(GRPOConfig)}
    assert "gamma" not in fields and "lam" not in fields
