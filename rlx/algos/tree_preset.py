"""`algo=tree`: TRePO's machinery trained on every branch (docs/algorithms.md, "Training on every branch").

A preset of TRePO (rlx/algos/trepo.py) with `train_on_branches=true`: every response forks at a few reasoning-
step starts, every fork's rollouts are sampled at the training temperature (constant schedule) and every node
of the rollout tree is a training row with the tree advantages of rlx/algos/tree.py (TreeRL's global + local
by default, arXiv 2506.11902 Eq. 7). It reuses TRePO's functions unchanged and only changes defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rlx.algos.base import Algorithm, register
from rlx.algos.losses import clipped_policy_loss
from rlx.algos.tree import TreeConfig
from rlx.algos.trepo import TRePOConfig, plan_branches, plan_forks, trepo_advantages, trepo_requires


@dataclass(frozen=True)
class TreeAlgoConfig(TRePOConfig):
    name: str = "tree"
    samples_per_prompt: int = 4
    num_branch_points: int | str = 3
    branch_selection: str = "step_boundaries"
    rollouts_per_branch: int = 2
    temperature_schedule: str = "constant"
    tau_max: float = 1.0
    adv_norm: str = "group"
    train_on_branches: bool = True
    tree: TreeConfig = field(default_factory=TreeConfig)


TREE = register(
    Algorithm(
        name="tree",
        config_cls=TreeAlgoConfig,
        advantages=trepo_advantages,
        policy_loss=clipped_policy_loss,
        plan_branches=plan_branches,
        plan_forks=plan_forks,
        requires=trepo_requires,
    )
)
