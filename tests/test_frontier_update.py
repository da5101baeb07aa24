"""Rollout correction, the overlong filter, clip-higher and CISPO through the shared update code
(rlx/train/learn/correction.py, rlx/train/learn/update.py, rlx/algos/losses.py), against hand-computed values and on the
real tiny model in float64."""

from __future__ import annotations

import dataclasses
import math
from types import SimpleNamespace

import pytest
import torch

from rlx.algos import get
from rlx.algos.base import RolloutCorrectionConfig
from rlx.algos.cispo import CISPOConfig
from rlx.algos.grpo import GRPOConfig
from rlx.algos.losses import clipped_policy_loss
from rlx.algos.ppo import PPOConfig
from rlx.algos.tree import TreeConfig
from rlx.algos.tree_preset import TreeAlgoConfig
from rlx.algos.trepo import TRePOConfig
from rlx.config import TrainerConfig
from rlx.models.load import load_causal_lm
from rlx.models.logprobs import pack
from rlx.train.learn.batch import FrozenBatch
from rlx.train.learn.correction import LossWeights, loss_weights, step_weights
from rlx.train.learn.forwards import Forwards
from rlx.train.learn.update import Updater, combine, mean_of_steps
from rlx.train.rollout.dynamic import refill_problems

DT = torch.float64


def test_clip_higher_through_the_one_clipped_surrogate():
    """r = (1.5, 0.7), A = (+1, -1), eps_low 0.2, eps_high 0.28: -min(1.5, 1.28) and -min(-0.7, -0.8)."""
    logp = torch.log(torch.tensor([[1.5, 0.7]], dtype=DT))
    old, adv, mask = torch.zeros(1, 2, dtype=DT), torch.tensor([[1.0, -1.0]], dtype=DT), torch.ones(1, 2, dtype=DT)
    inp = SimpleNamespace(logp=logp, old_logp=old, advantages=adv, response_mask=mask, ref_logp=None, entropy=None,
                          scale=None)
    loss, metrics = clipped_policy_loss(inp, TRePOConfig(clip_eps_low=0.2, clip_eps_high=0.28))
    assert loss.item() == pytest.approx((-1.28 + 0.8) / 2, abs=1e-12)
    assert metrics["clip_frac"] == 1.0  # both tokens sit on their clipped branch (1.28 < 1.5, 0.8 > 0.7)
    symmetric, _ = clipped_policy_loss(inp, TRePOConfig(clip_eps=0.2))  # null = clip_eps on both sides
    assert symmetric.item() == pytest.approx((-1.2 + 0.8) / 2, abs=1e-12)


def test_cispo_is_a_clipped_stop_gradient_weight_on_log_pi():
    """r = (1.5, 0.7, 1.0), A = (1, -1, 2): w = clip(r, 0.8, 1.28) = (1.28, 0.8, 1.0); loss = -mean(w A log pi)
    and d loss / d log pi = -w A / 3 (no token loses its gradient)."""
    old = torch.log(torch.tensor([[0.2, 0.5, 0.4]], dtype=DT))
    logp = (old + torch.log(torch.tensor([[1.5, 0.7, 1.0]], dtype=DT))).requires_grad_(True)
    adv, mask = torch.tensor([[1.0, -1.0, 2.0]], dtype=DT), torch.ones(1, 3, dtype=DT)
    inp = SimpleNamespace(logp=logp, old_logp=old, advantages=adv, response_mask=mask, ref_logp=None, entropy=None,
                          scale=None)
    loss, metrics = get("cispo").policy_loss(inp, CISPOConfig(clip_eps_high=0.28))
    w = torch.tensor([1.28, 0.8, 1.0], dtype=DT)
    expected = -(w * adv[0] * logp[0].detach()).sum() / 3
    assert loss.item() == pytest.approx(expected.item(), abs=1e-12)
    loss.backward()
    assert torch.allclose(logp.grad[0], -w * adv[0] / 3, atol=1e-12)
    assert metrics["clip_frac"] == pytest.approx(2 / 3) and metrics["is_weight_mean"] == pytest.approx(3.08 / 3)


