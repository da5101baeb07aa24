"""Per-token loss weights the update applies to EVERY algorithm's loss, whatever the algorithm.

Two sources, both stop-gradient and both fixed for the whole training step:
  - rollout correction (`algo.rollout_correction`, rlx/algos/rollout_correction.py; Yao et al. 2025, "Your
    efficient RL framework secretly brings you off-policy RL training"; verl's rollout_corr docs): `tis`
    scales each token's policy-gradient term by w_t = min(pi_old / pi_sampler, C), `mis` and `seq_mask`
    reject tokens or sequences;
  - overlong filtering (`train.overlong_filter`, DAPO arXiv 2503.14476 §3.4): truncated responses (no EOS
    within `train.max_new_tokens`) leave the loss.
How they enter the loss, without touching any algorithm, is `rlx.algos.rollout_correction.split_weights`: a
TIS weight multiplies the advantage (exactly w_t times each token's policy-gradient loss; KL and entropy terms
are not weighted), a rejection removes the token from the response mask and so from the aggregation's
denominators (the update then normalises by the kept tokens' counts), as in verl. `mode=none` and no filter
give None: the update runs exactly as without this module.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from rlx.algos.dapo import overlong_filter_mask
from rlx.algos.decoupled import behaviour_weights
from rlx.algos.rollout_correction import (
    correction_metrics,
    correction_weights,
    mismatch_metrics,
    sampler_logp_tensor,
    split_weights,
)
from rlx.algos.stats import masked_mean

__all__ = ["LossWeights", "loss_weights", "mismatch", "step_weights"]


@dataclass(frozen=True)
class LossWeights:
    """[B, T] stop-gradient multipliers over a step's batch; None = all ones."""

    advantage: torch.Tensor | None = None  # scales A_t (TIS)
    keep: torch.Tensor | None = None  # 0/1: tokens left in the loss (mis, seq_mask, overlong filter)
    metrics: dict[str, float] | None = None

    def select(self, part: Callable[[torch.Tensor | None], torch.Tensor | None]) -> LossWeights:
        """The weights of a part of the batch: `part` maps a [B, T] tensor to that part's [b, T'] (None to None)."""
        return replace(self, advantage=part(self.advantage), keep=part(self.keep))


def loss_weights(rc_cfg, mask: torch.Tensor, old_logp: torch.Tensor | None, sampler_logp: torch.Tensor | None,
                 finished: torch.Tensor | None, decoupled: bool = False) -> LossWeights:
    """The step's loss weights. `finished` [B] bool is given only with train.overlong_filter; `old_logp` and
    `sampler_logp` [B, T] are needed only when rc_cfg.mode != "none" or `decoupled` (the update then freezes
    pi_old). `decoupled`: the decoupled PPO objective's behaviour weight pi_old / pi_sampler scales the
    advantages wherever the mode does not already (none, mis, seq_mask; tis is the capped weight itself),
    rlx/algos/decoupled.py."""
    keep = None if finished is None else overlong_filter_mask(torch.ones_like(mask), finished)  # [B, T]
    if rc_cfg.mode == "none" and not decoupled:
        return LossWeights(keep=keep)
    if old_logp is None or sampler_logp is None:
        raise ValueError("algo.rollout_correction / the decoupled objective: needs the frozen pi_old and the "
                         "sampler's log-probs")
    weights = correction_weights(sampler_logp, old_logp, mask, rc_cfg)  # [B, T]
    metrics = correction_metrics(weights, mask) if rc_cfg.mode != "none" else {}
    advantage, rejected = split_weights(weights, rc_cfg.mode)  # [B, T] or None each
    if rejected is not None:
        keep = rejected if keep is None else keep * rejected
    if decoupled and advantage is None:
        advantage = behaviour_weights(old_logp, sampler_logp, mask)  # [B, T] pi_old / pi_behav
    if decoupled:
        metrics["behav_weight_mean"] = masked_mean(advantage, mask).item()
    return LossWeights(advantage, keep, metrics)


def step_weights(cfg, nodes, mask: torch.Tensor, old_logp: torch.Tensor | None, advantages: torch.Tensor,
                 ) -> tuple[torch.Tensor, LossWeights | None]:
    """(the sampler's log-probs [B, T] of the step's rows, the loss weights or None when neither rollout
    correction, the decoupled objective, the overlong filter nor the SPO-tree drop of all-zero rows
    (`AlgoConfig.drops_zero_advantage_rows`) is on: then the update runs exactly as without them). `nodes` are
    the rows' rollout-record nodes; `advantages` [B, T] the step's."""
    sampler_logp = sampler_logp_tensor([list(n.logprobs) for n in nodes], mask)  # [B, T]
    finished = torch.tensor([n.finished for n in nodes]) if cfg.train.overlong_filter else None  # [B]
    drop_zero = cfg.algo.drops_zero_advantage_rows()
    decoupled = cfg.train.uses_decoupled_objective()
    if finished is None and cfg.algo.rollout_correction.mode == "none" and not drop_zero and not decoupled:
        return sampler_logp, None
    weights = loss_weights(cfg.algo.rollout_correction, mask, old_logp, sampler_logp, finished, decoupled)
    # SPO-tree: rows whose every advantage is zero carry no gradient and leave the normalisers; the tree
    # estimator returns a row whose raw advantages are all zero as exact zeros (rlx/algos/tree.py)
    if drop_zero:
        live = ((advantages != 0) & (mask > 0)).any(dim=1, keepdim=True).to(mask.dtype)  # [B, 1]
        weights = replace(weights, keep=live.expand_as(mask).clone() if weights.keep is None else weights.keep * live,
                          metrics={**(weights.metrics or {}), "rows_dropped_zero_adv": float((live == 0).sum())})
    return sampler_logp, weights


def mismatch(sampler_logp: torch.Tensor | None, old_logp: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    """mismatch_k3 / mismatch_ratio_max / mismatch_ratio_min / mismatch_outside_frac of one micro-batch (rows
    whose sampler log-probs are known), {} without them."""
    if sampler_logp is None:
        return {}
    return mismatch_metrics(sampler_logp, old_logp, mask)
