"""Recipes above sampling and rewards: models the project builds itself (`model=tiny`: a tiny Qwen2 with an
SFT warm start that samples and grades), and `resolve_model_path`, which knows them."""

from __future__ import annotations

from pathlib import Path

from rlx.models.config import ModelConfig
from rlx.models.load import local_or_hub_path


def resolve_model_path(cfg: ModelConfig) -> str:
    """A local directory (built, cached or downloaded) holding the model. Fails with a clear message
    before anything is loaded when the model cannot be had."""
    if cfg.path is None and cfg.name == "tiny":
        from rlx.recipes.tiny import TinyModelSpec, ensure_tiny_model

        cache = Path(cfg.cache_dir).expanduser() if cfg.cache_dir else None
        return str(ensure_tiny_model(TinyModelSpec(), cache))
    return local_or_hub_path(cfg)
