"""Typed configuration: the Hydra-composed job is converted here into frozen dataclasses.

Nothing below the CLI sees a DictConfig. Conversion is strict: an unknown key, a wrong type, an option
outside its allowed set or an out-of-range value raises `ConfigError` naming the full key (e.g.
`algo.gamma`), before any model is loaded.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

from rlx import algos
from rlx.algos.base import AlgoConfig
from rlx.data.configs import DATASETS, ConfigError, _require  # noqa: F401  (ConfigError is re-exported)
from rlx.models.config import QWEN2_LINEAR_PROJECTIONS, LoRAConfig, ModelConfig  # noqa: F401  (re-exported)
from rlx.preflight import MOVED_KEYS, did_you_mean, moved_key_error  # noqa: F401  (re-exported)
from rlx.sampling.config import SAMPLERS, HFSamplerConfig, VLLMSamplerConfig  # noqa: F401  (re-exported)


@dataclass(frozen=True)
class TrainerConfig:
    steps: int = 200
    prompts_per_step: int = 32  # responses per step = prompts_per_step x algo.samples_per_prompt
    lr: float = 5e-5
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    temperature: float = 1.0
    max_new_tokens: int = 56
    eval_every: int = 50
    eval_size: int = 500
    train_size: int = 20000
    progress_bar: bool = True
    save_every: int = 0  # resumable checkpoint every N steps (0 = only the final HF checkpoint)
    keep_last: int = 2  # resumable checkpoints kept
    micro_batch_tokens: int | None = 2048  # max padded tokens per forward pass, longest first (null: by size)
    micro_batch_size: int = 1024  # sequences per forward pass when micro_batch_tokens is null
    # every shared prefix (a group's prompt, a branch's ancestors) computed once per pass; null = on where measured
    # faster (CPU: make bench-prefix), off on a GPU (not measured there)
    share_prefix: bool | None = None
    mini_batches: int = 1  # optimizer steps per epoch over a step's batch (groups stay whole)
    skip_nonfinite: bool = False  # a non-finite loss or gradient skips the optimizer step instead of stopping
    num_threads: int = 0  # torch threads of the trainer's own passes (0 = keep the process's)
    strategy: Literal["ddp", "fsdp"] = "ddp"  # under torchrun: DistributedDataParallel or FSDP2 sharding
    cpu_offload: bool = False  # fsdp only: sharded parameters, gradients and optimizer state live on the CPU
    # compute budgets (rlx/train/budget.py): whichever of steps / tokens / seconds comes first; 0 = off
    token_budget: int = 0  # stop after this many generated training tokens (policy + branch)
    time_budget_s: float = 0.0  # stop after this many seconds of training wall time (no eval / checkpoint)
    eval_every_tokens: int = 0  # evaluate each time tokens_total crosses a multiple of this
    # DAPO pieces (arXiv 2503.14476; rlx/algos/dapo.py)
    dynamic_sampling: bool = False  # drop zero-reward-variance groups and refill from further prompts
    max_refill_rounds: int = 3  # extra sampling rounds per step at most (then train on fewer groups)
    overlong_filter: bool = False  # truncated responses (no EOS) leave the loss
    # asynchronous rollouts (rlx/train/rollout/remote.py, docs/pending/async.md)
    max_staleness: int = 0  # k: step s trains on the records of policy version max(0, s - 1 - k); 0 = synchronous
    rollout_workers: int = 0  # torchrun ranks that only generate (the last N); 0 = generation in the trainer
    decoupled_objective: bool | None = None  # decoupled PPO (behaviour weight pi_prox / pi_behav); null = k >= 1
    rollout_timeout_s: float = 600.0  # a generation worker silent this long stops the run (with a checkpoint)

    def shares_prefixes(self, device_type: str) -> bool:
        """`share_prefix`, its null resolved for the device the update runs on."""
        return device_type == "cpu" if self.share_prefix is None else self.share_prefix

    def uses_decoupled_objective(self) -> bool:
        """The decoupled PPO objective (rlx/algos/decoupled.py): on by default exactly when batches may be stale."""
        return self.max_staleness >= 1 if self.decoupled_objective is None else self.decoupled_objective

    def validate(self) -> None:
        _require(self.steps >= 1, "train.steps", "must be >= 1", self.steps)
        _require(self.prompts_per_step >= 1, "train.prompts_per_step", "must be >= 1", self.prompts_per_step)
        _require(self.lr >= 0, "train.lr", "must be >= 0", self.lr)
        _require(self.weight_decay >= 0, "train.weight_decay", "must be >= 0", self.weight_decay)
        _require(self.grad_clip > 0, "train.grad_clip", "must be > 0", self.grad_clip)
        _require(self.temperature > 0, "train.temperature", "must be > 0", self.temperature)
        _require(self.max_new_tokens >= 1, "train.max_new_tokens", "must be >= 1", self.max_new_tokens)
        _require(self.eval_every >= 0, "train.eval_every", "must be >= 0", self.eval_every)
        _require(self.eval_size >= 1, "train.eval_size", "must be >= 1", self.eval_size)
        _require(self.save_every >= 0, "train.save_every", "must be >= 0", self.save_every)
        _require(self.keep_last >= 1, "train.keep_last", "must be >= 1", self.keep_last)
        _require(self.micro_batch_tokens is None or self.micro_batch_tokens >= 1, "train.micro_batch_tokens",
                 "must be >= 1 or null", self.micro_batch_tokens)
        _require(self.micro_batch_size >= 1, "train.micro_batch_size", "must be >= 1", self.micro_batch_size)
        _require(1 <= self.mini_batches <= self.prompts_per_step, "train.mini_batches",
                 f"must be in [1, train.prompts_per_step={self.prompts_per_step}] (groups stay whole)",
                 self.mini_batches)
        _require(self.num_threads >= 0, "train.num_threads", "must be >= 0 (0 = keep)", self.num_threads)
        _require(self.strategy == "fsdp" or not self.cpu_offload, "train.cpu_offload",
                 "needs train.strategy=fsdp (DDP keeps full replicas on the device)", self.cpu_offload)
        _require(self.token_budget >= 0, "train.token_budget", "must be >= 0 (0 = off)", self.token_budget)
        _require(self.time_budget_s >= 0, "train.time_budget_s", "must be >= 0 (0 = off)", self.time_budget_s)
        _require(self.eval_every_tokens >= 0, "train.eval_every_tokens", "must be >= 0 (0 = off)",
                 self.eval_every_tokens)
        _require(self.max_refill_rounds >= 0, "train.max_refill_rounds", "must be >= 0", self.max_refill_rounds)
        self._validate_async()

    def _validate_async(self) -> None:
        _require(self.max_staleness >= 0, "train.max_staleness", "must be >= 0 (0 = synchronous)", self.max_staleness)
        _require(self.rollout_workers >= 0, "train.rollout_workers", "must be >= 0", self.rollout_workers)
        _require(self.max_staleness == 0 or self.rollout_workers >= 1, "train.max_staleness",
                 "needs train.rollout_workers >= 1: generation runs ahead in its own torchrun rank(s) "
                 "(torchrun --nproc_per_node=1+N)", self.max_staleness)
        _require(self.rollout_timeout_s > 0, "train.rollout_timeout_s", "must be > 0", self.rollout_timeout_s)


@dataclass(frozen=True)
class OverlongPenaltyConfig:
    """`reward_model.overlong_penalty`: DAPO's soft overlong punishment (arXiv 2503.14476 Eq. 13,
    rlx/rewards/overlong.py), added to every reward the loop books; cache = 0 turns it off."""

    max_len: int | None = None  # L_max in tokens; null = train.max_new_tokens
    cache: int = 0  # L_cache: the linear ramp from 0 down to -1 over the last `cache` tokens before L_max

    def validate(self) -> None:
        _require(self.max_len is None or self.max_len >= 1, "reward_model.overlong_penalty.max_len",
                 "must be >= 1 or null", self.max_len)
        _require(self.cache >= 0, "reward_model.overlong_penalty.cache", "must be >= 0 (0 = off)", self.cache)


@dataclass(frozen=True)
class RewardConfig:
    """`name` picks a registered reward factory; every other key (but `overlong_penalty`, applied by the loop
    on token lengths) is passed to it as a keyword."""

    name: str = "arith"
    options: dict[str, Any] = field(default_factory=dict)
    overlong_penalty: OverlongPenaltyConfig = field(default_factory=OverlongPenaltyConfig)


@dataclass(frozen=True)
class LoggerConfig:
    """`metrics.jsonl` always; `name: wandb` mirrors it to Weights & Biases (keys below `mode` are W&B only)."""

    name: Literal["jsonl", "wandb"] = "jsonl"
    log_samples_every: int = 10  # sample completions every N optimizer steps, for `rlx inspect` (0 = never)
    num_samples: int = 4  # rows per sample table
    mode: Literal["online", "offline", "disabled"] = "online"
    project: str = "rlx"
    entity: str | None = None
    group: str | None = None  # null = the sweep's id under `-m`, so a sweep's runs share one W&B group
    tags: list[str] = field(default_factory=list)
    run_name: str | None = None  # null = Hydra's override_dirname under `-m`, else W&B's own name
    init_timeout: float = 60.0  # seconds to wait for wandb.init before falling back to JSONL only

    def validate(self) -> None:
        _require(self.log_samples_every >= 0, "logger.log_samples_every", "must be >= 0", self.log_samples_every)
        _require(self.num_samples >= 1, "logger.num_samples", "must be >= 1", self.num_samples)
        _require(self.init_timeout > 0, "logger.init_timeout", "must be > 0", self.init_timeout)


@dataclass(frozen=True)
class RunConfig:
    seed: int
    output_dir: str
    resume: str | None  # null | auto (newest valid checkpoint in the run directory) | restart | a checkpoint path
    train: TrainerConfig
    algo: AlgoConfig  # the registered algorithm's own config dataclass (a subclass)
    model: ModelConfig
    reward_model: RewardConfig
    sampler: HFSamplerConfig | VLLMSamplerConfig
    data: Any  # the selected option's dataclass from DATASETS
    logger: LoggerConfig


@dataclass(frozen=True)
class EvalSettings:
    size: int | None = 500  # the first `size` test problems (None = all)
    max_new_tokens: int = 56
    n: int = 1  # samples per problem: pass@1 is their mean, pass@k for k = 1, 2, 4, ..., n, maj@n
    temperature: float = 0.0  # 0 = greedy (then n must be 1: greedy samples are identical)

    def validate(self) -> None:
        _require(self.size is None or self.size >= 1, "eval.size", "must be >= 1 or null", self.size)
        _require(self.max_new_tokens >= 1, "eval.max_new_tokens", "must be >= 1", self.max_new_tokens)
        _require(self.n >= 1, "eval.n", "must be >= 1", self.n)
        _require(self.temperature >= 0, "eval.temperature", "must be >= 0", self.temperature)
        _require(self.n == 1 or self.temperature > 0, "eval.n",
                 "must be 1 when eval.temperature=0 (greedy samples are identical)", self.n)


@dataclass(frozen=True)
class EvalConfig:
    seed: int
    output_dir: str
    eval: EvalSettings
    model: ModelConfig
    sampler: HFSamplerConfig | VLLMSamplerConfig
    data: Any  # the selected option's dataclass from DATASETS


def parse_run_config(raw: Mapping[str, Any]) -> RunConfig:
    """Convert a resolved, plain-dict job config (from Hydra) into a validated RunConfig."""
    raw = dict(raw)
    algo_cls = _algorithm_config_class(raw.get("algo", {}))
    cfg = RunConfig(
        seed=_convert(int, raw.get("seed"), "seed"),
        output_dir=_convert(str, raw.get("output_dir"), "output_dir"),
        resume=check_resume(_convert(str | None, raw.get("resume"), "resume")),
        train=to_dataclass(TrainerConfig, raw.get("train", {}), "train"),
        algo=to_dataclass(algo_cls, raw.get("algo", {}), "algo"),
        model=to_dataclass(ModelConfig, raw.get("model", {}), "model"),
        reward_model=_reward_config(raw.get("reward_model", {})),
        sampler=_named(SAMPLERS, raw.get("sampler", {}), "sampler"),
        data=_named(DATASETS, raw.get("data", {}), "data"),
        logger=to_dataclass(LoggerConfig, raw.get("logger", {}), "logger"),
    )
    _check_unknown(raw, {f.name for f in dataclasses.fields(RunConfig)}, "")
    _check_frontier(cfg)
    return cfg


def _check_frontier(cfg: RunConfig) -> None:
    """Options whose validity depends on another section (docs/frontier.md)."""
    check_tree_temperature = getattr(cfg.algo, "check_train_temperature", None)
    if check_tree_temperature is not None:  # train_on_branches: rollouts must be sampled at train.temperature
        try:
            check_tree_temperature(cfg.train.temperature)
        except ValueError as err:
            raise ConfigError(str(err)) from None
    _require(not cfg.train.dynamic_sampling or cfg.algo.samples_per_prompt >= 2, "train.dynamic_sampling",
             "needs algo.samples_per_prompt >= 2 (a group of one has no reward variance); samples_per_prompt="
             f"{cfg.algo.samples_per_prompt}", cfg.train.dynamic_sampling)
    penalty = cfg.reward_model.overlong_penalty
    max_len = cfg.train.max_new_tokens if penalty.max_len is None else penalty.max_len
    _require(penalty.cache <= max_len, "reward_model.overlong_penalty.cache",
             f"must be <= overlong_penalty.max_len ({max_len}: null = train.max_new_tokens)", penalty.cache)


def parse_eval_config(raw: Mapping[str, Any]) -> EvalConfig:
    raw = dict(raw)
    cfg = EvalConfig(
        seed=_convert(int, raw.get("seed"), "seed"),
        output_dir=_convert(str, raw.get("output_dir"), "output_dir"),
        eval=to_dataclass(EvalSettings, raw.get("eval", {}), "eval"),
        model=to_dataclass(ModelConfig, raw.get("model", {}), "model"),
        sampler=_named(SAMPLERS, raw.get("sampler", {}), "sampler"),
        data=_named(DATASETS, raw.get("data", {}), "data"),
    )
    _check_unknown(raw, {f.name for f in dataclasses.fields(EvalConfig)}, "")
    return cfg


def _algorithm_config_class(raw_algo: Mapping[str, Any]) -> type:
    name = raw_algo.get("name")
    if name not in algos.REGISTRY:
        raise ConfigError(f"algo.name: unknown algorithm {name!r}; valid: {sorted(algos.REGISTRY)}")
    return algos.get(name).config_cls


def _named(options: dict[str, type], raw: Mapping[str, Any], path: str):
    name = raw.get("name")
    if name not in options:
        raise ConfigError(f"{path}.name: unknown option {name!r}; valid: {sorted(options)}")
    return to_dataclass(options[name], raw, path)


def _reward_config(raw: Mapping[str, Any]) -> RewardConfig:
    from rlx.rewards.base import REWARDS
    from rlx.rewards.registry import check_reward_options  # imports every reward so they register

    name = raw.get("name")
    if name not in REWARDS:
        raise ConfigError(f"reward_model.name: unknown reward {name!r}; valid: {sorted(REWARDS)}")
    overlong = to_dataclass(OverlongPenaltyConfig, raw.get("overlong_penalty") or {}, "reward_model.overlong_penalty")
    options = {k: v for k, v in raw.items() if k not in ("name", "overlong_penalty")}
    for key, value in options.items():
        if value == "???":
            raise ConfigError(f"reward_model.{key}: required for reward {name!r}; set reward_model.{key}=...")
    try:
        check_reward_options(name, options)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    return RewardConfig(name=name, options=options, overlong_penalty=overlong)


def to_dataclass(cls: type, raw: Any, path: str):
    """Strictly build dataclass `cls` from a mapping; errors name `path.key`."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{path}: expected a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    _check_unknown(raw, names, path, owner=getattr(cls, "__name__", ""))
    values = {}
    for f in dataclasses.fields(cls):
        if f.name in raw:
            values[f.name] = _convert(hints[f.name], raw[f.name], f"{path}.{f.name}")
    obj = cls(**values)
    validate = getattr(obj, "validate", None)
    if validate is not None:
        try:
            validate()
        except ConfigError:
            raise
        except ValueError as err:  # algorithm configs raise ValueError naming `algo.<key>`
            raise ConfigError(str(err)) from None
    return obj


