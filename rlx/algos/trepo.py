"""TRePO: Token-Reinforced Policy Optimization (arXiv 2506.02553, §3; docs/algorithms.md, "TRePO").

Per token t of a sampled response W, Theorem 2 (Eq. 28) gives the advantage
    A_t = E RM(W^(t+1)) - E RM(W^(t)),
estimated from M rollouts branched at a few knots D (Algorithm 1) and pooled by Eq. 31 (any W^(k) is also a
W^(t) for t <= k). rlx generalises Theorem 2 to a discounted knot GAE that reduces to it for gamma = 1,
lam = 0 (the paper preset; defaults here). Steps (docs/algorithms.md, "TRePO"):

  1  knots  D = {1 = t_1 < ... < t_n}, n = min(|D|, T), t_{n+1} = T + 1                     (`select_knots`)
  2  M rollouts per knot from W.ids[:t-1] at the schedule's temperatures           (`plan_branches`; the loop)
  3  V_t = mean_{X in pool(t)} G^gamma_t(X), a rollout X branched at k >= t using W's own rewards for tokens
     t..k-1 plus gamma^(k-t) G_k(X)  (Eq. 31 discounted; pooling paper | unbiased | none)       (`knot_values`)
  4  delta_i = sum_{j=t_i}^{t_{i+1}-1} gamma^(j-t_i) r_j + gamma^(t_{i+1}-t_i) Vq_{t_{i+1}} - Vb_{t_i},
     A_{t_i} = sum_m (gamma lam)^(t_m - t_i) delta_m (exponents in tokens)                    (`gae.knot_gae`)
  5  interpolation between knots: advantage (default) | value | constant                      (`interpolate`)
  6  adv_norm none | batch | group (Remark 4)
  7  PPO clipped surrogate with token ratios, Eq. 33 (Algorithm 1 line 16 cites Eq. 30: an erratum)

Where the paper is ambiguous rlx follows the readings of docs/algorithms.md, "TRePO readings" (clipped
surrogate, |D| is a count, anchors, temperature schedule, include_self, neighbouring knots, interpolation,
siblings join the first pool, pooling, temperatures other than 1) and its "TRePO errata".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from rlx.algos.base import (
    BRANCH_ROLLOUTS,
    SAMPLER_LOGPROBS,
    TOKEN_ENTROPY,
    TREE_ROWS,
    AdvantageInputs,
    Algorithm,
    ClippedAlgoConfig,
    KLConfig,
    Knot,
    register,
)
from rlx.algos.branching import SCORE_SELECTIONS, score_knots
from rlx.algos.checks import check_choice, check_int, check_range
from rlx.algos.gae import discounted_returns, knot_gae
from rlx.algos.losses import clipped_policy_loss
from rlx.algos.stats import first_valid, normalize_advantages, valid_positions
from rlx.algos.tree import TreeConfig, tree_advantages

BRANCH_SELECTIONS = ("random", "uniform_grid", "step_boundaries", *SCORE_SELECTIONS)
TEMPERATURE_SCHEDULES = ("linear", "constant")
POOLINGS = ("paper", "unbiased", "none")
INTERPS = ("advantage", "value", "constant")


@dataclass(frozen=True)
class TRePOConfig(ClippedAlgoConfig):
    name: str = "trepo"
    samples_per_prompt: int = 4  # siblings are W^(1) rollouts of the t=1 pool ("Siblings join the first pool")
    num_branch_points: int | str = 4  # |D| incl. t = 1, clamped to T; "all" = every position
    # random | uniform_grid | step_boundaries ("Random knots") | entropy | low_prob (rlx/algos/branching.py)
    branch_selection: str = "step_boundaries"
    rollouts_per_branch: int = 4  # M
    temperature_schedule: str = "linear"  # linear: tau_m = tau_max (m-1)/(M-1) | constant: tau_max
    tau_max: float = 1.0
    pooling: str = "paper"  # paper (Eq. 31) | unbiased | none ("Pooling and its bias")
    include_self: bool = True  # W itself is in the Eq. 31 pool of every knot ("include_self")
    interp: str = "advantage"  # advantage | value | constant (step-wise, VinePPO-like)
    gamma: float = 1.0  # 1.0 = paper (Remark 3)
    lam: float = 0.0  # 0.0 = paper (Theorem 2 between neighbouring knots)
    adv_norm: str = "batch"  # none | batch | group (Remark 4)
    kl: KLConfig = field(default_factory=lambda: KLConfig(beta=0.0, estimator="k1", mode="reward_token"))
    # two-round branch phase (rlx/train/rollout/adaptive.py): M0 rollouts per knot, then the rest of the fixed-M
    # schedule's branch tokens to the knots with the largest standard error (VinePPO arXiv 2410.01679)
    adaptive_rollouts: bool = False
    adaptive_first_round: int = 2  # M0, in [1, rollouts_per_branch]
    # train on every branch rollout, with tree advantages (rlx/algos/tree.py and docs/algorithms.md,
    # "Training on every branch"); false = the paper: branch rollouts only estimate the knot values
    train_on_branches: bool = False
    tree: TreeConfig = field(default_factory=TreeConfig)

    def validate(self) -> None:
        nbp = self.num_branch_points
        if nbp != "all":
            check_int("num_branch_points", nbp, 1)
        check_choice("branch_selection", self.branch_selection, BRANCH_SELECTIONS)
        check_int("rollouts_per_branch", self.rollouts_per_branch, 1)
        check_choice("adaptive_rollouts", self.adaptive_rollouts, (True, False))
        check_int("adaptive_first_round", self.adaptive_first_round, 1)
        if self.adaptive_rollouts and self.adaptive_first_round > self.rollouts_per_branch:
            raise ValueError(f"algo.adaptive_first_round must be <= algo.rollouts_per_branch="
                             f"{self.rollouts_per_branch} with algo.adaptive_rollouts=true, got "
                             f"{self.adaptive_first_round}")
        check_choice("temperature_schedule", self.temperature_schedule, TEMPERATURE_SCHEDULES)
        check_range("tau_max", self.tau_max, lo=0.0)
        check_choice("pooling", self.pooling, POOLINGS)
        check_choice("include_self", self.include_self, (True, False))
        check_choice("interp", self.interp, INTERPS)
        super().validate()
        self.validate_tree()

    def validate_tree(self) -> None:
        check_choice("train_on_branches", self.train_on_branches, (True, False))
        if not isinstance(self.tree, TreeConfig):
            raise ValueError(f"algo.tree must be a TreeConfig, got {type(self.tree).__name__}")
        self.tree.validate()
        if not self.train_on_branches and self.tree.changed():
            raise ValueError(f"{self.tree.changed()[0]} acts only when branches are trained on; set "
                             "algo.train_on_branches=true or leave it at its default")
        if self.tree.fork_budget is not None and self.tree.fork_budget < self.rollouts_per_branch:
            raise ValueError(f"algo.tree.fork_budget={self.tree.fork_budget} is smaller than one fork "
                             f"(algo.rollouts_per_branch={self.rollouts_per_branch} rollouts)")
        if self.tree.depth > 1 and self.branch_selection == "entropy":
            raise ValueError("algo.tree.depth > 1 with algo.branch_selection=entropy: deeper forks have no trainer "
                             "entropies; pick random | uniform_grid | step_boundaries | low_prob")
        if self.train_on_branches and self.kl.beta > 0 and self.kl.mode != "loss":
            raise ValueError(f"algo.train_on_branches=true values the tree by outcomes only: use algo.kl.mode=loss "
                             f"(not {self.kl.mode!r}) or algo.kl.beta=0")

    def first_round_rollouts(self) -> int:
        return self.adaptive_first_round if self.adaptive_rollouts else 0

    def fork_levels(self) -> int:
        return self.tree.depth if self.train_on_branches else 1

    def fork_budget(self) -> int | None:
        return self.tree.fork_budget if self.train_on_branches else None

    def drops_zero_advantage_rows(self) -> bool:
        return self.tree.drop_zero_adv

    def check_train_temperature(self, tau: float) -> None:
        """With train_on_branches, rollouts at a temperature other than train.temperature are refused unless
        algo.tree.off_temperature=exclude takes them out of training."""
        if not self.train_on_branches or self.tree.off_temperature == "exclude":
            return
        temps = temperature_schedule(self.rollouts_per_branch, self.temperature_schedule, self.tau_max)
        off = sorted({t for t in temps if t != tau})
        if off:
            raise ValueError(f"algo.train_on_branches=true: branch rollouts sampled at temperatures {off} would be "
                             f"trained as if sampled at train.temperature={tau}; set algo.temperature_schedule="
                             f"constant algo.tau_max={tau}, or algo.tree.off_temperature=exclude to train only on "
                             "the rollouts at the training temperature")


def trepo_requires(cfg: TRePOConfig) -> frozenset[str]:
    """Branch rollouts, plus the per-token scores an entropy / low_prob knot selection reads, plus every tree
    node as a training row with train_on_branches."""
    scores = {"entropy": TOKEN_ENTROPY, "low_prob": SAMPLER_LOGPROBS}.get(cfg.branch_selection)
    tree = {TREE_ROWS} if cfg.train_on_branches else set()
    return frozenset({BRANCH_ROLLOUTS} | ({scores} if scores else set()) | tree)


# ----------------------------------------------------------------------------------------------------------
# Steps 1-2: knots and rollout temperatures


def temperature_schedule(M: int, schedule: str, tau_max: float) -> tuple[float, ...]:
    """docs/algorithms.md, "TRePO readings" (temperature schedule): linear tau_m = tau_max (m-1)/(M-1),
    m = 1..M (tau_1 = 0 = greedy; M = 1 -> (0.0,)); constant."""
    if schedule == "constant":
        return (float(tau_max),) * M
    if schedule == "linear":
        if M == 1:
            return (0.0,)
        return tuple(tau_max * m / (M - 1) for m in range(M))
    raise ValueError(f"algo.temperature_schedule must be one of {list(TEMPERATURE_SCHEDULES)}, got {schedule!r}")


def _evenly(items: Sequence[int], k: int) -> list[int]:
    """k items spread evenly over `items` (all of them when k >= len)."""
    if k >= len(items):
        return list(items)
    return [items[(i * len(items)) // k] for i in range(k)]


def select_knots(
    T: int,
    num_branch_points: int | str,
    selection: str,
    step_starts: Sequence[int] = (),
    rng: torch.Generator | None = None,
    scores: Sequence[float] | torch.Tensor | None = None,
) -> list[int]:
    """Sorted 1-based knots D, t = 1 always included and counted (docs/algorithms.md, "TRePO readings": anchors);
    [] when T = 0.

    random         1 plus n-1 positions drawn uniformly without replacement from {2..T} with `rng`
    uniform_grid   t_i = 1 + floor(i T / n), i = 0..n-1: segments [t_i, t_{i+1}) of near-equal length
    step_boundaries 1 plus the given 1-based step starts in {2..T} (sub-sampled evenly to n-1 unless "all")
    entropy / low_prob  1 plus the n-1 best-scoring positions of `scores` [T] (`rlx.algos.branching`)
    """
    if T <= 0:
        return []
    if selection in SCORE_SELECTIONS:
        return score_knots(selection, scores, T, num_branch_points)
    n = T if num_branch_points == "all" else min(int(num_branch_points), T)
    if selection == "uniform_grid":
        return [1 + (i * T) // n for i in range(n)]
    if selection == "random":
        draw = torch.randperm(T - 1, generator=rng)[: n - 1] + 2  # positions 2..T
        return [1] + sorted(int(t) for t in draw)
    if selection == "step_boundaries":
        starts = sorted({int(s) for s in step_starts if 2 <= int(s) <= T})
        chosen = starts if num_branch_points == "all" else _evenly(starts, n - 1)
        return [1] + chosen
    raise ValueError(f"algo.branch_selection must be one of {list(BRANCH_SELECTIONS)}, got {selection!r}")


def plan_branches(
    response_ids: Sequence[int], step_starts: Sequence[int], cfg: TRePOConfig, rng: torch.Generator,
    scores: Sequence[float] | torch.Tensor | None = None,
) -> list[Knot]:
    """Algorithm 1 lines 3-4: knots and the temperatures of their M rollouts (pi_old, prefix ids only).
    `scores` [T]: the trainer's token entropies (entropy) or the sampler's log-probs (low_prob)."""
    temps = temperature_schedule(cfg.rollouts_per_branch, cfg.temperature_schedule, cfg.tau_max)
    knots = select_knots(len(response_ids), cfg.num_branch_points, cfg.branch_selection, step_starts, rng, scores)
    return [Knot(t=t, temperatures=temps) for t in knots]


def plan_forks(
    token_ids: Sequence[int], step_starts: Sequence[int], sampler_logprobs: Sequence[float], cfg: TRePOConfig,
    rng: torch.Generator,
) -> list[Knot]:
    """Forks of a branch rollout at the tree's deeper levels (`algo.tree.depth` > 1): the knots `plan_branches`
    picks on its own tokens minus t = 1 (that would be a sibling, not a fork), at most `algo.tree.forks_per_node`
    of them, each with `algo.tree.width` rollouts (0 = algo.rollouts_per_branch)."""
    scores = {"scores": sampler_logprobs} if cfg.branch_selection == "low_prob" else {}
    knots = [k for k in plan_branches(token_ids, step_starts, cfg, rng, **scores) if k.t > 1]
    width = cfg.tree.width or cfg.rollouts_per_branch
    return [Knot(k.t, k.temperatures[:width]) for k in knots[: cfg.tree.forks_per_node]]


# ----------------------------------------------------------------------------------------------------------
# Steps 3-5, one trajectory at a time (knot counts are small); Step 4 is the batched knot GAE


def _discounted_sum(x: torch.Tensor, gamma: float) -> float:
    """G(X) = sum_l gamma^l x_l of a rollout's continuation rewards [L]."""
    if x.numel() == 0:
        return 0.0
    powers = gamma ** torch.arange(x.numel(), dtype=torch.float64)  # [L]
    return float((x.detach().to(torch.float64).cpu() * powers).sum())


