"""How long `rlx train` takes to exit after a SIGTERM, per phase (docs/experiments.md,
"Preemption in every phase, the lock, corrupt checkpoints").

Two ways to land the signal, each on a fresh run of the real tiny model (CPU, HF sampler):
  - `--pause PLACE[,PLACE...]`: the run waits at PLACE (RLX_PAUSE_AT, rlx/train/infra/preemption.py: e.g.
    `generate@2`, `frozen@2`, `update@2`, `final_eval`) and is signalled there: the latency of the stop itself
    (checkpoint, teardown);
  - `--at FRACTION[,FRACTION...]`: no pause; after step 1's metrics row the signal comes FRACTION x step 1's
    wall time later, wherever the run then is (the phase is read from its "received SIGTERM during ..." line):
    the wait for the next check included.
`--torchrun N` runs N processes (SIGTERM to the agent, which forwards it to every rank); `--workers K` makes K of
them generation ranks (train.rollout_workers=K). Extra arguments are Hydra overrides. One JSON line per run:
    .venv/bin/python scripts/preemption_latency.py --pause update@2 --at 0.2,0.5,0.8 algo.optimization_num=2
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rlx.recipes.tiny import TinyModelSpec, ensure_tiny_model
from rlx.train.infra.checkpoint import complete_checkpoints

PAUSED = "RLX_PAUSE_AT: paused in"


def command(run_dir: Path, args, overrides: list[str]) -> list[str]:
    launch = [sys.executable]
    if args.torchrun > 1:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        launch = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={args.torchrun}",
                  f"--master_port={port}"]
    return [*launch, "-m", "rlx.cli", "train", "sampler=hf", f"model.path={ensure_tiny_model(TinyModelSpec())}",
            f"train.steps={args.steps}", "train.prompts_per_step=4", "train.eval_size=8", "train.eval_every=0",
            "train.progress_bar=false", "algo.num_branch_points=2", "algo.rollouts_per_branch=2",
            f"train.rollout_workers={args.workers}", f"hydra.run.dir={run_dir}", *overrides]


def step_seconds(run_dir: Path) -> float | None:
    """Step 1's wall time once its metrics row is written (row 0 is the first evaluation)."""
    path = run_dir / "metrics.jsonl"
    rows = path.read_text().splitlines() if path.exists() else []
    steps = [json.loads(r) for r in rows if '"step": 1,' in r or '"step": 1}' in r]
    return sum(steps[0][k] for k in steps[0] if k.startswith("time_")) if steps else None


def trial(args, overrides: list[str], pause: str | None, fraction: float | None) -> dict:
    run_dir = Path(tempfile.mkdtemp(prefix="latency-")) / "run"
    log = run_dir.parent / "out.log"
    env = {**os.environ, "OMP_NUM_THREADS": "1", **({"RLX_PAUSE_AT": pause} if pause else {})}
    with log.open("w") as out:
        proc = subprocess.Popen(command(run_dir, args, overrides), env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.time() + 900
    while proc.poll() is None and time.time() < deadline:
        if pause and PAUSED in log.read_text():
            break
        if fraction is not None and (seconds := step_seconds(run_dir)) is not None:
            time.sleep(fraction * seconds)
            break
        time.sleep(0.05)
    sent = time.time()
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=600)
    latency = time.time() - sent
    output = log.read_text()
    phases = re.findall(r"received SIGTERM during (.+?): ", output)
    saved = [p.name for p in complete_checkpoints(run_dir / "checkpoints")]
    return {"pause": pause, "at": fraction, "exit": code, "latency_s": round(latency, 1),
            "phases": sorted(set(phases)), "checkpoints": saved,
            "stopped": re.findall(r"\[rlx\] preempted [^:]*", output)[:1], "log": str(log)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pause", default="", help="comma-separated RLX_PAUSE_AT places")
    parser.add_argument("--at", default="", help="comma-separated fractions of step 1's wall time after it")
    parser.add_argument("--torchrun", type=int, default=1)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--steps", type=int, default=3)
    args, overrides = parser.parse_known_args()
    print(json.dumps({"load_1min": os.getloadavg()[0], "cpus": os.cpu_count(), "torchrun": args.torchrun,
                      "workers": args.workers, "overrides": overrides}), flush=True)
    for pause in filter(None, args.pause.split(",")):
        print(json.dumps(trial(args, overrides, pause, None)), flush=True)
    for fraction in filter(None, args.at.split(",")):
        print(json.dumps(trial(args, overrides, None, float(fraction))), flush=True)


if __name__ == "__main__":
    main()
