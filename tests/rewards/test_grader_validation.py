"""The grader on real data (the GSM8K/MATH-500 subsets in tests/fixtures; scripts/validate_grader.py runs the full
sets): every reference solution grades correct against its own answer, and hostile completions score 0 within
the time limit."""

from __future__ import annotations

from rlx.data.gsm8k import load_gsm8k
from rlx.data.math500 import load_math500
from rlx.grading.grader import Grader
from rlx.rewards.validation import KILL_SLACK_S, adversarial_cases, check_adversarial, check_references


def test_every_gsm8k_test_solution_matches_its_answer(grader, fixture_data):
    check = check_references(grader, load_gsm8k("test", fixture_data / "gsm8k"), "gsm8k")
    assert (check.correct, check.total) == (30, 30), check.disagreements[:5]


def test_every_math500_solution_matches_its_answer(grader, fixture_data):
    check = check_references(grader, load_math500("test", fixture_data / "math500"), "math500")
    assert (check.correct, check.total) == (40, 40), check.disagreements


def test_math500_references_agree_through_math_verify_alone(fixture_data):
    """Without the string fast path every pair goes through math-verify: it must parse every answer."""
    problems = load_math500("test", fixture_data / "math500")
    with Grader(num_workers=2, fast_path=False) as pool:
        check = check_references(pool, problems, "math500")
    assert (check.correct, check.total) == (40, 40), check.disagreements


def test_adversarial_completions_score_zero_within_the_limit():
    with Grader(num_workers=2, timeout_s=2.0) as pool:  # the default limit: honest cases finish well inside
        rows = check_adversarial(pool)
    assert [row["name"] for row in rows] == [name for name, _ in adversarial_cases()]
    slow = [row for row in rows if row["seconds"] > 2.0 + KILL_SLACK_S]
    assert slow == []
    assert [row["correct"] for row in rows] == [False] * len(rows)
    screened = {row["name"] for row in rows if row["status"] == "screened"}
    assert screened == {"100 KB boxed expression", "power tower 10^{10^{10^{10}}}", "factorial tower",
                        "huge expansion", "10 000 nested braces", "invalid LaTeX", "binary junk"}
    assert pool.stats.timeouts == 0
