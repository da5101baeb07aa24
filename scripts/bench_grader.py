"""Grader throughput: answers graded per second on typical completions; print a table and write JSON.

    python scripts/bench_grader.py [--out bench/grader_throughput.json] [--workers N] [--repeats 3]

Completions are built from the shared GSM8K/MATH-500 test references so that they look like model output:
GSM8K-style (worked solution, then `#### n` or `\\boxed{n}`; half of them with a wrong number) and
MATH-style (worked solution ending in `\\boxed{...}`: unchanged, rewritten in an equivalent form, or with
another problem's answer). Timed on a warm pool; the target is >= 200 answers/s on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from rlx.data.base import Problem  # noqa: E402
from rlx.data.gsm8k import load_gsm8k  # noqa: E402
from rlx.data.math500 import load_math500  # noqa: E402
from rlx.grading import Grader, extract_answer  # noqa: E402
from rlx.rewards.validation import default_shared_data_dir  # noqa: E402

TARGET_PER_S = 200.0
_CALCULATOR_NOTE = re.compile(r"<<[^>]*>>")


def gsm8k_completions(problems: list[Problem]) -> tuple[list[str], list[str]]:
    """(references, completions): four kinds in rotation, two correct and two incorrect."""
    references, completions = [], []
    for index, problem in enumerate(problems):
        body = _CALCULATOR_NOTE.sub("", problem.solution.rsplit("####", 1)[0]).strip()
        wrong = str(int(float(problem.answer)) + 1 + index % 7)
        kind = index % 4
        final = [
            f"#### {problem.answer}",
            f"The answer is $\\boxed{{{problem.answer}}}$.",
            f"#### {wrong}",
            f"So the total is {wrong} dollars.",
        ][kind]
        references.append(problem.answer)
        completions.append(f"Let's think step by step.\n{body}\n{final}")
    return references, completions


def equivalent_form(answer: str) -> str:
    """A different spelling of the same answer, so that only a CAS can tell they match."""
    if "\\frac" in answer:
        return answer.replace("\\frac", "\\dfrac")
    if re.fullmatch(r"\d+", answer):
        return f"\\frac{{{2 * int(answer)}}}{{2}}"
    return answer  # as models mostly write it: the fast path decides


def math_completions(problems: list[Problem]) -> tuple[list[str], list[str]]:
    """(references, completions): unchanged solution, equivalent rewrite, another problem's answer."""
    references, completions = [], []
    for index, problem in enumerate(problems):
        boxed = extract_answer(problem.solution, "boxed") or problem.answer
        cut = problem.solution.rfind(boxed)
        for kind in (index % 3, (index + 1) % 3):
            replacement = [
                boxed,
                equivalent_form(problem.answer),
                problems[(index + 1) % len(problems)].answer,
            ][kind]
            completions.append(problem.solution[:cut] + replacement + problem.solution[cut + len(boxed) :])
            references.append(problem.answer)
    return references, completions


def time_grading(grader: Grader, references: list[str], completions: list[str], repeats: int) -> dict:
    grader.wait_until_ready()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        results = grader.grade(references, completions, style="auto")
        best = min(best, time.perf_counter() - started)
    return {
        "answers": len(completions),
        "seconds": round(best, 3),
        "answers_per_s": round(len(completions) / best, 1),
        "correct_fraction": round(sum(r.correct for r in results) / len(results), 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("bench/grader_throughput.json"))
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=3, help="report the best of this many timed runs")
    args = parser.parse_args()
    data_dir = args.data_dir or default_shared_data_dir()
    gsm8k_refs, gsm8k_texts = gsm8k_completions(list(load_gsm8k("test", data_dir / "gsm8k")))
    math_refs, math_texts = math_completions(list(load_math500("test", data_dir / "math500")))
    workloads = {
        "gsm8k-style": (gsm8k_refs, gsm8k_texts),
        "math-style": (math_refs, math_texts),
        "mixed": (gsm8k_refs + math_refs, gsm8k_texts + math_texts),
    }
    rows = []
    for fast_path in (True, False):
        with Grader(num_workers=args.workers, fast_path=fast_path) as grader:
            for name, (refs, texts) in workloads.items():
                row = {
                    "workload": name,
                    "fast_path": fast_path,
                    **time_grading(grader, refs, texts, args.repeats),
                }
                rows.append(row)
            workers = grader.num_workers
    print(f"{'workload':<12} {'fast path':>9} {'answers':>8} {'seconds':>8} {'answers/s':>10} {'correct':>8}")
    for row in rows:
        print(
            f"{row['workload']:<12} {row['fast_path']!s:>9} {row['answers']:>8} {row['seconds']:>8.3f} "
            f"{row['answers_per_s']:>10.1f} {row['correct_fraction']:>8.3f}"
        )
    mixed = next(r for r in rows if r["workload"] == "mixed" and r["fast_path"])
    passed = mixed["answers_per_s"] >= TARGET_PER_S
    report = {"workers": workers, "cpus": os.cpu_count(), "target_per_s": TARGET_PER_S, "passed": passed}
    report["rows"] = rows
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(
        f"\nmixed, default grader: {mixed['answers_per_s']:.0f} answers/s on {workers} workers "
        f"(target {TARGET_PER_S:.0f}); wrote {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
