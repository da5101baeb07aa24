"""Start-up: the algorithm's declared inputs checked against what the run provides, and the models built.

The policy, reference and critic hold fp32 master weights (`model.dtype` is the forward passes' autocast
dtype, rlx/models/precision.py); the reference is frozen; the critic is a value head on a copy of the
policy's base model.
"""

from __future__ import annotations

import torch

from rlx.algos.base import BRANCH_ROLLOUTS, STEP_REWARDS, no_branches
from rlx.data.configs import ConfigError
from rlx.models.critic import ValueModel
from rlx.models.load import DTYPES, load_causal_lm
from rlx.models.lora import maybe_wrap_lora
from rlx.models.precision import MASTER_DTYPE, enable_gradient_checkpointing


def check_inputs(algo, cfg, reward_fn) -> None:
    """The algorithm's declared inputs can be provided; raised before any model loads."""
    needs = algo.requires(cfg.algo)
    if STEP_REWARDS in needs and getattr(reward_fn, "step_rewards", None) is None:
        raise ConfigError(f"algo.name={cfg.algo.name} needs per-step rewards, but reward_model.name="
                          f"{cfg.reward_model.name} scores whole responses only; pick a process reward")
    if (BRANCH_ROLLOUTS in needs) != (algo.plan_branches is not no_branches):
        raise ConfigError(f"algorithm {algo.name!r}: declares branch rollouts iff it plans branches")


def load_policy(model_path: str, model_cfg, device: torch.device):
    policy = load_causal_lm(model_path, MASTER_DTYPE)  # model.dtype is autocast's (precision.py)
    policy = maybe_wrap_lora(policy.to(device), model_cfg.lora)  # r = 0: unchanged
    if model_cfg.gradient_checkpointing:
        enable_gradient_checkpointing(policy)
    return policy.train()


def load_reference(model_path: str, device: torch.device):
    reference = load_causal_lm(model_path, MASTER_DTYPE).to(device).eval()  # = pi_theta at step 0
    reference.requires_grad_(False)
    return reference


def load_critic(model_path: str, model_cfg, device: torch.device) -> ValueModel:
    critic = ValueModel(model_path, DTYPES[MASTER_DTYPE]).to(device).train()
    if model_cfg.gradient_checkpointing:
        enable_gradient_checkpointing(critic.base)
    return critic
