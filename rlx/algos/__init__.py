"""Algorithms: import every module so that REGISTRY holds them all (`from rlx.algos import REGISTRY, get`)."""

from rlx.algos import cispo, grpo, ppo, reinforce, remax, rloo, tree_preset, trepo, vineppo  # noqa: F401  (registers)
from rlx.algos.base import (
    REGISTRY,
    AdvantageInputs,
    Algorithm,
    KLConfig,
    Knot,
    LossInputs,
    get,
    no_branches,
    register,
)

__all__ = [
    "REGISTRY",
    "AdvantageInputs",
    "Algorithm",
    "KLConfig",
    "Knot",
    "LossInputs",
    "get",
    "no_branches",
    "register",
]
