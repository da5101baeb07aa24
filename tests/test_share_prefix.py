"""train.share_prefix (rlx/models/prefix.py, Prefix Grouper arXiv 2506.05433) on the real tiny model in float64:
rows packed so that every shared prefix (a group's prompt, a tree branch's ancestors up to its fork) is computed
once give the unshared path's log-probs, entropies, KL-reference log-probs, critic values and gradients (1e-10),
for a GRPO group, a depth-2 tree and PPO's critic, with every loss normaliser; the shared micro-batches never
compute more than train.micro_batch_tokens token slots; pure unit tests of the trie and the grouping."""

from __future__ import annotations

import copy
import dataclasses
from types import SimpleNamespace

import pytest
import torch
from transformers.models.qwen2.modeling_qwen2 import Qwen2RMSNorm

from rlx.algos import KLConfig, get
from rlx.algos.base import CriticConfig
from rlx.algos.grpo import GRPOConfig
from rlx.algos.ppo import PPOConfig
from rlx.config import TrainerConfig
from rlx.models.critic import ValueModel
from rlx.models.load import load_causal_lm
from rlx.models.logprobs import pack
from rlx.models.prefix import build_layout, share_segments, trie, worth_joining
from rlx.record import Node, RolloutBatch, RolloutTree
from rlx.train.learn.batch import FrozenBatch, training_rows
from rlx.train.learn.forwards import Forwards, MicroBatch
from rlx.train.learn.update import Updater

KL = KLConfig(beta=0.3, estimator="k3", mode="loss")
AGGS = ["token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm"]  # DAPO / GRPO / Dr.GRPO


def float64_rms_norm(self, hidden_states: torch.Tensor) -> torch.Tensor:
    """Qwen2RMSNorm computed in its input's dtype when that is wider than float32. transformers computes it in
    float32 whatever the input: a float64 model's gradient is then rounded to float32 there, and where rows
    share a token that rounding falls on the sum of their gradients instead of on each (~1e-7 apart)."""
    dtype = torch.promote_types(hidden_states.dtype, torch.float32)
    x = hidden_states.to(dtype)
    x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)
    return self.weight * x.to(hidden_states.dtype)


@pytest.fixture(scope="module")
def models(tiny_model_dir):
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Qwen2RMSNorm, "forward", float64_rms_norm)
        yield load_models(tiny_model_dir)


def load_models(tiny_model_dir):
    torch.manual_seed(0)
    policy = load_causal_lm(str(tiny_model_dir), "float32").double().train()
    reference = copy.deepcopy(policy).eval()
    with torch.no_grad():
        for p in reference.parameters():  # a reference other than the policy: the KL term is not zero
            p.add_(torch.randn_like(p) * 0.01)
    critic = ValueModel(str(tiny_model_dir), torch.float64).train()
    torch.nn.init.normal_(critic.head.weight, std=0.1)  # a non-zero head: the critic loss has a gradient
    return policy, reference, critic


def forwards(share: bool, tokens: int | None = None, width: int | None = None) -> Forwards:
    return Forwards(tokens, 1024, "float32", torch.device("cpu"), logprob_chunk=16, share_prefix=share,
                    share_width=width)


def group_rows(seed: int = 0) -> tuple[list[list[int]], list[list[int]], torch.Tensor]:
    """3 GRPO groups of 4: a prompt each, ragged responses (two identical, two sharing their first tokens)."""
    gen = torch.Generator().manual_seed(seed)
    prompts, responses = [], []
    for n in (9, 14, 6):
        prompt = torch.randint(3, 30, (n,), generator=gen).tolist()
        own = [torch.randint(3, 30, (k,), generator=gen).tolist() for k in (7, 12, 3)]
        for response in (own[0], own[1], own[0], own[1][:4] + own[2]):
            prompts.append(prompt)
            responses.append(response)
    return prompts, responses, torch.arange(12) // 4


def node(parent: int, fork: int, tokens: list[int], depth: int) -> Node:
    return Node(parent=parent, fork=fork, token_ids=tuple(tokens), logprobs=(-1.0,) * len(tokens), temperature=1.0,
                finished=True, reward=float(len(tokens) % 2), correct=False, text="", policy_version=0, depth=depth)


