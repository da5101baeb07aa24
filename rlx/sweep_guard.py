"""Validate every job of a run or multirun before Hydra starts any of them.

Hydra composes a multirun's jobs one at a time, so a key that only some algorithms use (`algo.lam` in
`-m algo=trepo,grpo algo.lam=0,0.95`) would fail in the middle of a sweep, after earlier jobs loaded models and
trained. Here every combination of the command line's sweeps is composed and converted to the typed config
first (cheap: no model is touched), and the first bad one stops the command with a message naming the key
and the algorithm.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from hydra import compose, initialize_config_module
from hydra.errors import ConfigCompositionException, OverrideParseException
from omegaconf import OmegaConf

from rlx.config import ConfigError
from rlx.preflight import MAX_JOBS, explain, job_overrides  # noqa: F401  (job_overrides re-exported)


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
        raise ConfigError(explain(f"{err} {err.__cause__ or ''}", overrides, config_name) + where) from None
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
