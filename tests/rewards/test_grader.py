"""Answer extraction, normalisation and the worker-pool grader (timeouts, crashes, batching)."""

from __future__ import annotations

import pytest

from rlx.grading.extract import extract_answer, normalize_answer, quick_decision
from rlx.grading.faults import faulty_checker
from rlx.grading.grader import Grader


@pytest.mark.parametrize(
    ("text", "style", "expected"),
    [
        ("so \\boxed{\\frac{1}{2}} done", "boxed", "\\frac{1}{2}"),
        ("\\boxed{1} then \\boxed{\\sqrt{x^{2}}}", "boxed", "\\sqrt{x^{2}}"),  # the last box
        ("\\fbox{7}", "boxed", "7"),
        ("\\boxed{\\{1,2\\}}", "boxed", "\\{1,2\\}"),  # escaped braces do not close the box
        ("\\boxed{3} and a cut-off \\boxed{4", "boxed", "3"),  # unbalanced last box -> previous one
        ("the answer is \\boxed 5.", "boxed", "5."),
        ("no box here 12", "boxed", None),
        ("work\n#### 1,234\n", "gsm8k", "1,234"),
        ("#### $18.", "gsm8k", "18"),
        ("#### one #### 42 apples", "gsm8k", "42"),
        ("#### \\frac{1}{2}", "gsm8k", "\\frac{1}{2}"),
        ("about 3 or 4.5 or -1,000.", "last_number", "-1,000"),
        ("1,2,3", "last_number", "3"),
        ("no digits", "last_number", None),
        ("\\boxed{2} #### 3 then 4", "auto", "2"),
        ("#### 3 then 4", "auto", "3"),
        ("then 4", "auto", "4"),
        ("#### 3 then 4", ("last_number", "gsm8k"), "4"),
        ("", "auto", None),
    ],
)
def test_extract_answer(text, style, expected):
    assert extract_answer(text, style) == expected


def test_extract_answer_rejects_unknown_style():
    with pytest.raises(ValueError, match="unknown extraction style 'latex'"):
        extract_answer("1", "latex")


def test_extraction_survives_deep_and_unclosed_braces():
    deep = "\\boxed{" + "{" * 10_000 + "1" + "}" * 10_000 + "}"
    assert extract_answer(deep, "boxed") == "{" * 10_000 + "1" + "}" * 10_000
    assert extract_answer("\\boxed{" * 10_000, "boxed") is None


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        (" $1,234$ ", "1234"),
        ("18.00", "18"),
        ("72.", "72"),
        ("10,\\!080", "10080"),
        ("\\$32,\\!348", "32348"),
        ("(1,2)", "(1,2)"),
        ("6 - 5i", "6-5i"),
        ("\\pi r", "\\pi r"),
        ("-0.0", "0"),
    ],
)
def test_normalize_answer(raw, normal):
    assert normalize_answer(raw) == normal


def test_quick_decision():
    assert quick_decision("1234", "1,234.0") is True
    assert quick_decision("72", "71") is False  # two plain decimals: decided without a CAS
    assert quick_decision("0.5", ".5") is None  # not a plain decimal: math-verify decides
    assert quick_decision("\\frac{1}{2}", "0.5") is None


def test_math_equivalence_through_workers(grader):
    pairs = [
        ("\\frac{1}{2}", "0.5", True),
        ("\\frac{14}{3}", "4\\frac{2}{3}", True),
        ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3,\\frac{\\pi}{2})", True),
        ("3\\sqrt{13}", "\\sqrt{117}", True),
        ("\\text{(C)}", "C", True),
        ("90^\\circ", "90", True),
        ("\\frac{1}{3}", "0.5", False),
        ("(1,2)", "(2,1)", False),
        ("p - q", "q - p", False),
        ("42", "41", False),
    ]
    results = grader.grade(
        [ref for ref, _, _ in pairs], [f"\\boxed{{{ans}}}" for _, ans, _ in pairs], "boxed"
    )
    assert [r.correct for r in results] == [expected for _, _, expected in pairs]
    assert all(r.status == "ok" for r in results)
    assert [r.extracted for r in results][:2] == ["0.5", "4\\frac{2}{3}"]


def test_no_answer_is_counted_and_scores_zero(grader):
    before = grader.stats.no_answer
    [result] = grader.grade(["5"], ["I am not sure."], "boxed")
    assert (result.correct, result.extracted, result.status) == (False, None, "no_answer")
    assert grader.stats.no_answer == before + 1


def test_reference_and_completion_counts_must_match(grader):
    with pytest.raises(ValueError, match="2 references but 1 completions"):
        grader.grade(["1", "2"], ["1"])


def test_real_timeout_is_scored_zero_counted_and_the_worker_replaced():
    with Grader(num_workers=1, timeout_s=0.5, screen=None) as pool:  # no pre-screen: the tower reaches sympy
        results = pool.grade(["\\frac{1}{2}", "\\frac{1}{2}"], ["\\boxed{10^{10^{10^{10}}}}", "\\boxed{0.5}"])
    assert [(r.correct, r.status) for r in results] == [(False, "timeout"), (True, "ok")]
    assert (pool.stats.timeouts, pool.stats.crashes, pool.stats.workers_replaced) == (1, 0, 1)


def test_faults_in_a_batch_do_not_stop_the_run():
    answers = ["a", "HANG", "b", "CRASH", "c", "RAISE", "d", "e", "f", "HANG", "g"]
    references = ["a", "x", "b", "x", "c", "x", "d", "wrong", "f", "x", "g"]
    with Grader(num_workers=2, timeout_s=0.5, fast_path=False, checker=faulty_checker, chunk_size=4) as pool:
        results = pool.grade(references, [f"\\boxed{{{a}}}" for a in answers], "boxed")
        again = pool.grade(["z"], ["\\boxed{z}"], "boxed")  # the replaced workers keep serving
    assert [r.status for r in results] == [
        "ok",
        "timeout",
        "ok",
        "crash",
        "ok",
        "crash",
        "ok",
        "ok",
        "ok",
        "timeout",
        "ok",
    ]
    assert [r.correct for r in results] == [
        True,
        False,
        True,
        False,
        True,
        False,
        True,
        False,
        True,
        False,
        True,
    ]
    assert again[0].correct
    stats = pool.stats.as_dict()
    assert (stats["graded"], stats["timeouts"], stats["crashes"], stats["workers_replaced"]) == (12, 2, 2, 3)
