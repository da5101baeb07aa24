"""Run `rlx train ...` in this process and report what scripts/gpu_check.sh prints for it.

    python scripts/gpu_check_report.py RUN_DIR -- train OVERRIDES...

After the run: peak GPU memory (allocated and reserved, by torch in this process: trainer and HF sampler),
and per step the seconds of each phase (generate, branch, score, train, sync) and tokens/s, read back from
RUN_DIR/metrics.jsonl (the run's own log).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

PHASES = ("generate", "branch", "score", "train", "sync")


def step_rows(metrics_file: Path) -> list[dict]:
    rows = [json.loads(line) for line in metrics_file.read_text().splitlines() if line.strip()]
    return [r for r in rows if "time_train" in r]


def report(run_dir: Path, seconds: float) -> str:
    lines = [f"rlx train: {seconds:.1f} s in all (model load, evaluations before and after, 3 steps)"]
    if torch.cuda.is_available():
        lines.append(f"peak GPU memory: {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB allocated, "
                     f"{torch.cuda.max_memory_reserved() / 2**30:.2f} GiB reserved")
    header = " ".join(f"{p + ' s':>10}" for p in PHASES)
    lines.append(f"{'step':>4} {header} {'gen tok/s':>10} {'step tok/s':>10}")
    for r in step_rows(run_dir / "metrics.jsonl"):
        phases = [r.get(f"time_{p}", 0.0) for p in PHASES]
        tokens = r["tokens_policy"] + r.get("tokens_branch", 0)
        lines.append(f"{r['step']:>4} " + " ".join(f"{t:>10.2f}" for t in phases)
                     + f" {tokens / max(phases[0] + phases[1], 1e-9):>10.0f} {tokens / max(sum(phases), 1e-9):>10.0f}")
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) < 4 or sys.argv[2] != "--":
        raise SystemExit(__doc__)
    run_dir = Path(sys.argv[1])
    sys.argv = ["rlx", *sys.argv[3:]]
    from rlx.cli import main as rlx_main

    start = time.perf_counter()
    rlx_main()
    print(report(run_dir, time.perf_counter() - start))


if __name__ == "__main__":
    main()
