"""Checks of an `rlx train` / `rlx eval` command line that need no heavy import (torch, transformers, vLLM).

They run first, right after the preemption handler is installed, so that on a loaded machine, where importing
torch alone can take tens of seconds, a command that cannot run is refused within seconds
(docs/configuration.md, "Bad input fails early, naming the key"): an unknown key, an option of a config group
that does not exist (`hydra/launcher=nonexistent`), `train.rollout_workers` without torchrun, a `data.path`
that does not exist, a `model.path` without a readable `config.json`. The sweep guard (rlx/sweep_guard.py)
then parses every job into the typed config, which imports the algorithms (torch).

Only Hydra, OmegaConf and the standard library are imported here.
"""

from __future__ import annotations

import difflib
import itertools
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rlx.data.configs import ConfigError

MAX_JOBS = 5000  # beyond this a sweep is checked on its first MAX_JOBS combinations only
# Keys that moved: the old spelling fails naming the new home, whether it came with `+` (then rlx.config's
# parser says so) or without (then Hydra rejects it and `explain` words the error with `moved_key_error` too).
MOVED_KEYS: dict[str, tuple[str, str]] = {  # old key -> (new key, why it lives there)
    "train.samples_per_prompt": ("algo.samples_per_prompt", "the group size's one owner is the algorithm"),
    "algo.critic_lr": ("algo.critic.lr", "PPO's critic has its own section"),
    "algo.vf_coef": ("algo.critic.vf_coef", "PPO's critic has its own section"),
    "algo.vf_clip": ("algo.critic.vf_clip", "PPO's critic has its own section"),
}


def moved_key_error(key: str, value: Any = "...") -> ConfigError | None:
    """'train.samples_per_prompt: moved to algo.samples_per_prompt (...); set algo.samples_per_prompt=4' for a
    key of MOVED_KEYS (`key` may carry Hydra's +/++/~ prefix), else None."""
    old = key.lstrip("+~")
    if old not in MOVED_KEYS:
        return None
    new, why = MOVED_KEYS[old]
    return ConfigError(f"{old}: moved to {new} ({why}); set {new}={value} instead")


def did_you_mean(key: str, valid: Any, path: str = "", sep: str = ".") -> str:
    """'; did you mean 'algo.gamma'?' for the closest valid key (a typo), '' when none is close."""
    close = difflib.get_close_matches(key, sorted(valid), n=1, cutoff=0.6)
    if not close:
        return ""
    return f"; did you mean '{path}{sep}{close[0]}'?" if path else f"; did you mean '{close[0]}'?"


