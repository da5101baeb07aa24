"""Hedged answers (several different boxes, "or", `\\approx`, a number in a text remark, text hidden in an HTML
comment or a `\\phantom`), decorations (percent, degrees, a leading "approximately") and the "the answer is"
cue. The pairs in tests/fixtures/grader_pairs.jsonl grade these end to end; docs/pending/grader.md."""

from __future__ import annotations

import pytest

from rlx.grading.extract import extract_answer, one_answer, quick_decision, strip_hidden
from rlx.grading.grader import Grader
from rlx.grading.hedge import answer_value, hedge_reason
from rlx.rewards.validation import _reason


@pytest.mark.parametrize(
    ("text", "visible"),
    [
        ("\\boxed{41} <!-- \\boxed{42} -->", "\\boxed{41}  "),
        ("a <!-- b --> c <!-- d", "a   c  "),  # an unclosed comment hides the rest
        ("\\boxed{41}\\phantom{\\boxed{42}}.", "\\boxed{41} ."),
        ("x\\hphantom{+7} y\\vphantom{\\frac{1}{2}}", "x  y "),
        ("\\phantom{never closed 42", "\\phantom{never closed 42"),
        ("no hidden text", "no hidden text"),
    ],
)
def test_hidden_text_is_dropped(text, visible):
    assert strip_hidden(text) == visible


@pytest.mark.parametrize(
    ("values", "answer"),
    [
        (["42"], "42"),
        (["42", "42.0", "42"], "42"),  # one value, however often: its last spelling
        (["1,000", "1000"], "1000"),
        (["7", "42"], "\\{7, 42\\}"),
        (["7", "42", "7"], "\\{7, 42\\}"),
        (["1", "234"], "\\{1, 234\\}"),  # never "1, 234", which would normalise to the number 1234
        ([], None),
    ],
)
def test_the_values_offered_form_one_answer(values, answer):
    assert one_answer(values) == answer


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("\\boxed{7} or \\boxed{42}", "\\{7, 42\\}"),
        ("\\boxed{7}\\boxed{42}", "\\{7, 42\\}"),
        ("\\boxed{42} and again \\boxed{42}", "42"),
        ("\\boxed{41} <!-- \\boxed{42} -->", "41"),
        ("\\boxed{\\boxed{42}}", "{42}"),  # a box inside a box is only braces
        ("\\boxed{41 \\boxed{42}}", "41 {42}"),
        ("\\boxed{} then \\boxed{5}", "5"),  # an empty box offers nothing
        ("The answer is 204. I checked it 3 times.", "204"),
        ("The answer is 41 <!-- 42 -->", "41"),
        ("**Answer:** 42\n\nCheck: 6 \\times 7 = 42, and 2 more checks.", "42"),
        ("The answer is 5 + 3 = 8 apples, counted 2 ways.", "8"),
        ("Final answer: $\\frac{3}{4}$. That took 5 steps.", "\\frac{3}{4}"),
        ("The answer is $\\$18$. It took 3 tries.", "18"),
        ("The answer is 1,234. Double-checked 2 times.", "1,234"),
        ("The answer is 3/4, found in 2 ways.", "3/4"),
        ("The answer is to add them: 2 + 3 = 5", "5"),  # no value right after the cue: the last number
        ("The answer is 7 or 42.", "\\{7, 42\\}"),
        ("It is either $7$ or $x = 42$", "\\{7, 42\\}"),
        ("#### 7 or 42", "\\{7, 42\\}"),
        ("so 7 \\text{ or } 42", "\\{7, 42\\}"),
        ("The answer is 42, since 6 times 7 is 42.", "42"),
        # one rule for several final answers, whatever the marker (docs/rewards.md)
        ("The answer is 42, 43, or 44.", "\\{42, 43, 44\\}"),
        ("42 and 43.", "\\{42, 43\\}"),
        ("The answer is 42 (or 43).", "\\{42, 43\\}"),
        ("The answer is 42, maybe 43.", "\\{42, 43\\}"),
        ("The answer is 42; alternatively 43.", "\\{42, 43\\}"),
        ("The answer is 1, 2, ..., 100.", "\\{1, 2, 100\\}"),
        ("#### 1, 2, ...", "\\{1, 2\\}"),
        ("\\boxed{42} (if I am wrong, it is 7)", "\\{42, 7\\}"),
        ("The answer is not 42.", None),
        ("#### 7\n#### 42", "\\{7, 42\\}"),
        ("\\boxed{42}\nFinal answer: 7", "\\{42, 7\\}"),
        ("\\boxed{42}. Actually, no: \\boxed{41}", "\\{42, 41\\}"),
        ("So the final answer is $\\boxed{42}$.", "42"),  # a cue and its box: one value
        ("The answer is 42, and it took 3 steps.", "42"),  # "3" does not end a list item
        ("The answer is not 41. It is 42.", "42"),
        ("So \\boxed{44}. We may check our answer: $17 \\cdot 44 = 748$.", "44"),  # checks, gives no answer
    ],
)
def test_extraction_reads_every_value_offered(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ("42 \\approx 41.99", "two values joined by an approximately-equal sign"),
        ("41.99 ≈ 42", "two values joined by an approximately-equal sign"),
        ("\\sqrt{2} \\approx 1.414", "two values joined by an approximately-equal sign"),
        ("x \\approx 3.1 \\approx 3", "two values joined by an approximately-equal sign"),
        ("42 \\text{ (or 7)}", "a number inside a text remark beside the answer"),
        ("42 \\mbox{ or 7}", "a number inside a text remark beside the answer"),
        ("\\$42 \\textbf{ (about \\$40 after tax)}", "a number inside a text remark beside the answer"),
        ("\\approx 42", None),
        ("x \\approx 42", None),
        ("\\theta_1 \\approx 0.5", None),
        ("42 \\text{ cm}", None),
        ("5\\text{ cm}^2", None),
        ("\\text{42 dollars}", None),
        ("\\text{(C)}", None),
        ("42 \\pm 0", None),
        ("7, 42", None),  # a set: math-verify compares it with the reference
    ],
)
def test_hedge_reason(answer, reason):
    assert hedge_reason(answer) == reason


