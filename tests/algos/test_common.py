"""Shared pieces: GAE (C1, C2), clipped surrogate (C3), PPO losses (C4), KL rewards (C5), KL estimator point
properties (E3) and the exact GRPO KL term (E5)."""

from __future__ import annotations

import math

import pytest
import torch

from rlx.algos import KLConfig, LossInputs, get
from rlx.algos.base import CriticConfig, ValueLossInputs
from rlx.algos.gae import gae
from rlx.algos.kl import kl_k1, kl_k2, kl_k3, kl_token_rewards
from rlx.algos.losses import agg_loss, clipped_surrogate
from rlx.algos.ppo import PPOConfig
from rlx.algos.stats import group_whiten, masked_mean, masked_whiten, normalize_advantages, terminal_rewards

from .algo_helpers import DT, LAYOUTS, layout_columns, mask_of, pack, t, unpack

# ---------------------------------------------------------------------------------------------- C1, C2


def _random_rows(seed, lens):
    gen = torch.Generator().manual_seed(seed)
    r = [torch.randn(n, generator=gen, dtype=DT).tolist() for n in lens]
    v = [torch.randn(n, generator=gen, dtype=DT).tolist() for n in lens]
    return r, v


def _delta(r, v, gamma, i):
    return r[i] + gamma * (v[i + 1] if i + 1 < len(r) else 0.0) - v[i]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("gamma,lam", [(1.0, 0.95), (0.9, 0.5), (0.99, 1.0), (0.7, 0.0)])
def test_c1_gae_equals_direct_sum(layout, gamma, lam):
    lens = [5, 1, 0, 7]
    r, v = _random_rows(0, lens)
    T, cols = layout_columns(lens, layout)
    adv, ret = gae(pack(r, cols, T), pack(v, cols, T), mask_of(cols, T), gamma, lam)
    assert torch.all(adv * (1 - mask_of(cols, T)) == 0)
    for b, (rb, vb) in enumerate(zip(r, v)):
        direct = [
            sum((gamma * lam) ** l * _delta(rb, vb, gamma, i + l) for l in range(len(rb) - i)) for i in range(len(rb))
        ]  # GAE arXiv 1506.02438 Eq. 16
        assert unpack(adv, cols)[b] == pytest.approx(direct, abs=1e-12)
        assert unpack(ret, cols)[b] == pytest.approx([a + x for a, x in zip(direct, vb)], abs=1e-12)


def test_c1_gae_limits():
    r, v = _random_rows(1, [6])
    r, v = r[0], v[0]
    ones = torch.ones(1, 6, dtype=DT)
    a0, _ = gae(t([r]), t([v]), ones, 0.9, 0.0)
    assert a0[0].tolist() == pytest.approx([_delta(r, v, 0.9, i) for i in range(6)], abs=1e-12)  # Eq. 2.16
    a1, _ = gae(t([r]), t([v]), ones, 0.9, 1.0)
    mc = [sum(0.9**l * r[i + l] for l in range(6 - i)) - v[i] for i in range(6)]  # Eq. 2.17
    assert a1[0].tolist() == pytest.approx(mc, abs=1e-12)
    assert a0[0, -1].item() == pytest.approx(r[-1] - v[-1])  # V_{T+1} = 0
    # zero reward, gamma = lam = 1: A_t = RM - V(s_t) (Remark 6)
    rm = [0.0] * 5 + [0.8]
    az, _ = gae(t([rm]), t([v]), ones, 1.0, 1.0)
    assert az[0].tolist() == pytest.approx([0.8 - x for x in v], abs=1e-12)


