"""Grader throughput on a batch of 1,000 completions of which 3% are pathological; print a table and write JSON.

    python scripts/bench_grader.py [--out bench/grader.json] [--workers 2] [--repeats 3] [--size 1000]

The 970 honest completions are built from GSM8K/MATH-500 test references (`--data-dir`, else $RLX_SHARED_DATA,
else ../shared/data, else the subsets in tests/fixtures) so that they look like model output: GSM8K-style
(worked solution, then `#### n`, `\\boxed{n}` or a sentence; half of them wrong) and MATH-style (worked
solution ending in `\\boxed{...}`: unchanged, rewritten in an equivalent form only a CAS can match, or another
problem's answer). The 30 pathological ones are exponent towers, huge factorials and expansions, deep nesting,
100 KB answers and binary junk (rlx/rewards/validation.py's adversarial cases and more), spread through the
batch. Timed on a warm pool (best of `--repeats`), with the training reward's per-answer limit (0.5 s) and
evaluation's (2 s); `--no-screen` adds the pool without the pre-screen (every pathological answer then runs
into the limit: the behaviour before issue 12). Target: >= 200 answers/s on 2 workers (2 cores).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from rlx.data.base import Problem  # noqa: E402
from rlx.data.gsm8k import load_gsm8k  # noqa: E402
from rlx.data.math500 import load_math500  # noqa: E402
from rlx.grading import EVAL_TIMEOUT_S, TRAIN_TIMEOUT_S, Grader, extract_answer  # noqa: E402
from rlx.rewards.validation import adversarial_cases, default_shared_data_dir  # noqa: E402

TARGET_PER_S = 200.0
PATHOLOGICAL_FRACTION = 0.03
_CALCULATOR_NOTE = re.compile(r"<<[^>]*>>")
EXTRA_PATHOLOGICAL = [
    "\\boxed{\\gcd(10^{10^{10}}, 42)}",
    "The answer is $9^{9^{9}}$.",
    "\\boxed{(10^{10})!}",
    "so the sum is \\boxed{\\sum_{n=1}^{10^{12}} n^{2}}",
    "\\boxed{" + "(" * 500 + "1" + ")" * 500 + "}",
    "\\boxed{" + "9" * 5000 + "}",
]


def gsm8k_completions(problems: list[Problem]) -> list[tuple[str, str]]:
    """(reference, completion): four kinds in rotation, two correct and two incorrect."""
    pairs = []
    for index, problem in enumerate(problems):
        body = _CALCULATOR_NOTE.sub("", problem.solution.rsplit("####", 1)[0]).strip()
        wrong = str(int(float(problem.answer)) + 1 + index % 7)
        final = [f"#### {problem.answer}", f"The answer is $\\boxed{{{problem.answer}}}$.", f"#### {wrong}",
                 f"So the total is {wrong} dollars."][index % 4]
        pairs.append((problem.answer, f"Let's think step by step.\n{body}\n{final}"))
    return pairs


def equivalent_form(answer: str) -> str:
    """A different spelling of the same answer, so that only a CAS can tell they match."""
    if "\\frac" in answer:
        return answer.replace("\\frac", "\\dfrac")
    if re.fullmatch(r"\d+", answer):
        return f"\\frac{{{2 * int(answer)}}}{{2}}"
    return answer  # as models mostly write it: the fast path decides


def math_completions(problems: list[Problem]) -> list[tuple[str, str]]:
    """(reference, completion): unchanged solution, equivalent rewrite, another problem's answer."""
    pairs = []
    for index, problem in enumerate(problems):
        boxed = extract_answer(problem.solution, "boxed") or problem.answer
        cut = problem.solution.rfind(boxed)
        for kind in (index % 3, (index + 1) % 3):
            replacement = [boxed, equivalent_form(problem.answer), problems[(index + 1) % len(problems)].answer][kind]
            pairs.append((problem.answer, problem.solution[:cut] + replacement + problem.solution[cut + len(boxed):]))
    return pairs