def job_overrides(argv: Sequence[str]) -> list[list[str]]:
    """The override list of every job the command line describes (sweeps expanded), hydra.* keys left out."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    lines = [a for a in argv if "=" in a and not a.startswith("-")]
    parsed = OverridesParser.create().parse_overrides(lines)
    choices = []
    for override in parsed:
        key = override.get_key_element()
        if key.lstrip("+~").startswith("hydra"):
            continue
        if override.is_sweep_override():
            choices.append([f"{key}={value}" for value in override.sweep_string_iterator()])
        else:
            choices.append([override.input_line])
    return [list(combo) for combo in itertools.islice(itertools.product(*choices), MAX_JOBS)]


def preflight(config_name: str, argv: Sequence[str]) -> None:
    """Compose every job of `argv` (Hydra's own groups included) and run the cheap checks on it; raise
    ConfigError naming the key on the first failure (an unknown key, an option that does not exist, a bad
    path). A malformed override is left to Hydra, which words it with its grammar."""
    from hydra import initialize_config_module
    from hydra.errors import OverrideParseException

    try:
        jobs = job_overrides(argv)
    except OverrideParseException:
        return
    hydra_groups = [a for a in argv if "=" in a and not a.startswith("-") and a.lstrip("+~").startswith("hydra/")]
    with initialize_config_module(config_module="rlx.conf", version_base="1.3"):
        for overrides in jobs:
            where = f" (in the job {' '.join(overrides)})" if overrides else ""
            cfg = _compose(config_name, [*overrides, *hydra_groups], where)
            if cfg is not None:
                try:
                    check_job(cfg)
                except ConfigError as err:
                    raise ConfigError(f"{err}{where}") from None


def _compose(config_name: str, overrides: list[str], where: str):
    """The job's config with Hydra's own; a composition error is explained (`explain`) and raised."""
    from hydra import compose
    from hydra.errors import ConfigCompositionException

    try:
        return compose(config_name, overrides=overrides, return_hydra_config=True)
    except ConfigCompositionException as err:
        raise ConfigError(explain(f"{err} {err.__cause__ or ''}", overrides, config_name) + where) from None


def explain(message: str, overrides: list[str], config_name: str) -> str:
    """Hydra says "Key 'lam' is not in struct"; say which algorithm lacks it and suggest the closest key.
    "Could not find 'hydra/launcher/x'": name the option, the valid ones and the closest."""
    if "not in struct" in message and "Could not override '" in message:
        key = message.split("Could not override '", 1)[1].split("'", 1)[0]
        moved = moved_key_error(key, _value_of(key, overrides))
        if moved is not None:
            return str(moved)
        parent, _, leaf = key.rpartition(".")
        hint = did_you_mean(leaf, _sibling_keys(config_name, overrides, key, parent), parent)
        if parent == "algo":
            algo = next((o.split("=", 1)[1] for o in overrides if o.startswith("algo=")), "trepo")
            return f"{key}: algorithm {algo!r} does not use this key (it has no '{leaf}'){hint}"
        return f"{key}: unknown key{hint}"
    if "Could not find '" in message and "Available options in '" in message:
        group, _, option = message.split("Could not find '", 1)[1].split("'", 1)[0].rpartition("/")
        valid = [line.strip() for line in message.split("Available options in", 1)[1].split("\n")[1:]
                 if line.startswith("\t") and "provider=" not in line]
        hint = did_you_mean(option, valid, group.replace("/", "."), sep="=")
        return (f"{group.replace('/', '.')}={option}: no such option. Available options in '{group}': "
                f"{', '.join(valid)}{hint}")
    return message.split(" Key '")[0].strip()  # Hydra's own text (it lists an option group's valid options)


def _value_of(key: str, overrides: list[str]) -> str:
    """The value the job's overrides give `key` ('...' when none does)."""
    return next((o.split("=", 1)[1] for o in overrides if o.split("=", 1)[0].lstrip("+~") == key), "...")


def _sibling_keys(config_name: str, overrides: list[str], key: str, parent: str) -> list[str]:
    """The keys next to the misspelt one: the job composed without it (empty when that fails too)."""
    from hydra import compose
    from hydra.errors import ConfigCompositionException
    from omegaconf import OmegaConf

    rest = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") != key]
    try:
        cfg = compose(config_name, overrides=rest)
    except ConfigCompositionException:
        return []
    node = OmegaConf.select(cfg, parent) if parent else cfg
    return list(node.keys()) if OmegaConf.is_dict(node) else []


def check_job(cfg) -> None:
    """The checks of one composed job that read only its values and the file system."""
    from omegaconf import OmegaConf

    def value(key: str):
        return OmegaConf.select(cfg, key, default=None, throw_on_resolution_failure=False)

    check_world_size(value("train.rollout_workers"))
    if value("data.path") is not None:
        check_data_path(str(value("data.name")), Path(str(value("data.path"))).expanduser())
    if value("model.path") is not None:
        check_model_dir(Path(str(value("model.path"))).expanduser())


def check_world_size(workers) -> None:
    """`train.rollout_workers=k` needs torchrun with k + 1 ranks (rlx/train/rollout/remote.py, `place`)."""
    if not isinstance(workers, int) or workers <= 0:
        return
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world != workers + 1:
        raise ConfigError(f"train.rollout_workers={workers} needs torchrun --nproc_per_node={workers + 1} (one "
                          f"trainer rank + {workers} generation ranks); got WORLD_SIZE={world}")


def check_data_path(name: str, path: Path) -> None:
    """`data.path` exists: a file for data=jsonl, a file or a data directory otherwise (rlx/data/tasks.py)."""
    if name == "jsonl" and not path.is_file():
        raise ConfigError(f"data.path: no such file: {path}")
    if not path.exists():
        raise ConfigError(f"data.path: no such file or directory: {path}")


def check_model_dir(path: Path) -> None:
    """`model.path` is a Hugging Face model directory whose config.json is a JSON object: a broken one fails
    here, naming the file, line and column, not in transformers after minutes of start-up."""
    config = path / "config.json"
    if not config.is_file():
        raise ConfigError(f"model.path: {path} is not a Hugging Face model directory (no config.json)")
    try:
        parsed = json.loads(config.read_bytes())
    except json.JSONDecodeError as err:
        raise ConfigError(f"model.path: {config} is not valid JSON ({err.msg} at line {err.lineno}, column "
                          f"{err.colno})") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"model.path: cannot read {config}: {err}") from None
    if not isinstance(parsed, dict):
        raise ConfigError(f"model.path: {config} must hold a JSON object, got {type(parsed).__name__}")
