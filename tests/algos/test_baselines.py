"""RLOO (D5), ReMax (D6), REINFORCE, PPO/VinePPO configs, and the registry contract."""

from __future__ import annotations

import dataclasses
import re

import pytest
import torch

from rlx.algos import REGISTRY, AdvantageInputs, Knot, LossInputs, get
from rlx.algos.base import CriticConfig
from rlx.algos.ppo import PPOConfig
from rlx.algos.reinforce import REINFORCEConfig
from rlx.algos.remax import ReMaxConfig
from rlx.algos.rloo import RLOOConfig
from rlx.algos.trepo import TRePOConfig
from rlx.algos.vineppo import VinePPOConfig

from .algo_helpers import DT, knot_rows, layout_columns, mask_of, pack, t, terminal, unpack


def batch(rms, lens, groups, layout="scattered", **kw):
    T, cols = layout_columns(lens, layout)
    inp = AdvantageInputs(
        pack([terminal(r, n) for r, n in zip(rms, lens)], cols, T),
        mask_of(cols, T),
        torch.tensor(groups),
        **kw,
    )
    return inp, cols


# ---------------------------------------------------------------------------------------------- D5


def test_d5_rloo():
    rms = [1.0, 0.0, 0.5, 0.5, 2.0, 4.0]
    inp, cols = batch(rms, [2, 3, 1, 2, 1, 2], [0, 0, 0, 0, 1, 1])
    adv = unpack(get("rloo").advantages(inp, RLOOConfig()), cols)
    first = [row[0] for row in adv]
    assert first[:4] == pytest.approx([1 - 1 / 3, 0 - 2 / 3, 0.5 - 1.5 / 3, 0.5 - 1.5 / 3])  # b_k excludes r_k
    assert first[4:] == pytest.approx([-2.0, 2.0])
    assert sum(first[:4]) == pytest.approx(0.0, abs=1e-12)
    assert first[:4] == pytest.approx([4 / 3 * (r - 0.5) for r in rms[:4]])  # K/(K-1) (r_k - mean)
    assert all(row == pytest.approx([row[0]] * len(row)) for row in adv)


def test_d5_rloo_plain_pg_loss():
    logp = t([[-1.0, -2.0]]).requires_grad_()
    loss, _ = get("rloo").policy_loss(
        LossInputs(logp, logp.detach() + 5.0, t([[2.0, 2.0]]), torch.ones(1, 2, dtype=DT), torch.zeros(1)),
        RLOOConfig(),
    )
    assert loss.item() == pytest.approx(-2.0 * (-1.0 - 2.0) / 2)  # no ratio: old_logp is ignored
    assert torch.autograd.grad(loss, logp)[0][0].tolist() == pytest.approx([-1.0, -1.0])


# ---------------------------------------------------------------------------------------------- D6


def test_d6_remax():
    algo = get("remax")
    assert algo.plan_branches([5, 6, 7], [], ReMaxConfig(), torch.Generator()) == [Knot(1, (0.0,))]
    greedy = [[[t([0.0, 0.25])]], [[t([1.0])]]]  # branch_rewards[b][0][0]: the greedy decode's
    inp, cols = batch([1.0, 0.0], [3, 2], [0, 1], branch_rewards=greedy, rows=knot_rows([[1], [1]], greedy))
    adv = unpack(algo.advantages(inp, ReMaxConfig()), cols)
    assert adv == [[0.75] * 3, [-1.0] * 2]
    with pytest.raises(ValueError, match="greedy"):
        algo.advantages(dataclasses.replace(inp, branch_rewards=[[[]], [[t([1.0])]]]), ReMaxConfig())


# ---------------------------------------------------------------------------------------------- REINFORCE


