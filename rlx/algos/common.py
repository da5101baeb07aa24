"""Tensor pieces shared by every algorithm: masked statistics, loss aggregation, the clipped surrogate
(S002 Eq. 33; S003 L^CLIP), the plain policy-gradient loss (S002 Eqs. 37/39, Corollary 1 Eq. 27), the KL
estimators k1/k2/k3 (S003 §2.1; spec §3.1), KL reward placement (spec §3.3), and ONE generalised-advantage
routine (S003 Eqs. 2.14-2.17) whose knot-grid form is TRePO's Step 4 (spec §1.13, §1.14).

Conventions: B = trajectories, T = padded length; `mask` is a float [B, T] tensor with 1.0 on valid response
tokens. Padding may sit anywhere (right or left, even inside a row): every function here skips masked
positions, so padding never changes a result (Dr.GRPO's `seq_mean_token_sum_norm` is the one documented
exception: its normaliser *is* the padded length).
"""

from __future__ import annotations

import torch

from rlx.algos.base import KLConfig

LOSS_AGG_MODES = ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm")
KL_ESTIMATORS = ("k1", "k2", "k3")
KL_MODES = ("none", "reward_token", "reward_response", "loss")
ADV_NORMS = ("none", "batch", "group")


# ----------------------------------------------------------------------------------------------------------
# masked statistics