@pytest.mark.parametrize(
    ("answer", "value"),
    [("\\approx 42", "42"), ("x \\approx 42", "42"), ("42°", "42^\\circ"), ("42", "42"), ("(42)", "(42)")],
)
def test_answer_value_drops_one_value_decorations(answer, value):
    assert answer_value(answer) == value


def test_a_percentage_is_its_number_or_its_fraction():
    assert quick_decision("42", "42\\%") is True  # MATH's convention
    assert quick_decision("0.42", "42\\%") is True  # math-verify's reading of a percentage
    assert quick_decision("42\\%", "0.42") is True
    assert quick_decision("42", "4.2\\%") is False
    assert quick_decision("0.42", "42") is False  # no percent sign: one reading


def test_hedges_are_scored_zero_and_counted_without_math_verify():
    """Decided in the caller's process, before any worker starts, also when every other answer goes to
    math-verify (fast_path=False)."""
    completions = ["\\boxed{42 \\approx 41.99}", "\\boxed{42 \\text{ (or 7)}}", "The answer is $42 \\approx 41.99$."]
    pool = Grader(num_workers=1, fast_path=False)  # not a context manager: that would start the pool
    try:
        results = pool.grade(["42", "42", "42"], completions)
        assert pool._workers == []  # no worker was needed
    finally:
        pool.close()
    assert [(r.correct, r.status) for r in results] == [(False, "hedged")] * 3
    assert results[2].extracted == "42 \\approx 41.99"
    assert (pool.stats.hedged, pool.stats.graded) == (3, 3)
    assert _reason("42", "42 \\approx 41.99", "hedged") == (
        "hedge: extracted '42 \\\\approx 41.99' offers a second value (rlx.grading.hedge)")


def test_several_boxes_are_graded_as_a_set(grader):
    references = ["42", "42", "7, 42", "\\frac{1}{2}", "42"]
    completions = ["\\boxed{7} or \\boxed{42}", "\\boxed{7}\\boxed{42}", "\\boxed{7} and \\boxed{42}",
                   "\\boxed{\\frac{1}{2}} = \\boxed{0.5}", "\\boxed{42} \\boxed{42.0}"]
    results = grader.grade(references, completions)
    assert [r.correct for r in results] == [False, False, True, True, True]
    assert [r.status for r in results] == ["ok"] * 5


def test_the_arith_task_reads_every_final_line():
    """The built-in task's check follows the same rule: two different `#### n` lines are a hedge."""
    from rlx.grading.arith import extract_final_integer, integer_answer_correct

    assert extract_final_integer("6 * 7 = 42\n#### 42") == 42
    assert extract_final_integer("#### 42\n#### 42") == 42
    assert extract_final_integer("#### 7\n#### 42") is None
    assert not integer_answer_correct(42, "#### 7\n#### 42") and not integer_answer_correct(7, "#### 7\n#### 42")
