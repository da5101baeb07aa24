"""Hydra entry point of `rlx eval`."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig, OmegaConf


@hydra.main(config_path="pkg://rlx.conf", config_name="eval", version_base="1.3")
def main(cfg: DictConfig) -> float:
    from rlx.config import ConfigError, parse_eval_config
    from rlx.eval.run import evaluate

    try:
        eval_cfg = parse_eval_config(OmegaConf.to_container(cfg, resolve=True))
    except ConfigError as err:
        raise SystemExit(f"rlx eval: bad config: {err}") from None
    return evaluate(eval_cfg)["accuracy"]
