"""The frozen batch: one training step's rows of the rollout record and everything the advantages and the
update read, as one immutable `FrozenBatch` built once per step (`BatchBuilder.build`).

Owns the per-token rewards of the sampled responses (the task reward on the last token, plus the KL
reward when `algo.kl.mode` books the KL in the rewards), the per-token rewards of the branch rollouts'
continuations (their reward on their last token, plus the KL of their own tokens: rollouts pay KL too,
docs/algorithms.md, "KL to the reference"), the per-step rewards of a process reward, and the frozen
pi_old / pi_ref log-probs and critic values (micro-batched no-grad passes, `Forwards`). Which optional
inputs are filled follows the algorithm's declared `requires`.

A batch's life in one training step (rlx/train/loop.py, `Trainer.learn`):
  build          the record's training rows -> packed ids, rewards, pi_old / pi_ref / critic values;
  + advantages   `dataclasses.replace(batch, advantages=..., returns=...)` from the algorithm's `advantages`
                 (and `value_targets`), which reads the `advantage_inputs()` view;
  + loss weights `dataclasses.replace(batch, sampler_logp=..., weights=...)` (rlx/train/learn/correction.py);
  select(rows)   a mini-batch or a micro-batch of the update: the same type over those rows, padding trimmed
                 to them; a micro-batch's `loss_inputs(...)` is the view the algorithm's loss reads.
Nothing is copied field by field between types and nothing is mutated: every stage is a new frozen value.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import torch

from rlx.algos.base import (
    BRANCH_ROLLOUTS,
    CRITIC_VALUES,
    STEP_REWARDS,
    TREE_INPUTS,
    TREE_ROWS,
    AdvantageInputs,
    LossInputs,
    TreeRow,
    knot_children,
)
from rlx.algos.kl import kl_token_rewards
from rlx.algos.losses import AggScale
from rlx.algos.stats import terminal_rewards
from rlx.models.logprobs import PackedBatch, pack, select_rows
from rlx.record import RolloutBatch
from rlx.record import step_ends as line_ends
from rlx.train.infra import distributed as dist
from rlx.train.learn.correction import LossWeights
from rlx.train.learn.forwards import Forwards

__all__ = ["BatchBuilder", "FrozenBatch", "knot_children", "training_rows"]


@dataclass(frozen=True)
class FrozenBatch:
    """One training step's batch, every tensor [B, T] (B rows, T the padded response length) unless noted and
    frozen under pi_old. Hand-built batches (tests, benchmarks) may leave out what their update does not read."""

    packed: PackedBatch  # the rows as context + own tokens; packed.response_mask [B, T] float
    group_ids: torch.Tensor  # [B] long: rows of one prompt (one tree) share an id
    step_ends: list[list[int]]  # per row: the 0-based last token of every reasoning step
    rows: tuple[TreeRow, ...] = ()  # (tree, node) of the rollout record each row trains
    needs: frozenset[str] = frozenset()  # the algorithm's declared inputs: which optional fields are filled
    token_rewards: torch.Tensor | None = None  # r_t: task reward on the last token (+ KL rewards)
    old_logp: torch.Tensor | None = None  # log pi_old; None: the update takes its loss pass's own (ratio 1)
    ref_logp: torch.Tensor | None = None  # log pi_ref, when a reference model is loaded
    old_values: torch.Tensor | None = None  # critic values under the old critic (PPO)
    branch_rewards: list[list[list[torch.Tensor]]] | None = None  # BRANCH_ROLLOUTS, as in AdvantageInputs
    step_rewards: list[list[float]] | None = None  # STEP_REWARDS: one per step end
    advantages: torch.Tensor | None = None  # the algorithm's advantages, added by `Trainer.learn`
    returns: torch.Tensor | None = None  # critic regression targets (PPO), added with the advantages
    sampler_logp: torch.Tensor | None = None  # log pi_sampler of the rows' tokens, for the mismatch metrics
    weights: LossWeights | None = None  # rollout correction / overlong filter / SPO-tree drop (correction.py)

    def advantage_inputs(self) -> AdvantageInputs:
        """The algorithm's view for its advantages: exactly the inputs it declared (`needs`)."""
        return AdvantageInputs(
            token_rewards=self.token_rewards,
            response_mask=self.packed.response_mask,
            group_ids=self.group_ids,
            values=self.old_values if CRITIC_VALUES in self.needs else None,
            rows=self.rows if self.needs & TREE_INPUTS else None,
            branch_rewards=self.branch_rewards,
            step_ends=self.step_ends,
            step_rewards=self.step_rewards,
        )

    def select(self, rows: Sequence[int]) -> FrozenBatch:
        """The batch of `rows` (in the given order): the packed sequences trimmed to their own longest
        (`select_rows`), every [B, T] tensor to the same width. Right padding is causal-invisible, so every
        per-token number of a row is the one it has in the whole batch."""
        index = torch.as_tensor(list(rows), dtype=torch.long)  # [b]
        packed = select_rows(self.packed, index)
        width = packed.response_mask.shape[1]

        def part(x: torch.Tensor | None) -> torch.Tensor | None:
            return None if x is None else x[index, :width]  # [b, T']

        def pick(xs: Sequence | None) -> list | None:
            return None if xs is None else [xs[r] for r in index.tolist()]

        return replace(
            self, packed=packed, group_ids=self.group_ids[index], step_ends=pick(self.step_ends),
            rows=tuple(pick(self.rows) if self.rows else ()), token_rewards=part(self.token_rewards),
            old_logp=part(self.old_logp), ref_logp=part(self.ref_logp), old_values=part(self.old_values),
            branch_rewards=pick(self.branch_rewards), step_rewards=pick(self.step_rewards),
            advantages=part(self.advantages), returns=part(self.returns), sampler_logp=part(self.sampler_logp),
            weights=None if self.weights is None else self.weights.select(part))

    def loss_inputs(self, logp: torch.Tensor, entropy: torch.Tensor | None, scale: AggScale | None) -> LossInputs:
        """The algorithm's view for its loss on this (micro-)batch, given the loss pass's `logp` and `entropy`
        [b, T'] (with grad): the loss weights applied, the same for every algorithm (correction.py)."""
        old_logp = logp.detach() if self.old_logp is None else self.old_logp  # [b, T']
        advantages, mask = self.advantages, self.packed.response_mask  # [b, T']
        if self.weights is not None and self.weights.advantage is not None:
            advantages = advantages * self.weights.advantage
        if self.weights is not None and self.weights.keep is not None:
            mask = mask * self.weights.keep
        return LossInputs(logp=logp, old_logp=old_logp, advantages=advantages, response_mask=mask,
                          group_ids=self.group_ids, ref_logp=self.ref_logp, entropy=entropy,
                          step_ends=self.step_ends, scale=scale)


