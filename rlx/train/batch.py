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

from rlx.algos.base import BRANCH_ROLLOUTS, CRITIC_VALUES, STEP_REWARDS, AdvantageInputs
from rlx.algos.kl import kl_token_rewards
from rlx.algos.stats import terminal_rewards
from rlx.models.logprobs import PackedBatch, pack
from rlx.train import distributed as dist
from rlx.train import rollout
from rlx.train.forwards import Forwards


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

    def pack(self, trajs: list[rollout.Trajectory]) -> PackedBatch:
        """The step's prompt + response rows, packed once: the entropy knot scores and `build` both read them."""
        return pack([t.prompt_ids for t in trajs], [t.response_ids for t in trajs], self.pad_id)

    def build(self, trajs: list[rollout.Trajectory], branches: list[rollout.Branches],
              packed: PackedBatch) -> FrozenBatch:
        """The frozen batch of `trajs`, packed by `self.pack(trajs)`."""
        mask = packed.response_mask  # [B, T]
        old_logp = self.forwards.frozen_logprobs(self.policy, packed) if self.need_old_logp else None  # [B, T]
        ref_logp = self.forwards.frozen_logprobs(self.reference, packed) if self.reference is not None else None
        old_values = self.forwards.frozen_values(self.critic, packed) if self.critic is not None else None
        token_rewards = terminal_rewards(torch.tensor([t.reward for t in trajs]), mask)  # [B, T]
        if self.kl_in_rewards:
            token_rewards = token_rewards + kl_token_rewards(old_logp, ref_logp, mask, self.cfg.algo.kl)
        step_ends = [rollout.step_ends(t.response_ids, self.newline_ids) for t in trajs]
        needs = self.needs
        branched = BRANCH_ROLLOUTS in needs
        inputs = AdvantageInputs(
            token_rewards=token_rewards,
            response_mask=mask,
            group_ids=torch.tensor([t.group for t in trajs]),
            values=old_values if CRITIC_VALUES in needs else None,
            knots=[[k.t for k in br.knots] for br in branches] if branched else None,
            branch_rewards=self.branch_token_rewards(trajs, branches) if branched else None,
            step_ends=step_ends,
            step_rewards=self.step_rewards(trajs, step_ends) if STEP_REWARDS in needs else None,
        )
        return FrozenBatch(packed, old_logp, ref_logp, old_values, inputs)

    def step_rewards(self, trajs, step_ends: list[list[int]]) -> list[list[float]]:
        """Per-step rewards of the process reward, one per step end."""
        rewards = self.step_reward_fn([t.problem for t in trajs], [t.text for t in trajs])
        # one reward per step end: a tokenizer may pack two lines into one token, so align by count
        return [(row + [0.0] * len(ends))[: len(ends)] for row, ends in zip(rewards, step_ends)]

    def branch_token_rewards(self, trajs, branches) -> list[list[list[torch.Tensor]]]:
        """Per-token rewards of every branch rollout's continuation: its reward on the last token, plus the
        KL reward of its own tokens when the KL is a reward."""
        rewards = [[[terminal_reward(len(g.token_ids), r) for g, r in zip(gens, rs)]
                    for gens, rs in zip(br.rollouts, br.rewards)] for br in branches]
        if not self.kl_in_rewards:
            return rewards
        where, prefixes, continuations = [], [], []
        for b, (tr, br) in enumerate(zip(trajs, branches)):
            for i, (knot, gens) in enumerate(zip(br.knots, br.rollouts)):
                for m, gen in enumerate(gens):
                    where.append((b, i, m))
                    prefixes.append(tr.prompt_ids + tr.response_ids[: knot.t - 1])
                    continuations.append(gen.token_ids)
        if not where:
            if dist.world_size() > 1:  # the other ranks' reference forwards may be collectives (FSDP2): join
                self.forwards.frozen_logprobs(self.reference, None)
            return rewards
        packed = pack(prefixes, continuations, self.pad_id)
        old_logp = torch.zeros_like(packed.response_mask)  # [N, L] the sampler's log-probs are pi_old's
        for row, (b, i, m) in enumerate(where):
            logprobs = branches[b].rollouts[i][m].logprobs
            old_logp[row, : len(logprobs)] = torch.tensor(logprobs)
        ref_logp = self.forwards.frozen_logprobs(self.reference, packed)  # [N, L]
        kl = kl_token_rewards(old_logp, ref_logp, packed.response_mask, self.cfg.algo.kl)  # [N, L]
        for row, (b, i, m) in enumerate(where):
            rewards[b][i][m] = rewards[b][i][m] + kl[row, : len(continuations[row])]
        return rewards


def terminal_reward(length: int, reward: float) -> torch.Tensor:
    rewards = torch.zeros(length)  # [L] zero-reward assumption: the whole reward on the last token
    rewards[-1] = reward
    return rewards
