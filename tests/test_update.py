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
from rlx.algos.base import CRITIC_VALUES, TREE_ROWS, CriticConfig
from rlx.algos.grpo import GRPOConfig
from rlx.algos.ppo import PPOConfig
from rlx.algos.rloo import RLOOConfig
from rlx.config import TrainerConfig
from rlx.models.critic import ValueModel
from rlx.models.load import load_causal_lm
from rlx.models.logprobs import pack
from rlx.train.learn.batch import FrozenBatch
from rlx.train.learn.correction import LossWeights
from rlx.train.learn.forwards import Forwards
from rlx.train.learn.update import NonFiniteError, Updater, combine, freezes_old_logprobs, mini_batch_rows
from tests.algos.algo_helpers import knot_rows

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


def batch(seed: int = 0) -> FrozenBatch:
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
    return FrozenBatch(packed, advantages=frozen(1.0), group_ids=torch.arange(8) // 2, step_ends=step_ends,
                       old_logp=None, ref_logp=frozen(0.1) - 3.5 * mask, old_values=frozen(0.5), returns=frozen(1.0))


def updater(name, algo_cfg, policy, critic, micro_batch_tokens=None, **train) -> Updater:
    cfg = SimpleNamespace(seed=0, algo=algo_cfg, train=TrainerConfig(grad_clip=1e12, prompts_per_step=4, **train))
    forwards = Forwards(micro_batch_tokens, 1024, "float32", torch.device("cpu"), logprob_chunk=16)
    needs_critic = get(name).value_loss is not None
    opts = [torch.optim.SGD(policy.parameters(), lr=0.0)] + ([torch.optim.SGD(critic.parameters(), lr=0.0)]
                                                             if needs_critic else [])
    return Updater(cfg, get(name), policy, critic if needs_critic else None, opts, forwards)


def gradients(up: Updater, data: FrozenBatch) -> tuple[dict, list[torch.Tensor]]:
    metrics = up.optimizer_step(data, list(range(8)), step=1)
    params = list(up.policy.parameters()) + (list(up.critic.parameters()) if up.critic is not None else [])
    return metrics, [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in params]


@pytest.mark.parametrize(("name", "algo_cfg"), CASES, ids=[f"{n}-{c.loss_agg}-{getattr(c, 'ratio_level', '')}"
                                                          for n, c in CASES])
def test_micro_batched_gradient_equals_the_unsplit_gradient(models, name, algo_cfg):
    policy, critic = models
    data = batch()
    with torch.no_grad():  # pi_old differs from pi_theta, so ratios and clipping are in play
        old = Forwards(None, 1024, "float32", torch.device("cpu"), 16).frozen_logprobs(policy, data.packed)
        wobble = torch.sin(torch.arange(old.numel()).double()).view_as(old)  # [B, T]
        data = dataclasses.replace(data, ref_logp=old + 0.02 * data.ref_logp,  # a reference near the policy
                                   old_logp=old + 0.3 * wobble * data.packed.response_mask)
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
    assert not freezes_old_logprobs(up.cfg)
    reused = batch()
    separate = dataclasses.replace(reused, old_logp=up.forwards.frozen_logprobs(policy, reused.packed))
    m1, g1 = gradients(up, reused)
    m2, g2 = gradients(up, separate)
    assert all(torch.equal(a, b) for a, b in zip(g1, g2)) and m1["ratio_mean"] == m2["ratio_mean"] == 1.0
    assert freezes_old_logprobs(updater("ppo", PPOConfig(optimization_num=2), policy, critic).cfg)
    booked = KLConfig(beta=0.1, mode="reward_token")  # the KL reward reads pi_old even when the ratio is 1
    assert freezes_old_logprobs(updater("ppo", PPOConfig(kl=booked), policy, critic).cfg)


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
    data = dataclasses.replace(data, old_logp=up.forwards.frozen_logprobs(policy, data.packed))
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
    data = dataclasses.replace(data, advantages=data.advantages.clone())
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


