"""GRPO family (GRPO arXiv 2402.03300 §4.1; docs/algorithms.md, "GRPO"): one registered algorithm "grpo"
whose variants are config values.

Advantages (`supervision`):
  outcome   A_{i,t} = A_i = (r_i - mean_G r) / (std_G r + eps)      GRPO §4.1.2; TRePO arXiv 2506.02553 Eqs. 34-35
            r_i = sum of the trajectory's token_rewards (= RM(W) under the Zero-Reward Assumption).
            scale_by_std=False is GPG / Dr.GRPO's r_i - mean (arXiv 2503.20783).
  process   step rewards normalised over all sum_i K_i steps of the group; token t of response i gets
            sum_{j: index(j) >= t} r~_j (process_inclusive=True) or the paper's strict > (False) (GRPO §4.1.3).
            Tokens after the last step get 0.
  sentence  r_{i,s} = w_corr R_corr + w_logic R_logic + w_fmt R_fmt (weights sum to 1), mu and sigma with each
            output weighted equally, A_{i,s} = (r_{i,s} - mu) / (sigma + std_eps); every token of sentence s
            gets A_{i,s} (docs/algorithms.md, "GRPO").
Policy loss (`ratio_level`):
  token     per-token ratios, clipped, agg = loss_agg (default 1/G sum_i 1/|o_i| sum_t), KL term k3 per token
            (GRPO Eqs. 3-4).  Dr.GRPO = scale_by_std=False + loss_agg=seq_mean_token_sum_norm.
  sequence  r_i = exp(sum_t (log pi - log pi_old)) in log space, clipped, 1/G sum_i; KL = the estimator on
            sequence probabilities (the DeepSeek-R1 form). Ignores loss_agg.
  sentence  one ratio per sentence (product of its token ratios), 1/G sum_i 1/S_i sum_s; KL = k summed over the
            sentence's tokens. Needs LossInputs.step_ends. Ignores loss_agg.
std convention: ddof=0 by default, eps added to the denominator; a constant group gives 0.
GRPO has no gamma/lam (response-level advantages): do not add them.
step_ends are 0-based indices among a row's valid response tokens (== column indices under right padding).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from rlx.algos.base import (
    STEP_REWARDS,
    TREE_ROWS,
    AdvantageInputs,
    Algorithm,
    ClippedAlgoConfig,
    KLConfig,
    LossInputs,
    register,
)
from rlx.algos.checks import check_choice, check_int, check_range
from rlx.algos.kl import kl_loss_term
from rlx.algos.losses import agg_loss, clipped_objective, clipped_policy_loss, entropy_bonus, ratio_metrics
from rlx.algos.stats import group_stats, sequence_scores, valid_positions
from rlx.algos.tempo import prefix_td, row_tokens

SUPERVISIONS = ("outcome", "process", "sentence")
RATIO_LEVELS = ("token", "sequence", "sentence")


@dataclass(frozen=True)
class GRPOConfig(ClippedAlgoConfig):
    name: str = "grpo"
    samples_per_prompt: int = 8  # G
    loss_agg: str = "seq_mean_token_mean"  # token ratios only; Dr.GRPO: seq_mean_token_sum_norm
    scale_by_std: bool = True  # False: r - mean (GPG / Dr.GRPO, §2.2e)
    ddof: int = 0  # population std
    std_eps: float = 1e-6  # added to the std (the sentence level's delta)
    ratio_level: str = "token"  # token | sequence | sentence
    supervision: str = "outcome"  # outcome | process | sentence
    process_inclusive: bool = True  # process: >= (True) or the paper's strict > (False)
    w_corr: float = 1.0  # sentence reward weights, sum to 1 (named w_* to avoid GAE's lam)
    w_logic: float = 0.0
    w_fmt: float = 0.0
    tempo: bool = False  # + TD terms at the group's branching tokens (rlx/algos/tempo.py; outcome supervision)
    kl: KLConfig = field(default_factory=lambda: KLConfig(beta=0.0, estimator="k3", mode="loss"))

    def validate(self) -> None:
        super().validate()
        check_int("ddof", self.ddof, 0)
        check_range("std_eps", self.std_eps, lo=0.0)
        check_choice("scale_by_std", self.scale_by_std, (True, False))
        check_choice("ratio_level", self.ratio_level, RATIO_LEVELS)
        check_choice("supervision", self.supervision, SUPERVISIONS)
        check_choice("process_inclusive", self.process_inclusive, (True, False))
        for key in ("w_corr", "w_logic", "w_fmt"):
            check_range(key, getattr(self, key), lo=0.0, hi=1.0)
        if abs(self.w_corr + self.w_logic + self.w_fmt - 1.0) > 1e-6:
            raise ValueError("algo.w_corr + algo.w_logic + algo.w_fmt must sum to 1")
        check_choice("tempo", self.tempo, (True, False))
        if self.tempo and self.supervision != "outcome":
            raise ValueError(f"algo.tempo=true adds TD terms to outcome advantages; algo.supervision="
                             f"{self.supervision!r} has step-level advantages of its own")

    def group_baseline(self) -> str | None:
        return "GRPO's group-normalised advantage"


def grpo_requires(cfg: GRPOConfig) -> frozenset[str]:
    """Step rewards for process / sentence supervision; the rollout record's token ids for TEMPO's prefix tree."""
    steps = {STEP_REWARDS} if cfg.supervision in ("process", "sentence") else set()
    return frozenset(steps | ({TREE_ROWS} if cfg.tempo else set()))


# ----------------------------------------------------------------------------------------------------------
# advantages


def group_normalize(
    scores: torch.Tensor, group_ids: torch.Tensor, scale_by_std: bool, ddof: int, eps: float
) -> torch.Tensor:
    """(s - mean_g) / (std_g + eps) within groups, or s - mean_g; exactly 0 for a constant group. [N]."""
    g = group_stats(scores, group_ids)
    dev = scores - g.mean[g.inv]  # [N]
    constant = g.constant[g.inv]  # [N]; never divide rounding noise by eps
    if scale_by_std:
        var = scores.new_zeros(g.count.shape).scatter_add(0, g.inv, dev**2) / (g.count - ddof).clamp(min=1)  # [G]
        dev = dev / (var.sqrt()[g.inv] + eps)
    return torch.where(constant, torch.zeros_like(dev), dev)


def outcome_advantages(inp: AdvantageInputs, cfg: GRPOConfig) -> torch.Tensor:
    """Outcome: every token of response i gets A_i (TRePO Corollary 1 form) -> [B, T]."""
    return outcome_scores(inp, cfg).unsqueeze(1) * inp.response_mask  # [B, T]


def outcome_scores(inp: AdvantageInputs, cfg) -> torch.Tensor:
    """A_i = the group-normalised outcome of each response -> [B]."""
    scores = sequence_scores(inp.token_rewards, inp.response_mask)  # [B]
    return group_normalize(scores, inp.group_ids, cfg.scale_by_std, cfg.ddof, cfg.std_eps)  # [B]


def tempo_advantages(inp: AdvantageInputs, cfg: GRPOConfig) -> torch.Tensor:
    """TEMPO: A_i + the TD terms of the group's prefix tree, V(prefix) = the mean A_i through it -> [B, T]."""
    adv = outcome_scores(inp, cfg)  # [B]
    return adv.unsqueeze(1) * inp.response_mask + prefix_td(row_tokens(inp), adv, inp.group_ids, inp.response_mask)


