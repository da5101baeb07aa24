"""Helpers shared by the end-to-end tests that interrupt a training run and resume it."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

TIMING_KEYS = {"time_generate", "time_branch", "time_score", "time_train", "time_sync", "wall_seconds", "wall_train_s",
               "cpu_train_s"}


def metrics(run_dir: Path) -> list[dict]:
    """The run's metrics.jsonl rows without the timings (which differ between identical runs)."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k not in TIMING_KEYS} for row in rows]


def signal_when(cmd: list[str], env: dict, ready: Callable[[], bool], sig: int, **popen_kwargs) -> subprocess.Popen:
    """Starts `cmd`, waits until `ready()` (10 minutes at most) and sends the process `sig`."""
    proc = subprocess.Popen(cmd, env=env, **popen_kwargs)
    deadline = time.time() + 600
    while time.time() < deadline and not ready():
        time.sleep(0.1)
    proc.send_signal(sig)
    return proc


def run_to_end(cmd: list[str], env: dict) -> None:
    """The uninterrupted reference run (it must succeed)."""
    subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=900)


def resume_matches(cmd: list[str], env: dict, run_dir: Path, reference: Path) -> str:
    """Runs `cmd` (a `resume=auto` of `run_dir`), asserts it succeeds and logs the reference's metrics at every
    step; returns its stdout."""
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert metrics(run_dir) == metrics(reference)
    return result.stdout


def assert_same_accuracies(run_dir: Path, reference: Path) -> None:
    """The resumed run's summary reports the uninterrupted run's accuracies before and after training."""
    before = json.loads((reference / "summary.json").read_text())
    after = json.loads((run_dir / "summary.json").read_text())
    assert (after["accuracy_before"], after["accuracy_after"]) == (before["accuracy_before"], before["accuracy_after"])


def paused_in(cmd: list[str], env: dict, phase: str, log: Path) -> subprocess.Popen:
    """Starts `cmd` with RLX_PAUSE_AT=`phase` (rlx/train/infra/preemption.py), its stdout and stderr to `log`.out and
    `log`.err, and returns once it says it paused there (ready for a signal), or has exited."""
    from rlx.train.infra.preemption import PAUSE_ENV

    with log.with_suffix(".out").open("w") as out, log.with_suffix(".err").open("w") as err:
        proc = subprocess.Popen(cmd, env={**env, PAUSE_ENV: phase}, stdout=out, stderr=err, text=True)
    wait_for(lambda: proc.poll() is not None or f"{PAUSE_ENV}: paused in" in log.with_suffix(".out").read_text())
    return proc


def wait_for(ready: Callable[[], bool], seconds: float = 600, interval: float = 0.1) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline and not ready():
        time.sleep(interval)