def test_select_takes_every_row_field_of_the_rows_trimmed_to_their_width():
    """A micro- or mini-batch is the batch's own rows: row 3 (6 response tokens) and row 1 (3), width 6."""
    data = batch()
    mask = data.packed.response_mask  # [8, 20]
    keep = mask.clone()
    keep[3, 2] = 0.0
    data = dataclasses.replace(data, old_logp=data.ref_logp + 1.0, sampler_logp=data.ref_logp - 1.0,
                               weights=LossWeights(advantage=2.0 * mask, keep=keep, metrics={"m": 1.0}))
    part = data.select([3, 1])
    assert part.packed.response_mask.tolist() == [[1.0] * 6, [1.0] * 3 + [0.0] * 3]
    assert part.packed.input_ids.shape == (2, 18)  # row 3: 12 prompt + 6 response tokens
    for name in ("advantages", "old_logp", "ref_logp", "old_values", "returns", "sampler_logp"):
        assert torch.equal(getattr(part, name), getattr(data, name)[[3, 1], :6]), name
    assert part.group_ids.tolist() == [1, 0] and part.step_ends == [data.step_ends[3], data.step_ends[1]]
    assert torch.equal(part.weights.keep, keep[[3, 1], :6]) and part.weights.metrics == {"m": 1.0}
    inputs = part.loss_inputs(torch.zeros(2, 6, dtype=torch.float64), None, None)
    assert torch.equal(inputs.advantages, 2.0 * part.advantages)  # the TIS weight applied
    assert inputs.response_mask.tolist() == [[1.0, 1.0, 0.0, 1.0, 1.0, 1.0], [1.0] * 3 + [0.0] * 3]
    assert inputs.old_logp is part.old_logp and inputs.group_ids.tolist() == [1, 0]
    own = dataclasses.replace(part, old_logp=None).loss_inputs(torch.ones(2, 6, requires_grad=True), None, None)
    assert own.old_logp.tolist() == [[1.0] * 6] * 2 and not own.old_logp.requires_grad  # the loss pass's, detached


def test_the_advantage_view_holds_exactly_the_declared_inputs():
    """The record's trees reach an algorithm only when it declares an input read through them."""
    rows = knot_rows([[1, 3]], [[[[0.0]], [[0.0], [0.0]]]])  # one response; forks at t = 1 (one rollout), 3 (two)
    values = torch.tensor([[0.5, 0.25, 0.0]])
    plain = FrozenBatch(pack([[1]], [[5, 6, 7]], 0), torch.tensor([0]), [[2]], rows=rows,
                        token_rewards=torch.tensor([[0.0, 0.0, 1.0]]), old_values=values)
    assert plain.advantage_inputs().rows is None and plain.advantage_inputs().values is None
    tree = dataclasses.replace(plain, needs=frozenset({TREE_ROWS, CRITIC_VALUES})).advantage_inputs()
    assert tree.rows is rows and tree.values is values and tree.knots(0) == [1, 3]
    assert tree.step_ends == [[2]] and tree.token_rewards.tolist() == [[0.0, 0.0, 1.0]]


def test_a_mini_batchs_step_is_the_step_on_its_selected_rows(models):
    """Groups 1 and 3 as a mini-batch: its micro-batches are planned over its own rows, so the gradient is bit for
    bit the one of the whole-batch step on `select(rows)` (token_mean: the padded width is not a normaliser)."""
    policy, critic = models
    data = batch()
    rows = [2, 3, 6, 7]
    up = updater("grpo", GRPOConfig(entropy_coef=0.01, kl=KL), policy, critic, micro_batch_tokens=40)
    assert len(up.forwards.plan(data.select(rows).packed)) >= 2  # several micro-batches in both
    m_mini, g_mini = gradients_of(up, data, rows)
    m_sel, g_sel = gradients_of(up, data.select(rows), list(range(4)))
    assert all(torch.equal(a, b) for a, b in zip(g_mini, g_sel)) and m_mini == m_sel
    assert max(float(g.abs().max()) for g in g_mini) > 1e-3


def gradients_of(up: Updater, data: FrozenBatch, rows: list[int]) -> tuple[dict, list[torch.Tensor]]:
    metrics = up.optimizer_step(data, rows, step=1)
    return metrics, [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in up.policy.parameters()]