def tree_rows(seed: int = 1) -> tuple[list[list[int]], list[list[int]], torch.Tensor]:
    """Every node of two depth-2 trees as training rows: responses, their forks, forks of forks."""
    gen = torch.Generator().manual_seed(seed)

    def toks(k: int) -> list[int]:
        return torch.randint(3, 30, (k,), generator=gen).tolist()

    trees = []
    for g, n in enumerate((8, 11)):
        nodes = [node(-1, 0, toks(14), 1), node(-1, 0, toks(9), 1),
                 node(0, 4, toks(6), 2), node(0, 4, toks(8), 2), node(0, 10, toks(3), 2), node(1, 2, toks(7), 2),
                 node(2, 3, toks(5), 3), node(3, 1, toks(4), 3)]
        trees.append(RolloutTree(problem=None, group=g, prompt_ids=tuple(toks(n)), nodes=tuple(nodes)))
    rows = training_rows(RolloutBatch(tuple(trees), 0), every_node=True, temperature=1.0)
    assert len(rows) == 16 and max(tree.nodes[i].depth for tree, i in rows) == 3
    return ([list(t.context(i)) for t, i in rows], [list(t.nodes[i].token_ids) for t, i in rows],
            torch.tensor([t.group for t, _ in rows]))


def update_batch(prompts, responses, group_ids, seed: int = 0) -> FrozenBatch:
    packed = pack(prompts, responses, pad_id=0)
    mask = packed.response_mask = packed.response_mask.double()  # [B, T]
    gen = torch.Generator().manual_seed(seed)

    def frozen(scale: float) -> torch.Tensor:
        return torch.randn(mask.shape, generator=gen, dtype=torch.float64) * scale * mask  # [B, T]

    step_ends = [sorted({len(r) - 1, *range(0, len(r) - 1, 4)}) for r in responses]
    return FrozenBatch(packed, advantages=frozen(1.0), group_ids=group_ids, step_ends=step_ends, old_logp=None,
                       ref_logp=None, old_values=frozen(0.5), returns=frozen(1.0))


def gradients(name, algo_cfg, policy, critic, data: FrozenBatch, fw: Forwards):
    cfg = SimpleNamespace(seed=0, algo=algo_cfg, train=TrainerConfig(grad_clip=1e12, prompts_per_step=4))
    critic = critic if get(name).value_loss is not None else None
    modules = [policy] + ([critic] if critic is not None else [])
    up = Updater(cfg, get(name), policy, critic, [torch.optim.SGD(m.parameters(), lr=0.0) for m in modules], fw)
    metrics = up.optimizer_step(data, list(range(len(data.group_ids))), step=1)
    grads = [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for m in modules for p in m.parameters()]
    return metrics, grads


def frozen_inputs(data: FrozenBatch, policy, reference) -> FrozenBatch:
    """pi_old off pi_theta (ratios and clipping in play) and pi_ref from the reference model, computed unshared."""
    with torch.no_grad():
        plain = forwards(False)
        wobble = torch.sin(torch.arange(data.packed.response_mask.numel()).double()).view_as(data.packed.response_mask)
        return dataclasses.replace(
            data, old_logp=plain.frozen_logprobs(policy, data.packed) + 0.3 * wobble * data.packed.response_mask,
            ref_logp=plain.frozen_logprobs(reference, data.packed))


def assert_same_update(name, algo_cfg, models, data: FrozenBatch) -> None:
    policy, reference, critic = models
    data = frozen_inputs(data, policy, reference)
    m_plain, g_plain = gradients(name, algo_cfg, policy, critic, data, forwards(False))
    for fw in (forwards(True), forwards(True, tokens=60, width=60)):  # one micro-batch; several, split tries
        assert all(isinstance(rows, MicroBatch) for rows in fw.plan(data.packed))  # the shared path runs
        m_shared, g_shared = gradients(name, algo_cfg, policy, critic, data, fw)
        assert max(float((a - b).abs().max()) for a, b in zip(g_plain, g_shared)) < 1e-10
        for key in m_plain:
            assert m_shared[key] == pytest.approx(m_plain[key], abs=1e-10), key
    assert max(float(g.abs().max()) for g in g_plain) > 1e-3  # a real gradient was compared


def assert_same_forwards(models, data: FrozenBatch) -> None:
    """Log-probs, entropies, reference log-probs and critic values: shared = unshared."""
    policy, reference, critic = models
    plain, shared = forwards(False), forwards(True, tokens=80, width=80)
    for a, b in ((plain.frozen_logprobs(policy, data.packed), shared.frozen_logprobs(policy, data.packed)),
                 (plain.frozen_entropy(policy, data.packed), shared.frozen_entropy(policy, data.packed)),
                 (plain.frozen_logprobs(reference, data.packed), shared.frozen_logprobs(reference, data.packed)),
                 (plain.frozen_values(critic, data.packed), shared.frozen_values(critic, data.packed))):
        assert a.dtype == b.dtype == torch.float64 and float((a - b).abs().max()) < 1e-10
    assert computed(shared, data) < computed(plain, data)  # fewer tokens were computed