def test_reinforce_returns_and_baselines():
    # row 0: rewards (0.5, 0, 1), row 1: (0, 2), both group 0; row 2: (1,), group 1
    T, cols = layout_columns([3, 2, 1], "left")
    inp = AdvantageInputs(
        pack([[0.5, 0.0, 1.0], [0.0, 2.0], [1.0]], cols, T), mask_of(cols, T), torch.tensor([0, 0, 1])
    )
    algo = get("reinforce")
    full = unpack(algo.advantages(inp, REINFORCEConfig(gamma=0.5)), cols)
    assert full == [
        pytest.approx([0.75] * 3),
        pytest.approx([1.0] * 2),
        pytest.approx([1.0]),
    ]  # G_1 = sum g^(t-1) r
    rtg = unpack(algo.advantages(inp, REINFORCEConfig(gamma=0.5, reward_to_go=True)), cols)
    assert rtg == [pytest.approx([0.75, 0.5, 1.0]), pytest.approx([1.0, 2.0]), pytest.approx([1.0])]
    bm = unpack(algo.advantages(inp, REINFORCEConfig(gamma=0.5, baseline="batch_mean")), cols)
    assert [r[0] for r in bm] == pytest.approx([0.75 - 2.75 / 3, 1.0 - 2.75 / 3, 1.0 - 2.75 / 3])
    gm = unpack(algo.advantages(inp, REINFORCEConfig(gamma=0.5, baseline="group_mean", reward_to_go=True)), cols)
    assert gm == [
        pytest.approx([0.75 - 0.875, 0.5 - 0.875, 1.0 - 0.875]),
        pytest.approx([0.125, 1.125]),
        pytest.approx([0.0]),
    ]


# ---------------------------------------------------------------------------------------------- configs


@pytest.mark.parametrize(
    "cfg,key,value",
    [
        (PPOConfig(), "critic", CriticConfig(vf_coef=-1.0)),
        (PPOConfig(), "critic", CriticConfig(lr=0.0)),
        (PPOConfig(), "lam", 2.0),
        (PPOConfig(), "gamma", 0.0),
        (RLOOConfig(), "samples_per_prompt", 1),
        (REINFORCEConfig(), "baseline", "median"),
        (ReMaxConfig(), "loss_agg", "max"),
        (VinePPOConfig(), "rollouts_per_branch", 0),
    ],
)
def test_config_validation(cfg, key, value):
    cfg.validate()
    with pytest.raises(ValueError, match=f"algo.{key}"):
        dataclasses.replace(cfg, **{key: value}).validate()


def test_vineppo_is_a_trepo_preset():
    vine, trepo = get("vineppo"), get("trepo")
    cfg = VinePPOConfig()
    assert isinstance(cfg, TRePOConfig) and cfg.name == "vineppo"
    assert (cfg.branch_selection, cfg.rollouts_per_branch, cfg.num_branch_points) == (
        "step_boundaries",
        9,
        "all",
    )
    assert (cfg.temperature_schedule, cfg.tau_max) == ("constant", 1.0)
    assert vine.advantages is trepo.advantages and vine.plan_branches is trepo.plan_branches
    knots = vine.plan_branches(list(range(20)), [4, 9, 15], cfg, torch.Generator())
    assert [k.t for k in knots] == [1, 4, 9, 15] and all(k.temperatures == (1.0,) * 9 for k in knots)


# ---------------------------------------------------------------------------------------------- registry


def test_registry_contents():
    assert set(REGISTRY) == {"trepo", "grpo", "ppo", "rloo", "remax", "reinforce", "vineppo", "cispo", "tree"}


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_registered_algorithm_contract(name):
    algo = get(name)
    cfg = algo.config_cls()
    assert dataclasses.is_dataclass(cfg) and cfg.name == name
    cfg.validate()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.name = "x"
    assert algo.__class__.__name__ == "Algorithm"
    needs_critic = algo.needs(cfg, "critic_values")
    assert (algo.value_loss is not None) == needs_critic == (algo.value_targets is not None)
    fields = {f.name for f in dataclasses.fields(cfg)}
    assert {"kl", "samples_per_prompt", "optimization_num", "loss_agg"} <= fields
    if name in ("grpo", "rloo", "remax"):  # response-level advantages: no gamma/lam (docs/algorithms.md, "GRPO")
        assert not {"gamma", "lam"} & fields
    if name in ("ppo", "trepo", "vineppo"):
        assert {"gamma", "lam"} <= fields
    module = __import__(algo.config_cls.__module__, fromlist=["_"])
    doc = module.__doc__ or ""  # every algorithm's module cites its paper and the project's own algorithm notes
    assert re.search(r"arXiv \d{4}\.\d{5}", doc) and "docs/algorithms.md" in doc


def test_unknown_algorithm():
    with pytest.raises(KeyError, match="valid"):
        get("dpo-ish")
