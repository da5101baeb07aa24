"""The frozen batch: everything the advantages and the update read, computed once under pi_old.

Owns the per-token rewards of the sampled responses (the task reward on the last token, plus the KL
reward when `algo.kl.mode` books the KL in the rewards), the per-token rewards of the branch rollouts'
continuations (their reward on their last token, plus the KL of their own tokens: rollouts pay KL too,
docs/algorithms.md, "KL to the reference"), the per-step rewards of a process reward, and the frozen
pi_old / pi_ref log-probs and critic values (micro-batched no-grad passes, `Forwards`). Which optional
inputs are filled follows the algorithm's declared `requires`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from rlx.algos.base import BRANCH_ROLLOUTS, CRITIC_VALUES, STEP_REWARDS, TREE_ROWS, AdvantageInputs
from rlx.algos.kl import kl_token_rewards
from rlx.algos.stats import terminal_rewards
from rlx.models.logprobs import PackedBatch, pack
from rlx.record import RolloutBatch, RolloutTree
from rlx.train.infra import distributed as dist
from rlx.train.learn.forwards import Forwards
from rlx.train.rollout import generate as rollout


@dataclass
class FrozenBatch:
    packed: PackedBatch
    old_logp: torch.Tensor | None  # [B, T] log pi_old; None when the update takes the loss pass's own
    ref_logp: torch.Tensor | None  # [B, T] log pi_ref, when a reference model is loaded
    old_values: torch.Tensor | None  # [B, T] critic values under the old critic (PPO)
    inputs: AdvantageInputs


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
    need_old_logp: bool  # False: the update reuses its loss pass's log-probs (ratio identically 1)
    step_reward_fn: object | None = None  # the reward's `step_rewards`, when the algorithm requires them
    needs: frozenset[str] = field(init=False)  # the algorithm's declared inputs: a function of the config alone

    def __post_init__(self) -> None:
        self.needs = self.algo.requires(self.cfg.algo)

    def rows(self, record: RolloutBatch) -> list[tuple[RolloutTree, int]]:
        """The step's training rows (`training_rows`), by the algorithm's declared inputs."""
        return training_rows(record, TREE_ROWS in self.needs, self.cfg.train.temperature)

    def pack(self, rows: list[tuple[RolloutTree, int]]) -> PackedBatch:
        """The rows as context + own-token sequences, packed once: the entropy knot scores and `build` read them."""
        return pack([list(tree.context(i)) for tree, i in rows], [list(tree.nodes[i].token_ids) for tree, i in rows],
                    self.pad_id)

    def build(self, rows: list[tuple[RolloutTree, int]], packed: PackedBatch) -> FrozenBatch:
        """The frozen batch of `rows` (of one step's rollout record), packed by `self.pack(rows)`."""
        mask = packed.response_mask  # [B, T]
        old_logp = self.forwards.frozen_logprobs(self.policy, packed) if self.need_old_logp else None  # [B, T]
        ref_logp = self.forwards.frozen_logprobs(self.reference, packed) if self.reference is not None else None
        old_values = self.forwards.frozen_values(self.critic, packed) if self.critic is not None else None
        nodes = [tree.nodes[i] for tree, i in rows]
        token_rewards = terminal_rewards(torch.tensor([n.reward for n in nodes]), mask)  # [B, T]
        if self.kl_in_rewards:
            token_rewards = token_rewards + kl_token_rewards(old_logp, ref_logp, mask, self.cfg.algo.kl)
        step_ends = [rollout.step_ends(n.token_ids, self.newline_ids) for n in nodes]
        needs = self.needs
        branched = BRANCH_ROLLOUTS in needs
        knots = [knot_children(tree, i) for tree, i in rows] if branched else None
        inputs = AdvantageInputs(
            token_rewards=token_rewards,
            response_mask=mask,
            group_ids=torch.tensor([tree.group for tree, _ in rows]),
            values=old_values if CRITIC_VALUES in needs else None,
            knots=[[fork + 1 for fork, _ in per_row] for per_row in knots] if branched else None,
            branch_rewards=self.branch_token_rewards(rows, knots) if branched else None,
            step_ends=step_ends,
            step_rewards=self.step_rewards(rows, step_ends) if STEP_REWARDS in needs else None,
            tree_rows=list(rows) if TREE_ROWS in needs else None,
        )
        return FrozenBatch(packed, old_logp, ref_logp, old_values, inputs)

    def step_rewards(self, rows, step_ends: list[list[int]]) -> list[list[float]]:
        """Per-step rewards of the process reward, one per step end."""
        rewards = self.step_reward_fn([tree.problem for tree, _ in rows], [tree.nodes[i].text for tree, i in rows])
        # one reward per step end: a tokenizer may pack two lines into one token, so align by count
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


def training_rows(record: RolloutBatch, every_node: bool, temperature: float) -> list[tuple[RolloutTree, int]]:
    """(tree, node index) of every response, in prompt then sample order; with `every_node` (TREE_ROWS) also
    every branch rollout that is not a duplicate and was sampled at the training `temperature`, tree by tree after
    the responses (docs/algorithms.md, "Training on every branch"). Rows of one tree share its group id, so
    mini-batches (`update.mini_batch_rows`) keep a tree whole."""
    rows = record.responses()
    if not every_node:
        return rows
    return rows + [(tree, i) for tree in record.trees for i, n in enumerate(tree.nodes)
                   if n.parent >= 0 and not n.duplicate and n.temperature == temperature]


def knot_children(tree: RolloutTree, i: int) -> list[tuple[int, list[int]]]:
    """The direct branch rollouts of node i grouped by fork position, in order: [(fork, child indices)]. For a
    TRePO response these are its knots t = fork + 1 with their M rollouts in schedule order."""
    forks: dict[int, list[int]] = {}
    for c in tree.children(i):
        forks.setdefault(tree.nodes[c].fork, []).append(c)
    return list(forks.items())


def terminal_reward(length: int, reward: float) -> torch.Tensor:
    rewards = torch.zeros(length)  # [L] zero-reward assumption: the whole reward on the last token
    rewards[-1] = reward
    return rewards