def _combine_step_reward(r, cfg: GRPOConfig) -> float:
    """A step reward is a float, or (R_corr, R_logic, R_fmt) combined with the w_* weights."""
    if isinstance(r, (tuple, list)):
        r_corr, r_logic, r_fmt = r
        return cfg.w_corr * r_corr + cfg.w_logic * r_logic + cfg.w_fmt * r_fmt
    return float(r)


def _steps(inp: AdvantageInputs, cfg: GRPOConfig) -> tuple[list[list[int]], list[list[float]]]:
    rewards = [[_combine_step_reward(r, cfg) for r in row] for row in inp.step_rewards]
    for b, (ends, rs) in enumerate(zip(inp.step_ends, rewards)):
        if len(ends) != len(rs) or any(e2 <= e1 for e1, e2 in zip(ends, ends[1:])):
            raise ValueError(f"GRPO: trajectory {b} needs one reward per step and increasing step_ends")
    return inp.step_ends, rewards


def process_advantages(inp: AdvantageInputs, cfg: GRPOConfig) -> torch.Tensor:
    """Process: normalise all step rewards of a group together, then sum the normalised rewards of the steps
    ending at or after token t (>= if process_inclusive, else >) -> [B, T]."""
    mask = inp.response_mask  # [B, T]
    step_ends, step_rewards = _steps(inp, cfg)
    flat = torch.tensor([r for row in step_rewards for r in row], dtype=mask.dtype)  # [sum K_i]
    flat_groups = torch.cat(
        [inp.group_ids[b].repeat(len(row)) for b, row in enumerate(step_rewards)] or [inp.group_ids.new_zeros(0)]
    )
    normed = group_normalize(flat, flat_groups, cfg.scale_by_std, cfg.ddof, cfg.std_eps).tolist()
    adv = torch.zeros_like(mask)  # [B, T]
    offset = 0
    for b, ends in enumerate(step_ends):
        cols = valid_positions(mask[b])  # [T_b]
        j = torch.arange(cols.numel())  # [T_b] 0-based response position
        row = torch.zeros(cols.numel(), dtype=mask.dtype)  # [T_b]
        for end, r in zip(ends, normed[offset : offset + len(ends)]):
            reaches = j <= end if cfg.process_inclusive else j < end  # index(j) >= t  or  > t
            row += r * reaches.to(mask.dtype)
        offset += len(ends)
        adv[b, cols] = row
    return adv


