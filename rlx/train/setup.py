"""Start-up: the algorithm's declared inputs checked against what the run provides, and the models built.

The policy, reference and critic hold fp32 master weights (`model.dtype` is the forward passes' autocast
dtype, rlx/models/precision.py); the reference is frozen; the critic is a value head on a copy of the
policy's base model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from rlx.algos.base import BRANCH_ROLLOUTS, STEP_REWARDS, no_branches
from rlx.data.configs import ConfigError
from rlx.data.tasks import Task, load_task
from rlx.models.critic import ValueModel
from rlx.models.load import DTYPES, load_causal_lm, load_tokenizer
from rlx.models.lora import maybe_wrap_lora, trainable_parameters
from rlx.models.precision import MASTER_DTYPE, enable_gradient_checkpointing
from rlx.recipes import resolve_model_path
from rlx.rewards.registry import build_reward
from rlx.train.infra import distributed as dist
from rlx.train.infra import parallel


@dataclass(frozen=True)
class RunInputs:
    """What every process of a run reads before its models: the task (prompts rendered for the tokenizer), the
    reward, the model's path and tokenizer. The trainer and a generation rank build them alike."""

    task: Task
    reward_fn: object
    model_path: Path
    tokenizer: object


def load_inputs(cfg, algo) -> RunInputs:
    """The run's inputs; data and reward errors surface here, before any model loads."""
    task = load_task(cfg.data, cfg.train.train_size, cfg.seed)
    reward_fn = build_reward(cfg.reward_model.name, cfg.reward_model.options)
    check_inputs(algo, cfg, reward_fn)
    model_path = resolve_model_path(cfg.model)
    tokenizer = load_tokenizer(model_path)
    return RunInputs(task.with_tokenizer(tokenizer), reward_fn, model_path, tokenizer)  # chat templates: tokenizer


def check_inputs(algo, cfg, reward_fn) -> None:
    """The algorithm's declared inputs can be provided; raised before any model loads."""
    needs = algo.requires(cfg.algo)
    if STEP_REWARDS in needs and getattr(reward_fn, "step_rewards", None) is None:
        raise ConfigError(f"algo.name={cfg.algo.name} needs per-step rewards, but reward_model.name="
                          f"{cfg.reward_model.name} scores whole responses only; pick a process reward")
    if (BRANCH_ROLLOUTS in needs) != (algo.plan_branches is not no_branches):
        raise ConfigError(f"algorithm {algo.name!r}: declares branch rollouts iff it plans branches")


def check_world(cfg) -> None:
    """Under torchrun, what the ranks must agree on, said before any model loads: the strategy's limits
    (`parallel.check_strategy`) and enough prompts on every rank for `train.mini_batches` (each rank then
    takes as many optimizer steps, whose gradient averages are collectives)."""
    parallel.check_strategy(cfg.train.strategy, cfg.sampler.name, cfg.model.lora.r)
    per_rank = cfg.train.prompts_per_step // dist.world_size()  # the fewest prompts any rank holds
    if dist.world_size() > 1 and cfg.train.mini_batches > per_rank:
        raise ConfigError(f"train.mini_batches={cfg.train.mini_batches} exceeds the {per_rank} prompts some of the "
                          f"{dist.world_size()} ranks hold (train.prompts_per_step={cfg.train.prompts_per_step}): "
                          "every rank must take the same number of optimizer steps")


def wrap_for_strategy(cfg, policy, critic, reference) -> tuple:
    """(train_policy, train_critic, reference) under `train.strategy` (`rlx.train.infra.parallel`): what every
    forward goes through (DDP wrappers; FSDP2 shards the modules in place); in one process the modules
    themselves. Build the optimizers afterwards, on `policy`'s and `critic`'s parameters (FSDP2: DTensors)."""
    t = cfg.train
    train_policy = parallel.wrap(policy, t.strategy, t.cpu_offload)
    train_critic = parallel.wrap(critic, t.strategy, t.cpu_offload) if critic is not None else None
    if reference is not None:
        reference = parallel.wrap(reference, t.strategy, t.cpu_offload)  # ddp: frozen, unchanged
    return train_policy, train_critic, reference


def build_optimizers(cfg, policy, critic) -> list[torch.optim.Optimizer]:
    """AdamW over the policy's trainable parameters (LoRA: the adapters), then the critic's (`algo.critic.lr`);
    built after `wrap_for_strategy`, on the parameters the strategy left (FSDP2: DTensor shards)."""
    t = cfg.train
    optimizers = [adamw(list(trainable_parameters(policy)), lr=t.lr, weight_decay=t.weight_decay)]
    if critic is not None:
        optimizers.append(adamw(list(critic.parameters()), lr=cfg.algo.critic.lr))
    return optimizers


def adamw(params: list[torch.nn.Parameter], **options) -> torch.optim.AdamW:
    """AdamW, fused in one process whose parameters all live on the CPU: torch's fused CPU kernel updates each
    tensor in one pass where its default there (a for-loop of ~a dozen ops per tensor) reads it many times;
    measured 4.2x faster steps on SmolLM2-135M and 8x on the tiny model (make bench-prefix, docs/benchmarks.md).
    Under torchrun torch's default, so DDP's plain tensors and FSDP2's DTensor shards (whose fused state does not
    reload from a checkpoint) take the same steps; on CUDA torch's default too (not measured here)."""
    fused = dist.world_size() == 1 and all(type(p.data) is torch.Tensor and p.device.type == "cpu" for p in params)
    return torch.optim.AdamW(params, fused=True if fused and params else None, **options)


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
