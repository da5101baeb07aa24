"""Shared fixtures: the real tiny model (built once, cached) and paths to the shared data sets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never download anything
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """../shared/data next to the checkout (CI clones the repo beside shared/), or $RLX_SHARED_DATA."""
    env = os.environ.get("RLX_SHARED_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = shared_data_dir()
    assert (path / "gsm8k" / "test.jsonl").is_file(), f"shared data not found at {path}"
    return path


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    """The project's real tiny model (SFT warm-started), built on first use into the rlx cache."""
    from rlx.recipes.tiny import TinyModelSpec, ensure_tiny_model

    return ensure_tiny_model(TinyModelSpec())