def computed(fw: Forwards, data: FrozenBatch) -> int:
    return sum(fw.computed_tokens(fw.select(data.packed, rows)) for rows in fw.plan(data.packed))


def test_a_grpo_groups_forwards_are_the_unshared_ones(models):
    assert_same_forwards(models, update_batch(*group_rows()))


def test_a_depth_2_trees_forwards_are_the_unshared_ones(models):
    assert_same_forwards(models, update_batch(*tree_rows()))


def test_a_grpo_groups_gradient_is_the_unshared_one(models):
    """Dr.GRPO here; every normaliser on the tree below (they read the same per-row tensors either way)."""
    assert_same_update("grpo", GRPOConfig(loss_agg="seq_mean_token_sum_norm", entropy_coef=0.01, kl=KL), models,
                       update_batch(*group_rows()))


@pytest.mark.parametrize("agg", AGGS)
def test_a_depth_2_trees_gradient_is_the_unshared_one(models, agg):
    assert_same_update("grpo", GRPOConfig(loss_agg=agg, entropy_coef=0.01, kl=KL), models,
                       update_batch(*tree_rows()))


def test_ppos_policy_and_critic_gradients_are_the_unshared_ones(models):
    algo_cfg = PPOConfig(loss_agg="token_mean", entropy_coef=0.01, kl=KL, critic=CriticConfig(vf_clip=0.2))
    assert_same_update("ppo", algo_cfg, models, update_batch(*tree_rows(seed=2), seed=3))


def test_shared_micro_batches_never_compute_more_than_the_cap():
    prompts, responses, _ = tree_rows()
    more_prompts, more_responses, _ = group_rows(seed=5)
    packed = pack(prompts + more_prompts, responses + more_responses, pad_id=0)
    for cap in (30, 60, 100, 250):
        fw = forwards(True, tokens=cap, width=cap)
        plan = fw.plan(packed)
        assert sorted(r for rows in plan for r in rows) == list(range(28))  # every row once
        for rows in plan:
            sub = fw.select(packed, rows)
            lone = len(getattr(rows, "segments", rows)) == 1  # a sequence wider than the cap: a micro-batch alone
            assert fw.computed_tokens(sub) <= cap or lone
    real = [ids[:n] for ids, n in zip(packed.input_ids.tolist(), packed.attention_mask.sum(-1).tolist())]
    unique = len(trie(real)[0])  # every distinct prefix once
    assert forwards(True).forward_tokens(packed) == unique < sum(map(len, real))
    assert forwards(False).forward_tokens(packed) == sum(map(len, real))


def test_a_batch_sharing_too_little_runs_unshared():
    """Rows that share (almost) nothing: sharing's overheads would cost more than it saves (SHARE_GAIN)."""
    packed = pack([[3 + i, 9, 9] for i in range(6)], [[5, 6, 7]] * 6, pad_id=0)  # every first token differs
    assert forwards(True).plan(packed) == forwards(False).plan(packed)
    assert not any(isinstance(rows, MicroBatch) for rows in forwards(True).plan(packed))
    assert forwards(True).forward_tokens(packed) == 36


