"""Validate every job of a run or multirun before Hydra starts any of them.

Hydra composes a multirun's jobs one at a time, so a key that only some algorithms use (`algo.lam` in
`-m algo=trepo,grpo algo.lam=0,0.95`) would fail in the middle of a sweep, after earlier jobs loaded models and
trained. Here every combination of the command line's sweeps is composed and converted to the typed config
first (cheap: no model is touched), and the first bad one stops the command with a message naming the key
and the algorithm.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

from hydra import compose, initialize_config_module
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import ConfigCompositionException, OverrideParseException
from omegaconf import OmegaConf

from rlx.config import ConfigError, did_you_mean, moved_key_error

MAX_JOBS = 5000  # beyond this a sweep is validated on its first MAX_JOBS combinations only


def job_overrides(argv: Sequence[str]) -> list[list[str]]:
    """The override list of every job the command line describes (sweeps expanded), hydra.* keys left out."""
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


def validate_jobs(config_name: str, argv: Sequence[str], parse: Callable[[dict], object]) -> int:
    """Compose and parse every job; raise ConfigError on the first bad one. Returns the number checked."""
    try:
        jobs = job_overrides(argv)
    except OverrideParseException:
        return 0  # Hydra itself reports malformed overrides, with its own grammar message
    with initialize_config_module(config_module="rlx.conf", version_base="1.3"):
        for overrides in jobs:
            _validate_job(config_name, overrides, parse)
    return len(jobs)


def _validate_job(config_name: str, overrides: list[str], parse: Callable[[dict], object]) -> None:
    where = f" (in the job {' '.join(overrides)})" if overrides else ""
    try:
        cfg = compose(config_name, overrides=[*overrides, "output_dir=/dev/null"])
    except ConfigCompositionException as err:
        raise ConfigError(_explain(f"{err} {err.__cause__ or ''}", overrides, config_name) + where) from None
    try:
        parsed = parse(OmegaConf.to_container(cfg, resolve=True))
        _check_paths(parsed)
    except ConfigError as err:
        raise ConfigError(f"{err}{where}") from None


def _check_paths(cfg: object) -> None:
    """A local model directory that is not one fails now, not after earlier jobs have run."""
    path = getattr(getattr(cfg, "model", None), "path", None)
    if path is not None:
        from rlx.recipes import resolve_model_path

        resolve_model_path(cfg.model)


def _explain(message: str, overrides: list[str], config_name: str) -> str:
    """Hydra says "Key 'lam' is not in struct"; say which algorithm lacks it and suggest the closest key."""
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
    rest = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") != key]
    try:
        cfg = compose(config_name, overrides=[*rest, "output_dir=/dev/null"])
    except ConfigCompositionException:
        return []
    node = OmegaConf.select(cfg, parent) if parent else cfg
    return list(node.keys()) if OmegaConf.is_dict(node) else []
