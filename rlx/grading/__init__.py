"""Grading final answers: extraction, a pathological-answer screen, and math-verify equivalence in a pool of
sandboxed, time-limited worker processes.

The lowest layer that reads answers: `rlx.data` (task correctness), `rlx.rewards` (math rewards) and
`rlx.eval` use it; it imports nothing else from rlx. Modules: `extract` (styles, normalisation), `hedge`
(hedged answers, decorations), `screen` (cheap pre-screen), `verify` (math-verify, worker side), `worker`
(the worker process), `grader` (the pool), `arith` (the built-in arithmetic task's exact integer check).
"""

from rlx.grading.extract import extract_answer, normalize_answer, quick_decision, resolve_styles
from rlx.grading.grader import (
    EVAL_TIMEOUT_S,
    TRAIN_TIMEOUT_S,
    Grader,
    GradeResult,
    GraderStats,
    close_shared_graders,
    shared_grader,
)
from rlx.grading.screen import ScreenLimits, screen_answer

__all__ = ["EVAL_TIMEOUT_S", "TRAIN_TIMEOUT_S", "Grader", "GraderStats", "GradeResult", "ScreenLimits",
           "close_shared_graders", "extract_answer", "normalize_answer", "quick_decision", "resolve_styles",
           "screen_answer", "shared_grader"]
