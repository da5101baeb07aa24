"""Asynchronous rollouts (rlx/train/rollout/remote.py): the staleness rules as pure functions, then real
2-process torchrun runs (gloo, one trainer rank + one HF-sampler generation rank, the real tiny model)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rlx.data.base import Problem
from rlx.record import Node, RecordVersionError, RolloutBatch, RolloutTree, from_plain, to_plain
from rlx.train.infra.checkpoint import complete_checkpoints
from rlx.train.rollout.remote import required_version, restore_pending, staleness_metrics, worker_rank
from tests.helpers import metrics
from tests.test_distributed import TORCHRUN, free_port


def batch(versions: list[int]) -> RolloutBatch:
    nodes = tuple(Node(parent=-1 if i == 0 else 0, fork=0 if i == 0 else 1, token_ids=(5, 6), logprobs=(-0.5, -1.0),
                       temperature=1.0, finished=True, reward=1.0, correct=True, text="x", policy_version=v)
                  for i, v in enumerate(versions))
    return RolloutBatch((RolloutTree(Problem("train/0", "1+1", "2"), 0, (1, 2), nodes),), min(versions))


def test_each_step_is_generated_k_versions_behind_and_workers_take_turns():
    assert [required_version(s, 2) for s in range(1, 6)] == [0, 0, 0, 1, 2]
    assert [required_version(s, 0) for s in range(1, 4)] == [0, 1, 2]  # k = 0: the synchronous loop's s - 1
    assert [worker_rank(s, 2) for s in range(1, 5)] == [1, 2, 1, 2]


def test_staleness_is_measured_and_bounded_on_every_node():
    assert staleness_metrics(batch([3, 3]), trainer_version=5, max_staleness=2, step=6) == {
        "staleness_mean": 2.0, "staleness_max": 2.0}
    with pytest.raises(RuntimeError, match="3 versions old, over train.max_staleness=2: not trained"):
        staleness_metrics(batch([2, 2]), trainer_version=5, max_staleness=2, step=6)
    with pytest.raises(RuntimeError, match=r"mixes policy versions \[2, 3\]"):  # a branch from another version
        staleness_metrics(batch([3, 2]), trainer_version=5, max_staleness=2, step=6)


def test_records_survive_a_checkpoint_and_the_bound_holds_after_resume():
    record = batch([4, 4])
    assert from_plain(to_plain(record)) == record
    saved = [{"step": 7, "record": to_plain(batch([5])), "extra": {}},
             {"step": 6, "record": to_plain(batch([4])), "extra": {"a": 1.0}}]
    assert sorted(restore_pending(saved, first_step=6, max_staleness=1)) == [6, 7]
    assert restore_pending(saved, first_step=6, max_staleness=1)[6][1] == {"a": 1.0}
    assert restore_pending(saved, first_step=6, max_staleness=0) == {}  # resumed with a smaller k: regenerated


@pytest.mark.parametrize("version", [1, 3, None])
def test_a_saved_record_of_another_record_version_is_refused_naming_it(version):
    plain = {**to_plain(batch([4])), "record_version": version}
    with pytest.raises(RecordVersionError, match=f"the checkpoint's record of step 6 has rollout-record version "
                                                 f"{version}, this rlx reads version 2"):
        restore_pending([{"step": 6, "record": plain, "extra": {}}], first_step=6, max_staleness=1)


def cmd(run_dir: Path, model_dir: Path, *extra: str, workers: int = 1) -> list[str]:
    launch = [*TORCHRUN, f"--nproc_per_node={1 + workers}", f"--master_port={free_port()}"] if workers else [
        sys.executable]
    return [*launch, "-m", "rlx.cli", "train", "sampler=hf", f"model.path={model_dir}", "train.steps=4",
            "train.prompts_per_step=4", "train.eval_size=8", "train.eval_every=2", "train.progress_bar=false",
            "algo.num_branch_points=2", "algo.rollouts_per_branch=2", f"train.rollout_workers={workers}",
            f"hydra.run.dir={run_dir}", *extra]


ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def run(command: list[str]) -> subprocess.CompletedProcess:
    result = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def without(rows: list[dict], *prefixes: str) -> list[dict]:
    return [{k: v for k, v in row.items() if not k.startswith(prefixes)} for row in rows]


@pytest.mark.slow
def test_k0_on_a_generation_rank_equals_the_synchronous_loop(tiny_model_dir, tmp_path):
    """TRePO with branches: generation on its own rank (weights published after every step, records sent back)
    at k = 0 logs exactly the synchronous single-process loop's metrics."""
    run(cmd(tmp_path / "sync", tiny_model_dir, workers=0))
    run(cmd(tmp_path / "async", tiny_model_dir, "train.max_staleness=0"))
    sync, disaggregated = metrics(tmp_path / "sync"), metrics(tmp_path / "async")
    assert all(row["staleness_max"] == 0.0 for row in disaggregated if "reward_mean" in row)
    assert without(disaggregated, "time_", "staleness_") == without(sync, "time_")


