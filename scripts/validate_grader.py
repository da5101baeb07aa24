"""Validate the answer grader on real references and hostile input; print a table and write JSON.

    python scripts/validate_grader.py [--out bench/grader_validation.json] [--data-dir DIR] [--timeout 2]

Data: `--data-dir`, else $RLX_SHARED_DATA, else ../shared/data, else the subsets in tests/fixtures.
Checks (see rlx/rewards/validation.py): GSM8K test solutions vs their own answers (must all agree),
MATH-500 solutions vs their `answer` field (target >= 99%; each disagreement listed with its reason) both
with the normalisation fast path and through math-verify alone, and adversarial completions (must score 0
within the time limit). Exits 1 when a check fails.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from rlx.data.gsm8k import load_gsm8k  # noqa: E402
from rlx.data.math500 import load_math500  # noqa: E402
from rlx.grading.grader import Grader  # noqa: E402
from rlx.rewards.validation import (  # noqa: E402
    ReferenceCheck,
    check_adversarial,
    check_fault_recovery,
    check_references,
    default_shared_data_dir,
)

MATH500_TARGET = 0.99  # fraction of MATH-500 references that must agree (495 of 500)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("bench/grader_validation.json"))
    parser.add_argument(
        "--data-dir", type=Path, default=None,
        help="default: $RLX_SHARED_DATA, else ../shared/data, else tests/fixtures"
    )
    parser.add_argument("--timeout", type=float, default=2.0, help="per-answer wall-clock limit, seconds")
    parser.add_argument("--workers", type=int, default=None)
    return parser.parse_args()


def print_reference_row(check: ReferenceCheck) -> None:
    print(f"{check.name:<40} {check.correct:>5}/{check.total:<5} {len(check.disagreements):>6} disagreements")
    for row in check.disagreements:
        print(f"    - {row['id']}: {row['reason']}")


def print_adversarial(rows: list[dict]) -> None:
    print(f"\n{'adversarial case':<40} {'chars':>7} {'status':>9} {'correct':>8} {'seconds':>8}  ok")
    for row in rows:
        print(
            f"{row['name']:<40} {row['chars']:>7} {row['status']:>9} {row['correct']!s:>8} "
            f"{row['seconds']:>8.3f}  {'yes' if row['ok'] else 'NO'}"
        )


def main() -> int:
    args = parse_args()
    data_dir = args.data_dir or default_shared_data_dir()
    gsm8k = load_gsm8k("test", data_dir / "gsm8k")
    math500 = load_math500("test", data_dir / "math500")
    started = time.monotonic()
    checks: list[ReferenceCheck] = []
    with Grader(num_workers=args.workers, timeout_s=args.timeout) as grader:
        checks.append(check_references(grader, gsm8k, "gsm8k test (fast path + math-verify)"))
        checks.append(check_references(grader, math500, "math500 test (fast path + math-verify)"))
        adversarial = check_adversarial(grader)
        stats = grader.stats.as_dict()
    with Grader(num_workers=args.workers, timeout_s=args.timeout, fast_path=False) as grader:
        checks.append(check_references(grader, gsm8k, "gsm8k test (math-verify only)"))
        checks.append(check_references(grader, math500, "math500 test (math-verify only)"))
    faults = check_fault_recovery()
    print(f"{'reference check':<40} {'correct':>11}")
    for check in checks:
        print_reference_row(check)
    print_adversarial(adversarial)
    print(f"\nfault injection (hang, worker kill, exception in one batch): statuses {faults['statuses']}")
    counts = {key: faults[key] for key in ("timeouts", "crashes", "workers_replaced")}
    print(f"  {counts}")
    expected_faults = ["ok", "timeout", "ok", "crash", "ok", "crash", "ok", "ok"]
    passed = (
        all(c.correct == c.total for c in checks if c.name.startswith("gsm8k"))
        and all(c.correct >= MATH500_TARGET * c.total for c in checks if c.name.startswith("math500"))
        and all(row["ok"] for row in adversarial)
        and faults["statuses"] == expected_faults
    )
    report = {
        "passed": passed,
        "timeout_s": args.timeout,
        "seconds": round(time.monotonic() - started, 2),
        "reference_checks": [c.as_dict() for c in checks],
        "adversarial": adversarial,
        "fault_injection": faults,
        "grader_stats": stats,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\n{'PASS' if passed else 'FAIL'}; wrote {args.out}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
