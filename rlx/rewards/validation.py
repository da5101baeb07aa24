"""Self-checks of the grader on real data and hostile input (used by scripts/validate_grader.py and tests).

1. Every GSM8K reference solution, graded against its own `####` answer, must be correct.
2. Every MATH-500 reference solution, graded against its `answer` field, should be correct; each
   disagreement is listed with the reason (what was extracted, and the grader's status).
3. Adversarial completions must come back within the time limit (plus a small scheduling slack) scoring 0.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rlx.data.base import Problem
from rlx.grading.faults import faulty_checker
from rlx.grading.grader import Grader

# Time on top of the per-answer limit for the parent to notice the overrun and kill the worker.
KILL_SLACK_S = 1.0
ADVERSARIAL_REFERENCE = "\\frac{1}{2}"  # a LaTeX reference, so hostile answers reach math-verify


def default_shared_data_dir() -> Path:
    """The full data sets for the optional larger runs: `$RLX_SHARED_DATA`, else `../shared/data` beside the
    checkout when it exists, else the small subsets the test suite ships in `tests/fixtures`."""
    if os.environ.get("RLX_SHARED_DATA"):
        return Path(os.environ["RLX_SHARED_DATA"])
    checkout = Path(__file__).resolve().parents[2]
    shared = checkout.parent / "shared" / "data"
    return shared if (shared / "gsm8k" / "test.jsonl").is_file() else checkout / "tests" / "fixtures"


@dataclass
class ReferenceCheck:
    name: str
    total: int
    correct: int
    disagreements: list[dict[str, Any]]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_references(
    grader: Grader, problems: Sequence[Problem], name: str, style: str = "auto"
) -> ReferenceCheck:
    """Grade each problem's reference `solution` against its reference `answer`."""
    results = grader.grade([p.answer for p in problems], [p.solution for p in problems], style=style)
    disagreements = [
        {
            "id": problem.id,
            "answer": problem.answer,
            "extracted": result.extracted,
            "status": result.status,
            "reason": _reason(problem.answer, result.extracted, result.status),
        }
        for problem, result in zip(problems, results)
        if not result.correct
    ]
    correct = sum(result.correct for result in results)
    return ReferenceCheck(name, len(problems), correct, disagreements)


def _reason(answer: str, extracted: str | None, status: str) -> str:
    if status == "no_answer":
        return "no final answer found in the solution"
    if status in ("timeout", "crash"):
        return f"grader {status}"
    if status == "screened":
        return f"pre-screen: extracted {extracted!r} looks pathological (rlx.grading.screen)"
    if status == "hedged":
        return f"hedge: extracted {extracted!r} offers a second value (rlx.grading.hedge)"
    return f"math-verify: extracted {extracted!r} not equivalent to answer {answer!r}"


def check_fault_recovery(timeout_s: float = 0.5, num_workers: int = 2) -> dict[str, Any]:
    """Grade a batch salted with a hang, a worker kill and an exception; every other answer must still be
    graded correctly, and each fault counted once."""
    answers = ["a", "HANG", "b", "CRASH", "c", "RAISE", "d", "e"]
    references = ["a", "x", "b", "x", "c", "x", "d", "wrong"]
    with Grader(
        num_workers=num_workers, timeout_s=timeout_s, fast_path=False, checker=faulty_checker
    ) as grader:
        completions = ["\\boxed{" + answer + "}" for answer in answers]
        results = grader.grade(references, completions, style="boxed")
    return {
        "statuses": [r.status for r in results],
        "correct": [r.correct for r in results],
        **grader.stats.as_dict(),
    }


def adversarial_cases() -> list[tuple[str, str]]:
    """(name, completion) pairs that try to hang, crash or flood the grader."""
    words = "the answer might be 17 or \\frac{3}{4} unless x^2 = y " * 2000
    return [
        ("100 KB of prose", words[: 100 * 1024]),
        ("100 KB boxed expression", "\\boxed{" + "1+" * (50 * 1024) + "1}"),
        ("power tower 10^{10^{10^{10}}}", "\\boxed{10^{10^{10^{10}}}}"),
        ("factorial tower", "\\boxed{(10^{10})!!}"),
        ("huge expansion", "\\boxed{(x+1)^{100000} - (x+1)^{100000} + \\frac{1}{3}}"),
        ("10 000 nested braces", "\\boxed{" + "{" * 10_000 + "1" + "}" * 10_000 + "}"),
        ("10 000 unclosed braces", "\\boxed{" + "{" * 10_000 + "1"),
        ("invalid LaTeX", "\\boxed{\\frac{1}{}^^_\\left( \\sqrt[}{\\begin{matrix} & \\\\ \\end{pmatrix}}"),
        ("binary junk", "\\boxed{" + bytes(range(256)).decode("latin-1") * 40 + "}"),
        ("binary junk, short", "\\boxed{\x00\x01\x02\ufffd\x7f}"),
    ]


def check_adversarial(grader: Grader) -> list[dict[str, Any]]:
    """Grade each hostile completion alone, timing it; `ok` = scored 0 within the limit + slack."""
    limit = grader.timeout_s + KILL_SLACK_S
    rows = []
    for name, completion in adversarial_cases():
        grader.wait_until_ready()  # time the case, not the start-up of a replacement worker
        started = time.monotonic()
        [result] = grader.grade([ADVERSARIAL_REFERENCE], [completion], style="auto")
        seconds = time.monotonic() - started
        rows.append(
            {
                "name": name,
                "chars": len(completion),
                "status": result.status,
                "correct": result.correct,
                "seconds": round(seconds, 3),
                "ok": (not result.correct) and seconds <= limit,
            }
        )
    return rows
