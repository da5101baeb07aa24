from __future__ import annotations

import os
from pathlib import Path

import pytest


def shared_data_dir() -> Path:
    """`$RLX_SHARED_DATA`, else `shared/data` beside the checkout (CI clones the repo next to shared/)."""
    if os.environ.get("RLX_SHARED_DATA"):
        return Path(os.environ["RLX_SHARED_DATA"])
    return Path(__file__).resolve().parents[2].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = shared_data_dir()
    assert (path / "gsm8k" / "test.jsonl").is_file(), f"shared data not found at {path}"
    return path