@pytest.mark.slow
def test_k1_is_bounded_deterministic_and_resumes_exactly_after_kill_9(tiny_model_dir, tmp_path):
    """k = 1: staleness min(1, s - 1) at every step, the decoupled objective on; a run killed with SIGKILL (every
    process) after its step-2 checkpoint and resumed logs the uninterrupted run's metrics at every step."""
    reference = tmp_path / "reference"
    run(cmd(reference, tiny_model_dir, "train.max_staleness=1", "train.save_every=1"))
    rows = [row for row in metrics(reference) if "reward_mean" in row]
    assert [row["staleness_max"] for row in rows] == [0.0, 1.0, 1.0, 1.0]
    assert all("behav_weight_mean" in row for row in rows)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(cmd(killed, tiny_model_dir, "train.max_staleness=1", "train.save_every=1"), env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 600
    while time.time() < deadline and not any(p.name == "step_2" for p in complete_checkpoints(killed / "checkpoints")):
        time.sleep(0.1)
    _signal_all(proc.pid, signal.SIGKILL)  # the agent and both ranks (torchrun starts them in sessions of their own)
    proc.wait()
    assert not (killed / "summary.json").exists()
    out = run(cmd(killed, tiny_model_dir, "train.max_staleness=1", "train.save_every=1", "resume=auto"))
    assert "resumed from" in out.stdout
    assert without(metrics(killed), "time_") == without(metrics(reference), "time_")  # time_wait: a timing


@pytest.mark.slow
def test_a_killed_generation_worker_stops_the_run_with_a_checkpoint(tiny_model_dir, tmp_path):
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(cmd(run_dir, tiny_model_dir, "train.max_staleness=1", "train.steps=40"), env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    deadline = time.time() + 600
    while time.time() < deadline and len(_rows(run_dir)) < 3:  # step 0 (evaluation), steps 1, 2
        time.sleep(0.1)
    worker = _generation_rank(proc.pid)
    os.kill(worker, signal.SIGKILL)
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode != 0
    assert "generation worker (rank 1) failed" in output and "resumable checkpoint" in output, output[-3000:]
    assert complete_checkpoints(run_dir / "checkpoints")


def _rows(run_dir: Path) -> list[str]:
    path = run_dir / "metrics.jsonl"
    return path.read_text().splitlines() if path.exists() else []


def _generation_rank(agent_pid: int) -> int:
    """The pid of torchrun's rank-1 process (its environment says RANK=1)."""
    import psutil

    for child in psutil.Process(agent_pid).children(recursive=True):
        if child.environ().get("RANK") == "1":
            return child.pid
    raise AssertionError("no rank-1 process under the torchrun agent")


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1])
def test_a_preempted_async_run_checkpoints_its_pipeline_and_resumes_exactly(sig, tiny_model_dir, tmp_path):
    """A preemption signal during a k = 1 run: SIGTERM to the torchrun agent (it forwards it to both ranks), SIGUSR1
    to every process of the job (as SLURM's --signal delivers it; the agent does not forward it). The generation
    rank only raises a flag, the trainer decides: one checkpoint of the last finished step, holding the record
    already generated for the next step; `resume=auto` trains every record once and logs the uninterrupted
    run's metrics (timings aside), the staleness bound holding at every step."""
    reference = tmp_path / "reference"
    run(cmd(reference, tiny_model_dir, "train.max_staleness=1"))
    preempted = tmp_path / "preempted"
    proc = subprocess.Popen(cmd(preempted, tiny_model_dir, "train.max_staleness=1"), env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    deadline = time.time() + 600
    while time.time() < deadline and len(_rows(preempted)) < 2:  # step 0 (evaluation), step 1
        time.sleep(0.01)
    if sig == signal.SIGUSR1:
        _signal_all(proc.pid, sig)
    else:
        proc.send_signal(sig)
    output, _ = proc.communicate(timeout=600)
    saved = complete_checkpoints(preempted / "checkpoints")
    assert len(saved) == 1 and f"resumable checkpoint {saved[0]}" in output, output[-3000:]
    assert "generation worker" not in output  # the worker kept serving until the trainer said stop
    assert not (preempted / "summary.json").exists()
    out = run(cmd(preempted, tiny_model_dir, "train.max_staleness=1", "resume=auto"))
    assert f"resumed from {saved[0]}" in out.stdout
    resumed = metrics(preempted)
    assert without(resumed, "time_") == without(metrics(reference), "time_")
    assert all(row["staleness_max"] <= 1.0 for row in resumed if "reward_mean" in row)


def _signal_all(agent_pid: int, sig: int) -> None:
    """`sig` to torchrun's agent and every process under it, at once."""
    import psutil

    for process in [*psutil.Process(agent_pid).children(recursive=True), psutil.Process(agent_pid)]:
        process.send_signal(sig)


@pytest.mark.slow
def test_a_worker_killed_while_the_trainer_updates_stops_the_run_within_a_minute(tiny_model_dir, tmp_path):
    """kill -9 of the generation rank while the trainer is in its update (k = 0: the worker waits for the next
    weights, so the trainer's next channel operation is a send, which raised gloo's raw "Connection closed by
    peer" before): the documented message, a checkpoint of the last finished step, a non-zero exit within 60 s,
    and `resume=auto` continues from that checkpoint."""
    run_dir = tmp_path / "run"
    slow_update = ("train.max_staleness=0", "train.steps=30", "algo.optimization_num=40", "train.eval_every=0")
    proc = subprocess.Popen(cmd(run_dir, tiny_model_dir, *slow_update), env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    deadline = time.time() + 600
    while time.time() < deadline and len(_rows(run_dir)) < 3:  # step 0 (evaluation), steps 1, 2
        time.sleep(0.01)
    last = json.loads(_rows(run_dir)[-1])
    # the worker generates the next step while the trainer waits, then the trainer updates: kill mid-update
    time.sleep(last["time_wait"] + 0.5 * last["time_train"])
    os.kill(_generation_rank(proc.pid), signal.SIGKILL)
    killed = time.time()
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode != 0 and time.time() - killed <= 60, output[-3000:]
    saved = complete_checkpoints(run_dir / "checkpoints")
    assert len(saved) == 1, output[-3000:]
    step = int(saved[0].name.removeprefix("step_"))
    assert step >= 2 and ("rlx train: generation worker (rank 1) failed: cannot send the weights message "
                          "(Connection closed by peer [127.0.0.1]:" in output), output[-3000:]
    assert f"Stopped after step {step}: resumable checkpoint {saved[0]}; continue with resume=auto" in output
    assert re.search(r'File ".*/rlx/', output) is None, output[-3000:]  # torchrun's own report aside, no traceback
    out = run(cmd(run_dir, tiny_model_dir, *slow_update[:1], f"train.steps={step + 1}", "resume=auto"))
    assert f"resumed from {saved[0]}" in out.stdout
    assert [r["step"] for r in metrics(run_dir) if "reward_mean" in r] == list(range(1, step + 2))
