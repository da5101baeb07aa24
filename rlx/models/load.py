"""Resolve and load models: the project's tiny model, a local checkpoint directory, or a hub id."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from rlx.data.configs import ConfigError
from rlx.models.config import ModelConfig

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def local_or_hub_path(cfg: ModelConfig) -> str:
    """A local directory (given, or downloaded from the hub) holding the model; models the project builds
    itself (`model=tiny`) are resolved one layer up, by `rlx.recipes.resolve_model_path`. Fails with a clear
    message before anything is loaded when the model cannot be had."""
    if cfg.path is not None:
        path = Path(cfg.path).expanduser()
        if not (path / "config.json").exists():
            raise ConfigError(f"model.path: {path} is not a Hugging Face model directory (no config.json)")
        return str(path)
    if cfg.hub_id is None:
        raise ConfigError(f"model={cfg.name}: set model.path to a local model directory or model.hub_id")
    return _download(cfg)


def _download(cfg: ModelConfig) -> str:
    from huggingface_hub import snapshot_download

    hint = (f"model={cfg.name} needs {cfg.hub_id} from the Hugging Face hub, which is not reachable here. "
            f"On a machine with network run `huggingface-cli download {cfg.hub_id} --local-dir DIR`, copy DIR "
            f"here and pass model.path=DIR")
    try:
        return snapshot_download(cfg.hub_id, cache_dir=cfg.cache_dir, local_files_only=_offline())
    except Exception as err:  # offline, DNS failure, 401, missing cache: all mean "point me at a copy"
        raise ConfigError(f"{hint} ({type(err).__name__})") from None


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false") or os.environ.get("CI") == "true"


def load_tokenizer(path: str):
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(path: str, dtype: str):
    model = AutoModelForCausalLM.from_pretrained(path, dtype=DTYPES[dtype])
    model.config.use_cache = True
    return model
