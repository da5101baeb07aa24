"""One import point for the shared algorithm math, kept so existing `from rlx.algos.common import ...` lines
work. The math lives in topic modules: `stats` (masked and group statistics), `losses` (aggregation, clipped
surrogate, policy losses), `kl` (estimators, KL rewards, KL loss term), `gae` (GAE on a knot grid) and
`checks` (config validation)."""

from rlx.algos.base import ADV_NORMS, KL_ESTIMATORS, KL_MODES, LOSS_AGG_MODES
from rlx.algos.checks import check_choice, check_int, check_range
from rlx.algos.gae import discounted_returns, gae, knot_gae
from rlx.algos.kl import KL_FNS, kl_in_loss, kl_k1, kl_k2, kl_k3, kl_loss_term, kl_per_token, kl_token_rewards
from rlx.algos.losses import (
    AggScale,
    agg_loss,
    clipped_objective,
    clipped_policy_loss,
    clipped_surrogate,
    entropy_bonus,
    pg_loss,
    plain_policy_loss,
    ratio_metrics,
)
from rlx.algos.stats import (
    GroupStats,
    first_valid,
    group_stats,
    group_whiten,
    masked_mean,
    masked_sum,
    masked_var,
    masked_whiten,
    normalize_advantages,
    sequence_scores,
    terminal_rewards,
    valid_positions,
)

__all__ = [
    "ADV_NORMS", "KL_ESTIMATORS", "KL_FNS", "KL_MODES", "LOSS_AGG_MODES", "AggScale", "GroupStats", "agg_loss",
    "check_choice", "check_int", "check_range", "clipped_objective", "clipped_policy_loss", "clipped_surrogate",
    "discounted_returns",
    "entropy_bonus", "first_valid", "gae", "group_stats", "group_whiten", "kl_in_loss", "kl_k1", "kl_k2", "kl_k3",
    "kl_loss_term", "kl_per_token", "kl_token_rewards", "knot_gae", "masked_mean", "masked_sum", "masked_var",
    "masked_whiten", "normalize_advantages", "pg_loss", "plain_policy_loss", "ratio_metrics", "sequence_scores",
    "terminal_rewards", "valid_positions",
]
