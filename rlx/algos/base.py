"""The contract between the training loop and every algorithm.

The loop never branches on an algorithm's name. It asks the registered `Algorithm` for:
  1. `plan_branches`  - which extra rollouts to generate for a sampled response (TRePO knots,
                        ReMax's greedy baseline, VinePPO's step boundaries; nothing for GRPO/RLOO/PPO),
  2. `advantages`     - per-token advantages from a frozen batch (pure tensor function),
  3. `policy_loss`    - the surrogate to minimise for one optimisation step (pure tensor function),
  4. `value_loss`     - only when `needs_critic` (PPO).
Algorithm hyper-parameters live in a frozen dataclass per algorithm (`config_cls`); its field names
are exactly the keys allowed under `algo.` in the Hydra config (the sweep guard relies on that).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass(frozen=True)
class KLConfig:
    """KL to a frozen reference model (spec §3). beta == 0 means no reference model is loaded."""

    beta: float = 0.0
    estimator: str = "k1"  # k1 | k2 | k3 (spec §3.1)
    mode: str = "reward_token"  # reward_token | reward_response | loss (spec §3.3)


@dataclass(frozen=True)
class Knot:
    """A branch point. `t` is 1-based (spec §0): keep response tokens y[0..t-2] (t-1 tokens), generate
    from y[t-1] on. One rollout is generated per entry of `temperatures` (0.0 = greedy)."""

    t: int
    temperatures: tuple[float, ...]


@dataclass
class AdvantageInputs:
    """Everything an advantage function may read. B = trajectories in the batch, T = padded length."""

    # [B, T] r_t(W): task RM at the last valid token + per-token KL reward; 0 on pad
    token_rewards: torch.Tensor
    response_mask: torch.Tensor  # [B, T] float, 1.0 on valid response tokens (EOS included when generated)
    group_ids: torch.Tensor  # [B] long, trajectories sampled for the same prompt share an id
    values: torch.Tensor | None = None  # [B, T] critic V(s_t) (state before token t), PPO only
    # Branch rollouts, per trajectory b: knots[b] is the sorted list of 1-based knots (first is 1, may be
    # empty when the algorithm branches nowhere); branch_rewards[b][i][m] is the [L] tensor of per-token
    # rewards of rollout m branched at knots[b][i] (its continuation tokens only; task RM at its last token).
    knots: list[list[int]] | None = None
    branch_rewards: list[list[list[torch.Tensor]]] | None = None
    # Reasoning steps (process supervision / sentence-level GRPO): 0-based token index of the last token of
    # each step, and one reward per step.
    step_ends: list[list[int]] | None = None
    step_rewards: list[list[float]] | None = None


@dataclass
class LossInputs:
    """Per-token tensors for one optimisation step; all [B, T] except where noted."""

    logp: torch.Tensor  # log pi_theta(y_t | ...), with grad
    old_logp: torch.Tensor  # log pi_old, frozen (the weights that sampled the batch)
    advantages: torch.Tensor  # frozen
    response_mask: torch.Tensor  # float
    group_ids: torch.Tensor  # [B]
    ref_logp: torch.Tensor | None = None  # log pi_ref when kl.mode == "loss" and beta > 0
    entropy: torch.Tensor | None = None  # [B, T] per-token entropy of pi_theta, for an entropy bonus
    step_ends: list[list[int]] | None = None  # for sentence-level ratios


AdvantageFn = Callable[[AdvantageInputs, Any], torch.Tensor]
LossFn = Callable[[LossInputs, Any], tuple[torch.Tensor, dict[str, float]]]
PlanFn = Callable[[Sequence[int], Sequence[int], Any, "torch.Generator"], list[Knot]]


def no_branches(
    response_ids: Sequence[int], step_starts: Sequence[int], cfg: Any, rng: torch.Generator
) -> list[Knot]:
    return []


@dataclass(frozen=True)
class Algorithm:
    name: str
    config_cls: type
    advantages: AdvantageFn
    policy_loss: LossFn
    # plan_branches(response_ids, step_starts, cfg, rng) -> knots. step_starts are the 1-based positions
    # t at which a new reasoning step (line) begins, for step-boundary knot selection.
    plan_branches: PlanFn = no_branches
    needs_critic: bool = False
    value_loss: Callable[..., tuple[torch.Tensor, dict[str, float]]] | None = None
    # value_targets(adv_inputs, cfg) -> [B, T] critic regression targets (PPO: lambda-returns A + V_old,
    # computed from the UN-normalised advantages). Only when `needs_critic`. [added by the algos owner]
    value_targets: AdvantageFn | None = None
    citation: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


REGISTRY: dict[str, Algorithm] = {}


def register(algo: Algorithm) -> Algorithm:
    if algo.name in REGISTRY:
        raise ValueError(f"algorithm {algo.name!r} registered twice")
    REGISTRY[algo.name] = algo
    return algo


def get(name: str) -> Algorithm:
    if name not in REGISTRY:
        raise KeyError(f"unknown algorithm {name!r}; valid: {sorted(REGISTRY)}")
    return REGISTRY[name]
