"""VinePPO (arXiv 2410.01679) as a preset of TRePO (TRePO arXiv 2506.02553 Remark 8: VinePPO is "the same
algorithm as our TRePO", derived under the Zero-Reward Assumption; docs/algorithms.md, "VinePPO"). It reuses
TRePO's functions unchanged and only changes defaults: knots at every reasoning-step start
(branch_selection=step_boundaries, num_branch_points=all), K = 9 on-policy rollouts per knot
(temperature_schedule=constant, tau_max=1.0).
"""

from __future__ import annotations

from dataclasses import dataclass

from rlx.algos.base import Algorithm, register
from rlx.algos.losses import clipped_policy_loss
from rlx.algos.trepo import TRePOConfig, plan_branches, plan_forks, trepo_advantages, trepo_requires


@dataclass(frozen=True)
class VinePPOConfig(TRePOConfig):
    name: str = "vineppo"
    samples_per_prompt: int = 1  # values come from the K rollouts per step, not from siblings
    branch_selection: str = "step_boundaries"
    rollouts_per_branch: int = 9
    num_branch_points: int | str = "all"
    temperature_schedule: str = "constant"
    tau_max: float = 1.0
    pooling: str = "none"  # VinePPO: each step's value from its own K rollouts, no Eq. 31 pooling
    interp: str = "constant"  # every token of step i gets r + V_{i+1} - V_i (its step's advantage)


VINEPPO = register(
    Algorithm(
        name="vineppo",
        config_cls=VinePPOConfig,
        advantages=trepo_advantages,
        policy_loss=clipped_policy_loss,
        plan_branches=plan_branches,
        plan_forks=plan_forks,
        requires=trepo_requires,
    )
)
