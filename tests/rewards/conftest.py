from __future__ import annotations

import pytest

from rlx.grading.grader import Grader


@pytest.fixture(scope="session")
def grader():
    """One warm two-worker pool for the whole session: worker start-up (sympy imports) is the slow part."""
    with Grader(num_workers=2, timeout_s=2.0) as pool:
        pool.wait_until_ready()
        yield pool
