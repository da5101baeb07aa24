"""Hydra entry point of `rlx train`: resolve the config, convert it to dataclasses, run the loop."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

NO_RUN_FLAGS = ("--help", "-h", "--hydra-help", "-sc", "--shell-completion", "--info")  # Hydra answers, no job
NO_LOCK_FLAGS = (*NO_RUN_FLAGS, "--cfg", "-c")  # --cfg prints the configuration without running the job


def main() -> None:
    """Check every job of the command line first (sweep guard), lock the run directory, then hand over to Hydra."""
    from rlx.data.configs import ConfigError
    from rlx.preflight import preflight
    from rlx.train.infra import preemption

    preemption.install()  # from here on a SIGTERM/SIGUSR1 stops the run with preemption.EXIT_CODE, never 143
    if not any(flag in sys.argv for flag in NO_RUN_FLAGS):
        try:
            preflight("train", sys.argv[1:])  # seconds, before torch is imported
            from rlx.config import parse_run_config
            from rlx.sweep_guard import validate_jobs

            validate_jobs("train", sys.argv[1:], parse_run_config)
        except ConfigError as err:
            raise SystemExit(f"rlx train: bad config: {err}") from None
    if not any(flag in sys.argv for flag in NO_LOCK_FLAGS):
        try:
            sys.argv[1:] = lock_run_directory(sys.argv[1:])
        except ConfigError as err:
            raise SystemExit(f"rlx train: {err}") from None
    train_job()


def lock_run_directory(argv: list[str]) -> list[str]:
    """Take the run directory's lock before Hydra's job writes `.hydra/` and its log file into it, so that of
    two runs started at once on one directory the loser fails in one line, its files never written over the
    winner's (an unwritable directory fails here too, before Hydra would print a traceback). Returns `argv`
    with `hydra.run.dir` pinned to the directory locked: Hydra resolves `${now:...}` again when its job starts,
    possibly a second later. A multirun's jobs lock their own subdirectories when they start (`open_run`)."""
    from hydra import compose, initialize_config_module
    from hydra.errors import HydraException

    from rlx.sweep_guard import job_overrides
    from rlx.train.infra.rundir import RunLock, check_unlocked, check_writable, make_run_dir

    if int(os.environ.get("RANK", "0")) != 0:  # torchrun: rank 0 holds the lock of the shared run directory
        return argv
    hydra_overrides = [a for a in argv if a.lstrip("+~").startswith("hydra.") and "=" in a]
    try:
        with initialize_config_module(config_module="rlx.conf", version_base="1.3"):
            cfg = compose("train", overrides=[*job_overrides(argv)[0], *hydra_overrides], return_hydra_config=True)
    except (HydraException, IndexError, ValueError):
        return argv  # Hydra reports its own override errors
    if "-m" in argv or "--multirun" in argv:  # each job gets its own subdirectory of the sweep directory
        check_writable(Path(cfg.hydra.sweep.dir), "hydra.sweep.dir")
        return argv
    run_dir, key = Path(cfg.hydra.run.dir), "hydra.run.dir"
    check_writable(run_dir, key)
    output_dir = OmegaConf.select(cfg, "output_dir", throw_on_resolution_failure=False)
    if output_dir is not None and Path(output_dir) != run_dir:  # the run lives in output_dir, Hydra's files not
        check_unlocked(run_dir)
        run_dir, key = Path(output_dir), "output_dir"
    make_run_dir(run_dir, key)
    RunLock.acquire(run_dir, key)  # kept by `rundir.open_run`; released when the run ends (or at exit)
    return _pin_run_dir(argv, OmegaConf.to_container(cfg.hydra.run, resolve=False)["dir"], str(cfg.hydra.run.dir))


def _pin_run_dir(argv: list[str], configured: str, resolved: str) -> list[str]:
    """`argv` with `hydra.run.dir=<resolved>` when the configured value holds interpolations (`${now:...}`)."""
    if configured == resolved:
        return argv
    kept = [a for a in argv if not a.lstrip("+~").startswith("hydra.run.dir=")]
    return [*kept, f"hydra.run.dir={_override_value(resolved)}"]


def _override_value(text: str) -> str:
    """`text` as a value of Hydra's override grammar: bare when plain, else single-quoted with its quotes
    (and the backslashes before them or before the closing quote) escaped."""
    if re.fullmatch(r"[\w\-./:~@%+]+", text):
        return text
    return "'" + re.sub(r"(\\*)('|$)", lambda m: m.group(1) * 2 + ("\\'" if m.group(2) else ""), text) + "'"


@hydra.main(config_path="pkg://rlx.conf", config_name="train", version_base="1.3")
def train_job(cfg: DictConfig) -> float:
    from hydra.core.hydra_config import HydraConfig

    from rlx.config import ConfigError, parse_run_config
    from rlx.console import quiet_libraries
    from rlx.train.learn.update import NonFiniteError
    from rlx.train.loop import train

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