def knot_values(
    knots: list[int],
    returns_self: list[float],
    rollout_returns: list[list[float]],
    cfg: TRePOConfig,
) -> tuple[list[float], list[float]]:
    """Step 3: (Vb, Vq) at each knot, from the pools of docs/algorithms.md, "Pooling and its bias".

    returns_self[t-1] = G^gamma_t(W) for t = 1..T; rollout_returns[i] = G_{t_i}(X) of the rollouts branched at
    knot i. A rollout X from knot k seen from t <= k is G_t(W) + gamma^(k-t) (G_k(X) - G_k(W)), because X
    shares W's tokens (and rewards) t..k-1.
    """
    g = cfg.gamma

    def pool_mean(i: int, from_knots: range, with_self: bool) -> float:
        t = knots[i]
        total, count = 0.0, 0
        for j in from_knots:
            shift = g ** (knots[j] - t)
            for gx in rollout_returns[j]:
                total += returns_self[t - 1] + shift * (gx - returns_self[knots[j] - 1])
                count += 1
        if with_self:
            total += returns_self[t - 1]
            count += 1
        if count == 0:
            raise ValueError(f"TRePO: empty value pool at knot t={t} (pooling={cfg.pooling!r}, no rollouts)")
        return total / count

    n = len(knots)
    v_base, v_next = [], []
    for i in range(n):
        later = range(i, n)  # rollouts with k >= t_i (Eq. 31)
        here = range(i, i + 1)  # rollouts with k == t_i
        if cfg.pooling == "paper":
            v = pool_mean(i, later, cfg.include_self)
            v_base.append(v)
            v_next.append(v)
        elif cfg.pooling == "unbiased":
            v_base.append(pool_mean(i, here, False))
            v_next.append(pool_mean(i, later, cfg.include_self))
        else:  # none
            v = pool_mean(i, here, False)
            v_base.append(v)
            v_next.append(v)
    return v_base, v_next


