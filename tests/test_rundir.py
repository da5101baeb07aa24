"""Safe and honest resume, one run per directory (issue 12 items 3 and 4), with the real tiny model, the real
HF sampler and the real CLI: checkpoint manifests, corrupt-checkpoint fallback, refusal of another run's
checkpoint, changed settings recorded, weights-only loading, no duplicate metric rows, finished runs left
alone, the run-directory lock and stale-lock takeover."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from rlx.train import checkpoint

TIMING_KEYS = {"time_generate", "time_branch", "time_score", "time_train", "time_sync", "wall_seconds",
               "wall_train_s", "cpu_train_s"}
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def train(run_dir: Path, model_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "rlx.cli", "train", "sampler=hf", f"model.path={model_dir}", "train.steps=3",
           "train.prompts_per_step=4", "train.eval_size=8", "train.eval_every=0", "train.progress_bar=false",
           f"hydra.run.dir={run_dir}", *extra]
    return subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=900)


def metrics(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k not in TIMING_KEYS} for row in rows]


@pytest.mark.slow
def test_resume_verifies_falls_back_refuses_and_records(tiny_model_dir, tmp_path):
    run_dir = tmp_path / "run"
    first = train(run_dir, tiny_model_dir, "train.save_every=1")
    assert first.returncode == 0, first.stderr[-3000:]
    steps = [p.name for p in checkpoint.complete_checkpoints(run_dir / "checkpoints")]
    assert steps == ["step_1", "step_2"]
    manifest = json.loads((run_dir / "checkpoints" / "step_2" / "manifest.json").read_text())
    state_file = run_dir / "checkpoints" / "step_2" / "trainer_state.pt"
    assert manifest["files"]["trainer_state.pt"] == checkpoint.file_sha256(state_file)
    assert manifest["identity"]["algo.name"] == "trepo" and manifest["settings"]["train.lr"] == 5e-5
    reference, config_yaml = metrics(run_dir), (run_dir / "config.yaml").read_text()

    # a finished run: resume=auto says so, exits 0 and trains nothing
    again = train(run_dir, tiny_model_dir, "train.save_every=1", "resume=auto")
    assert again.returncode == 0 and "holds a finished run" in again.stdout
    assert metrics(run_dir) == reference and "test accuracy" not in again.stdout

    # step_2 corrupt: skipped with its reason, resume from step_1; the changed lr is a warning and history
    (run_dir / "summary.json").unlink()
    with (run_dir / "checkpoints" / "step_2" / "model.safetensors").open("ab") as f:
        f.write(b"bit rot")
    resumed = train(run_dir, tiny_model_dir, "train.save_every=1", "resume=auto", "train.lr=1e-4")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert (f"[rlx] resume=auto: skipping {run_dir}/checkpoints/step_2: model.safetensors does not match its "
            "sha256 in manifest.json") in resumed.stdout
    assert f"resumed from {run_dir}/checkpoints/step_1 (step 1)" in resumed.stdout
    assert "changed settings (recorded in config_history.jsonl): train.lr: 5e-05 -> 0.0001" in resumed.stdout
    history = [json.loads(line) for line in (run_dir / "config_history.jsonl").read_text().splitlines()]
    assert [(h["step"], h["changed"]) for h in history] == [(1, {"train.lr": {"checkpoint": 5e-5, "now": 1e-4}})]
    assert (run_dir / "config.yaml").read_text() == config_yaml  # the run's first configuration is kept
    rows = metrics(run_dir)
    assert [r["step"] for r in rows] == [r["step"] for r in reference] == [0, 1, 2, 3, 3]
    assert rows[:2] == reference[:2]  # up to the checkpoint, the rows of the first attempt

    # another algorithm's (or LoRA shape's) checkpoint is refused naming the keys, before any model loads
    (run_dir / "summary.json").unlink()
    other = train(run_dir, tiny_model_dir, "resume=auto", "algo=grpo", "model.lora.r=4")
    assert other.returncode == 1 and "Traceback" not in other.stderr
    assert other.stderr.strip() == (
        f"rlx train: resume: {run_dir}/checkpoints/step_2 belongs to another kind of run: algo.name='trepo' in the "
        "checkpoint, 'grpo' now; model.lora.r=0 in the checkpoint, 4 now (use a new run directory, or resume "
        "with the checkpoint's settings)")
    assert not (run_dir / "rlx.lock").exists()


@pytest.mark.slow
def test_restart_before_the_first_checkpoint_rewrites_metrics(tiny_model_dir, tmp_path):
    run_dir = tmp_path / "run"
    assert train(run_dir, tiny_model_dir, "train.steps=2").returncode == 0
    reference = metrics(run_dir)
    (run_dir / "summary.json").unlink()  # as if killed after its last step: no checkpoint to resume from
    again = train(run_dir, tiny_model_dir, "train.steps=2", "resume=auto")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "starting at step 1: replacing the 4 rows of an earlier attempt" in again.stdout
    assert metrics(run_dir) == reference  # the same 4 rows, not 8


def test_trainer_state_loads_weights_only(tmp_path):
    """A checkpoint from elsewhere cannot run code: its pickle payload is refused, even with a valid manifest."""
    import torch

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    ckpt = tmp_path / "step_1"
    ckpt.mkdir()
    torch.save({"step": 1, "optimizers": [], "critic": None, "rng": Payload(), "extra": {}}, ckpt / "trainer_state.pt")
    with pytest.raises(Exception) as err:
        checkpoint.load_checkpoint(ckpt, torch.nn.Linear(2, 2), [], None)
    assert not marker.exists()  # the payload never ran
    assert type(err.value).__name__ == "CheckpointError" and "trainer_state.pt: refused" in str(err.value)
    checkpoint.write_manifest(ckpt, 1, {})
    assert checkpoint.read_manifest(ckpt)["step"] == 1  # the sha256 checks pass: an attacker can recompute them


def test_rng_states_round_trip_through_the_safe_format(tmp_path):
    import random

    import numpy as np
    import torch

    random.seed(3), np.random.seed(3), torch.manual_seed(3)
    np.random.randn()  # a cached Gaussian is part of numpy's state
    ckpt = tmp_path / "step_1"
    ckpt.mkdir()
    torch.save({"rng": checkpoint.rng_state()}, ckpt / "trainer_state.pt")
    expected = (random.random(), np.random.randn(), torch.rand(1).item())
    checkpoint.set_rng_state(checkpoint.load_trainer_state(ckpt)["rng"])
    assert (random.random(), np.random.randn(), torch.rand(1).item()) == expected


def test_missing_or_edited_files_fail_verification(tmp_path):
    from rlx.train.checkpoint import CheckpointError

    ckpt = tmp_path / "step_3"
    ckpt.mkdir()
    (ckpt / "trainer_state.pt").write_bytes(b"state")
    (ckpt / "model.safetensors").write_bytes(b"weights")
    with pytest.raises(CheckpointError, match="no manifest.json"):
        checkpoint.read_manifest(ckpt)
    checkpoint.write_manifest(ckpt, 3, {})
    (ckpt / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"model\.safetensors is missing"):
        checkpoint.read_manifest(ckpt)


def test_second_run_on_a_locked_directory_fails_at_once_naming_the_owner(tmp_path):
    from rlx.train.rundir import RunDirError, RunLock

    lock = RunLock.acquire(tmp_path)
    owner = f"pid {os.getpid()} on {socket.gethostname()}"
    with pytest.raises(RunDirError, match=f"in use by another rlx run \\({owner}"):
        RunLock.acquire(tmp_path)
    second = subprocess.run([sys.executable, "-m", "rlx.cli", "train", "sampler=hf", f"hydra.run.dir={tmp_path}"],
                            env=ENV, capture_output=True, text=True, timeout=120)
    assert second.returncode == 1 and "Traceback" not in second.stderr
    assert second.stderr.startswith(f"rlx train: {tmp_path} is in use by another rlx run ({owner}, since ")
    assert not (tmp_path / ".hydra").exists()  # failed before Hydra wrote anything into the directory
    lock.release()
    assert not (tmp_path / "rlx.lock").exists()
    RunLock.acquire(tmp_path).release()  # free again


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path, capsys):
    from rlx.train.rundir import RunLock

    dead = subprocess.Popen(["true"])
    dead.wait()  # reaped: its PID names no process
    stale = {"pid": dead.pid, "host": socket.gethostname(), "start": "1", "since": "earlier"}
    (tmp_path / "rlx.lock").write_text(json.dumps(stale))
    lock = RunLock.acquire(tmp_path)
    taken = f"taking over the stale lock of {tmp_path} (pid {dead.pid} on {socket.gethostname()}"
    assert taken in capsys.readouterr().out
    assert json.loads((tmp_path / "rlx.lock").read_text())["pid"] == os.getpid()
    lock.release()


def test_lock_of_a_reused_pid_is_stale(tmp_path, capsys):
    """The PID is alive but is another process (started at another time): the lock is stale."""
    from rlx.train.rundir import RunLock

    stale = {"pid": os.getpid(), "host": socket.gethostname(), "start": "0", "since": "earlier"}
    (tmp_path / "rlx.lock").write_text(json.dumps(stale))
    RunLock.acquire(tmp_path).release()
    assert "taking over the stale lock" in capsys.readouterr().out
