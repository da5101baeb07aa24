"""Hydra entry point of `rlx eval`.

Several data sets in one command: `rlx eval data=gsm8k,math500 ...`. Hydra reads a comma list as a sweep,
which it accepts only with `-m`; `rlx eval` adds `-m` itself when an override sweeps, so the command runs as
a multirun: one eval job per value, in this process and in order, each writing its own eval.json and
samples.jsonl under `<hydra.sweep.dir>/<job number>_<data set>/`. At the end it prints one row per job and
writes the rows to `<hydra.sweep.dir>/summary.json`. `data.path` may be a data root holding one folder
per data set (e.g. `data.path=/data` with /data/gsm8k/ and /data/math500/), so one path serves all of them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

MULTIRUN_FLAGS = ("-m", "--multirun")
NO_RUN_FLAGS = ("--help", "-h", "--hydra-help", "-sc", "--shell-completion", "--info", "--cfg", "-c")  # no job
_finished: list[tuple[dict[str, Any], str | None]] = []  # (result, sweep dir) of each job of this command


@hydra.main(config_path="pkg://rlx.conf", config_name="eval", version_base="1.3")
def eval_job(cfg: DictConfig) -> float:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from rlx.config import ConfigError, parse_eval_config
    from rlx.console import quiet_libraries
    from rlx.eval.run import evaluate

    quiet_libraries(show_all=bool(HydraConfig.get().verbose))  # library chatter to the run's log file
    try:
        eval_cfg = parse_eval_config(OmegaConf.to_container(cfg, resolve=True))
        result = evaluate(eval_cfg)
    except ConfigError as err:
        raise SystemExit(f"rlx eval: bad config: {err}") from None
    hydra_cfg = HydraConfig.get()
    _finished.append((result, hydra_cfg.sweep.dir if hydra_cfg.mode == RunMode.MULTIRUN else None))
    return result["accuracy"]  # returned so that sweepers can optimise it


def main() -> None:
    from rlx.data.configs import ConfigError
    from rlx.preflight import preflight

    if not any(flag in sys.argv for flag in NO_RUN_FLAGS):
        try:
            preflight("eval", sys.argv[1:])  # seconds, before torch is imported (docs/configuration.md)
        except ConfigError as err:
            raise SystemExit(f"rlx eval: bad config: {err}") from None
    sys.argv = with_multirun_for_sweeps(sys.argv)
    _finished.clear()
    eval_job()
    sweep_dirs = {sweep_dir for _, sweep_dir in _finished if sweep_dir}
    if len(_finished) > 1 or sweep_dirs:
        write_summary([result for result, _ in _finished], sweep_dirs)


def with_multirun_for_sweeps(argv: list[str]) -> list[str]:
    """`argv` with `--multirun` added when an override is a sweep (`data=a,b`) and no multirun flag is set."""
    if any(arg in MULTIRUN_FLAGS for arg in argv[1:]):
        return argv
    sweeping = _sweep_keys([arg for arg in argv[1:] if "=" in arg and not arg.startswith("-")])
    if not sweeping:
        return argv
    print(f"[rlx] eval: {', '.join(sweeping)} lists several values: running one eval per value (as with -m)")
    args = argv[1:]
    if "data" in sweeping:
        # Hydra composes a multirun's primary config without the sweep, i.e. with the default data=arith,
        # where `data.path` does not exist. `++` (set or add) gets past that compose; each job's own compose
        # has the real data option, and parse_eval_config still rejects a key the option does not have.
        args = ["++" + arg if arg.startswith("data.") else arg for arg in args]
    return [argv[0], "--multirun", *args]


def _sweep_keys(overrides: list[str]) -> list[str]:
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException:  # let Hydra itself report the malformed override
        return []
    return [o.key_or_group for o in parsed if o.is_sweep_override()]


def write_summary(results: list[dict[str, Any]], sweep_dirs: set[str]) -> None:
    from rlx.eval.run import format_summary, headline

    print(format_summary(results))
    rows = [{"data": r["data"], "num_problems": r["num_problems"], "n": r["n"], "temperature": r["temperature"],
             "template_sha256": r.get("template_sha256"), **headline(r)} for r in results]
    for sweep_dir in sweep_dirs:
        path = Path(sweep_dir) / "summary.json"
        path.write_text(json.dumps(rows, indent=2))
        print(f"[rlx] summary in {path}")


if __name__ == "__main__":
    main()
