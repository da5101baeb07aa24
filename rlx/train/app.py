"""Hydra entry point of `rlx train`: resolve the config, convert it to dataclasses, run the loop."""

from __future__ import annotations

import os
import sys
from pathlib import Path

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
        try:
            check_run_directory(sys.argv[1:])
        except ConfigError as err:
            raise SystemExit(f"rlx train: {err}") from None
    train_job()


def check_run_directory(argv: list[str]) -> None:
    """An unwritable run directory, or one another run holds, fails here in one line: before Hydra creates
    it (Hydra would print a traceback) and before it writes its own files into a busy one."""
    from hydra import compose, initialize_config_module
    from hydra.errors import HydraException

    from rlx.sweep_guard import job_overrides
    from rlx.train.rundir import check_unlocked, check_writable

    if int(os.environ.get("RANK", "0")) != 0:  # torchrun: rank 0 holds the lock of the shared run directory
        return
    hydra_overrides = [a for a in argv if a.lstrip("+~").startswith("hydra.") and "=" in a]
    multirun = "-m" in argv or "--multirun" in argv
    try:
        with initialize_config_module(config_module="rlx.conf", version_base="1.3"):
            cfg = compose("train", overrides=[*job_overrides(argv)[0], *hydra_overrides], return_hydra_config=True)
    except (HydraException, IndexError, ValueError):
        return  # Hydra reports its own override errors
    if multirun:  # each job gets its own subdirectory of the sweep directory
        check_writable(Path(cfg.hydra.sweep.dir), "hydra.sweep.dir")
        return
    run_dir = Path(cfg.hydra.run.dir)
    check_writable(run_dir, "hydra.run.dir")
    check_unlocked(run_dir)
    output_dir = OmegaConf.select(cfg, "output_dir", throw_on_resolution_failure=False)
    if output_dir is not None and Path(output_dir) != run_dir:
        check_writable(Path(output_dir), "output_dir")
        check_unlocked(Path(output_dir))


@hydra.main(config_path="pkg://rlx.conf", config_name="train", version_base="1.3")
def train_job(cfg: DictConfig) -> float:
    from hydra.core.hydra_config import HydraConfig

    from rlx.config import ConfigError, parse_run_config
    from rlx.console import quiet_libraries
    from rlx.train.loop import train
    from rlx.train.update import NonFiniteError

    quiet_libraries(show_all=bool(HydraConfig.get().verbose))  # library chatter to the run's log file

    try:
        run_cfg = parse_run_config(OmegaConf.to_container(cfg, resolve=True))
    except ConfigError as err:
        raise SystemExit(f"rlx train: bad config: {err}") from None
    try:
        summary = train(run_cfg, resolved_config=OmegaConf.to_yaml(cfg, resolve=True))
    except (ConfigError, NonFiniteError) as err:  # e.g. a model that cannot be had, or a NaN loss: no traceback
        raise SystemExit(f"rlx train: {err}") from None
    return summary["accuracy_after"]  # returned so that sweepers can optimise it