def interpolate(knot_adv: torch.Tensor, knots: list[int], T: int, mode: str) -> torch.Tensor:
    """Step 5 (Algorithm 1 line 7; docs/algorithms.md, "TRePO readings": interpolation): per-token advantages
    [T] from knot advantages [n].

    advantage  linear blend of the two neighbouring knot advantages; constant after the last knot
    value      linear interpolation of the values: every token of [t_i, t_{i+1}) gets A_{t_i} / (t_{i+1}-t_i)
               (t_{n+1} = T + 1), so the sum over the segment is A_{t_i}
    constant   every token of [t_i, t_{i+1}) gets A_{t_i}
    """
    kt = torch.tensor(knots + [T + 1], dtype=torch.float64)  # [n+1]
    t = torch.arange(1, T + 1, dtype=torch.float64)  # [T]
    seg = torch.searchsorted(kt[:-1], t, right=True) - 1  # [T] index of the knot at or before t
    a_left = knot_adv[seg]  # [T]
    if mode == "constant":
        return a_left
    if mode == "value":
        return a_left / (kt[seg + 1] - kt[seg]).to(knot_adv.dtype)
    if mode == "advantage":
        n = len(knots)
        has_right = seg + 1 < n  # [T] a real knot to the right (the terminal T+1 is not one)
        right = torch.clamp(seg + 1, max=n - 1)  # [T]
        alpha = ((t - kt[seg]) / (kt[right] - kt[seg]).clamp(min=1.0)).to(knot_adv.dtype)  # [T]
        blended = (1 - alpha) * a_left + alpha * knot_adv[right]
        return torch.where(has_right, blended, a_left)
    raise ValueError(f"algo.interp must be one of {list(INTERPS)}, got {mode!r}")


