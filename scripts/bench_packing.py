"""The update's micro-batching, side by side: `train.micro_batch_tokens` caps (longest-first packing) vs one
unsplit forward pass, on the shapes of `make bench-trl` and of the default job.

    .venv/bin/python scripts/bench_packing.py [--caps none,2048,4096,8192] [--repeats 3] [--steps 3]
        [--out bench/packing.json]

Each (shape, cap) runs in a fresh process on one torch thread: the real tiny model, `sampler=hf`, `--steps`
training steps after one warm-up step through `Trainer.train_step`; the figure is the median of the steps'
`time_train` (the update phase: rows, packing, advantages, forward + backward, optimizer step) and of the
process CPU seconds of whole steps. Caps alternate within each repeat, so a drift of the machine's load
touches all of them alike; the table gives each cap's update seconds relative to `none` (the unsplit pass).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# name -> overrides: bench-trl's two GRPO shapes (48 new tokens) and the default job (TRePO, its own defaults)
SHAPES = {
    "grpo 8x4": ["algo=grpo", "train.prompts_per_step=8", "algo.samples_per_prompt=4", "train.max_new_tokens=48"],
    "grpo 32x8": ["algo=grpo", "train.prompts_per_step=32", "algo.samples_per_prompt=8", "train.max_new_tokens=48"],
    "default job (trepo 32x4)": ["algo=trepo"],
}


def child(shape: str, cap: str, steps: int) -> dict:
    from bench_trl import one_thread_trainer  # scripts/ is this script's import path

    overrides = [*SHAPES[shape], "sampler=hf", f"train.steps={steps + 1}", "train.progress_bar=false",
                 f"train.micro_batch_tokens={'null' if cap == 'none' else cap}"]
    with tempfile.TemporaryDirectory() as tmp:
        trainer = one_thread_trainer(overrides, tmp)
        update_s, cpu_s, forward_tokens = [], [], []
        for step in range(1, steps + 2):
            cpu_start = time.process_time()
            metrics = trainer.train_step(step)
            cpu_s.append(time.process_time() - cpu_start)
            update_s.append(metrics["time_train"])
            forward_tokens.append(metrics["tokens_forward"])
        trainer.close()
    return {"update_s": statistics.median(update_s[1:]), "step_cpu_s": statistics.median(cpu_s[1:]),
            "tokens_forward": statistics.mean(forward_tokens[1:])}


def run_child(shape: str, cap: str, steps: int) -> dict:
    cmd = [sys.executable, __file__, "--child", json.dumps([shape, cap]), "--steps", str(steps)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"{shape} cap {cap} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def table(rows: list[dict]) -> str:
    lines = ["| shape | micro_batch_tokens | update s (median) | vs unsplit | step CPU s | forward tokens |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['shape']} | {row['cap']} | {row['update_s']:.3f} | {row['vs_unsplit']:.2f} | "
                     f"{row['step_cpu_s']:.3f} | {row['tokens_forward']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--caps", default="none,2048,4096,8192")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--shapes", default=",".join(SHAPES), help="comma-separated names of SHAPES")
    parser.add_argument("--out", default=str(ROOT / "bench" / "packing.json"))
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*json.loads(args.child), args.steps)))
        return
    caps, shapes = args.caps.split(","), args.shapes.split(",")
    runs = {(s, c): [] for s in shapes for c in caps}
    for _ in range(args.repeats):
        for shape in shapes:
            for cap in caps:  # alternated: the machine's drift touches every cap alike
                runs[(shape, cap)].append(run_child(shape, cap, args.steps))
                print(shape, cap, runs[(shape, cap)][-1], flush=True)
    rows = []
    for shape in shapes:
        base = statistics.median(r["update_s"] for r in runs[(shape, "none")]) if "none" in caps else None
        for cap in caps:
            part = runs[(shape, cap)]
            update = statistics.median(r["update_s"] for r in part)
            rows.append({"shape": shape, "cap": cap, "update_s": update, "vs_unsplit": update / base if base else 1.0,
                         "step_cpu_s": statistics.median(r["step_cpu_s"] for r in part),
                         "tokens_forward": statistics.mean(r["tokens_forward"] for r in part), "runs": part})
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"rows": rows, "repeats": args.repeats, "steps": args.steps,
                                          "load_average": os.getloadavg()}, indent=1) + "\n")
    print(table(rows))


if __name__ == "__main__":
    main()