def test_c2_gae_is_lambda_average_of_k_step_advantages():
    r, v = _random_rows(2, [7])
    r, v = r[0], v[0]
    g, lam, n = 0.95, 0.8, 7
    adv, _ = gae(t([r]), t([v]), torch.ones(1, n, dtype=DT), g, lam)

    def k_step(i, k):  # A^(k)_t = -V_t + r_t + ... + g^(k-1) r_{t+k-1} + g^k V_{t+k}
        k = min(k, n - i)
        boot = v[i + k] if i + k < n else 0.0
        return -v[i] + sum(g**l * r[i + l] for l in range(k)) + g**k * boot

    for i in range(n):
        rest = n - i  # A^(k) = A^(rest) for k >= rest, so the infinite tail sums to lam^(rest-1)
        avg = (1 - lam) * sum(lam ** (k - 1) * k_step(i, k) for k in range(1, rest)) + lam ** (rest - 1) * k_step(
            i, rest
        )
        assert adv[0, i].item() == pytest.approx(avg, abs=1e-12)
    assert (1 - lam) * sum(lam ** (k - 1) for k in range(1, 2000)) == pytest.approx(1.0)
    assert pytest.approx(100) == 1 / (1 - 0.99) and pytest.approx(200) == 1 / (1 - 0.995)
    assert pytest.approx(22.3, abs=0.05) == 1 / (1 - 0.995 * 0.96)


# ---------------------------------------------------------------------------------------------- C3


@pytest.mark.parametrize(
    "ratio,adv,value,grad",
    [
        (1.1, 2.0, 1.1 * 2.0, 2.0),  # A > 0, r <= 1.2: rA
        (1.5, 2.0, 1.2 * 2.0, 0.0),  # A > 0, r > 1.2: capped, no gradient
        (0.5, 2.0, 0.5 * 2.0, 2.0),  # A > 0, r < 0.8: still rA
        (0.5, -2.0, 0.8 * -2.0, 0.0),  # A < 0, r < 0.8: floored, no gradient
        (0.9, -2.0, 0.9 * -2.0, -2.0),  # A < 0, r >= 0.8: rA
        (1.5, -2.0, 1.5 * -2.0, -2.0),  # A < 0, r > 1.2: rA (pessimistic)
        (1.0, 3.0, 3.0, 3.0),  # r = 1: value A, gradient of vanilla PG
    ],
)
def test_c3_clip_piecewise(ratio, adv, value, grad):
    logp = torch.tensor([[math.log(ratio)]], dtype=DT, requires_grad=True)
    loss, _ = clipped_surrogate(
        logp, torch.zeros(1, 1, dtype=DT), t([[adv]]), torch.ones(1, 1, dtype=DT), 0.2, "token_mean"
    )
    assert -loss.item() == pytest.approx(value, abs=1e-12)
    (g,) = torch.autograd.grad(loss, logp)
    assert -g.item() / ratio == pytest.approx(grad, abs=1e-12)  # d(L)/d(r) = d(L)/d(logp) / r


def test_c3_clip_metrics():
    logp = torch.log(t([[1.0, 1.5, 0.5, 2.0]]))
    loss, m = clipped_surrogate(
        logp, torch.zeros(1, 4, dtype=DT), t([[1.0, 1.0, -1.0, 1.0]]), t([[1, 1, 1, 0]]), 0.2, "token_mean"
    )
    assert m["clip_frac"] == pytest.approx(2 / 3)  # tokens 2 and 3 are clipped, token 4 is padding
    assert m["ratio_mean"] == pytest.approx(1.0)
    assert m["approx_kl"] == pytest.approx(((1.5 - 1 - math.log(1.5)) + (0.5 - 1 - math.log(0.5))) / 3)


# ---------------------------------------------------------------------------------------------- C4


