"""Preemption: a SIGTERM mid-run finishes the step, writes a resumable checkpoint and exits with EXIT_CODE;
`resume=auto` then logs the same metrics at every step as an uninterrupted run (CPU, the real tiny model)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from rlx.train import preemption
from rlx.train.checkpoint import complete_checkpoints
from tests.helpers import assert_same_accuracies, resume_matches, run_to_end, signal_when


def train_cmd(run_dir: Path, model_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "rlx.cli", "train", "sampler=hf", f"model.path={model_dir}", "train.steps=4",
            "train.prompts_per_step=4", "train.eval_size=8", "train.eval_every=0", "train.progress_bar=false",
            "algo.num_branch_points=2", "algo.rollouts_per_branch=2", f"hydra.run.dir={run_dir}", *extra]


def test_signal_raises_a_flag_and_exit_hands_over_to_the_previous_handler():
    seen = []
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: seen.append(signum))
    try:
        preemption.install()
        assert not preemption.requested() and not preemption.should_stop()
        os.kill(os.getpid(), signal.SIGUSR1)
        assert preemption.requested() and preemption.should_stop() and seen == []  # ours ran, not the old one
        with pytest.raises(SystemExit) as exit_info:
            preemption.exit()
        assert exit_info.value.code == preemption.EXIT_CODE
        assert seen == [signal.SIGUSR1]  # e.g. submitit's requeue handler, called before exiting
        assert not preemption.requested()  # uninstalled: the previous handlers are back
        os.kill(os.getpid(), signal.SIGUSR1)
        assert seen == [signal.SIGUSR1, signal.SIGUSR1]
    finally:
        preemption.uninstall()
        signal.signal(signal.SIGUSR1, previous)


def test_a_preempted_run_checkpoints_then_tears_down_through_the_trainer_once():
    """The end of a run is one function, `Trainer.close` (sampler, logger, process group), for a preempted run as
    for a finished one; a recording stand-in for the trainer shows the order (pure control flow)."""
    calls = []

    class Trainer:
        def checkpoint(self, step, extra):
            calls.append(("checkpoint", step, extra))
            return Path("run/checkpoints/step_000003")

        def close(self):
            calls.append(("close",))

    progress = type("Progress", (), {"close": lambda self: calls.append(("progress",))})()
    with pytest.raises(SystemExit) as exit_info:
        preemption.checkpoint_and_exit(Trainer(), 3, {"elapsed": 1.0}, progress)
    assert exit_info.value.code == preemption.EXIT_CODE
    assert calls == [("progress",), ("checkpoint", 3, {"elapsed": 1.0}), ("close",)]


@pytest.mark.slow
def test_sigterm_then_resume_reproduces_every_step(tiny_model_dir, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    reference = tmp_path / "reference"
    run_to_end(train_cmd(reference, tiny_model_dir), env)

    run = tmp_path / "preempted"
    proc = signal_when(train_cmd(run, tiny_model_dir), env, lambda: len(_rows(run)) >= 2,  # step 0 (evaluation), 1
                       signal.SIGTERM, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == preemption.EXIT_CODE, stderr[-3000:]
    saved = complete_checkpoints(run / "checkpoints")
    assert len(saved) == 1 and saved[0].name in {"step_1", "step_2", "step_3"}  # no save_every: the signal's
    assert f"resumable checkpoint {saved[0]}" in stdout
    assert not (run / "summary.json").exists()

    stdout = resume_matches(train_cmd(run, tiny_model_dir, "resume=auto"), env, run, reference)
    assert f"resumed from {saved[0]}" in stdout
    assert_same_accuracies(run, reference)


def _rows(run_dir: Path) -> list[str]:
    path = run_dir / "metrics.jsonl"
    return path.read_text().splitlines() if path.exists() else []


@pytest.mark.slow
def test_sigterm_to_torchrun_stops_both_ranks_after_one_step_and_resumes_exactly(tiny_model_dir, tmp_path):
    """SIGTERM to the torchrun agent: it forwards the signal to both ranks, which agree on the step, write one
    checkpoint and exit; `resume=auto` under torchrun then reproduces the uninterrupted 2-rank run."""
    from tests.test_distributed import TORCHRUN, free_port

    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def cmd(run_dir: Path, *extra: str) -> list[str]:
        # [1:]: torchrun takes the interpreter's place
        return [*TORCHRUN, "--nproc_per_node=2", f"--master_port={free_port()}", *train_cmd(run_dir, tiny_model_dir,
                                                                                            *extra)[1:]]

    reference = tmp_path / "reference"
    run_to_end(cmd(reference), env)
    run = tmp_path / "preempted"
    proc = signal_when(cmd(run), env, lambda: len(_rows(run)) >= 2, signal.SIGTERM, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True)
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode != 0  # torchrun reports the signal it received
    saved = complete_checkpoints(run / "checkpoints")
    assert len(saved) == 1 and f"resumable checkpoint {saved[0]}" in output, output[-3000:]
    assert output.count("received SIGTERM") == 2  # both ranks caught it, neither was killed

    resume_matches(cmd(run, "resume=auto"), env, run, reference)
    digests = {(d / f"rank_{r}.params.sha256").read_text() for d in (run, reference) for r in range(2)}
    assert len(digests) == 1  # resumed replicas identical to each other and to the uninterrupted run's
