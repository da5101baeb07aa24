"""Safe and honest resume, one run per directory (issue 12 items 3 and 4), with the real tiny model, the real
HF sampler and the real CLI: checkpoint manifests, corrupt-checkpoint fallback, a stop when every checkpoint is
corrupt (and resume=restart), refusal of another run's checkpoint, changed settings recorded, weights-only
loading, no duplicate metric rows, finished runs left alone, the run-directory lock (taken before Hydra writes
into the directory: two simultaneous starts) and stale-lock takeover."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from rlx.train.infra import checkpoint, preemption
from tests.helpers import wait_for

TIMING_KEYS = {"time_generate", "time_branch", "time_score", "time_train", "time_sync", "wall_seconds",
               "wall_train_s", "cpu_train_s"}
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def train_cmd(run_dir: Path, model_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "rlx.cli", "train", "sampler=hf", f"model.path={model_dir}", "train.steps=3",
            "train.prompts_per_step=4", "train.eval_size=8", "train.eval_every=0", "train.progress_bar=false",
            f"hydra.run.dir={run_dir}", *extra]


def train(run_dir: Path, model_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(train_cmd(run_dir, model_dir, *extra), env=ENV, capture_output=True, text=True, timeout=900)


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
    from rlx.train.infra.checkpoint import CheckpointError

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
    from rlx.train.infra.rundir import RunDirError, RunLock

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
    from rlx.train.infra.rundir import RunLock

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
    from rlx.train.infra.rundir import RunLock

    stale = {"pid": os.getpid(), "host": socket.gethostname(), "start": "0", "since": "earlier"}
    (tmp_path / "rlx.lock").write_text(json.dumps(stale))
    RunLock.acquire(tmp_path).release()
    assert "taking over the stale lock" in capsys.readouterr().out


@pytest.mark.slow
def test_every_checkpoint_corrupt_stops_listing_each_and_resume_restart_starts_again(tiny_model_dir, tmp_path):
    run_dir = tmp_path / "run"
    root = run_dir / "checkpoints"
    for step in (1, 2, 3):
        folder = root / f"step_{step}"
        folder.mkdir(parents=True)
        (folder / "trainer_state.pt").write_bytes(b"state")
        (folder / "model.safetensors").write_bytes(b"weights")
        if step > 1:
            checkpoint.write_manifest(folder, step, {})
    (root / "step_2" / "model.safetensors").write_bytes(b"bit rot")
    (root / "step_3" / "manifest.json").write_text("{")
    earlier_rows = '{"step": 0, "test_accuracy": 0.5}\n'
    (run_dir / "metrics.jsonl").write_text(earlier_rows)

    stopped = train(run_dir, tiny_model_dir, "resume=auto")
    assert stopped.returncode == 1 and "Traceback" not in stopped.stderr
    assert stopped.stderr.strip() == (
        f"rlx train: resume=auto: none of the 3 checkpoints in {root} can be resumed, and it will not restart from "
        "step 1 on its own:\n"
        f"  skipped {root}/step_3: unreadable manifest.json (Expecting property name enclosed in double quotes: "
        "line 1 column 2 (char 1))\n"
        f"  skipped {root}/step_2: model.safetensors does not match its sha256 in manifest.json (corrupt or "
        "modified)\n"
        f"  skipped {root}/step_1: no manifest.json (incomplete, or written by an older rlx)\n"
        "To train again from step 1 in this run directory use resume=restart (the earlier attempt's files are "
        "moved aside, not deleted); to resume a checkpoint of your choice, resume=<its path>.")
    assert "test accuracy" not in stopped.stdout  # stopped before any model loaded
    assert (run_dir / "metrics.jsonl").read_text() == earlier_rows and not (run_dir / "rlx.lock").exists()

    restarted = train(run_dir, tiny_model_dir, "resume=restart", "train.steps=1")
    assert restarted.returncode == 0, restarted.stderr[-3000:]
    [moved] = [p for p in run_dir.iterdir() if p.name.startswith("replaced-")]
    assert (f"[rlx] resume=restart: starting again at step 1; the earlier attempt's checkpoints, metrics.jsonl "
            f"moved to {moved}") in restarted.stdout
    assert sorted(p.name for p in moved.iterdir()) == ["checkpoints", "metrics.jsonl"]
    assert (moved / "checkpoints" / "step_2" / "model.safetensors").read_bytes() == b"bit rot"
    assert (moved / "metrics.jsonl").read_text() == earlier_rows
    assert [row["step"] for row in metrics(run_dir)] == [0, 1, 1] and not root.exists()
    assert json.loads((run_dir / "summary.json").read_text())["steps"] == 1


@pytest.mark.slow
def test_simultaneous_starts_on_one_directory_leave_the_winner_s_files_alone(tiny_model_dir, tmp_path):
    """Three runs started at once on one directory (seeds 0, 1, 2): one takes the lock, the others fail in one
    line having written nothing: `.hydra/` and `config.yaml` are the winner's (the losers' Hydra used to write
    their `.hydra/` over the winner's, then lose the lock)."""
    from rlx.train.infra.preemption import PAUSE_ENV

    run_dir, seeds = tmp_path / "run", (0, 1, 2)
    procs = []
    for seed in seeds:  # the winner waits in its model load (RLX_PAUSE_AT), holding the lock
        with (tmp_path / f"{seed}.out").open("w") as out, (tmp_path / f"{seed}.err").open("w") as err:
            procs.append(subprocess.Popen(train_cmd(run_dir, tiny_model_dir, f"seed={seed}"), stdout=out, stderr=err,
                                          env={**ENV, PAUSE_ENV: "model_load"}))
    wait_for(lambda: sum(p.poll() is not None for p in procs) >= 2)
    [winner_seed] = [seed for seed, p in zip(seeds, procs, strict=True) if p.poll() is None]
    winner = procs[winner_seed]
    wait_for(lambda: winner.poll() is not None or "paused in model" in (tmp_path / f"{winner_seed}.out").read_text())
    try:
        overrides = (run_dir / ".hydra" / "overrides.yaml").read_text()
        assert [line for line in overrides.splitlines() if "seed=" in line] == [f"- seed={winner_seed}"]
        for config in (run_dir / ".hydra" / "config.yaml", run_dir / "config.yaml"):
            assert f"\nseed: {winner_seed}\n" in config.read_text(), config
        for seed in set(seeds) - {winner_seed}:
            assert procs[seed].returncode == 1
            assert (tmp_path / f"{seed}.err").read_text().startswith(f"rlx train: {run_dir} is in use by another "
                                                                     f"rlx run (pid {winner.pid} on ")
        assert json.loads((run_dir / "rlx.lock").read_text())["pid"] == winner.pid
    finally:
        winner.send_signal(signal.SIGTERM)
        assert winner.wait(timeout=600) == preemption.EXIT_CODE


@pytest.mark.slow
def test_the_lock_is_taken_before_hydra_writes_into_the_run_directory(tiny_model_dir, tmp_path):
    """The deterministic half of the race above: when Hydra's `.hydra/` appears, `rlx.lock` is already there."""
    from rlx.train.infra.preemption import PAUSE_ENV

    run_dir = tmp_path / "run"
    proc = subprocess.Popen(train_cmd(run_dir, tiny_model_dir), env={**ENV, PAUSE_ENV: "model_load"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: proc.poll() is not None or (run_dir / ".hydra").exists(), interval=0.002)
        assert (run_dir / "rlx.lock").exists()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=600)
