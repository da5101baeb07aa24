"""The grader against 350 hand-written answer/reference pairs with known verdicts (tests/fixtures/
grader_pairs.jsonl): fractions, radicals, intervals, units, percentages, plain-text answers, expressions,
tuples, final answers written without a box, pathological answers, hedges (several different boxes, "or",
`\\approx`, text hidden in an HTML comment or a `\\phantom`, lists, hedging remarks, a negated answer,
final-answer markers that disagree), decorations (`42\\%`, `42^\\circ`, `42 cm`, `(42)`, `\\pm 0`) and answers
after a "the answer is" cue. Each pair's `expected` is the mathematical truth (a hedge is not a correct
answer), so a mismatch is a false verdict of the grader; docs/rewards.md, "One rule for several final
answers"."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

PAIRS = Path(__file__).resolve().parents[1] / "fixtures" / "grader_pairs.jsonl"


def load_pairs() -> list[dict]:
    return [json.loads(line) for line in PAIRS.read_text(encoding="utf-8").splitlines()]


def test_the_fixture_covers_every_category():
    pairs = load_pairs()
    counts = Counter(pair["category"] for pair in pairs)
    assert len(pairs) == 350 and sum(pair["expected"] for pair in pairs) == 225
    assert {"fraction", "radical", "interval", "units", "percent", "text", "final_expression", "hedge",
            "decoration", "answer_cue"} <= set(counts)
    assert min(counts.values()) >= 7


def test_every_pair_grades_as_expected(grader):
    pairs = load_pairs()
    results = grader.grade([p["reference"] for p in pairs], [p["completion"] for p in pairs], "auto")
    wrong = [(p["category"], p["reference"], p["completion"], r.extracted, r.status)
             for p, r in zip(pairs, results) if r.correct != p["expected"]]
    assert wrong == []
    statuses = Counter(r.status for r in results)
    # 7 of the 8 pathological answers are screened; the 60-digit number is a plain decimal, which the
    # string fast path decides first. None of them reaches math-verify, so nothing times out. The hedges that
    # math-verify would read as one value (`42 \\approx 41.99` twice, `42 \\text{ (or 7)}`) are scored 0 as
    # "hedged"; the others are sets that math-verify compares with the reference.
    assert statuses["screened"] == 7 and statuses["timeout"] == statuses["crash"] == 0
    assert statuses["hedged"] == 3
