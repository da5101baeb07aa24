"""Exact resume: a run killed with SIGKILL after a checkpoint and resumed with `resume=auto` logs the same
metrics at every step as an uninterrupted run (CPU, the real tiny model, the real HF sampler)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from rlx.train.infra.checkpoint import complete_checkpoints
from tests.helpers import assert_same_accuracies, resume_matches, run_to_end, signal_when


def train_cmd(run_dir: Path, model_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "rlx.cli", "train", "sampler=hf", f"model.path={model_dir}", "train.steps=4",
            "train.prompts_per_step=4", "train.eval_size=8", "train.eval_every=2", "train.save_every=1",
            "train.progress_bar=false", "algo.num_branch_points=2", "algo.rollouts_per_branch=2",
            f"hydra.run.dir={run_dir}", *extra]


@pytest.mark.slow
def test_sigkill_then_resume_reproduces_every_step(tiny_model_dir, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    reference = tmp_path / "reference"
    run_to_end(train_cmd(reference, tiny_model_dir), env)

    killed = tmp_path / "killed"
    proc = signal_when(train_cmd(killed, tiny_model_dir), env,
                       lambda: any(p.name == "step_2" for p in complete_checkpoints(killed / "checkpoints")),
                       signal.SIGKILL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proc.wait()
    assert complete_checkpoints(killed / "checkpoints"), "no checkpoint was written before the kill"
    assert not (killed / "summary.json").exists()

    stdout = resume_matches(train_cmd(killed, tiny_model_dir, "resume=auto"), env, killed, reference)
    assert "resumed from" in stdout
    assert_same_accuracies(killed, reference)
    assert len(complete_checkpoints(killed / "checkpoints")) <= 2  # keep_last
