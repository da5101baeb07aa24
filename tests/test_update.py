"""The micro-batched update (rlx/train/learn/update.py) on the real tiny model in float64: the gradient accumulated
over micro-batches equals the unsplit batch's for every loss_agg, with the KL loss term, the entropy bonus,
the critic loss and GRPO's sequence/sentence ratios; mini-batches keep groups whole and reshuffle
reproducibly; a non-finite loss stops the run or skips the step."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest
import torch

from rlx.algos import KLConfig, get
from rlx.algos.base import CriticConfig
from rlx.algos.grpo import GRPOConfig
from rlx.algos.ppo import PPOConfig
from rlx.algos.rloo import RLOOConfig
from rlx.config import TrainerConfig
from rlx.models.critic import ValueModel
from rlx.models.load import load_causal_lm
from rlx.models.logprobs import pack
from rlx.train.learn.forwards import Forwards
from rlx.train.learn.update import NonFiniteError, UpdateBatch, Updater, combine, mini_batch_rows

KL = KLConfig(beta=0.3, estimator="k3", mode="loss")
CASES = [
    ("ppo", PPOConfig(loss_agg="token_mean", entropy_coef=0.01, kl=KL, critic=CriticConfig(vf_clip=0.2))),
    ("ppo", PPOConfig(loss_agg="seq_mean_token_mean", entropy_coef=0.01, kl=KL)),
    ("ppo", PPOConfig(loss_agg="seq_mean_token_sum_norm", entropy_coef=0.01, kl=KL)),
    ("grpo", GRPOConfig(loss_agg="seq_mean_token_sum_norm", entropy_coef=0.01, kl=KL)),  # Dr.GRPO
    ("grpo", GRPOConfig(ratio_level="sequence", entropy_coef=0.01, kl=KL)),
    ("grpo", GRPOConfig(ratio_level="sentence", supervision="sentence", entropy_coef=0.01, kl=KL)),
    ("rloo", RLOOConfig(loss_agg="seq_mean_token_mean", entropy_coef=0.01, kl=KL)),
]


@pytest.fixture(scope="module")
def models(tiny_model_dir):
    torch.manual_seed(0)
    policy = load_causal_lm(str(tiny_model_dir), "float32").double().train()
    critic = ValueModel(str(tiny_model_dir), torch.float64).train()
    torch.nn.init.normal_(critic.head.weight, std=0.1)  # a non-zero head: the critic loss has a gradient
    return policy, critic


def batch(seed: int = 0) -> UpdateBatch:
    """8 sequences of ragged prompt and response lengths in 4 groups of 2, frozen tensors drawn at random."""
    gen = torch.Generator().manual_seed(seed)
    prompts = [torch.randint(3, 40, (n,), generator=gen).tolist() for n in (5, 9, 3, 12, 7, 4, 10, 6)]
    responses = [torch.randint(3, 40, (n,), generator=gen).tolist() for n in (11, 3, 17, 6, 1, 14, 8, 20)]
    packed = pack(prompts, responses, pad_id=0)
    mask = packed.response_mask.double()  # [B, T]
    packed.response_mask = mask

    def frozen(scale: float) -> torch.Tensor:
        return torch.randn(mask.shape, generator=gen, dtype=torch.float64) * scale * mask  # [B, T]

    step_ends = [sorted({len(r) - 1, *[j for j in range(0, len(r) - 1, 4)]}) for r in responses]
    return UpdateBatch(packed, advantages=frozen(1.0), group_ids=torch.arange(8) // 2, step_ends=step_ends,
                       old_logp=None, ref_logp=frozen(0.1) - 3.5 * mask, old_values=frozen(0.5), returns=frozen(1.0))


def updater(name, algo_cfg, policy, critic, micro_batch_tokens=None, **train) -> Updater:
    cfg = SimpleNamespace(seed=0, algo=algo_cfg, train=TrainerConfig(grad_clip=1e12, prompts_per_step=4, **train))
    forwards = Forwards(micro_batch_tokens, 1024, "float32", torch.device("cpu"), logprob_chunk=16)
    needs_critic = get(name).value_loss is not None
    opts = [torch.optim.SGD(policy.parameters(), lr=0.0)] + ([torch.optim.SGD(critic.parameters(), lr=0.0)]
                                                             if needs_critic else [])
    return Updater(cfg, get(name), policy, critic if needs_critic else None, opts, forwards)


def gradients(up: Updater, data: UpdateBatch) -> tuple[dict, list[torch.Tensor]]:
    metrics = up.optimizer_step(data, list(range(8)), step=1)
    params = list(up.policy.parameters()) + (list(up.critic.parameters()) if up.critic is not None else [])
    return metrics, [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in params]


@pytest.mark.parametrize(("name", "algo_cfg"), CASES, ids=[f"{n}-{c.loss_agg}-{getattr(c, 'ratio_level', '')}"
                                                          for n, c in CASES])
def test_micro_batched_gradient_equals_the_unsplit_gradient(models, name, algo_cfg):
    policy, critic = models
    data = batch()
    with torch.no_grad():  # pi_old differs from pi_theta, so ratios and clipping are in play
        data.old_logp = Forwards(None, 1024, "float32", torch.device("cpu"), 16).frozen_logprobs(policy, data.packed)
        wobble = torch.sin(torch.arange(data.old_logp.numel()).double()).view_as(data.old_logp)  # [B, T]
        data.ref_logp = data.old_logp + 0.02 * data.ref_logp  # a reference near the policy: finite exp(sums)
        data.old_logp = data.old_logp + 0.3 * wobble * data.packed.response_mask
    whole = updater(name, algo_cfg, policy, critic)
    split = updater(name, algo_cfg, policy, critic, micro_batch_tokens=40)
    assert len(whole.forwards.plan(data.packed)) == 1 and len(split.forwards.plan(data.packed)) >= 4
    m_whole, g_whole = gradients(whole, data)
    m_split, g_split = gradients(split, data)
    assert max(float((a - b).abs().max()) for a, b in zip(g_whole, g_split)) < 1e-10
    assert max(float(g.abs().max()) for g in g_whole) > 1e-3  # a real gradient was compared
    for key in ("loss", "policy_loss", "pg_loss", "grad_norm", "entropy", "kl_ref"):
        assert m_split[key] == pytest.approx(m_whole[key], abs=1e-10), key
    if name == "ppo":
        assert m_split["vf_loss"] == pytest.approx(m_whole["vf_loss"], abs=1e-10)


def test_reusing_the_loss_pass_logprobs_gives_the_separate_pass_gradient(models):
    """One epoch, one mini-batch: pi_old taken from the loss pass (detached) = a separate no-grad pass."""
    policy, critic = models
    up = updater("ppo", PPOConfig(kl=KL, entropy_coef=0.01), policy, critic, micro_batch_tokens=40)
    assert up.reuses_loss_logprobs()
    reused = batch()
    separate = dataclasses.replace(reused, old_logp=up.forwards.frozen_logprobs(policy, reused.packed))
    m1, g1 = gradients(up, reused)
    m2, g2 = gradients(up, separate)
    assert all(torch.equal(a, b) for a, b in zip(g1, g2)) and m1["ratio_mean"] == m2["ratio_mean"] == 1.0
    assert not updater("ppo", PPOConfig(optimization_num=2), policy, critic).reuses_loss_logprobs()


def test_mini_batches_keep_groups_whole_and_reshuffle_reproducibly():
    groups = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5])  # [12], groups of 2

    def epochs(seed):
        gen = torch.Generator().manual_seed(seed)
        return [mini_batch_rows(groups, 3, gen) for _ in range(4)]

    first = epochs(7)
    assert first == epochs(7)  # reproducible under the seed
    assert first != epochs(8) and len({str(e) for e in first}) > 1  # other seeds and other epochs differ
    for parts in first:
        assert sorted(r for part in parts for r in part) == list(range(12)) and len(parts) == 3
        assert all(len(part) == 4 for part in parts)
        for part in parts:
            assert all(r ^ 1 in part for r in part)  # each row's sibling is in its mini-batch
    assert mini_batch_rows(groups, 1, torch.Generator()) == [list(range(12))]


def test_mini_batches_and_epochs_take_one_optimizer_step_each(models):
    policy, critic = models
    up = updater("grpo", GRPOConfig(optimization_num=2), policy, critic, mini_batches=2)
    data = batch()
    data.old_logp = up.forwards.frozen_logprobs(policy, data.packed)
    steps = []
    up.optimizer_step = lambda b, rows, step: steps.append(rows) or {"loss": 0.0, "grad_norm": 0.0}
    up.run(data, step=3)
    assert len(steps) == 4 and all(len(rows) == 4 for rows in steps)


def test_combine_adds_losses_and_weights_means_by_tokens():
    merged = combine([({"loss": 1.0, "clip_frac": 0.5}, 3.0), ({"loss": 2.0, "clip_frac": 0.0}, 1.0)])
    assert merged == {"loss": 3.0, "clip_frac": 0.375}


def test_non_finite_loss_stops_the_run_naming_the_step_or_skips_it(models):
    policy, critic = models
    data = batch()
    data.advantages = data.advantages.clone()
    data.advantages[0, 0] = float("nan")
    with pytest.raises(NonFiniteError, match=r"step 5: non-finite loss"):
        updater("rloo", RLOOConfig(), policy, critic).run(data, step=5)
    before = [p.detach().clone() for p in policy.parameters()]
    up = updater("rloo", RLOOConfig(), policy, critic, skip_nonfinite=True)
    up.optimizers = [torch.optim.SGD(policy.parameters(), lr=1.0)]
    metrics = up.run(data, step=5)
    assert metrics["nonfinite_skipped"] == 1.0
    assert all(torch.equal(a, b) for a, b in zip(before, policy.parameters()))  # the step was not taken


def test_even_out_splits_the_largest_then_pads_with_dummies():
    from rlx.train.learn.forwards import even_out

    assert even_out([[0, 1, 2, 3], [4]], 2) == [[0, 1, 2, 3], [4]]  # already as many: unchanged
    assert even_out([[0, 1, 2, 3], [4]], 3) == [[0, 1], [2, 3], [4]]
    assert even_out([[0, 1, 2], [3]], 4) == [[0], [1], [2], [3]]
    assert even_out([[5], [6]], 4) == [[5], [6], [], []]  # single rows cannot split: dummy micro-batches
    assert even_out([], 2) == [[], []]  # a rank with no rows only joins
