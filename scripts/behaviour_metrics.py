"""The metrics of short training jobs of every algorithm and rollout strategy, for before/after comparisons.

A refactoring that must leave behaviour unchanged runs this on both revisions and compares the files:

    python scripts/behaviour_metrics.py --out before.json          # on the old revision
    python scripts/behaviour_metrics.py --out after.json           # on the new one
    python scripts/behaviour_metrics.py --compare before.json after.json

Every job trains 3 steps of the real tiny model through the CLI (HF sampler, one process each; the async job
under torchrun with one generation rank). Timings are left out (they differ between identical runs); every
other logged number is compared exactly.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

TIMINGS = ("time_", "wall_", "cpu_", "prefix_cache")

JOBS = {
    **{algo: (f"algo={algo}",) for algo in ("cispo", "grpo", "ppo", "reinforce", "remax", "rloo", "tree", "trepo")},
    "vineppo": ("algo=vineppo", "algo.rollouts_per_branch=2"),
    "grpo_dynamic": ("algo=grpo", "train.dynamic_sampling=true"),
    "grpo_process": ("algo=grpo", "reward_model=arith_steps", "algo.supervision=process"),
    "grpo_kl": ("algo=grpo", "algo.kl.beta=0.05"),
    "trepo_adaptive": ("algo=trepo", "algo.adaptive_rollouts=true"),
    "trepo_entropy": ("algo=trepo", "algo.branch_selection=entropy"),
    "tree_depth2": ("algo=tree", "algo.tree.depth=2"),
    "async_k1": ("algo=trepo", "algo.num_branch_points=2", "algo.rollouts_per_branch=2", "train.rollout_workers=1",
                 "train.max_staleness=1"),
}


def run_job(name: str, overrides: tuple[str, ...], model_dir: str, work: Path) -> list[dict]:
    run_dir = work / name
    launch = [sys.executable]
    if any(o.startswith("train.rollout_workers=") for o in overrides):
        launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29613"]
    cmd = [*launch, "-m", "rlx.cli", "train", "sampler=hf", f"model.path={model_dir}", "train.steps=3",
           "train.prompts_per_step=4", "train.eval_size=8", "train.eval_every=2", "train.progress_bar=false",
           f"hydra.run.dir={run_dir}", *overrides]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    if result.returncode != 0:
        raise SystemExit(f"{name}: exit {result.returncode}\n{result.stderr[-3000:]}")
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if not k.startswith(TIMINGS)} for row in rows]


def compare(before: dict, after: dict) -> int:
    """Prints every job whose metrics differ (key, before, after); the number of differing jobs."""
    bad = 0
    for name in sorted(set(before) | set(after)):
        old, new = before.get(name), after.get(name)
        if old is None or new is None:
            print(f"{name:16s} only in {'after' if old is None else 'before'}")
            continue
        if old == new:
            print(f"{name:16s} identical ({len(old)} rows)")
            continue
        bad += 1
        print(f"{name:16s} DIFFERS")
        for i, (a, b) in enumerate(zip(old or [], new or [])):
            for key in sorted(set(a) | set(b)):
                if a.get(key) != b.get(key):
                    print(f"   row {i} {key}: {a.get(key)} -> {b.get(key)}")
    return bad


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--jobs", nargs="*", default=list(JOBS))
    parser.add_argument("--compare", nargs=2, type=Path)
    args = parser.parse_args()
    if args.compare:
        sys.exit(1 if compare(*(json.loads(p.read_text()) for p in args.compare)) else 0)
    from rlx.recipes.tiny import TinyModelSpec, ensure_tiny_model

    model_dir = str(ensure_tiny_model(TinyModelSpec()))
    work = Path(tempfile.mkdtemp(prefix="rlx-behaviour-"))
    out = {}
    for name in args.jobs:
        out[name] = run_job(name, JOBS[name], model_dir, work)
        print(f"{name}: {len(out[name])} rows", flush=True)
        args.out.write_text(json.dumps(out, indent=1, sort_keys=True))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
