"""Rewards. Importing this package registers the built-in rewards in `rlx.rewards.base.REWARDS`."""

from rlx.rewards import composite, hf_rm, math_rewards  # noqa: F401 - imported for registration
from rlx.rewards.base import REWARDS, RewardFn, register_reward

__all__ = ["REWARDS", "RewardFn", "register_reward"]
