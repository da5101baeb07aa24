"""Recipes above sampling and rewards: models the project builds itself (`model=tiny`, `model=tiny_long`: a tiny Qwen2
with an SFT warm start that samples and grades), and `resolve_model_path`, which knows them."""

from __future__ import annotations

from pathlib import Path

from rlx.models.config import ModelConfig
from rlx.models.load import local_or_hub_path


def resolve_model_path(cfg: ModelConfig) -> str:
    """A local directory (built, cached or downloaded) holding the model. Fails with a clear message
    before anything is loaded when the model cannot be had."""
    from rlx.recipes.tiny import TINY_MODELS, ensure_tiny_model

    if cfg.path is None and cfg.name in TINY_MODELS:  # model=tiny, model=tiny_long
        cache = Path(cfg.cache_dir).expanduser() if cfg.cache_dir else None
        return str(ensure_tiny_model(TINY_MODELS[cfg.name], cache))
    return local_or_hub_path(cfg)