def masked_sum(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    return (x * mask).sum() if dim is None else (x * mask).sum(dim=dim)


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of x over positions where mask == 1 (0 when there are none, never NaN)."""
    total = masked_sum(x, mask, dim)
    count = mask.sum() if dim is None else mask.sum(dim=dim)
    return total / count.clamp(min=1.0)


def masked_var(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Population variance (ddof=0) over valid positions: whitened values then have std exactly 1."""
    mean = masked_mean(x, mask)
    return masked_mean((x - mean) ** 2, mask)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """(x - mean) / (std + eps) over all valid tokens (S000/S002 Remark 4 normalisation); 0 on padding."""
    mean = masked_mean(x, mask)  # []
    std = masked_var(x, mask).sqrt()  # []
    return (x - mean) / (std + eps) * mask  # [B, T]


def group_whiten(x: torch.Tensor, mask: torch.Tensor, group_ids: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """masked_whiten within each group (rows sharing a group id); a constant group becomes all zeros."""
    out = torch.zeros_like(x)  # [B, T]
    for gid in torch.unique(group_ids):
        rows = group_ids == gid  # [B]
        out[rows] = masked_whiten(x[rows], mask[rows], eps)
    return out


def normalize_advantages(
    adv: torch.Tensor, mask: torch.Tensor, group_ids: torch.Tensor, mode: str, eps: float = 1e-8
) -> torch.Tensor:
    """adv_norm in {none, batch, group} (spec §1.13 Step 6); always zero on padding."""
    if mode == "none":
        return adv * mask
    if mode == "batch":
        return masked_whiten(adv, mask, eps)
    if mode == "group":
        return group_whiten(adv, mask, group_ids, eps)
    raise ValueError(f"adv_norm must be one of {ADV_NORMS}, got {mode!r}")


# ----------------------------------------------------------------------------------------------------------
# loss aggregation and policy losses


def agg_loss(loss_mat: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
    """Reduce a per-token loss [B, T] to a scalar (spec §2.0, T11).

    token_mean               sum over all valid tokens / number of valid tokens (S002 Eq. 33's E_t)
    seq_mean_token_mean      1/G sum_i 1/|o_i| sum_t (S003 Eq. 3.9, S004); rows with no valid token are
                             left out of the mean (0/0 otherwise)
    seq_mean_token_sum_norm  Dr.GRPO: sum_t / T_max with the constant T_max = T of the tensor, then the mean
                             over all B rows (removes GRPO's length bias; depends on the padded width)
    """
    if mode == "token_mean":
        return masked_mean(loss_mat, mask)
    if mode == "seq_mean_token_mean":
        seq_len = mask.sum(dim=1)  # [B]
        seq_loss = masked_sum(loss_mat, mask, dim=1) / seq_len.clamp(min=1.0)  # [B]
        nonempty = (seq_len > 0).to(loss_mat.dtype)  # [B]
        return (seq_loss * nonempty).sum() / nonempty.sum().clamp(min=1.0)
    if mode == "seq_mean_token_sum_norm":
        seq_loss = masked_sum(loss_mat, mask, dim=1) / loss_mat.shape[1]  # [B]
        return seq_loss.mean() if seq_loss.numel() else seq_loss.sum()
    raise ValueError(f"loss_agg must be one of {LOSS_AGG_MODES}, got {mode!r}")


def clipped_surrogate(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    adv: torch.Tensor,
    mask: torch.Tensor,
    clip_eps: float,
    loss_agg: str,
) -> tuple[torch.Tensor, dict[str, float]]:
    """-agg min(r A, clip(r, 1-eps, 1+eps) A) with token ratios r = pi_theta / pi_old (S002 Eq. 33).

    Metrics: clip_frac = share of valid tokens where the clipped branch is the active one (zero gradient);
    approx_kl = mean over valid tokens of k3 for KL(pi_old || pi_theta) with samples from pi_old,
    i.e. (r - 1) - log r; ratio_mean = mean token ratio.
    """
    log_ratio = (logp - old_logp) * mask  # [B, T]; 0 on padding so exp() stays finite
    ratio = torch.exp(log_ratio)  # [B, T]
    unclipped = -adv * ratio  # [B, T]
    clipped = -adv * torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps)  # [B, T]
    loss_mat = torch.maximum(unclipped, clipped)  # [B, T]; max of negatives = -min of the surrogates
    loss = agg_loss(loss_mat, mask, loss_agg)
    with torch.no_grad():
        metrics = {
            "clip_frac": masked_mean((clipped > unclipped).to(logp.dtype), mask).item(),
            "approx_kl": masked_mean(ratio - 1.0 - log_ratio, mask).item(),
            "ratio_mean": masked_mean(ratio, mask).item(),
        }
    return loss, metrics


def pg_loss(
    logp: torch.Tensor, adv: torch.Tensor, mask: torch.Tensor, loss_agg: str
) -> tuple[torch.Tensor, dict[str, float]]:
    """Plain policy gradient -agg A_t log pi(w_t) with no ratio or clipping (RLOO Eq. 37, ReMax Eq. 39,
    REINFORCE; Corollary 1 Eq. 27). Meant for one on-policy step per batch."""
    loss = agg_loss(-adv * logp, mask, loss_agg)
    return loss, {"adv_mean": masked_mean(adv, mask).item()}


# ----------------------------------------------------------------------------------------------------------
# KL to the reference model (spec §3)


def kl_k1(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """k1 = -log r with log r = ref_logp - logp, samples from the policy: unbiased for KL(pi || ref)."""
    return logp - ref_logp  # [B, T]


def kl_k2(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """k2 = (log r)^2 / 2: biased (an f-divergence), >= 0, lower variance (S003 §2.1)."""
    return 0.5 * (ref_logp - logp) ** 2  # [B, T]


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """k3 = (r - 1) - log r: unbiased for KL(pi || ref), >= 0; GRPO's D_KL (S003 Eq. 3.13, A.3.3)."""
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
    """Per-token KL rewards [B, T] to ADD to the task rewards before computing advantages (spec §3.3).

    reward_token     r_t = -beta * k(t) on every valid token (S003 §3.5.1 PPO; TRePO Remark 5 / Eq. 30)
    reward_response  -beta * sum_t k(t) booked at the last valid token (S003 §3.2.2 Summarize-RLHF)
    loss / none      zeros (the KL then enters policy_loss, or nowhere)
    `logp_old` is the sampling policy's log-prob (no grad), as S003 §3.5.1 evaluates pi_theta at rollout time.
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


def kl_loss_term(
    logp: torch.Tensor, ref_logp: torch.Tensor | None, mask: torch.Tensor, kl_cfg: KLConfig, loss_agg: str
) -> tuple[torch.Tensor, dict[str, float]]:
    """beta * agg k(logp, ref_logp) when kl.mode == "loss" (S003 A.3.3 token-level GRPO); else 0."""
    if kl_cfg.mode != "loss" or kl_cfg.beta == 0.0:
        return logp.new_zeros(()), {}
    if ref_logp is None:
        raise ValueError("kl.mode='loss' with kl.beta > 0 needs LossInputs.ref_logp")
    kl = agg_loss(kl_per_token(logp, ref_logp, kl_cfg.estimator), mask, loss_agg)
    return kl_cfg.beta * kl, {"kl_ref": kl.item()}


def entropy_bonus(entropy: torch.Tensor | None, mask: torch.Tensor, coef: float, loss_agg: str) -> torch.Tensor:
    """-coef * agg S[pi](s_t): the c2 S term of S003 Eq. 2.18, as a quantity to ADD to a loss."""
    if coef == 0.0:
        return mask.new_zeros(())
    if entropy is None:
        raise ValueError("entropy_coef > 0 needs LossInputs.entropy")
    return -coef * agg_loss(entropy, mask, loss_agg)


def terminal_rewards(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Zero-Reward Assumption (S002 §1): put scores[B] on the last valid token of each row -> [B, T].
    Rows with no valid token get nothing."""
    T = mask.shape[1]
    positions = torch.arange(T, device=mask.device).expand_as(mask)  # [B, T]
    last = torch.where(mask > 0, positions, -1).max(dim=1).values  # [B]; -1 for empty rows
    onehot = (positions == last.unsqueeze(1)).to(scores.dtype)  # [B, T]
    return onehot * scores.unsqueeze(1)  # [B, T]


# ----------------------------------------------------------------------------------------------------------
# GAE on a grid of knots (S003 Eqs. 2.14-2.17; spec §1.13 Step 4, §1.14)


def knot_gae(
    rewards: torch.Tensor,
    baseline_values: torch.Tensor,
    next_values: torch.Tensor,
    knot_mask: torch.Tensor,
    mask: torch.Tensor,
    gamma: float,
    lam: float,
) -> torch.Tensor:
    """GAE whose states are the knots t_1 < ... < t_n of each row, with exponents counted in tokens.

    For knot t_i, with t_{n+1} = T + 1 (terminal value 0):
        delta_i = sum_{j=t_i}^{t_{i+1}-1} gamma^(j-t_i) r_j + gamma^(t_{i+1}-t_i) Vq(t_{i+1}) - Vb(t_i)
        A(t_i)  = delta_i + (gamma lam)^(t_{i+1}-t_i) A(t_{i+1})
    rewards [B, T]: r_t on valid tokens. baseline_values [B, T]: Vb read at knots. next_values [B, T]: Vq, the
    value a knot contributes as the *next* knot of the previous one (TRePO's Q-part pool; equal to Vb for
    PPO and for pooling=paper). knot_mask [B, T]: 1 at knots (a subset of mask). Returns A [B, T], non-zero
    only at knots. With knot_mask == mask this is the ordinary per-token GAE (spec B6).
    Padded positions are skipped: they neither discount nor carry reward.
    """
    B, T = rewards.shape
    adv = torch.zeros_like(rewards)  # [B, T]
    # Seen from token j, `tail` is what lies behind token j+1: Vq(j+1) if j+1 is a knot, else the discounted
    # Q-part return g(j+1) still running towards the next knot; `adv_tail` is likewise A(j+1) at a knot, else
    # the (gamma lam)-discounted advantage of the next knot. Both start at the terminal value 0.
    tail = rewards.new_zeros(B)  # [B]
    adv_tail = rewards.new_zeros(B)  # [B]
    for j in reversed(range(T)):
        valid = mask[:, j] > 0  # [B]
        is_knot = valid & (knot_mask[:, j] > 0)  # [B]
        g = rewards[:, j] + gamma * tail  # [B] Q-part return from token j to the next knot
        carry = gamma * lam * adv_tail  # [B]
        a = g - baseline_values[:, j] + carry  # [B] advantage if j is a knot
        adv[:, j] = torch.where(is_knot, a, torch.zeros_like(a))
        tail = torch.where(is_knot, next_values[:, j], torch.where(valid, g, tail))
        adv_tail = torch.where(is_knot, a, torch.where(valid, carry, adv_tail))
    return adv


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token GAE(gamma, lam) (S003 Eq. 2.14) with V_{T+1} = 0; every valid token is a knot.

    delta_t = r_t + gamma V_{t+1} - V_t,  A_t = delta_t + gamma lam A_{t+1}. rewards, values, mask: [B, T].
    Returns (advantages [B, T], returns = A + V [B, T], the lambda-return value target); both 0 on padding.
    """
    adv = knot_gae(rewards, values, values, mask, mask, gamma, lam)  # [B, T]
    return adv, (adv + values) * mask


def discounted_returns(rewards: torch.Tensor, mask: torch.Tensor, gamma: float) -> torch.Tensor:
    """Reward-to-go G_t = sum_{j>=t} gamma^(j-t) r_j over valid tokens [B, T] (= GAE with V = 0, lam = 1)."""
    zeros = torch.zeros_like(rewards)
    return knot_gae(rewards, zeros, zeros, mask, mask, gamma, 1.0)


def sequence_scores(token_rewards: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Response-level reward of each row: the sum of its valid per-token rewards -> [B]."""
    return masked_sum(token_rewards, mask, dim=1)


def step_ends_mask(step_ends: list[list[int]], shape: tuple[int, int], device=None) -> torch.Tensor:
    """[B, T] with 1.0 at the listed 0-based step end tokens."""
    out = torch.zeros(shape, device=device)
    for b, ends in enumerate(step_ends):
        for e in ends:
            out[b, e] = 1.0
    return out


def first_valid(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """x at the first valid column of each row -> [B] (0 for empty rows)."""
    B, T = mask.shape
    if T == 0:
        return x.new_zeros(B)
    positions = torch.arange(T, device=mask.device).expand_as(mask)  # [B, T]
    first = torch.where(mask > 0, positions, T).min(dim=1).values.clamp(max=T - 1)  # [B]
    values = x.gather(1, first.unsqueeze(1)).squeeze(1)  # [B]
    return torch.where(mask.sum(1) > 0, values, torch.zeros_like(values))


def valid_positions(mask_row: torch.Tensor) -> torch.Tensor:
    """0-based column of the t-th valid token, t = 1..T (handles padding anywhere) -> [T_valid] long."""
    return torch.nonzero(mask_row > 0, as_tuple=False).flatten()


# ----------------------------------------------------------------------------------------------------------
# config validation helpers: every message names the key as `algo.<key>` (the Hydra path)


def check_choice(key: str, value, options: tuple) -> None:
    if value not in options:
        raise ValueError(f"algo.{key} must be one of {list(options)}, got {value!r}")


def check_range(
    key: str,
    value,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
    hi_open: bool = False,
) -> None:
    """Raise unless lo <= value <= hi (strict on an open side)."""
    bad_lo = lo is not None and (value <= lo if lo_open else value < lo)
    bad_hi = hi is not None and (value >= hi if hi_open else value > hi)
    if bad_lo or bad_hi:
        left = "(" if lo_open else "["
        right = ")" if hi_open else "]"
        raise ValueError(f"algo.{key} must be in {left}{lo}, {hi}{right}, got {value!r}")


def check_int(key: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"algo.{key} must be an integer >= {minimum}, got {value!r}")


def check_kl(kl: KLConfig) -> None:
    if not isinstance(kl, KLConfig):
        raise ValueError(f"algo.kl must be a KLConfig, got {type(kl).__name__}")
    check_range("kl.beta", kl.beta, lo=0.0)
    check_choice("kl.estimator", kl.estimator, KL_ESTIMATORS)
    check_choice("kl.mode", kl.mode, KL_MODES)


def check_common(cfg) -> None:
    """Checks for the fields most configs share (only those present on cfg)."""
    if hasattr(cfg, "clip_eps"):
        check_range("clip_eps", cfg.clip_eps, lo=0.0, lo_open=True)
    if hasattr(cfg, "optimization_num"):
        check_int("optimization_num", cfg.optimization_num, 1)
    if hasattr(cfg, "samples_per_prompt"):
        check_int("samples_per_prompt", cfg.samples_per_prompt, 1)
    if hasattr(cfg, "loss_agg"):
        check_choice("loss_agg", cfg.loss_agg, LOSS_AGG_MODES)
    if hasattr(cfg, "entropy_coef"):
        check_range("entropy_coef", cfg.entropy_coef, lo=0.0)
    if hasattr(cfg, "gamma"):
        check_range("gamma", cfg.gamma, lo=0.0, hi=1.0, lo_open=True)
    if hasattr(cfg, "lam"):
        check_range("lam", cfg.lam, lo=0.0, hi=1.0)
    if hasattr(cfg, "adv_norm"):
        check_choice("adv_norm", cfg.adv_norm, ADV_NORMS)
    if hasattr(cfg, "kl"):
        check_kl(cfg.kl)


def clipped_policy_loss(inp, cfg) -> tuple[torch.Tensor, dict[str, float]]:
    """Token-ratio clipped surrogate (S002 Eq. 33) + beta*KL when kl.mode == "loss" - entropy bonus.
    Shared by TRePO (T1), VinePPO, PPO, token-level GRPO; reads cfg.clip_eps, loss_agg, kl, entropy_coef."""
    mask = inp.response_mask
    loss, metrics = clipped_surrogate(inp.logp, inp.old_logp, inp.advantages, mask, cfg.clip_eps, cfg.loss_agg)
    kl_loss, kl_metrics = kl_loss_term(inp.logp, inp.ref_logp, mask, cfg.kl, cfg.loss_agg)
    ent = entropy_bonus(inp.entropy, mask, cfg.entropy_coef, cfg.loss_agg)
    metrics.update(kl_metrics, pg_loss=loss.item())
    if inp.entropy is not None:
        metrics["entropy"] = agg_loss(inp.entropy.detach(), mask, cfg.loss_agg).item()
    return loss + kl_loss + ent, metrics


def plain_policy_loss(inp, cfg) -> tuple[torch.Tensor, dict[str, float]]:
    """pg_loss (no ratio, no clip) + beta*KL when kl.mode == "loss" - entropy bonus (RLOO/ReMax/REINFORCE)."""
    mask = inp.response_mask
    loss, metrics = pg_loss(inp.logp, inp.advantages, mask, cfg.loss_agg)
    kl_loss, kl_metrics = kl_loss_term(inp.logp, inp.ref_logp, mask, cfg.kl, cfg.loss_agg)
    ent = entropy_bonus(inp.entropy, mask, cfg.entropy_coef, cfg.loss_agg)
    metrics.update(kl_metrics, pg_loss=loss.item(), **ratio_metrics(inp.logp, inp.old_logp, mask))
    return loss + kl_loss + ent, metrics


def ratio_metrics(logp: torch.Tensor, old_logp: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    """The same drift diagnostics the clipped losses log, for losses without a ratio: nothing is clipped."""
    with torch.no_grad():
        log_ratio = (logp - old_logp) * mask  # [B, T]
        ratio = torch.exp(log_ratio)
        return {"clip_frac": 0.0, "approx_kl": masked_mean(ratio - 1.0 - log_ratio, mask).item(),
                "ratio_mean": masked_mean(ratio, mask).item()}