def test_cispo_advantages_are_grpos_group_normalised_outcomes():
    from rlx.algos.base import AdvantageInputs

    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0], [1.0, 1.0], [1.0, 1.0]])
    rewards = torch.tensor([[0.0, 1.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]])  # scores (1, 0) | (0, 0)
    adv = get("cispo").advantages(AdvantageInputs(rewards, mask, torch.tensor([0, 0, 1, 1])), CISPOConfig())
    assert torch.allclose(adv, torch.tensor([[1.0, 1.0], [-1.0, 0.0], [0.0, 0.0], [0.0, 0.0]]), atol=1e-5)


def test_loss_weights_per_mode_and_the_overlong_filter():
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]], dtype=DT)
    sampler = torch.zeros(2, 3, dtype=DT)
    old = torch.log(torch.tensor([[3.0, 1.0, 0.25], [1.5, 1.0, 1.0]], dtype=DT)) * mask  # rho = old / sampler
    tis = loss_weights(RolloutCorrectionConfig("tis", 2.0), mask, old, sampler, None)
    assert tis.keep is None and torch.allclose(tis.advantage, torch.tensor([[2.0, 1.0, 0.25], [1.5, 1.0, 0.0]],
                                                                           dtype=DT))
    mis = loss_weights(RolloutCorrectionConfig("mis", 2.0), mask, old, sampler, torch.tensor([True, False]))
    assert mis.advantage is None  # rho = 3 and 0.25 leave [1/2, 2]; row 1 was truncated (overlong filter)
    assert torch.equal(mis.keep, torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0]], dtype=DT))
    assert mis.metrics["rc_rejected_frac"] == pytest.approx(2 / 5)
    only_filter = loss_weights(RolloutCorrectionConfig(), mask, None, None, torch.tensor([False, True]))
    assert torch.equal(only_filter.keep, torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]], dtype=DT))
    cfg = SimpleNamespace(train=TrainerConfig(), algo=TRePOConfig())
    nodes = [SimpleNamespace(logprobs=(-1.0, -2.0, -3.0), finished=True),
             SimpleNamespace(logprobs=(-0.5, -0.25), finished=True)]
    advantages = torch.tensor([[0.0, 0.0, 0.0], [0.5, 0.0, 0.0]])
    sampler_logp, weights = step_weights(cfg, nodes, mask.float(), None, advantages)
    assert weights is None  # mode none, no filter: the update runs exactly as without this module
    assert torch.equal(sampler_logp, torch.tensor([[-1.0, -2.0, -3.0], [-0.5, -0.25, 0.0]]))
    # algo.tree.drop_zero_adv: the all-zero row 0 leaves the loss (and so its normalisers), row 1 stays whole
    drop = SimpleNamespace(train=cfg.train, algo=TreeAlgoConfig(tree=TreeConfig(drop_zero_adv=True)))
    _, weights = step_weights(drop, nodes, mask.float(), None, advantages)
    assert torch.equal(weights.keep, torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]))
    assert weights.metrics == {"rows_dropped_zero_adv": 1.0} and weights.advantage is None


def test_mismatch_extremes_combine_by_max_and_min():
    parts = [({"mismatch_ratio_max": 1.5, "mismatch_ratio_min": 0.9, "mismatch_k3": 0.1}, 1.0),
             ({"mismatch_ratio_max": 1.2, "mismatch_ratio_min": 0.7, "mismatch_k3": 0.4}, 3.0)]
    assert combine(parts) == pytest.approx({"mismatch_ratio_max": 1.5, "mismatch_ratio_min": 0.7,
                                            "mismatch_k3": 0.325})
    assert mean_of_steps([p for p, _ in parts]) == pytest.approx({"mismatch_ratio_max": 1.5,
                                                                   "mismatch_ratio_min": 0.7, "mismatch_k3": 0.25})


