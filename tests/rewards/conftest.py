from __future__ import annotations

import os
from pathlib import Path

import pytest

from rlx.rewards.grader import Grader


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


@pytest.fixture(scope="session")
def grader():
    """One warm two-worker pool for the whole session: worker start-up (sympy imports) is the slow part."""
    with Grader(num_workers=2, timeout_s=2.0) as pool:
        pool.wait_until_ready()
        yield pool