def _check_knots(b: int, knots: list[int], T: int, n_branches: int) -> None:
    if not knots or knots[0] != 1:
        raise ValueError(f"TRePO: trajectory {b} needs knot t=1 first (docs/algorithms.md, 'TRePO readings': anchors), "
                         f"got {knots}")
    if any(k2 <= k1 for k1, k2 in zip(knots, knots[1:])) or knots[-1] > T:
        raise ValueError(f"TRePO: knots of trajectory {b} must be strictly increasing in 1..{T}, got {knots}")
    if n_branches != len(knots):
        raise ValueError(f"TRePO: trajectory {b} has {len(knots)} knots but {n_branches} rollout lists")


def trepo_advantages(inp: AdvantageInputs, cfg: TRePOConfig) -> torch.Tensor:
    """Steps 3-6 (docs/algorithms.md, "TRePO") -> advantages [B, T] (0 on padding). See the module docstring.
    With train_on_branches: the tree advantages of every row (rlx/algos/tree.py)."""
    if cfg.train_on_branches:
        return tree_advantages(inp, cfg)
    rewards = inp.token_rewards * inp.response_mask  # [B, T]
    mask = inp.response_mask  # [B, T]
    B, T = rewards.shape
    if T == 0:
        return torch.zeros_like(rewards)
    returns_all = discounted_returns(rewards.to(torch.float64), mask.to(torch.float64), cfg.gamma)  # [B, T]
    first_return = first_valid(returns_all, mask)  # [B] G_1 of every trajectory, for siblings

    knot_mask = torch.zeros_like(rewards)  # [B, T]
    v_base = torch.zeros_like(rewards)  # [B, T]
    v_next = torch.zeros_like(rewards)  # [B, T]
    layouts = []  # (row, valid columns, knots) of every non-empty trajectory
    for b in range(B):
        cols = valid_positions(mask[b])  # [T_b]
        if cols.numel() == 0:
            continue  # T = 0: nothing to credit
        knots = inp.knots(b)
        _check_knots(b, knots, cols.numel(), len(inp.branch_rewards[b]))
        returns_self = returns_all[b, cols].tolist()  # G_t(W), t = 1..T_b
        rollout_returns = [[_discounted_sum(x, cfg.gamma) for x in rollouts] for rollouts in inp.branch_rewards[b]]
        # siblings of the same prompt (samples_per_prompt > 1) are W^(1) samples too ("Siblings join the first
        # pool"); read from the batch's group ids, so the trainer's group size and this function can never disagree
        siblings = (inp.group_ids == inp.group_ids[b]) & (torch.arange(B) != b) & (mask.sum(1) > 0)
        rollout_returns[0] = rollout_returns[0] + first_return[siblings].tolist()
        vb, vq = knot_values(knots, returns_self, rollout_returns, cfg)
        knot_cols = cols[torch.tensor(knots) - 1]  # [n]
        knot_mask[b, knot_cols] = 1.0
        v_base[b, knot_cols] = torch.tensor(vb, dtype=rewards.dtype)
        v_next[b, knot_cols] = torch.tensor(vq, dtype=rewards.dtype)
        layouts.append((b, cols, knots))

    knot_adv = knot_gae(rewards, v_base, v_next, knot_mask, mask, cfg.gamma, cfg.lam)  # [B, T], at knots only
    adv = torch.zeros_like(rewards)  # [B, T]
    for b, cols, knots in layouts:
        at_knots = knot_adv[b, cols[torch.tensor(knots) - 1]]  # [n]
        adv[b, cols] = interpolate(at_knots, knots, cols.numel(), cfg.interp)
    return normalize_advantages(adv, mask, inp.group_ids, cfg.adv_norm)


TREPO = register(
    Algorithm(
        name="trepo",
        config_cls=TRePOConfig,
        advantages=trepo_advantages,
        policy_loss=clipped_policy_loss,
        plan_branches=plan_branches,
        plan_forks=plan_forks,
        requires=trepo_requires,
    )
)
