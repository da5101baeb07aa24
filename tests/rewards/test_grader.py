"""Answer extraction, normalisation and the worker-pool grader (timeouts, crashes, batching)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from rlx.grading.extract import extract_answer, normalize_answer, quick_decision
from rlx.grading.faults import faulty_checker
from rlx.grading.grader import Grader
from rlx.grading.screen import screen_answer


@pytest.mark.parametrize(
    ("text", "style", "expected"),
    [
        ("so \\boxed{\\frac{1}{2}} done", "boxed", "\\frac{1}{2}"),
        ("\\boxed{1} then \\boxed{\\sqrt{x^{2}}}", "boxed", "\\{1, \\sqrt{x^{2}}\\}"),  # every box: a set
        ("\\fbox{7}", "boxed", "7"),
        ("\\boxed{\\{1,2\\}}", "boxed", "\\{1,2\\}"),  # escaped braces do not close the box
        ("\\boxed{3} and a cut-off \\boxed{4", "boxed", "3"),  # unbalanced last box -> previous one
        ("the answer is \\boxed 5.", "boxed", "5."),
        ("no box here 12", "boxed", None),
        ("work\n#### 1,234\n", "gsm8k", "1,234"),
        ("#### $18.", "gsm8k", "18"),
        ("#### one #### 42 apples", "gsm8k", "\\{one, 42\\}"),  # every #### counts: two final answers
        ("#### \\frac{1}{2}", "gsm8k", "\\frac{1}{2}"),
        ("about 3, 4.5 and -1,000.", "last_number", "\\{3, 4.5, -1,000\\}"),  # a list offers all three
        ("about 3 or 4.5 or -1,000.", "last_number", "\\{3, 4.5, -1,000\\}"),  # a hedge offers all three
        ("1,2,3", "last_number", "\\{1, 2, 3\\}"),
        ("no digits", "last_number", None),
        ("\\boxed{2} #### 3 then 4", "auto", "\\{2, 3\\}"),  # one rule across markers: both count
        ("#### 3 then 4", "auto", "3"),
        ("then 4", "auto", "4"),
        ("#### 3 then 4", ("last_number", "gsm8k"), "3"),  # a marker answers: no final-expression fallback
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


# ------------------------------------------------------------------------ issue 12: no false verdicts


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The answer is $\\frac{3}{4}$.", "\\frac{3}{4}"),  # not its last number, 4
        ("$\\sqrt{2}$", "\\sqrt{2}"),
        ("3/4", "3/4"),
        ("\\frac{54}{2}", "\\frac{54}{2}"),
        ("so $x = \\frac{3}{4}$.", "\\frac{3}{4}"),  # an equation gives its right-hand side
        ("4\\frac{2}{3} cups", "4\\frac{2}{3}"),
        ("\\sqrt[3]{8}", "\\sqrt[3]{8}"),
        ("Hence \\(\\frac{1}{2}\\)", "\\frac{1}{2}"),
        ("She paid $5 for apples and $3", "3"),  # dollar signs around prose are not math
        ("Let $n$ be 4. Then n = 5.", "5"),
        ("x" * 5000 + " 12", "12"),
        ("7 " + "y" * 5000, "7"),  # a number before the scanned tail is still found
    ],
)
def test_final_expressions_are_extracted_whole(text, expected):
    assert extract_answer(text, "last_number") == expected
    assert extract_answer(text, "auto") == expected


def test_unboxed_latex_answers_grade_like_their_boxed_forms(grader):
    completions = ["The answer is $\\frac{3}{4}$.", "$\\sqrt{2}$", "3/4", "\\frac{54}{2}"]
    references = ["\\frac{3}{4}", "\\sqrt{2}", "0.75", "27"]
    boxed = [f"\\boxed{{{extract_answer(text)}}}" for text in completions]
    assert [r.correct for r in grader.grade(references, completions)] == [True, True, True, True]
    assert [r.correct for r in grader.grade(references, boxed)] == [True, True, True, True]
    wrong = grader.grade(["4", "2", "4", "2"], completions)  # what "the last number" used to extract
    assert [r.correct for r in wrong] == [False, False, False, False]


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ("\\gcd(10^{10^{10}}, 42)", "an exponent tower"),
        ("(x+1)^{100000}", "an exponent above 10000"),
        ("\\sum_{n=1}^{10^{10}} n", "an exponent tower"),
        ("(10^{10})!", "a factorial of a huge number"),
        ("123456!", "a factorial of a huge number"),
        ("1" * 41, "a number with more than 40 digits"),
        ("(" * 13 + "1" + ")" * 13, "nested deeper than 12"),
        ("x+" * 201, "longer than 400 characters"),
    ],
)
def test_screen_names_the_pathology(answer, reason):
    assert screen_answer(answer) == reason


@pytest.mark.parametrize(
    "answer", ["2^{10}", "x^{2019}", "5!", "\\frac{10!}{2!\\,8!}", "(n+1)!", "10,\\!080", "2^{2}+3^{2}",
               "\\begin{pmatrix} 16/49 \\\\ 48/49 \\\\ 24/49 \\end{pmatrix}", "1" * 40]
)
def test_screen_passes_real_answers(answer):
    assert screen_answer(answer) is None


def test_gcd_tower_is_screened_and_never_correct_even_without_the_screen():
    """It used to grade correct against 42: under the worker's memory cap sympy raised MemoryError inside
    math-verify's LaTeX parse, math-verify fell through to its expression extraction, which picked the last
    number, 42. rlx.grading.verify now uses the LaTeX extraction alone."""
    completion = "\\boxed{\\gcd(10^{10^{10}}, 42)}"
    with Grader(num_workers=1) as pool:
        [result] = pool.grade(["42"], [completion])
    assert (result.correct, result.status) == (False, "screened") and pool.stats.screened == 1
    with Grader(num_workers=1, screen=None, timeout_s=2.0) as pool:
        [result] = pool.grade(["42"], [completion])
    assert result.correct is False and result.status in ("ok", "timeout", "crash")


def test_an_answer_over_the_length_cap_equal_to_its_reference_grades_correct():
    """The exact-string comparison runs before the 1,000-character cap (and the screen): a 1,201-character
    answer equal to its reference is correct; one character different, it is screened as too long."""
    long = "x+" * 600 + "1"
    with Grader(num_workers=1) as pool:
        results = pool.grade([long, long], [f"\\boxed{{{long}}}", f"\\boxed{{{long}2}}"])
    assert [(r.correct, r.status) for r in results] == [(True, "ok"), (False, "screened")]
    assert (pool.stats.fast_path, pool.stats.screened) == (1, 1)


def test_the_per_answer_limit_is_per_call():
    with Grader(num_workers=1, timeout_s=30.0, screen=None) as pool:
        pool.wait_until_ready()
        [result] = pool.grade(["1"], ["\\boxed{10^{10^{10^{10}}}}"], timeout_s=0.3)
    assert (result.correct, result.status, pool.stats.timeouts) == (False, "timeout", 1)
    with pytest.raises(ValueError, match="timeout_s must be > 0"):
        pool.grade(["1"], ["\\boxed{1}"], timeout_s=0)


NO_MAIN_GUARD = """
from rlx.grading import Grader
grader = Grader(num_workers=2)
results = grader.grade(["\\\\frac{1}{2}", "27", "3"], ["\\\\boxed{0.5}", "\\\\frac{54}{2}", "\\\\boxed{4}"])
print([r.correct for r in results], grader.stats.workers_replaced)
grader.close()
"""


def test_the_pool_works_from_a_script_without_a_main_guard(tmp_path):
    script = tmp_path / "grade.py"
    script.write_text(NO_MAIN_GUARD)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[True, True, False] 0"


def test_a_checker_defined_in_main_is_refused():
    def local_checker(reference: str, answer: str) -> bool:
        return True

    with pytest.raises(ValueError, match="top-level function of an importable module"):
        Grader(checker=local_checker)
