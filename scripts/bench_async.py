"""Synchronous vs asynchronous rollouts on 2 CPU cores, side by side (docs/pending/async.md).

    .venv/bin/python scripts/bench_async.py [--algos grpo,trepo] [--seeds 0,1,2]
        [--token-budget grpo:60000,trepo:240000] [--out bench/async.json]

For each algorithm and seed, three runs of `rlx train` on the built-in arith task with the tiny model and the HF
sampler, stopped by the same generated-token budget (`train.token_budget`: equal generated tokens):
  sync   one process, the synchronous loop, 2 torch threads (`train.num_threads=2 sampler.num_threads=2`);
  k1/k2  `torchrun --nproc_per_node=2`: one trainer rank + one generation rank (`train.rollout_workers=1`),
         one thread each, `train.max_staleness=1` / `2`;
  sync1  the synchronous loop on one thread: not a contender, it measures each phase's one-thread time, from
         which the 2-core bound of any 1 + 1-thread overlap follows: sync step time / max(rollout phase on one
         thread, training phase on one thread), the speed-up a perfect overlap with no cost would reach.
Reported per run: trained tokens per second (sum of `tokens_trained` / the run's training wall time
`wall_train_s`), generated tokens, steps and the final test accuracy; per configuration the mean over seeds and
the 3-seed spread (max - min) of the accuracy. The JSON goes to `--out`; a markdown table is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODES = {"sync": [], "k1": ["train.max_staleness=1"], "k2": ["train.max_staleness=2"], "sync1": []}
ROLLOUT_PHASES = ("time_generate", "time_branch", "time_score")  # the rollout phase; time_train + time_sync train


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def command(mode: str, algo: str, seed: int, budget: int, run_dir: Path) -> list[str]:
    common = ["-m", "rlx.cli", "train", f"algo={algo}", "sampler=hf", f"seed={seed}", "train.steps=100000",
              f"train.token_budget={budget}", "train.eval_every=0", "train.eval_size=200", "train.progress_bar=false",
              f"hydra.run.dir={run_dir}"]
    if mode.startswith("sync"):
        threads = 1 if mode == "sync1" else 2
        return [sys.executable, *common, f"train.num_threads={threads}", f"sampler.num_threads={threads}"]
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
            *common, "train.rollout_workers=1", "train.num_threads=1", "sampler.num_threads=1", *MODES[mode]]


def measure(mode: str, algo: str, seed: int, budget: int, work: Path) -> dict:
    run_dir = work / f"{algo}-{mode}-{seed}"
    env = {**os.environ, "OMP_NUM_THREADS": "2" if mode == "sync" else "1", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": str(ROOT)}
    subprocess.run(command(mode, algo, seed, budget, run_dir), env=env, cwd=ROOT, check=True, capture_output=True)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "reward_mean" in r]
    summary = json.loads((run_dir / "summary.json").read_text())
    trained = sum(r["tokens_trained"] for r in steps)
    return {"mode": mode, "algo": algo, "seed": seed, "steps": len(steps),
            "tokens_generated": steps[-1]["tokens_total"], "tokens_trained": trained,
            "wall_train_s": steps[-1]["wall_train_s"],
            "trained_tokens_per_s": trained / max(steps[-1]["wall_train_s"], 1e-9),
            "accuracy_after": summary["accuracy_after"],
            "staleness_mean": statistics.mean(r.get("staleness_mean", 0.0) for r in steps),
            # per-step medians over steps 2.. (step 1 warms up): the phases' seconds, the step's wall seconds
            "rollout_s": statistics.median(sum(r.get(k, 0.0) for k in ROLLOUT_PHASES) for r in steps[1:]),
            "train_s": statistics.median(r["time_train"] + r.get("time_sync", 0.0) for r in steps[1:]),
            "step_s": statistics.median(b["wall_train_s"] - a["wall_train_s"] for a, b in zip(steps, steps[1:]))}


def overlap_bound(runs: list[dict], algo: str) -> float:
    """sync step seconds / max(one-thread rollout phase, one-thread training phase): the 1 + 1-thread speed-up
    that a perfect, free overlap would reach on these 2 cores (means over seeds)."""
    sync = statistics.mean(r["step_s"] for r in runs if r["algo"] == algo and r["mode"] == "sync")
    one = [r for r in runs if r["algo"] == algo and r["mode"] == "sync1"]
    return sync / max(statistics.mean(r["rollout_s"] for r in one), statistics.mean(r["train_s"] for r in one))


def table(runs: list[dict]) -> str:
    lines = ["| algo | mode | trained tok/s | vs sync | accuracy (mean) | accuracy spread | staleness | rollout s "
             "| train s | step s |", "|---|---|---|---|---|---|---|---|---|---|"]
    for algo in dict.fromkeys(r["algo"] for r in runs):
        base = statistics.mean(r["trained_tokens_per_s"] for r in runs if r["algo"] == algo and r["mode"] == "sync")
        for mode in MODES:
            part = [r for r in runs if r["algo"] == algo and r["mode"] == mode]
            if not part:
                continue
            speed = statistics.mean(r["trained_tokens_per_s"] for r in part)
            accs = [r["accuracy_after"] for r in part]
            lines.append(f"| {algo} | {mode} | {speed:.0f} | {speed / base:.2f}x | {statistics.mean(accs):.3f} | "
                         f"{max(accs) - min(accs):.3f} | {statistics.mean(r['staleness_mean'] for r in part):.2f} | "
                         + " | ".join(f"{statistics.mean(r[k] for r in part):.2f}" for k in
                                      ("rollout_s", "train_s", "step_s")) + " |")
        if any(r["algo"] == algo and r["mode"] == "sync1" for r in runs):
            lines.append(f"| {algo} | 2-core bound of a 1 + 1-thread overlap | | {overlap_bound(runs, algo):.2f}x "
                         "| | | | | | |")
    return "\n".join(lines)


def budgets(text: str, algos: list[str]) -> dict[str, int]:
    """'60000' (every algorithm) or 'grpo:60000,trepo:240000' -> {algo: generated-token budget}."""
    if ":" not in text:
        return {algo: int(text) for algo in algos}
    given = {k: int(v) for k, v in (item.split(":") for item in text.split(","))}
    missing = [a for a in algos if a not in given]
    if missing:
        raise SystemExit(f"--token-budget names no budget for {', '.join(missing)}")
    return given


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algos", default="grpo,trepo")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--token-budget", default="grpo:60000,trepo:240000",
                        help="generated tokens per run: one number, or ALGO:N,... (TRePO generates ~24k per step)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "async.json"))
    args = parser.parse_args()
    runs, algo_names = [], args.algos.split(",")
    budget = budgets(args.token_budget, algo_names)
    with tempfile.TemporaryDirectory() as tmp:
        for algo in algo_names:
            for seed in [int(s) for s in args.seeds.split(",")]:
                for mode in MODES:  # interleaved: machine load drifts over the benchmark evenly
                    runs.append(measure(mode, algo, seed, budget[algo], Path(tmp)))
                    print(json.dumps(runs[-1]), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"token_budget": budget, "runs": runs}, indent=1) + "\n")
    print(table(runs))


if __name__ == "__main__":
    main()