def sentence_advantages(inp: AdvantageInputs, cfg: GRPOConfig) -> torch.Tensor:
    """Sentence level: mu = 1/G sum_i 1/S_i sum_s r_is, sigma likewise, A_is = (r_is - mu)/(sigma + delta)."""
    mask = inp.response_mask  # [B, T]
    step_ends, step_rewards = _steps(inp, cfg)
    adv = torch.zeros_like(mask)  # [B, T]
    for gid in torch.unique(inp.group_ids).tolist():
        members = [b for b in range(len(step_rewards)) if int(inp.group_ids[b]) == gid and step_rewards[b]]
        if not members:
            continue
        per_output = [torch.tensor(step_rewards[b], dtype=torch.float64) for b in members]
        mu = torch.stack([r.mean() for r in per_output]).mean()
        sigma = torch.stack([((r - mu) ** 2).mean() for r in per_output]).mean().sqrt()
        constant = bool(torch.cat(per_output).max() == torch.cat(per_output).min())
        for b, r in zip(members, per_output):
            if constant:
                a_s = torch.zeros_like(r)  # [S_i]
            elif cfg.scale_by_std:
                a_s = (r - mu) / (sigma + cfg.std_eps)
            else:
                a_s = r - mu
            cols = valid_positions(mask[b])  # [T_b]
            sid = _segment_ids(step_ends[b], cols.numel())  # [T_b], -1 after the last sentence
            inside = sid >= 0
            adv[b, cols[inside]] = a_s[sid[inside]].to(mask.dtype)
    return adv


def grpo_advantages(inp: AdvantageInputs, cfg: GRPOConfig) -> torch.Tensor:
    if cfg.supervision == "outcome":
        return tempo_advantages(inp, cfg) if cfg.tempo else outcome_advantages(inp, cfg)
    if cfg.supervision == "process":
        return process_advantages(inp, cfg)
    if cfg.supervision == "sentence":
        return sentence_advantages(inp, cfg)
    raise ValueError(f"algo.supervision must be one of {list(SUPERVISIONS)}, got {cfg.supervision!r}")


# ----------------------------------------------------------------------------------------------------------
# sequence- and sentence-level ratios


def _segment_ids(ends: list[int], n: int) -> torch.Tensor:
    """Segment index of each of n response tokens given 0-based segment end tokens; -1 after the last end."""
    j = torch.arange(n)  # [n]
    ends_t = torch.tensor(list(ends), dtype=torch.long)  # [S]
    sid = torch.searchsorted(ends_t, j, right=False)  # [n] first end >= j
    return torch.where(sid < len(ends), sid, torch.full_like(sid, -1))