def test_c4_value_loss_and_signs():
    cfg = PPOConfig(critic=CriticConfig(vf_coef=0.5), entropy_coef=0.01)
    algo = get("ppo")
    mask = t([[1, 1, 0]])
    values = t([[0.5, 1.0, 9.0]])
    targets = t([[1.0, 0.0, 0.0]])
    loss, m = algo.value_loss(ValueLossInputs(values, values, targets, mask), cfg)
    assert m["vf_loss"] == pytest.approx((0.25 + 1.0) / 2)
    assert loss.item() == pytest.approx(0.5 * (0.25 + 1.0) / 2)
    # entropy S = -sum pi log pi of a categorical; the loss is -L^CLIP + ... - c2 S (Eq. 2.18)
    probs = t([[[0.7, 0.2, 0.1], [0.5, 0.5, 0.0], [1.0, 0.0, 0.0]]])
    ent = -(probs * torch.log(probs.clamp(min=1e-300))).sum(-1)  # [1, 3]
    s = (-(0.7 * math.log(0.7) + 0.2 * math.log(0.2) + 0.1 * math.log(0.1)) + math.log(2)) / 2
    zero = torch.zeros(1, 3, dtype=DT)
    inp = LossInputs(zero, zero, t([[1.0, -1.0, 0.0]]), mask, torch.zeros(1), entropy=ent)
    pl, _ = algo.policy_loss(inp, cfg)
    assert pl.item() == pytest.approx(-(1.0 - 1.0) / 2 - 0.01 * s, abs=1e-12)


def test_c4_value_targets_are_lambda_returns():
    from rlx.algos import AdvantageInputs

    cfg = PPOConfig(gamma=1.0, lam=1.0, adv_norm="none")
    mask = torch.ones(1, 3, dtype=DT)
    inp = AdvantageInputs(t([[0.0, 0.0, 1.0]]), mask, torch.zeros(1), values=t([[0.2, 0.4, 0.6]]))
    algo = get("ppo")
    assert algo.advantages(inp, cfg)[0].tolist() == pytest.approx([0.8, 0.6, 0.4])
    assert algo.value_targets(inp, cfg)[0].tolist() == pytest.approx([1.0, 1.0, 1.0])  # MC return, lam = 1
    assert algo.requires(cfg) == {"critic_values"}  # the trainer checks it once at start-up


# ---------------------------------------------------------------------------------------------- C5


def test_c5_kl_token_rewards():
    logp_old = t([[-1.0, -0.5, -2.0, 0.0]])
    ref = t([[-1.2, -0.5, -1.0, 0.0]])
    mask = t([[1, 1, 1, 0]])
    r = kl_token_rewards(logp_old, ref, mask, KLConfig(beta=0.1, estimator="k1", mode="reward_token"))
    assert r[0].tolist() == pytest.approx([-0.1 * 0.2, 0.0, -0.1 * -1.0, 0.0])  # -beta log(pi_old / pi_ref)
    total = r + terminal_rewards(t([2.0]), mask)
    assert total[0].tolist() == pytest.approx([-0.02, 0.0, 0.1 + 2.0, 0.0])  # + 1[t = T] RM
    resp = kl_token_rewards(logp_old, ref, mask, KLConfig(beta=0.1, estimator="k1", mode="reward_response"))
    assert resp[0].tolist() == pytest.approx([0.0, 0.0, -0.1 * (0.2 - 1.0), 0.0])
    for kl in (KLConfig(beta=0.0), KLConfig(beta=0.1, mode="loss")):
        assert torch.equal(kl_token_rewards(logp_old, ref, mask, kl), torch.zeros(1, 4, dtype=DT))


def test_c5_kl_loss_term():
    logp = t([[-1.0, -0.5]]).requires_grad_()
    ref = t([[-1.5, -0.5]])
    mask = torch.ones(1, 2, dtype=DT)
    cfg = PPOConfig(kl=KLConfig(beta=0.5, estimator="k3", mode="loss"))
    loss, m = get("ppo").policy_loss(
        LossInputs(logp, logp.detach(), torch.zeros(1, 2, dtype=DT), mask, torch.zeros(1), ref_logp=ref), cfg
    )
    k3 = (math.exp(-0.5) - 1 + 0.5) / 2  # token 2 has r = 1 -> 0
    assert m["kl_ref"] == pytest.approx(k3) and loss.item() == pytest.approx(0.5 * k3)
    with pytest.raises(ValueError, match="ref_logp"):
        get("ppo").policy_loss(LossInputs(logp, logp.detach(), torch.zeros(1, 2, dtype=DT), mask, torch.zeros(1)), cfg)


