"""Per-token knot scores for `algo.branch_selection=entropy|low_prob` (rlx/algos/branching.py).

An algorithm declares which scores its `plan_branches` reads (`SAMPLER_LOGPROBS` or `TOKEN_ENTROPY` in
`requires`); the loop computes exactly those and nothing otherwise:
  low_prob  the sampler's log-probs of the sampled tokens, kept with every trajectory: free (SPO, arXiv
            2505.23564);
  entropy   the trainer's per-token entropy under pi_old, from one no-grad forward over the step's responses
            through the micro-batched `Forwards` (TreeRL, arXiv 2506.11902), run only when selected, on the
            step's responses (on a generation rank of async rollouts: its own copy of the policy).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rlx.algos.base import SAMPLER_LOGPROBS, TOKEN_ENTROPY
from rlx.models.logprobs import pack
from rlx.train.learn.forwards import Forwards


@dataclass(frozen=True)
class KnotScores:
    """The per-token knot scores an algorithm declares (`needs`), on `policy` through `forwards`."""

    needs: frozenset[str]
    pad_id: int
    forwards: Forwards
    policy: object

    def __call__(self, responses) -> list[torch.Tensor] | None:
        """One [T_b] score row per response draft (tree, index) (T_b = its length), or None when none is declared."""
        gens = [tree.nodes[i].gen for tree, i in responses]
        if SAMPLER_LOGPROBS in self.needs:
            return [torch.tensor(gen.logprobs, dtype=torch.float64) for gen in gens]  # [T_b]
        if TOKEN_ENTROPY in self.needs:
            packed = pack([list(tree.prompt_ids) for tree, _ in responses], [list(gen.token_ids) for gen in gens],
                          self.pad_id)
            entropy = self.forwards.frozen_entropy(self.policy, packed)  # [B, T]; response token j at column j
            return [entropy[b, : len(gen.token_ids)] for b, gen in enumerate(gens)]
        return None