def test_the_trie_shares_exactly_the_common_prefixes():
    tokens, parents, depths, where = trie([[5, 6, 7], [5, 6, 8, 9], [5, 6, 7], [4]])
    assert tokens == [5, 6, 7, 8, 9, 4] and parents == [-1, 0, 1, 1, 3, -1] and depths == [0, 1, 2, 2, 3, 0]
    assert where == [[0, 1, 2], [0, 1, 3, 4], [0, 1, 2], [5]]
    layout = build_layout([[5, 6, 7], [5, 6, 8, 9], [4]], [[0, 1], [2]], pad_id=0)
    assert layout.input_ids.tolist() == [[5, 6, 7, 8, 9], [4, 0, 0, 0, 0]]
    assert layout.position_ids.tolist() == [[0, 1, 2, 2, 3], [0, 0, 0, 0, 0]]
    attend = layout.attend[:, 0].int().tolist()  # [S, W, W]
    assert attend[0] == [[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [1, 1, 0, 1, 0], [1, 1, 0, 1, 1]]
    assert attend[1] == [[1, 0, 0, 0, 0], [0, 1, 0, 0, 0], [0, 0, 1, 0, 0], [0, 0, 0, 1, 0], [0, 0, 0, 0, 1]]
    assert layout.token_at.tolist() == [[0, 1, 2, 0], [0, 1, 3, 4], [5, 0, 0, 0]]


def test_rows_sharing_a_prefix_are_packed_together_within_the_width():
    rows = [[1, 2, 3], [9, 9], [1, 2, 4], [1, 5], [9, 8, 7]]
    assert share_segments(rows, None) == [([0, 2, 3], 5), ([1, 4], 4)]
    assert share_segments(rows, 4) == [([0, 2], 4), ([3], 2), ([1, 4], 4)]
    assert share_segments([[1, 2, 3, 4, 5]], 2) == [([0], 5)]  # a row wider than the width: alone


def test_joining_pays_while_the_saved_tokens_outweigh_the_attention_it_adds():
    assert worth_joining(40, 40, 20, 1 / 768)  # (60^2 - 40^2 - 40^2) / 768 = 0.5 pairs' worth <= 20 tokens saved
    assert not worth_joining(700, 40, 20, 1 / 768)  # (720^2 - 700^2 - 40^2) / 768 = 35.4 > 20
    rows = [[1, 2, 3, 4], [1, 2, 3, 5], [1, 6, 7, 8]]  # the third shares 1 token and grows the pairs by 23
    assert share_segments(rows, None, pair_cost=0.1) == [([0, 1], 5), ([2], 4)]
    assert share_segments(rows, None, pair_cost=0.01) == [([0, 1, 2], 8)]


def test_share_prefix_null_is_on_for_the_cpu_only():
    assert TrainerConfig().shares_prefixes("cpu") and not TrainerConfig().shares_prefixes("cuda")
    assert not TrainerConfig(share_prefix=False).shares_prefixes("cpu") and TrainerConfig(
        share_prefix=True).shares_prefixes("cuda")


def test_the_real_models_shared_pass_matches_in_float32(smollm2_dir):
    """SmolLM2-135M (the Llama family, SDPA) in float32: a group's shared 48-token prompt and a branch row; the
    log-probs, entropies and gradient equal the unshared path's to 1e-5 of their largest magnitude."""
    model = load_causal_lm(str(smollm2_dir), "float32").train()
    gen = torch.Generator().manual_seed(0)
    prompt = torch.randint(100, 40000, (48,), generator=gen).tolist()
    responses = [torch.randint(100, 40000, (k,), generator=gen).tolist() for k in (6, 9, 4, 5)]
    packed = pack([prompt] * 3 + [prompt + responses[1][:5]], responses, pad_id=0)
    weights = torch.randn(packed.response_mask.shape, generator=gen) * packed.response_mask  # [B, T]
    results = []
    for fw in (forwards(False), forwards(True)):
        model.zero_grad()
        logp, entropy = fw.logprobs(model, fw.select(packed, fw.plan(packed)[0]), with_entropy=True)  # [B, T]
        ((logp * weights).sum() + 0.1 * entropy.sum()).backward()
        results.append((logp.detach(), entropy.detach(), [p.grad.clone() for p in model.parameters()]))
    (logp, entropy, grads), (s_logp, s_entropy, s_grads) = results
    assert forwards(True).forward_tokens(packed) < forwards(False).forward_tokens(packed) / 2
    for a, b in ((logp, s_logp), (entropy, s_entropy)):
        assert float((a - b).abs().max()) <= 1e-5 * float(a.abs().max())
    largest = max(float(g.abs().max()) for g in grads)
    assert max(float((a - b).abs().max()) for a, b in zip(grads, s_grads)) <= 1e-5 * largest


def test_tokens_forward_counts_each_computed_token_once_which_may_be_fewer_than_the_trained():
    """A response and three branch rollouts forked after its 2nd token, two of which re-sample the response's next
    3 tokens before they diverge. `tokens_forward` counts what is computed: the prompt and the fork prefix once, and
    a token that two rows share under the same prefix once (one log-prob serves both rows' losses), so it can fall
    below the trained (response) tokens, which count every row's own tokens (a tree-preset step of the tiny model:
    8,191 computed for 14,690 trained)."""
    prompt, response = [3, 4, 5, 6, 7], [10, 11, 12, 13, 14, 15]
    branches = [[12, 13, 14, 20], [12, 13, 14, 21], [22, 23]]
    packed = pack([prompt] + [prompt + response[:2]] * 3, [response, *branches], pad_id=0)
    real = [ids[:n] for ids, n in zip(packed.input_ids.tolist(), packed.attention_mask.sum(-1).tolist())]
    assert int(packed.response_mask.sum()) == 6 + 4 + 4 + 2  # trained
    assert forwards(True).forward_tokens(packed) == len(trie(real)[0]) == 5 + 6 + 2 + 2 == 15  # computed, shared
    assert forwards(False).forward_tokens(packed) == 11 + 11 + 11 + 9  # every row's prompt + response