def test_refill_prompts_are_a_function_of_seed_step_and_round():
    task = SimpleNamespace(train=list(range(100)))
    first = refill_problems(task, 0, 3, 1, 5)
    assert first == refill_problems(task, 0, 3, 1, 5) and len(set(first)) == 5
    assert first != refill_problems(task, 0, 3, 2, 5) and first != refill_problems(task, 1, 3, 1, 5)


# ----------------------------------------------------------------------------------------- on the tiny model

@pytest.fixture(scope="module")
def policy(tiny_model_dir):
    torch.manual_seed(0)
    return load_causal_lm(str(tiny_model_dir), "float32").double().train()


def make_batch(rows: list[int] | None = None) -> FrozenBatch:
    gen = torch.Generator().manual_seed(0)
    prompts = [torch.randint(3, 40, (n,), generator=gen).tolist() for n in (5, 9, 3, 12, 7, 4)]
    responses = [torch.randint(3, 40, (n,), generator=gen).tolist() for n in (11, 3, 17, 6, 9, 14)]
    adv = torch.randn(6, 17, generator=gen, dtype=DT)
    rows = list(range(6)) if rows is None else rows
    packed = pack([prompts[r] for r in rows], [responses[r] for r in rows], pad_id=0)
    packed.response_mask = packed.response_mask.double()
    width = packed.response_mask.shape[1]
    return FrozenBatch(packed, advantages=adv[rows, :width] * packed.response_mask, group_ids=torch.tensor(rows) // 2,
                       step_ends=[[len(responses[r]) - 1] for r in rows], old_logp=None)


def grads(policy, algo_cfg, data: FrozenBatch, micro_batch_tokens=None) -> list[torch.Tensor]:
    cfg = SimpleNamespace(seed=0, algo=algo_cfg, train=TrainerConfig(grad_clip=1e12, prompts_per_step=3))
    forwards = Forwards(micro_batch_tokens, 1024, "float32", torch.device("cpu"), logprob_chunk=16)
    up = Updater(cfg, get(algo_cfg.name), policy, None, [torch.optim.SGD(policy.parameters(), lr=0.0)], forwards)
    up.optimizer_step(data, list(range(data.group_ids.shape[0])), step=1)
    return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in policy.parameters()]


def max_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max(float((x - y).abs().max()) for x, y in zip(a, b))


@pytest.mark.parametrize("algo_cfg", [PPOConfig(loss_agg="token_mean"), GRPOConfig(),
                                      get("rloo").config_cls(samples_per_prompt=2)], ids=lambda c: c.name)
def test_filtered_rows_leave_the_loss_exactly(policy, algo_cfg):
    """Rows 2 and 3 truncated (overlong filter): the gradient equals the batch without those rows, for
    every loss_agg, split into micro-batches or not."""
    full = make_batch()
    finished = torch.tensor([True, True, False, False, True, True])
    full = dataclasses.replace(full, weights=loss_weights(RolloutCorrectionConfig(), full.packed.response_mask, None,
                                                          None, finished))
    without = make_batch([0, 1, 4, 5])
    reference = grads(policy, algo_cfg, without)
    assert max(float(g.abs().max()) for g in reference) > 1e-3
    assert max_diff(grads(policy, algo_cfg, full), reference) < 1e-10
    assert max_diff(grads(policy, algo_cfg, full, micro_batch_tokens=40), reference) < 1e-10