def build_batch(data_dir: Path, size: int, seed: int = 0) -> tuple[list[str], list[str], int]:
    """`size` (reference, completion) pairs, 3% of them pathological, shuffled; returns the pathological count."""
    honest = gsm8k_completions(list(load_gsm8k("test", data_dir / "gsm8k")))
    honest += math_completions(list(load_math500("test", data_dir / "math500")))
    rng = random.Random(seed)
    rng.shuffle(honest)
    bad_texts = [text for _, text in adversarial_cases()] + EXTRA_PATHOLOGICAL
    n_bad = round(size * PATHOLOGICAL_FRACTION)
    batch = [honest[i % len(honest)] for i in range(size - n_bad)]
    batch += [("\\frac{1}{2}", bad_texts[i % len(bad_texts)]) for i in range(n_bad)]
    rng.shuffle(batch)
    return [ref for ref, _ in batch], [text for _, text in batch], n_bad


def time_grading(grader: Grader, references: list[str], completions: list[str], limit: float, repeats: int) -> dict:
    best, stats_before = float("inf"), dict(grader.stats.as_dict())
    for _ in range(repeats):
        grader.wait_until_ready()  # a replaced worker's start-up is not grading time
        started = time.perf_counter()
        results = grader.grade(references, completions, style="auto", timeout_s=limit)
        best = min(best, time.perf_counter() - started)
    stats = {key: (value - stats_before[key]) // repeats for key, value in grader.stats.as_dict().items()}
    return {"answers": len(completions), "seconds": round(best, 3), "answers_per_s": round(len(completions) / best, 1),
            "correct_fraction": round(sum(r.correct for r in results) / len(results), 3),
            "screened": stats["screened"], "timeouts": stats["timeouts"], "crashes": stats["crashes"]}


def run_configurations(args: argparse.Namespace, references: list[str], completions: list[str]) -> list[dict]:
    configurations = [("screen", TRAIN_TIMEOUT_S, True, args.repeats), ("screen", EVAL_TIMEOUT_S, True, args.repeats)]
    if args.no_screen:  # slow on purpose (every pathological answer runs into the limit): one repeat
        configurations.append(("no screen", EVAL_TIMEOUT_S, False, 1))
    rows = []
    for name, limit, screen, repeats in configurations:
        grader = Grader(num_workers=args.workers) if screen else Grader(num_workers=args.workers, screen=None)
        with grader:
            rows.append({"grader": name, "limit_s": limit, **time_grading(grader, references, completions, limit,
                                                                             repeats)})
    return rows


def print_table(rows: list[dict]) -> None:
    print(f"{'grader':<10} {'limit s':>7} {'answers':>8} {'seconds':>8} {'answers/s':>10} {'correct':>8} "
          f"{'screened':>8} {'timeouts':>8}")
    for row in rows:
        print(f"{row['grader']:<10} {row['limit_s']:>7.1f} {row['answers']:>8} {row['seconds']:>8.3f} "
              f"{row['answers_per_s']:>10.1f} {row['correct_fraction']:>8.3f} {row['screened']:>8} "
              f"{row['timeouts']:>8}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench/grader.json"))
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--workers", type=int, default=2, help="grader processes (the target is for 2 cores)")
    parser.add_argument("--size", type=int, default=1000, help="completions in the batch (3%% pathological)")
    parser.add_argument("--repeats", type=int, default=3, help="report the best of this many timed runs")
    parser.add_argument("--no-screen", action="store_true", help="also time the pool without the pre-screen")
    args = parser.parse_args()
    data_dir = args.data_dir or default_shared_data_dir()
    references, completions, n_bad = build_batch(data_dir, args.size)
    rows = run_configurations(args, references, completions)
    print(f"{args.size} completions ({n_bad} pathological) from {data_dir}, {args.workers} workers, "
          f"{os.cpu_count()} cpus\n")
    print_table(rows)
    train = rows[0]
    passed = train["answers_per_s"] >= TARGET_PER_S
    report = {"workers": args.workers, "cpus": os.cpu_count(), "data_dir": str(data_dir), "size": args.size,
              "pathological": n_bad, "target_per_s": TARGET_PER_S, "passed": passed, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\ntraining limit, default grader: {train['answers_per_s']:.0f} answers/s (target {TARGET_PER_S:.0f}, "
          f"{'met' if passed else 'NOT met'}); wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
