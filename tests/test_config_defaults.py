"""One truth for every default: the YAML of each config group option is what `rlx train` / `rlx eval` run and
what users read, so every dataclass default in code (rlx/config.py, the algorithm configs of rlx/algos, the
sampler, model and data configs) must equal it, and every dataclass key must appear in the YAML (a key missing
there is invisible to users and cannot be overridden without `+`). Through real Hydra and the real parser."""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from rlx import algos
from rlx.config import (
    SAMPLERS,
    EvalSettings,
    LoggerConfig,
    ModelConfig,
    OverlongPenaltyConfig,
    TrainerConfig,
    parse_eval_config,
    parse_run_config,
)
from rlx.data.configs import DATASETS
from rlx.helptext import group_options
from rlx.rewards.base import REWARDS

REQUIRED = {("data", "jsonl"): "data.path=/data/any.jsonl", ("reward_model", "hf_rm"): "reward_model.model_path=/rm"}
# options that share one dataclass with the dataclass's own option (model=tiny, logger=jsonl) set these keys to
# their own values: that is what the option is for
OWN_KEYS = {"model": {"name", "hub_id", "package", "gguf_file", "dtype"}, "logger": {"name", "log_samples_every"}}
# options that are a variant of another option of their group (same `name`) and set these keys on purpose
CHAT_ARITH = {"min_ops", "max_ops", "operators", "prompt_template", "few_shot"}
VARIANT_KEYS = {("data", "arith_long"): {"min_ops", "max_ops"}, ("data", "arith_chat"): CHAT_ARITH,
                ("data", "arith_chain"): CHAT_ARITH}
WANDB_ONLY = {"mode", "project", "entity", "group", "tags", "run_name", "init_timeout"}  # absent from logger=jsonl


def raw_job(config: str, *overrides: str) -> dict:
    with initialize_config_module(config_module="rlx.conf", version_base="1.3"):
        cfg = compose(config, overrides=["output_dir=/tmp/rlx-test", *overrides])
    return OmegaConf.to_container(cfg, resolve=True)


def drift(parsed: Any, default: Any, path: str, skip: set[str] = frozenset()) -> list[str]:
    """'algo.lr: YAML 5e-05, dataclass 3e-05' for every field where the parsed YAML and the default differ."""
    found = []
    for f in dataclasses.fields(default):
        if f.name in skip:
            continue
        yaml_value, code_value = getattr(parsed, f.name), getattr(default, f.name)
        if dataclasses.is_dataclass(code_value) and dataclasses.is_dataclass(yaml_value):
            found += drift(yaml_value, code_value, f"{path}.{f.name}")
        elif yaml_value != code_value:
            found.append(f"{path}.{f.name}: YAML {yaml_value!r}, {type(default).__name__} default {code_value!r}")
    return found


def unlisted(cls: type, raw: dict, path: str, allowed: set[str] = frozenset()) -> list[str]:
    """Dataclass keys the YAML does not list (nested dataclasses included)."""
    found = []
    for f in dataclasses.fields(cls):
        if f.name not in raw:
            found += [] if f.name in allowed else [f"{path}.{f.name}"]
            continue
        value = f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
        if dataclasses.is_dataclass(value) and isinstance(raw[f.name], dict):
            found += unlisted(type(value), raw[f.name], f"{path}.{f.name}")
    return found


def default_of(group: str, name: str) -> Any:
    """The dataclass a parsed group section was built from, with its code defaults."""
    if group == "algo":
        cls = algos.get(name).config_cls
    elif group in ("sampler", "data"):
        cls = (SAMPLERS if group == "sampler" else DATASETS)[name]
    else:
        cls = {"model": ModelConfig, "logger": LoggerConfig}[group]
    return cls()


def report(where: str, problems: list[str]) -> str:
    return (f"{where}: the YAML is what runs and what users see; make the code default equal it (or list the key "
            "in the YAML):\n  " + "\n  ".join(problems))


CASES = [(group, option) for group in ("algo", "sampler", "data", "model", "logger") for option in group_options(group)]


@pytest.mark.parametrize(("group", "option"), CASES, ids=[f"{g}={o}" for g, o in CASES])
def test_every_group_option_equals_its_dataclass_defaults(group, option):
    extra = REQUIRED.get((group, option))
    raw = raw_job("train", f"{group}={option}", *([extra] if extra else []))
    section = getattr(parse_run_config(raw), group)
    default = default_of(group, section.name)
    skip = OWN_KEYS.get(group, set()) if section.name != default.name else set()
    skip = skip | ({extra.split("=")[0].split(".")[1]} if extra else set())  # a required key has no default
    skip = skip | VARIANT_KEYS.get((group, option), set())
    problems = drift(section, default, group, skip)
    allowed = WANDB_ONLY if (group, option) == ("logger", "jsonl") else set()
    problems += [f"{key}: not in the YAML" for key in unlisted(type(default), raw[group], group, allowed)]
    assert not problems, report(f"conf/{group}/{option}.yaml", problems)


def test_train_and_eval_sections_equal_their_dataclass_defaults():
    raw = raw_job("train")
    cfg = parse_run_config(raw)
    problems = drift(cfg.train, TrainerConfig(), "train")
    problems += drift(cfg.reward_model.overlong_penalty, OverlongPenaltyConfig(), "reward_model.overlong_penalty")
    problems += [f"{key}: not in the YAML" for key in unlisted(TrainerConfig, raw["train"], "train")]
    raw_eval = raw_job("eval")
    problems += drift(parse_eval_config(raw_eval).eval, EvalSettings(), "eval")
    problems += [f"{key}: not in the YAML" for key in unlisted(EvalSettings, raw_eval["eval"], "eval")]
    assert not problems, report("conf/train.yaml, conf/eval.yaml", problems)


@pytest.mark.parametrize("option", group_options("reward_model"))
def test_reward_options_equal_their_factory_defaults(option):
    """A reward's keys are its factory's keywords: where a keyword has a default, the YAML states the same."""
    extra = REQUIRED.get(("reward_model", option))
    cfg = parse_run_config(raw_job("train", f"reward_model={option}", *([extra] if extra else [])))
    params = inspect.signature(REWARDS[cfg.reward_model.name]).parameters
    problems = []
    for key, value in cfg.reward_model.options.items():
        code = params[key].default
        if code is not inspect.Parameter.empty and _plain(code) != _plain(value):
            problems.append(f"reward_model.{key}: YAML {value!r}, factory default {code!r}")
    assert not problems, report(f"conf/reward_model/{option}.yaml", problems)


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def test_the_drift_check_names_the_key_and_both_values():
    """The check itself: a dataclass whose default moved from its YAML value is reported key by key."""
    yaml_side = TrainerConfig()
    moved = dataclasses.make_dataclass("TrainerConfig", [("steps", int, 40), ("lr", float, yaml_side.lr)])()
    assert drift(yaml_side, moved, "train") == ["train.steps: YAML 200, TrainerConfig default 40"]
    assert unlisted(TrainerConfig, {"steps": 1}, "train")[:2] == ["train.prompts_per_step", "train.lr"]