def _check_unknown(raw: Mapping[str, Any], names: set[str], path: str, owner: str = "") -> None:
    unknown = sorted(set(raw) - names)
    for key in unknown:
        moved = moved_key_error(f"{path}.{key}" if path else key, raw[key])
        if moved is not None:
            raise moved
    if unknown:
        key = f"{path}.{unknown[0]}" if path else unknown[0]
        where = f" (the {raw.get('name')!r} option of '{path}' has no such key)" if "name" in raw else ""
        hint = did_you_mean(unknown[0], names, path)
        raise ConfigError(f"{key}: unknown key{where}{hint}; valid keys: {sorted(names)}")


def check_resume(resume: str | None) -> str | None:
    """`resume` is null, `auto`, `restart` or an existing checkpoint directory: a typo fails now, not after model
    loading."""
    if resume not in (None, "auto", "restart") and not Path(resume).is_dir():
        raise ConfigError(f"resume: no checkpoint directory at {resume!r}; use resume=auto (the newest checkpoint "
                          "of the run directory), resume=restart (start again at step 1 in the run directory), "
                          "resume=null, or the path of a checkpoints/step_<n> directory")
    return resume


def _convert(hint: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _convert(option, value, path)
            except ConfigError as err:
                errors.append(str(err))
        kinds = " or ".join("null" if a is type(None) else getattr(a, "__name__", str(a)) for a in args)
        raise ConfigError(errors[0] if len(errors) == 1 else f"{path}: expected {kinds}, got {value!r}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{path}: must be one of {list(args)}, got {value!r}")
        return value
    if dataclasses.is_dataclass(hint):
        return to_dataclass(hint, value, path)
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        item = args[0] if args else Any
        return origin(_convert(item, v, f"{path}[{i}]") for i, v in enumerate(value))
    if origin is dict or hint is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        return dict(value)
    return _convert_scalar(hint, value, path)


def _convert_scalar(hint: Any, value: Any, path: str) -> Any:
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):  # nan/inf would poison every number downstream, silently
                raise ConfigError(f"{path}: must be a finite number, got {value!r}")
            return float(value)
    elif hint is str:
        if isinstance(value, str):
            return value
    else:
        return value
    raise ConfigError(f"{path}: expected {hint.__name__}, got {value!r}")