def segment_layout(mask: torch.Tensor, step_ends: list[list[int]] | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(seg_id [B, T] long, seg_valid [B, T] float): one segment per row (sequence level) when step_ends
    is None, else one per sentence. Tokens outside every segment and padding have seg_valid = 0."""
    B, T = mask.shape
    seg_id = torch.zeros(B, T, dtype=torch.long)  # [B, T]
    seg_valid = torch.zeros_like(mask)  # [B, T]
    for b in range(B):
        cols = valid_positions(mask[b])  # [T_b]
        sid = (
            torch.zeros(cols.numel(), dtype=torch.long)
            if step_ends is None
            else _segment_ids(step_ends[b], cols.numel())
        )
        inside = sid >= 0
        seg_id[b, cols[inside]] = sid[inside]
        seg_valid[b, cols[inside]] = 1.0
    return seg_id, seg_valid


def segment_clipped_loss(
    inp: LossInputs, cfg: GRPOConfig, step_ends: list[list[int]] | None, kl_on_sums: bool
) -> tuple[torch.Tensor, dict[str, float]]:
    """-1/G sum_i 1/S_i sum_s min(r_is A_is, clip(r_is) A_is) + beta KL; r_is = exp(sum_{t in s} dlogp)."""
    seg_id, seg_valid = segment_layout(inp.response_mask, step_ends)  # [B, T]
    B = seg_id.shape[0]
    S = int(seg_id.max()) + 1 if seg_id.numel() else 1

    def seg_sum(x: torch.Tensor) -> torch.Tensor:  # [B, T] -> [B, S]
        return torch.zeros(B, S, dtype=x.dtype).scatter_add(1, seg_id, x * seg_valid)

    count = seg_sum(torch.ones_like(seg_valid))  # [B, S]
    seg_mask = (count > 0).to(seg_valid.dtype)  # [B, S]
    log_ratio = seg_sum(inp.logp - inp.old_logp)  # [B, S] log of the product of token ratios
    adv = seg_sum(inp.advantages) / count.clamp(min=1.0)  # [B, S]; constant within a segment
    # every non-empty row has >= 1 segment (its last token ends a step), so the rows counted by the step's
    # AggScale are the rows averaged here
    agg = "seq_mean_token_mean"
    loss, metrics = clipped_objective(log_ratio, adv, seg_mask, cfg.clip_range(), agg, inp.scale)
    metrics.update(pg_loss=loss.item(), approx_kl=ratio_metrics(inp.logp, inp.old_logp, inp.response_mask)["approx_kl"])
    total = loss + entropy_bonus(inp.entropy, inp.response_mask, cfg.entropy_coef, agg, inp.scale)
    if kl_on_sums:  # sequence level: the estimator on pi(o|q) / pi_ref(o|q) (arXiv 2402.03300 Eq. 4 on sums)
        kl_loss, kl_metrics = kl_loss_term(inp.logp, inp.ref_logp, seg_mask, cfg.kl,
                                           lambda k: agg_loss(k, seg_mask, agg, inp.scale),
                                           on_sums=lambda lp, ref: (seg_sum(lp), seg_sum(ref)))
    else:  # sentence level: the estimator summed over the sentence's tokens (docs/algorithms.md, "GRPO")
        kl_loss, kl_metrics = kl_loss_term(inp.logp, inp.ref_logp, seg_mask, cfg.kl,
                                           lambda k: agg_loss(seg_sum(k), seg_mask, agg, inp.scale))
    metrics.update(kl_metrics)
    return total + kl_loss, metrics


def grpo_policy_loss(inp: LossInputs, cfg: GRPOConfig) -> tuple[torch.Tensor, dict[str, float]]:
    if cfg.ratio_level == "token":
        return clipped_policy_loss(inp, cfg)
    if cfg.ratio_level == "sequence":
        return segment_clipped_loss(inp, cfg, None, kl_on_sums=True)
    if cfg.ratio_level == "sentence":
        return segment_clipped_loss(inp, cfg, inp.step_ends, kl_on_sums=False)
    raise ValueError(f"algo.ratio_level must be one of {list(RATIO_LEVELS)}, got {cfg.ratio_level!r}")


GRPO = register(
    Algorithm(
        name="grpo",
        config_cls=GRPOConfig,
        advantages=grpo_advantages,
        policy_loss=grpo_policy_loss,
        requires=grpo_requires,
    )
)