@dataclass
class BatchBuilder:
    cfg: object  # RunConfig
    algo: object  # the registered Algorithm
    forwards: Forwards
    pad_id: int
    newline_ids: frozenset[int]
    policy: object  # the policy as trained (its data-parallel wrapper under torchrun: FSDP2 forwards are collective)
    reference: object | None  # frozen pi_ref, when algo.kl.beta > 0 (likewise wrapped)
    critic: object | None
    kl_in_rewards: bool
    need_old_logp: bool  # `update.freezes_old_logprobs`; False: the update takes its loss pass's own (ratio 1)
    needs: frozenset[str] = field(init=False)  # the algorithm's declared inputs: a function of the config alone

    def __post_init__(self) -> None:
        self.needs = self.algo.requires(self.cfg.algo)

    def rows(self, record: RolloutBatch) -> list[TreeRow]:
        """The step's training rows (`training_rows`), by the algorithm's declared inputs."""
        return training_rows(record, TREE_ROWS in self.needs, self.cfg.train.temperature)

    def pack(self, rows: Sequence[TreeRow]) -> PackedBatch:
        """The rows as context + own-token sequences, packed once."""
        return pack([list(tree.context(i)) for tree, i in rows], [list(tree.nodes[i].token_ids) for tree, i in rows],
                    self.pad_id)

    def build(self, record: RolloutBatch) -> FrozenBatch:
        """The frozen batch of one step's rollout record: its training rows, packed, with their rewards and the
        frozen forwards; advantages and loss weights are added later (`dataclasses.replace`)."""
        rows = tuple(self.rows(record))
        packed = self.pack(rows)
        mask = packed.response_mask  # [B, T]
        old_logp = self.forwards.frozen_logprobs(self.policy, packed) if self.need_old_logp else None  # [B, T]
        ref_logp = self.forwards.frozen_logprobs(self.reference, packed) if self.reference is not None else None
        old_values = self.forwards.frozen_values(self.critic, packed) if self.critic is not None else None
        nodes = [tree.nodes[i] for tree, i in rows]
        token_rewards = terminal_rewards(torch.tensor([n.reward for n in nodes]), mask)  # [B, T]
        if self.kl_in_rewards:
            token_rewards = token_rewards + kl_token_rewards(old_logp, ref_logp, mask, self.cfg.algo.kl)
        ends = [line_ends(n.token_ids, self.newline_ids) for n in nodes]  # per row: its steps' last tokens
        branched = BRANCH_ROLLOUTS in self.needs
        return FrozenBatch(
            packed, torch.tensor([tree.group for tree, _ in rows]), ends, rows, self.needs, token_rewards,
            old_logp, ref_logp, old_values,
            branch_rewards=self.branch_token_rewards(rows, [knot_children(*row) for row in rows]) if branched else None,
            step_rewards=self.step_rewards(rows, ends) if STEP_REWARDS in self.needs else None)

    def step_rewards(self, rows, step_ends: list[list[int]]) -> list[list[float]]:
        """Per-step rewards of the process reward, one per step end: the record's (scored with the node's reward,
        rlx/train/rollout/scoring.py), aligned by count, since a tokenizer may pack two lines into one token."""
        rewards = [list(tree.nodes[i].step_rewards or ()) for tree, i in rows]
        return [(row + [0.0] * len(ends))[: len(ends)] for row, ends in zip(rewards, step_ends)]

    def branch_token_rewards(self, rows, knots) -> list[list[list[torch.Tensor]]]:
        """Per-token rewards of every branch rollout's continuation (knots[b][i] = (fork, child node indices)):
        its reward on the last token, plus the KL reward of its own tokens when the KL is a reward."""
        rewards = [[[terminal_reward(len(tree.nodes[c].token_ids), tree.nodes[c].reward) for c in children]
                    for _, children in per_row] for (tree, _), per_row in zip(rows, knots)]
        if not self.kl_in_rewards:
            return rewards
        where = [(b, i, m, tree, c) for b, ((tree, _), per_row) in enumerate(zip(rows, knots))
                 for i, (_, children) in enumerate(per_row) for m, c in enumerate(children)]
        if not where:
            if dist.world_size() > 1:  # the other ranks' reference forwards may be collectives (FSDP2): join
                self.forwards.frozen_logprobs(self.reference, None)
            return rewards
        packed = pack([list(tree.context(c)) for *_, tree, c in where],
                      [list(tree.nodes[c].token_ids) for *_, tree, c in where], self.pad_id)
        old_logp = torch.zeros_like(packed.response_mask)  # [N, L] the sampler's log-probs are pi_old's
        for row, (*_, tree, c) in enumerate(where):
            logprobs = tree.nodes[c].logprobs
            old_logp[row, : len(logprobs)] = torch.tensor(logprobs)
        ref_logp = self.forwards.frozen_logprobs(self.reference, packed)  # [N, L]
        kl = kl_token_rewards(old_logp, ref_logp, packed.response_mask, self.cfg.algo.kl)  # [N, L]
        for row, (b, i, m, tree, c) in enumerate(where):
            rewards[b][i][m] = rewards[b][i][m] + kl[row, : len(tree.nodes[c].token_ids)]
        return rewards


def training_rows(record: RolloutBatch, every_node: bool, temperature: float) -> list[TreeRow]:
    """(tree, node index) of every response, in prompt then sample order; with `every_node` (TREE_ROWS) also
    every branch rollout that is not a duplicate and was sampled at the training `temperature`, tree by tree after
    the responses (docs/algorithms.md, "Training on every branch"). Rows of one tree share its group id, so
    mini-batches (`update.mini_batch_rows`) keep a tree whole."""
    rows = record.responses()
    if not every_node:
        return rows
    return rows + [(tree, i) for tree in record.trees for i, n in enumerate(tree.nodes)
                   if n.parent >= 0 and not n.duplicate and n.temperature == temperature]


def terminal_reward(length: int, reward: float) -> torch.Tensor:
    rewards = torch.zeros(length)  # [L] zero-reward assumption: the whole reward on the last token
    rewards[-1] = reward
    return rewards
