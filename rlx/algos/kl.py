"""KL to the frozen reference model (docs/algorithms.md, "KL to the reference").

Three per-token estimators of KL(pi || pi_ref) from samples of pi (J. Schulman, "Approximating KL
divergence", 2020): k1 = -log r, k2 = (log r)^2 / 2, k3 = (r - 1) - log r with r = pi_ref / pi. The KL enters
either the rewards (`kl_token_rewards`: per token, or summed at the last token) or the loss (`kl_loss_term`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from rlx.algos.base import KL_ESTIMATORS, KL_MODES, KLConfig
from rlx.algos.stats import terminal_rewards


def kl_k1(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """k1 = -log r with log r = ref_logp - logp, samples from the policy: unbiased for KL(pi || ref)."""
    return logp - ref_logp  # [B, T]


def kl_k2(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """k2 = (log r)^2 / 2: biased, >= 0, lower variance (Schulman's note)."""
    return 0.5 * (ref_logp - logp) ** 2  # [B, T]


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """k3 = (r - 1) - log r: unbiased for KL(pi || ref), >= 0; GRPO's D_KL (arXiv 2402.03300 Eq. 4)."""
    log_r = ref_logp - logp  # [B, T]
    return torch.expm1(log_r) - log_r  # [B, T]; expm1 keeps precision near r = 1


KL_FNS = {"k1": kl_k1, "k2": kl_k2, "k3": kl_k3}


def kl_per_token(logp: torch.Tensor, ref_logp: torch.Tensor, estimator: str) -> torch.Tensor:
    if estimator not in KL_FNS:
        raise ValueError(f"kl.estimator must be one of {KL_ESTIMATORS}, got {estimator!r}")
    return KL_FNS[estimator](logp, ref_logp)  # [B, T]


def kl_token_rewards(
    logp_old: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor, kl_cfg: KLConfig
) -> torch.Tensor:
    """Per-token KL rewards [B, T] to ADD to the task rewards before computing advantages.

    reward_token     r_t = -beta * k(t) on every valid token (PPO for LLMs; TRePO Remark 5 / Eq. 30)
    reward_response  -beta * sum_t k(t) booked at the last valid token (RLOO/ReMax practice)
    loss / none      zeros (the KL then enters policy_loss, or nowhere)
    `logp_old` is the sampling policy's log-prob (no grad): the KL is evaluated at rollout time.
    """
    zeros = torch.zeros_like(logp_old)  # [B, T]
    if kl_cfg.beta == 0.0 or kl_cfg.mode in ("loss", "none"):
        return zeros
    per_token = kl_per_token(logp_old, ref_logp, kl_cfg.estimator).detach() * mask  # [B, T]
    if kl_cfg.mode == "reward_token":
        return -kl_cfg.beta * per_token
    if kl_cfg.mode == "reward_response":
        return terminal_rewards(-kl_cfg.beta * per_token.sum(dim=1), mask)
    raise ValueError(f"kl.mode must be one of {KL_MODES}, got {kl_cfg.mode!r}")


def kl_in_loss(kl_cfg: KLConfig) -> bool:
    return kl_cfg.mode == "loss" and kl_cfg.beta > 0.0


def kl_loss_term(
    logp: torch.Tensor, ref_logp: torch.Tensor | None, mask: torch.Tensor, kl_cfg: KLConfig,
    aggregate: Callable[[torch.Tensor], torch.Tensor], on_sums: Callable | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """beta * aggregate(k(logp, ref_logp)) when kl.mode == "loss" (GRPO, arXiv 2402.03300 Eq. 3); else 0.

    `aggregate` reduces the per-token (or per-segment) estimate to a scalar; `on_sums`, when given, maps
    (logp, ref_logp) to the tensors the estimator reads (GRPO's sequence level: sums over each sequence)."""
    if not kl_in_loss(kl_cfg):
        return logp.new_zeros(()), {}
    if ref_logp is None:
        raise ValueError("kl.mode='loss' with kl.beta > 0 needs LossInputs.ref_logp")
    pair = (logp, ref_logp) if on_sums is None else on_sums(logp, ref_logp)
    kl = aggregate(kl_per_token(pair[0], pair[1], kl_cfg.estimator))
    return kl_cfg.beta * kl, {"kl_ref": kl.item()}
