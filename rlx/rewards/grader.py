"""Moved to `rlx.grading` (a low package that data, rewards and eval share); these names stay importable."""

from rlx.grading.extract import (  # noqa: F401
    AUTO_STYLES,
    SINGLE_STYLES,
    extract_answer,
    normalize_answer,
    quick_decision,
    resolve_styles,
)
from rlx.grading.grader import (  # noqa: F401
    EVAL_TIMEOUT_S,
    TRAIN_TIMEOUT_S,
    Grader,
    GradeResult,
    GraderStats,
    Status,
    close_shared_graders,
    shared_grader,
)
from rlx.grading.verify import check_equivalence  # noqa: F401
