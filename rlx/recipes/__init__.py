"""Recipes above sampling and rewards: models the project builds itself (`model=tiny`, `model=tiny_long`: a tiny Qwen2
with an SFT warm start that samples and grades), and `resolve_model_path`, which knows them."""

from __future__ import annotations

from pathlib import Path

from rlx.data.configs import ConfigError
from rlx.models.config import ModelConfig
from rlx.models.gguf import ensure_converted, packaged_file
from rlx.models.load import local_or_hub_path


def resolve_model_path(cfg: ModelConfig) -> str:
    """A local directory (built, cached or downloaded) holding the model. Fails with a clear message
    before anything is loaded when the model cannot be had."""
    from rlx.recipes.tiny import TINY_MODELS, default_cache_dir, ensure_tiny_model

    cache = Path(cfg.cache_dir).expanduser() if cfg.cache_dir else None
    if cfg.path is None and cfg.name in TINY_MODELS:  # model=tiny, model=tiny_long
        return str(ensure_tiny_model(TINY_MODELS[cfg.name], cache))
    if cfg.path is None and cfg.gguf_file is not None:  # model=smollm2: a packaged GGUF, converted once
        return str(ensure_converted(gguf_source(cfg), cache or default_cache_dir()))
    return local_or_hub_path(cfg)


def gguf_source(cfg: ModelConfig) -> Path:
    """The GGUF file of `model.package` / `model.gguf_file`, checked before anything is converted or loaded."""
    if cfg.package is not None:
        return packaged_file(cfg.package, cfg.gguf_file)
    path = Path(cfg.gguf_file).expanduser()
    if not path.is_file():
        raise ConfigError(f"model.gguf_file: no such file: {path}")
    return path
