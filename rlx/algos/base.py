"""The contract between the training loop and every algorithm.

The loop never branches on an algorithm's name. It asks the registered `Algorithm` for:
  1. `plan_branches`  - which extra rollouts to generate for a sampled response (TRePO knots,
                        ReMax's greedy baseline, VinePPO's step boundaries; nothing for GRPO/RLOO/PPO),
  2. `advantages`     - per-token advantages from a frozen batch (pure tensor function),
  3. `policy_loss`    - the surrogate to minimise for one optimisation step (pure tensor function),
  4. `value_loss`     - only when it requires CRITIC_VALUES (PPO), with a typed `ValueLossInputs`.
`requires(cfg)` declares the optional inputs (branch rollouts, critic values, step rewards) a configuration
reads; the trainer checks them once at start-up and fills exactly those fields of `AdvantageInputs`.

What an algorithm reads is its own typed view, not the trainer's batch. The trainer builds one frozen batch
per step from the rollout record (rlx/train/learn/batch.py, `FrozenBatch`: packed token ids, pi_old / pi_ref,
advantages, loss weights) and hands the algorithm `AdvantageInputs` (the advantage's inputs) and, per
micro-batch, `LossInputs` (the loss's) made from it. They stay separate types because (1) the algorithms are
pure functions that tests and the toy MDP call on hand-built tensors, with no model, tokenizer or packing;
(2) under torchrun exactly `AdvantageInputs` is gathered from every rank (rlx/train/infra/distributed.py), so it
holds what the advantage reads and nothing else; (3) nothing model-side (token ids, the loss weights) leaks
into an algorithm. The rollout tree reaches an algorithm one way only: `AdvantageInputs.rows`, the record's
own `RolloutTree` and node of every row; knots are read from it (`AdvantageInputs.knots`).

Algorithm hyper-parameters live in a frozen dataclass per algorithm (`config_cls`, a subclass of `AlgoConfig`);
its field names are exactly the keys allowed under `algo.` in the Hydra config (the sweep guard relies on that).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from rlx.algos.checks import check_choice, check_int, check_range
from rlx.record import RolloutTree

# the inputs an algorithm may need beyond the sampled responses; the trainer provides exactly the declared ones
BRANCH_ROLLOUTS = "branch_rollouts"  # rollouts branched from the response (TRePO knots, ReMax's greedy decode)
CRITIC_VALUES = "critic_values"  # a learned value model V(s_t) (PPO)
STEP_REWARDS = "step_rewards"  # one reward per reasoning step from a process reward (GRPO process/sentence)
# per-token scores of the sampled response that `plan_branches(..., scores=[T])` reads (algo.branch_selection)
TOKEN_ENTROPY = "token_entropy"  # H(pi_old(. | prompt, y_<t)), one no-grad trainer forward (entropy selection)
SAMPLER_LOGPROBS = "sampler_logprobs"  # log pi_sampler(y_t), free from the sampler (low_prob selection)
# train on every node of the rollout tree (algo.train_on_branches): every non-duplicate branch rollout sampled at
# the training temperature is a row of its own after the responses, and `AdvantageInputs.rows` says which
TREE_ROWS = "tree_rows"
INPUTS = (BRANCH_ROLLOUTS, CRITIC_VALUES, STEP_REWARDS, TOKEN_ENTROPY, SAMPLER_LOGPROBS, TREE_ROWS)
TREE_INPUTS = frozenset({BRANCH_ROLLOUTS, TREE_ROWS})  # the inputs read through the rows' trees

TreeRow = tuple[RolloutTree, int]  # (the record's tree, node index): where a row of the batch comes from

LOSS_AGG_MODES = ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm")
KL_ESTIMATORS = ("k1", "k2", "k3")
KL_MODES = ("none", "reward_token", "reward_response", "loss")
ADV_NORMS = ("none", "batch", "group")
ROLLOUT_CORRECTION_MODES = ("none", "tis", "mis", "seq_mask")


@dataclass(frozen=True)
class KLConfig:
    """KL to a frozen reference model (docs/algorithms.md, "KL to the reference"). beta == 0 means no
    reference model is loaded."""

    beta: float = 0.0
    estimator: str = "k1"  # k1 | k2 | k3 (Schulman's estimators)
    mode: str = "reward_token"  # reward_token | reward_response | loss | none

    def validate(self) -> None:
        check_range("kl.beta", self.beta, lo=0.0)
        check_choice("kl.estimator", self.estimator, KL_ESTIMATORS)
        check_choice("kl.mode", self.mode, KL_MODES)


@dataclass(frozen=True)
class RolloutCorrectionConfig:
    """`algo.rollout_correction`: correct for pi_sampler != pi_old (rlx/algos/rollout_correction.py; Yao et al.
    2025, "Your efficient RL framework secretly brings you off-policy RL training"; verl's rollout_corr docs)."""

    mode: str = "none"  # none | tis | mis | seq_mask
    cap: float = 2.0  # C: TIS truncation, and the band [1/C, C] of mis / seq_mask

    def validate(self) -> None:
        check_choice("rollout_correction.mode", self.mode, ROLLOUT_CORRECTION_MODES)
        if isinstance(self.cap, bool) or not isinstance(self.cap, (int, float)):
            raise ValueError(f"algo.rollout_correction.cap must be a number, got {self.cap!r}")
        check_range("rollout_correction.cap", self.cap, lo=1.0)


@dataclass(frozen=True)
class AlgoConfig:
    """What every algorithm shares; each algorithm's config subclasses it and `RunConfig.algo` is typed as it.

    `samples_per_prompt` is the group size G and has this one owner: the trainer samples that many responses
    per prompt and the group baselines read the same number (there is no `train.samples_per_prompt`)."""

    name: str = ""
    samples_per_prompt: int = 1  # G, responses sampled per prompt
    loss_agg: str = "token_mean"  # docs/algorithms.md, "Loss aggregation"
    optimization_num: int = 1  # epochs over each step's frozen batch
    kl: KLConfig = field(default_factory=KLConfig)
    entropy_coef: float = 0.0
    rollout_correction: RolloutCorrectionConfig = field(default_factory=RolloutCorrectionConfig)

    def validate(self) -> None:
        check_int("samples_per_prompt", self.samples_per_prompt, 1)
        if not isinstance(self.rollout_correction, RolloutCorrectionConfig):
            raise ValueError(f"algo.rollout_correction must be a RolloutCorrectionConfig, "
                             f"got {type(self.rollout_correction).__name__}")
        self.rollout_correction.validate()
        check_choice("loss_agg", self.loss_agg, LOSS_AGG_MODES)
        check_int("optimization_num", self.optimization_num, 1)
        check_range("entropy_coef", self.entropy_coef, lo=0.0)
        if not isinstance(self.kl, KLConfig):
            raise ValueError(f"algo.kl must be a KLConfig, got {type(self.kl).__name__}")
        self.kl.validate()
        for key in ("gamma", "lam", "adv_norm"):
            if hasattr(self, key):
                _check_shared(key, getattr(self, key))
        reason = self.group_baseline()
        if reason and self.samples_per_prompt < 2:
            raise ValueError(f"algo.samples_per_prompt={self.samples_per_prompt} with algo.name={self.name}: "
                             f"{reason} needs a group of >= 2 responses per prompt (every advantage would be 0); "
                             "set algo.samples_per_prompt >= 2")

    def group_baseline(self) -> str | None:
        """Why the advantages need >= 2 responses per prompt, or None."""
        return "adv_norm=group" if getattr(self, "adv_norm", None) == "group" else None

    def drops_zero_advantage_rows(self) -> bool:
        """True when a row whose advantages are all zero leaves the loss and its normalisers (SPO-tree,
        `algo.tree.drop_zero_adv`); the update's loss weights read it (rlx/train/learn/correction.py)."""
        return False

    # What the rollout phase reads of an algorithm's config (rlx/train/rollout/): declared here, so that train/
    # never looks for an algorithm's field names
    def first_round_rollouts(self) -> int:
        """M0 of a two-round adaptive branch phase (rlx/train/rollout/adaptive.py); 0 = the fixed schedule."""
        return 0

    def fork_levels(self) -> int:
        """Fork levels of the rollout tree: 1 = forks of the responses only; deeper levels are planned by the
        algorithm's `plan_forks`."""
        return 1

    def fork_budget(self) -> int | None:
        """At most this many branch rollouts per prompt, all levels together; None = no cap."""
        return None


@dataclass(frozen=True)
class ClippedAlgoConfig(AlgoConfig):
    """An algorithm with a clipped importance ratio (PPO, arXiv 1707.06347 Eq. 7)."""

    clip_eps: float = 0.2
    # DAPO clip-higher (arXiv 2503.14476 Eq. 10): decoupled lower / upper clip ranges; null = clip_eps
    clip_eps_low: float | None = None
    clip_eps_high: float | None = None

    def validate(self) -> None:
        check_range("clip_eps", self.clip_eps, lo=0.0, lo_open=True)
        if self.clip_eps_low is not None:
            check_range("clip_eps_low", self.clip_eps_low, lo=0.0, hi=1.0, lo_open=True, hi_open=True)
        if self.clip_eps_high is not None:
            check_range("clip_eps_high", self.clip_eps_high, lo=0.0, lo_open=True)
        super().validate()

    def clip_range(self) -> tuple[float, float]:
        """(eps_low, eps_high): the ratio is clipped to [1 - eps_low, 1 + eps_high]."""
        low = self.clip_eps if self.clip_eps_low is None else self.clip_eps_low
        high = self.clip_eps if self.clip_eps_high is None else self.clip_eps_high
        return low, high


@dataclass(frozen=True)
class CriticConfig:
    """`algo.critic`: the learned value model of algorithms that need one (PPO)."""

    lr: float = 1e-4  # its own AdamW learning rate
    vf_coef: float = 0.5  # c1 of PPO's objective (arXiv 1707.06347 Eq. 9)
    vf_clip: float = 0.0  # 0 = off; > 0: clip V to V_old +- vf_clip (PPO2 practice)

    def validate(self) -> None:
        check_range("critic.lr", self.lr, lo=0.0, lo_open=True)
        check_range("critic.vf_coef", self.vf_coef, lo=0.0)
        check_range("critic.vf_clip", self.vf_clip, lo=0.0)


def _check_shared(key: str, value) -> None:
    if key == "gamma":
        check_range("gamma", value, lo=0.0, hi=1.0, lo_open=True)
    elif key == "lam":
        check_range("lam", value, lo=0.0, hi=1.0)
    else:
        check_choice("adv_norm", value, ADV_NORMS)


@dataclass(frozen=True)
class Knot:
    """A branch point. `t` is 1-based (docs/algorithms.md, "Conventions"): keep response tokens y[0..t-2]
    (t-1 tokens), generate from y[t-1] on. One rollout is generated per entry of `temperatures` (0.0 = greedy)."""

    t: int
    temperatures: tuple[float, ...]


@dataclass(frozen=True)
class AdvantageInputs:
    """Everything an advantage function may read. B = trajectories in the batch, T = padded length.

    The optional fields are filled exactly when the algorithm declares the matching input (`Algorithm.requires`),
    which the trainer checks once at start-up; an algorithm may read its declared inputs without checks."""

    # [B, T] r_t(W): task RM at the last valid token + per-token KL reward; 0 on pad
    token_rewards: torch.Tensor
    response_mask: torch.Tensor  # [B, T] float, 1.0 on valid response tokens (EOS included when generated)
    group_ids: torch.Tensor  # [B] long, trajectories sampled for the same prompt share an id
    values: torch.Tensor | None = None  # [B, T] critic V(s_t) (state before token t): CRITIC_VALUES
    # BRANCH_ROLLOUTS or TREE_ROWS (`TREE_INPUTS`): row b trains node rows[b][1] of the rollout tree rows[b][0]
    # (rlx/record.py); its columns are that node's own tokens. Rows of one tree share a group id.
    rows: Sequence[TreeRow] | None = None
    # BRANCH_ROLLOUTS: branch_rewards[b][i][m] is the [L] tensor of per-token rewards of the m-th rollout
    # branched at knot `knots(b)[i]` (its continuation tokens only; task RM at its last token).
    branch_rewards: list[list[list[torch.Tensor]]] | None = None
    # Reasoning steps: 0-based token index of the last token of each step (always filled; the last token of a
    # non-empty response always ends a step), and one reward per step (STEP_REWARDS).
    step_ends: list[list[int]] | None = None
    step_rewards: list[list[float]] | None = None

    def knots(self, b: int) -> list[int]:
        """The 1-based knots t of row b (BRANCH_ROLLOUTS): where its node's direct branch rollouts fork
        (t = fork + 1), in the order of `knot_children`; empty when nothing branches from it."""
        tree, i = self.rows[b]
        return [fork + 1 for fork, _ in knot_children(tree, i)]


def knot_children(tree: RolloutTree, i: int) -> list[tuple[int, list[int]]]:
    """The direct branch rollouts of node i grouped by fork position, forks in order of first appearance:
    [(fork, child indices)]. For a TRePO response these are its knots t = fork + 1 with their M rollouts in
    schedule order."""
    forks: dict[int, list[int]] = {}
    for c in tree.children(i):
        forks.setdefault(tree.nodes[c].fork, []).append(c)
    return list(forks.items())


@dataclass(frozen=True)
class AggScale:
    """Normalisers of one optimizer step's batch, for losses computed on a part of it.

    tokens: valid response tokens; seqs: rows with at least one valid token; rows: all rows; width: the
    padded response length T of the whole batch (Dr.GRPO's constant length)."""

    tokens: float
    seqs: float
    rows: float
    width: int

    @staticmethod
    def of(mask: torch.Tensor) -> AggScale:
        return AggScale(tokens=float(mask.sum()), seqs=float((mask.sum(1) > 0).sum()), rows=float(mask.shape[0]),
                        width=int(mask.shape[1]))


@dataclass
class LossInputs:
    """Per-token tensors for one optimisation step (or one micro-batch of it); all [B, T] except where noted."""

    logp: torch.Tensor  # log pi_theta(y_t | ...), with grad
    old_logp: torch.Tensor  # log pi_old, frozen (the weights that sampled the batch)
    advantages: torch.Tensor  # frozen
    response_mask: torch.Tensor  # float
    group_ids: torch.Tensor  # [B]
    ref_logp: torch.Tensor | None = None  # log pi_ref when kl.mode == "loss" and beta > 0
    entropy: torch.Tensor | None = None  # [B, T] per-token entropy of pi_theta, for an entropy bonus
    step_ends: list[list[int]] | None = None  # for sentence-level ratios
    scale: AggScale | None = None  # the whole optimizer step's counts when these rows are a micro-batch of it


@dataclass
class ValueLossInputs:
    """The critic's regression for one optimisation step (or micro-batch); all [B, T]."""

    values: torch.Tensor  # V_theta(s_t), with grad
    old_values: torch.Tensor  # V_old(s_t), frozen (for value clipping)
    returns: torch.Tensor  # regression targets, frozen
    response_mask: torch.Tensor  # float
    scale: AggScale | None = None  # as in LossInputs


AdvantageFn = Callable[[AdvantageInputs, Any], torch.Tensor]
LossFn = Callable[[LossInputs, Any], tuple[torch.Tensor, dict[str, float]]]
ValueLossFn = Callable[[ValueLossInputs, Any], tuple[torch.Tensor, dict[str, float]]]
PlanFn = Callable[[Sequence[int], Sequence[int], Any, "torch.Generator"], list[Knot]]
# plan_forks(token_ids, step_starts, sampler_logprobs, cfg, rng) -> the forks of a branch rollout at tree levels >= 3
ForkPlanFn = Callable[[Sequence[int], Sequence[int], Sequence[float], Any, "torch.Generator"], list[Knot]]


def no_branches(
    response_ids: Sequence[int], step_starts: Sequence[int], cfg: Any, rng: torch.Generator
) -> list[Knot]:
    return []


def no_inputs(cfg: Any) -> frozenset[str]:
    return frozenset()


@dataclass(frozen=True)
class Algorithm:
    name: str
    config_cls: type
    advantages: AdvantageFn
    policy_loss: LossFn
    # plan_branches(response_ids, step_starts, cfg, rng) -> knots. step_starts are the 1-based positions
    # t at which a new reasoning step (line) begins, for step-boundary knot selection.
    plan_branches: PlanFn = no_branches
    # plan_forks: where a branch rollout forks again when `cfg.fork_levels()` > 1 (None: the algorithm grows no
    # deeper levels); its knots' `t` index the rollout's own tokens, as plan_branches' do a response's
    plan_forks: ForkPlanFn | None = None
    # requires(cfg) -> the subset of INPUTS this configuration reads; checked once when the trainer starts
    requires: Callable[[Any], frozenset[str]] = no_inputs
    value_loss: ValueLossFn | None = None  # with CRITIC_VALUES
    # value_targets(adv_inputs, cfg) -> [B, T] critic regression targets (PPO: lambda-returns A + V_old,
    # computed from the UN-normalised advantages). With CRITIC_VALUES.
    value_targets: AdvantageFn | None = None

    def needs(self, cfg: Any, what: str) -> bool:
        return what in self.requires(cfg)


REGISTRY: dict[str, Algorithm] = {}


def register(algo: Algorithm) -> Algorithm:
    if not issubclass(algo.config_cls, AlgoConfig):
        raise TypeError(f"algorithm {algo.name!r}: config_cls must subclass AlgoConfig")
    if algo.name in REGISTRY:
        raise ValueError(f"algorithm {algo.name!r} registered twice")
    REGISTRY[algo.name] = algo
    return algo


def get(name: str) -> Algorithm:
    if name not in REGISTRY:
        raise KeyError(f"unknown algorithm {name!r}; valid: {sorted(REGISTRY)}")
    return REGISTRY[name]