# ---------------------------------------------------------------------------------------------- E3, E5


def test_e3_point_properties():
    log_r = torch.linspace(-5, 5, 1001, dtype=DT)  # log r = ref_logp - logp
    logp, ref = torch.zeros_like(log_r), log_r
    assert torch.all(kl_k2(logp, ref) >= 0) and torch.all(kl_k3(logp, ref) >= 0)
    z = torch.zeros(1, dtype=DT)
    assert kl_k1(z, z).item() == kl_k2(z, z).item() == kl_k3(z, z).item() == 0.0  # r = 1
    assert torch.all(kl_k1(logp, ref)[log_r > 0] < 0)  # k1 < 0 when r > 1
    assert kl_k1(t([-1.0]), t([-3.0])).item() == pytest.approx(2.0)  # k1 = log pi - log ref


def test_e5_grpo_kl_term_exact_expectation():
    pi = t([0.5, 0.3, 0.2])
    ref = t([0.2, 0.2, 0.6])
    k3 = kl_k3(pi.log(), ref.log())  # per token: ref/pi - log(ref/pi) - 1
    assert torch.all(k3 >= 0)
    assert (pi * k3).sum().item() == pytest.approx((pi * (pi / ref).log()).sum().item(), abs=1e-12)
    assert kl_k3(pi.log(), pi.log()).abs().max().item() == 0.0  # equality iff pi == ref on the token
    assert (pi * kl_k1(pi.log(), ref.log())).sum().item() == pytest.approx((pi * (pi / ref).log()).sum().item())


# ---------------------------------------------------------------------------------------------- misc


def test_agg_loss_and_whiten_ignore_padding():
    x = t([[1.0, 2.0, 99.0], [3.0, 99.0, 99.0], [99.0, 99.0, 99.0]])
    mask = t([[1, 1, 0], [1, 0, 0], [0, 0, 0]])
    assert agg_loss(x, mask, "token_mean").item() == pytest.approx(2.0)
    assert agg_loss(x, mask, "seq_mean_token_mean").item() == pytest.approx((1.5 + 3.0) / 2)  # empty row left out
    assert agg_loss(x, mask, "seq_mean_token_sum_norm").item() == pytest.approx((3 / 3 + 3 / 3 + 0) / 3)
    w = masked_whiten(x, mask)
    assert w[mask > 0].tolist() == pytest.approx([-1.224744871, 0.0, 1.224744871], abs=1e-6)  # (x-2)/sqrt(2/3)
    assert torch.all(w[mask == 0] == 0)
    with pytest.raises(ValueError, match="loss_agg"):
        agg_loss(x, mask, "sum")


def test_whitening_a_constant_input_is_exactly_zero_in_float32():
    x = torch.full((3, 7), 0.1, dtype=torch.float32)  # 0.1 has no exact float32 sum: the mean carries rounding
    mask = torch.ones(3, 7)
    mask[1, 5:] = 0.0
    groups = torch.tensor([0, 0, 1])
    assert masked_mean(x, mask).item() != pytest.approx(0.1, abs=0)  # the noise a plain whitening would amplify
    for out in (masked_whiten(x, mask), group_whiten(x, mask, groups), normalize_advantages(x, mask, groups, "batch"),
                normalize_advantages(x, mask, groups, "group")):
        assert torch.equal(out, torch.zeros_like(x))
    varied = x.clone()
    varied[0, 0] = 0.3
    assert masked_whiten(varied, mask).abs().max() > 1.0  # a non-constant input is still whitened
