"""Hydra entry point of `rlx train`: resolve the config, convert it to dataclasses, run the loop."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig, OmegaConf


@hydra.main(config_path="pkg://rlx.conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float:
    from rlx.config import ConfigError, parse_run_config
    from rlx.train.loop import train

    try:
        run_cfg = parse_run_config(OmegaConf.to_container(cfg, resolve=True))
    except ConfigError as err:
        raise SystemExit(f"rlx train: bad config: {err}") from None
    summary = train(run_cfg, resolved_config=OmegaConf.to_yaml(cfg, resolve=True))
    return summary["accuracy_after"]  # returned so that sweepers can optimise it
