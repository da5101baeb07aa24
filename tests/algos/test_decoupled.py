"""Decoupled PPO (rlx/algos/decoupled.py) against a batch computed by hand, in float64, and how the update
applies it (the behaviour weight on the advantages, composed with the rollout-correction modes)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from rlx.algos.base import RolloutCorrectionConfig
from rlx.algos.decoupled import behaviour_weights, decoupled_ppo_loss
from rlx.algos.losses import clipped_policy_loss
from rlx.algos.ppo import PPOConfig
from rlx.config import ConfigError, TrainerConfig
from rlx.train.learn.correction import loss_weights

DT = torch.float64
# row 0: three tokens; row 1: one token then padding. Probabilities of the sampled tokens under each policy.
P_THETA = [[0.55, 0.3, 0.1], [0.5, 1.0, 1.0]]
P_PROX = [[0.5, 0.2, 0.2], [0.5, 1.0, 1.0]]
P_BEHAV = [[0.25, 0.4, 0.1], [0.5, 1.0, 1.0]]
ADV = [[1.0, 1.0, -2.0], [0.5, 0.0, 0.0]]
MASK = [[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]]


def tensors():
    logp = torch.tensor(P_THETA, dtype=DT).log().requires_grad_()
    return (logp, torch.tensor(P_PROX, dtype=DT).log(), torch.tensor(P_BEHAV, dtype=DT).log(),
            torch.tensor(ADV, dtype=DT), torch.tensor(MASK, dtype=DT))


def test_decoupled_loss_and_gradient_match_the_hand_computed_batch():
    logp, prox, behav, adv, mask = tensors()
    # w = prox / behav: 2, 0.5, 2 | 1;  r = theta / prox: 1.1, 1.5, 0.5 | 1;  eps 0.2 clips r to [0.8, 1.2]
    # w min(r A, clip(r) A): 2 * 1.1 = 2.2 (unclipped), 0.5 * 1.2 = 0.6 (clipped), 2 * min(-1, -1.6) = -3.2
    # (clipped), 1 * 0.5 = 0.5 (unclipped); token_mean over 4 tokens, negated
    loss, metrics = decoupled_ppo_loss(logp, prox, behav, adv, mask, 0.2, "token_mean")
    assert loss.item() == pytest.approx(-(2.2 + 0.6 - 3.2 + 0.5) / 4, abs=1e-15)
    assert metrics["behav_weight_mean"] == pytest.approx((2 + 0.5 + 2 + 1) / 4, abs=1e-15)
    assert metrics["clip_frac"] == pytest.approx(2 / 4, abs=1e-15)
    loss.backward()
    # d/dlogp of -(w r A)/4 where unclipped (d r / d logp = r); clipped tokens and padding get 0
    expected = torch.tensor([[-(2 * 1.1 * 1.0) / 4, 0.0, 0.0], [-(1 * 1.0 * 0.5) / 4, 0.0, 0.0]], dtype=DT)
    torch.testing.assert_close(logp.grad, expected, rtol=0, atol=1e-15)


def test_capped_behaviour_weight():
    logp, prox, behav, adv, mask = tensors()
    weights = behaviour_weights(prox, behav, mask, cap=1.5)
    torch.testing.assert_close(weights, torch.tensor([[1.5, 0.5, 1.5], [1.0, 0.0, 0.0]], dtype=DT), rtol=0, atol=1e-15)
    loss, _ = decoupled_ppo_loss(logp, prox, behav, adv, mask, 0.2, "token_mean", cap=1.5)
    assert loss.item() == pytest.approx(-(1.5 * 1.1 + 0.6 - 1.5 * 1.6 + 0.5) / 4, abs=1e-15)


def test_the_update_applies_it_as_the_advantage_weight_of_any_clipped_loss():
    """What the update does (rlx/train/learn/correction.py: the weight scales the advantages, then the algorithm's own
    clipped loss runs against pi_old = pi_prox) equals the decoupled objective exactly."""
    logp, prox, behav, adv, mask = tensors()
    weights = loss_weights(RolloutCorrectionConfig(), mask, prox, behav, None, decoupled=True)
    assert weights.keep is None and weights.metrics == {"behav_weight_mean": pytest.approx(1.375, abs=1e-15)}
    inputs = SimpleNamespace(logp=logp, old_logp=prox, advantages=adv * weights.advantage, response_mask=mask,
                             ref_logp=None, entropy=None, scale=None)
    via_update, _ = clipped_policy_loss(inputs, PPOConfig(clip_eps=0.2))
    direct, _ = decoupled_ppo_loss(logp, prox, behav, adv, mask, 0.2, "token_mean")
    assert via_update.item() == pytest.approx(direct.item(), abs=1e-15)


def test_rollout_correction_modes_compose_with_it():
    _, prox, behav, _, mask = tensors()
    rho = torch.tensor([[2.0, 0.5, 2.0], [1.0, 0.0, 0.0]], dtype=DT)
    tis = loss_weights(RolloutCorrectionConfig("tis", 1.5), mask, prox, behav, None, decoupled=True)
    torch.testing.assert_close(tis.advantage, rho.clamp(max=1.5), rtol=0, atol=1e-15)  # tis = the capped weight
    mis = loss_weights(RolloutCorrectionConfig("mis", 1.9), mask, prox, behav, None, decoupled=True)
    # rho 2 and 0.5 leave [1/1.9, 1.9]: only row 1's token stays
    torch.testing.assert_close(mis.keep, torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]], dtype=DT))
    torch.testing.assert_close(mis.advantage, rho, rtol=0, atol=1e-15)  # the kept tokens keep their weight
    plain = loss_weights(RolloutCorrectionConfig(), mask, prox, behav, None, decoupled=False)
    assert plain.advantage is None and plain.keep is None  # off: the update runs as before


def test_decoupled_is_the_default_exactly_with_stale_batches():
    assert not TrainerConfig().uses_decoupled_objective()
    assert TrainerConfig(max_staleness=1, rollout_workers=1).uses_decoupled_objective()
    assert not TrainerConfig(max_staleness=2, rollout_workers=1, decoupled_objective=False).uses_decoupled_objective()


@pytest.mark.parametrize(("settings", "key"), [
    ({"max_staleness": 1}, "train.max_staleness needs train.rollout_workers >= 1"),
    ({"max_staleness": -1}, "train.max_staleness must be >= 0"),
    ({"rollout_workers": -1}, "train.rollout_workers must be >= 0"),
    ({"rollout_timeout_s": 0.0}, "train.rollout_timeout_s must be > 0"),
])
def test_async_settings_are_validated(settings, key):
    with pytest.raises(ConfigError, match=key):
        TrainerConfig(**settings).validate()


def test_log_ratio_is_clamped_like_every_ratio():
    mask = torch.ones(1, 1, dtype=DT)
    weights = behaviour_weights(torch.zeros(1, 1, dtype=DT), torch.full((1, 1), -100.0, dtype=DT), mask)
    assert weights.item() == pytest.approx(math.exp(20.0))
