"""Per-token knot scores for `algo.branch_selection=entropy|low_prob` (rlx/algos/branching.py).

An algorithm declares which scores its `plan_branches` reads (`SAMPLER_LOGPROBS` or `TOKEN_ENTROPY` in
`requires`); the loop computes exactly those and nothing otherwise:
  low_prob  the sampler's log-probs of the sampled tokens, kept with every trajectory: free (SPO, arXiv
            2505.23564);
  entropy   the trainer's per-token entropy under pi_old, from one no-grad forward over the step's responses
            through the micro-batched `Forwards` (TreeRL, arXiv 2506.11902), run only when selected, on the
            step's packed batch that the frozen batch reuses (`BatchBuilder.pack`).
"""

from __future__ import annotations

import torch

from rlx.algos.base import SAMPLER_LOGPROBS, TOKEN_ENTROPY
from rlx.models.logprobs import pack
from rlx.train.learn.forwards import Forwards
from rlx.train.rollout.generate import Trajectory


def knot_scores(needs: frozenset[str], trajs: list[Trajectory], pad_id: int, forwards: Forwards,
                policy) -> list[torch.Tensor] | None:
    """One [T_b] score row per trajectory (T_b = its response length), or None when none is declared."""
    if SAMPLER_LOGPROBS in needs:
        return [torch.tensor(tr.sampler_logprobs, dtype=torch.float64) for tr in trajs]  # [T_b]
    if TOKEN_ENTROPY in needs:
        packed = pack([tr.prompt_ids for tr in trajs], [tr.response_ids for tr in trajs], pad_id)
        entropy = forwards.frozen_entropy(policy, packed)  # [B, T]; response token j at column j
        return [entropy[b, : len(tr.response_ids)] for b, tr in enumerate(trajs)]
    return None
