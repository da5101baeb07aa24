"""Hydra entry point of `rlx train`: resolve the config, convert it to dataclasses, run the loop."""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig, OmegaConf


def main() -> None:
    """Check every job of the command line first (sweep guard), then hand over to Hydra."""
    from rlx.config import ConfigError, parse_run_config
    from rlx.sweep_guard import validate_jobs

    if not any(flag in sys.argv for flag in ("--help", "-h", "--hydra-help", "-sc", "--shell-completion", "--info")):
        try:
            validate_jobs("train", sys.argv[1:], parse_run_config)
        except ConfigError as err:
            raise SystemExit(f"rlx train: bad config: {err}") from None
    train_job()


@hydra.main(config_path="pkg://rlx.conf", config_name="train", version_base="1.3")
def train_job(cfg: DictConfig) -> float:
    from rlx.config import ConfigError, parse_run_config
    from rlx.train.loop import train
    from rlx.train.update import NonFiniteError

    try:
        run_cfg = parse_run_config(OmegaConf.to_container(cfg, resolve=True))
    except ConfigError as err:
        raise SystemExit(f"rlx train: bad config: {err}") from None
    try:
        summary = train(run_cfg, resolved_config=OmegaConf.to_yaml(cfg, resolve=True))
    except (ConfigError, NonFiniteError) as err:  # e.g. a model that cannot be had, or a NaN loss: no traceback
        raise SystemExit(f"rlx train: {err}") from None
    return summary["accuracy_after"]  # returned so that sweepers can optimise it