def test_tis_weights_scale_each_tokens_policy_gradient(policy):
    """TIS with weights w: the gradient equals the unweighted update's with advantages w * A (the policy term
    is linear in A per token), also across micro-batches; w = 1 reproduces the plain gradient bit for bit."""
    data = make_batch()
    gen = torch.Generator().manual_seed(1)
    w = (torch.rand(data.advantages.shape, generator=gen, dtype=DT) * 2) * data.packed.response_mask  # [B, T]
    weighted = dataclasses.replace(data, weights=LossWeights(advantage=w))
    scaled = dataclasses.replace(data, advantages=data.advantages * w)
    cfg = PPOConfig(loss_agg="seq_mean_token_mean")
    assert max_diff(grads(policy, cfg, weighted, micro_batch_tokens=40), grads(policy, cfg, scaled)) < 1e-10
    ones = dataclasses.replace(data, weights=LossWeights(advantage=data.packed.response_mask.clone()))
    assert all(torch.equal(a, b) for a, b in zip(grads(policy, cfg, ones), grads(policy, cfg, data)))
    assert math.isfinite(float(w.sum()))


def test_two_round_branch_phase_spends_the_fixed_schedules_tokens_on_the_least_certain_knot():
    """Scheduling logic with a fake sampler (every continuation 5 tokens): 2 knots, M = 4, M0 = 2. Round 1
    gives knot 1 the rewards (0, 1) and knot 2 (1, 1): the 2 x (4 - 2) x 5 = 20 remaining tokens buy 4 more
    rollouts, and the high-variance knot gets most of them; round 2 uses its own seeds and temperatures."""
    from rlx.algos.base import Knot
    from rlx.sampling.base import Generation
    from rlx.train.rollout.adaptive import two_rounds
    from rlx.train.rollout.drafts import Draft, DraftTree, NodeScore

    class FiveTokens:
        def __init__(self):
            self.calls = []

        def generate(self, requests):
            self.calls.append(requests)
            return [Generation(token_ids=[7] * 5, logprobs=[-1.0] * 5, finished=True) for _ in requests]

    class KnotRewards:  # knot 1's rollouts alternate 0, 1; knot 3's are all 1; the response 1
        def __init__(self):
            self.calls = 0

        def score(self, trees):
            self.calls += 1
            for d in trees[0].nodes:
                if d.score is None:
                    first = [e for e in trees[0].nodes if e.parent == d.parent and e.knot == d.knot].index(d)
                    d.score = NodeScore(float(first % 2) if d.fork == 0 and d.parent == 0 else 1.0, True, "")

    tree = DraftTree(None, 0, (1, 2), [Draft(-1, 0, Generation([3, 4, 5, 6], [-1.0] * 4, True), 1.0, 1)])
    temps = (0.0, 1 / 3, 2 / 3, 1.0)
    cfg = SimpleNamespace(seed=0, algo=TRePOConfig(adaptive_rollouts=True, adaptive_first_round=2),
                          train=TrainerConfig(max_new_tokens=10))
    sampler, scorer = FiveTokens(), KnotRewards()
    metrics = two_rounds(sampler, [tree], [[Knot(1, temps), Knot(3, temps)]], cfg, 1, scorer)
    counts = [sum(1 for d in tree.nodes if d.parent == 0 and d.knot == k) for k in (0, 1)]
    assert sum(counts) == 8 and counts[0] > counts[1]  # 8 rollouts x 5 tokens = the fixed schedule's 40
    assert scorer.calls == 1  # round 1 scored once; round 2 is scored with the rest of the record
    assert metrics["adaptive_extra_rollouts"] == 4.0 and metrics["adaptive_se_after"] < metrics["adaptive_se_before"]
    round1, round2 = sampler.calls
    assert [r.temperature for r in round1] == [0.0, 1 / 3, 0.0, 1 / 3]
    assert {r.seed for r in round1}.isdisjoint({r.seed for r in round2})
    knot1 = [d for d in tree.nodes if d.parent == 0 and d.knot == 0]
    assert tree.nodes[1:1 + counts[0]] == knot1  # round 2's rollouts follow round 1's of the same knot
    assert tuple(d.temperature for d in knot1) == temps[: counts[0]] + (1.0,) * max(0, counts[0] - 4)
