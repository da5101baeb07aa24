"""Preemption in every phase: a SIGTERM/SIGUSR1 during start-up, model load or the first evaluation exits with
EXIT_CODE having nothing to save; mid-run it finishes the step, writes a resumable checkpoint and exits; during the
final evaluation it checkpoints the last step and `resume=auto` goes straight back into the evaluation. Every
resumed run logs the same metrics at every step as an uninterrupted run (CPU, the real tiny model, real signals;
RLX_PAUSE_AT holds a run inside a phase so that the signal lands there)."""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from rlx.train.infra import preemption
from rlx.train.infra.checkpoint import complete_checkpoints
from tests.helpers import assert_same_accuracies, metrics, paused_in, resume_matches, run_to_end, signal_when


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


def test_a_signal_in_an_interruptible_phase_raises_at_once_and_one_before_it_on_entry():
    try:
        preemption.install()
        with preemption.within("training"):
            os.kill(os.getpid(), signal.SIGTERM)  # a step in progress: only the flag
            assert preemption.requested()
        with pytest.raises(preemption.Preempted) as stopped, preemption.within("final_eval"):
            pytest.fail("entered the final evaluation after a signal")  # the signal came before: stopped on entry
        assert stopped.value.phase == "final_eval"
        preemption.uninstall()
        preemption.install()
        with pytest.raises(preemption.Preempted) as stopped, preemption.within("model_load"):
            os.kill(os.getpid(), signal.SIGUSR1)  # the handler raises here, mid-phase
            pytest.fail("the model load went on after a signal")
        assert stopped.value.phase == "model_load" and preemption._STATE["phase"] == "start-up"
    finally:
        preemption.uninstall()


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


# --------------------------------------------------------------------------------------- every phase
def phase_cmd(run_dir: Path, model_dir: Path, *extra: str) -> list[str]:
    return train_cmd(run_dir, model_dir, "train.steps=2", *extra)  # the later train.steps wins


@pytest.fixture(scope="module")
def two_step_reference(tiny_model_dir, tmp_path_factory) -> Path:
    reference = tmp_path_factory.mktemp("phases") / "reference"
    run_to_end(phase_cmd(reference, tiny_model_dir), {**os.environ, "OMP_NUM_THREADS": "1"})
    return reference


@pytest.mark.slow
def test_sigterm_during_start_up_exits_with_the_preemption_code_before_any_model_loads(tiny_model_dir, tmp_path):
    run = tmp_path / "run"  # the lock is the first thing `rlx train` writes: Hydra and the imports are to come
    proc = signal_when(phase_cmd(run, tiny_model_dir), {**os.environ, "OMP_NUM_THREADS": "1"},
                       lambda: (run / "rlx.lock").exists(), signal.SIGTERM, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True)
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == preemption.EXIT_CODE, stderr[-3000:]
    assert ("[rlx] preempted during start-up: no step finished, nothing to save; resume=auto (same run directory) "
            f"starts again from step 1; exit code {preemption.EXIT_CODE}") in stdout
    assert "received SIGTERM during start-up: stopping before any model loads" in stderr
    assert not (run / "checkpoints").exists() and not (run / "metrics.jsonl").exists()
    assert not (run / "rlx.lock").exists()


@pytest.mark.slow
def test_sigusr1_during_the_first_evaluation_exits_then_resume_runs_the_whole_run(tiny_model_dir, tmp_path,
                                                                                  two_step_reference):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = tmp_path / "run"
    proc = paused_in(phase_cmd(run, tiny_model_dir), env, "first_eval", tmp_path / "first")
    proc.send_signal(signal.SIGUSR1)
    assert proc.wait(timeout=600) == preemption.EXIT_CODE, (tmp_path / "first.err").read_text()[-3000:]
    assert ("[rlx] preempted during the first evaluation: no step finished, nothing to save"
            in (tmp_path / "first.out").read_text())
    assert not (run / "checkpoints").exists() and _rows(run) == []  # no step 0 row: the evaluation was cut short

    stdout = resume_matches(phase_cmd(run, tiny_model_dir, "resume=auto"), env, run, two_step_reference)
    assert "resumed from" not in stdout
    assert_same_accuracies(run, two_step_reference)


@pytest.mark.slow
def test_sigterm_during_the_final_evaluation_checkpoints_the_last_step_and_resumes_into_the_evaluation(
        tiny_model_dir, tmp_path, two_step_reference):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = tmp_path / "run"
    proc = paused_in(phase_cmd(run, tiny_model_dir), env, "final_eval", tmp_path / "final")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=600) == preemption.EXIT_CODE, (tmp_path / "final.err").read_text()[-3000:]
    step_2 = run / "checkpoints" / "step_2"
    assert complete_checkpoints(run / "checkpoints") == [step_2]  # the last step, though no save_every
    assert (f"[rlx] preempted after step 2 (stopped during the final evaluation): resumable checkpoint {step_2}"
            in (tmp_path / "final.out").read_text())
    assert not (run / "summary.json").exists()
    trained = metrics(two_step_reference)[:3]  # steps 0, 1, 2 without the final evaluation's row
    assert metrics(run) == trained

    # a signal during the resumed run's model load: its checkpoint stays the one to resume
    proc = paused_in(phase_cmd(run, tiny_model_dir, "resume=auto"), env, "model_load", tmp_path / "load")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=600) == preemption.EXIT_CODE, (tmp_path / "load.err").read_text()[-3000:]
    assert (f"[rlx] preempted during model load: no step finished, nothing to save; resume=auto (same run "
            f"directory) starts again from its checkpoint {step_2}") in (tmp_path / "load.out").read_text()
    assert complete_checkpoints(run / "checkpoints") == [step_2] and metrics(run) == trained

    stdout = resume_matches(phase_cmd(run, tiny_model_dir, "resume=auto"), env, run, two_step_reference)
    assert f"resumed from {step_2} (step 2)" in stdout
    assert "train.steps was spent at step 2: no step to run, on to the final evaluation" in stdout  # none redone
    assert_same_accuracies(run, two_step_reference)


def test_the_handler_is_installed_before_hydra_and_torch_are_imported(tmp_path):
    """A SIGTERM in the first instant of `rlx train` (paused right after the handler, RLX_PAUSE_AT=start-up)
    exits with EXIT_CODE, not 143; Hydra and torch had not been imported yet (it used to come after `import
    hydra`, so a SIGTERM 0.5-2.5 s after the start killed the process)."""
    env = {**os.environ, "RLX_PAUSE_AT": "start-up"}
    proc = subprocess.Popen([sys.executable, "-X", "importtime", "-m", "rlx.cli", "train",
                             f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    seen = []
    for line in proc.stdout:  # stderr (the import log) and stdout in the order they were written
        seen.append(line)
        if "RLX_PAUSE_AT: paused in start-up" in line:
            proc.send_signal(signal.SIGTERM)
            break
    output = "".join(seen) + proc.communicate(timeout=60)[0]
    assert proc.returncode == preemption.EXIT_CODE, output[-3000:]
    before = [line.rsplit("|", 1)[1].strip() for line in seen if line.startswith("import time:")]
    assert "rlx.train.infra.preemption" in before and not {"hydra", "torch", "omegaconf"} & set(before)
    assert ("[rlx] preempted during start-up: no step finished, nothing to save; resume=auto (same run directory) "
            f"starts again from step 1; exit code {preemption.EXIT_CODE}") in output
    assert not (tmp_path / "run").exists()


def test_a_signal_inside_a_finaliser_is_raised_after_it():
    """The handler raised `Preempted` inside whatever the main thread ran; inside a finaliser Python prints
    "Exception ignored" and goes on (a SIGTERM during model load once let the run reach its first evaluation).
    Now it is raised right after the finaliser."""
    import time

    class Dying:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGTERM)  # the handler runs here, inside the finaliser
            time.sleep(0.001)

    preemption.install()
    try:
        with pytest.raises(preemption.Preempted) as stopped, preemption.within("model_load"):
            Dying()  # collected at once: its finaliser receives the signal
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                time.sleep(0.01)
            pytest.fail("the signal was swallowed by the finaliser")
        assert stopped.value.phase == "model_load"
    finally:
        preemption.uninstall()


@pytest.mark.slow
def test_sigterm_during_a_steps_generation_stops_at_once_and_resumes_exactly(tiny_model_dir, tmp_path,
                                                                              two_step_reference):
    """A single-process run stops inside step 2's rollout generation without finishing the step (it used to
    finish it: 36 s on a loaded machine, past the 30 s before SIGKILL): the checkpoint of step 1, and
    `resume=auto` regenerates step 2 and logs the uninterrupted run's metrics."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = tmp_path / "run"
    proc = paused_in(phase_cmd(run, tiny_model_dir), env, "generate@2", tmp_path / "gen")
    _preempted_after_step_1(proc, run, tmp_path / "gen", "stopped during a step's rollout generation")
    step_1 = run / "checkpoints" / "step_1"
    assert "received SIGTERM during a step's rollout generation: stopping now" in (tmp_path / "gen.err").read_text()
    assert metrics(run) == metrics(two_step_reference)[:2]  # steps 0 and 1
    stdout = resume_matches(phase_cmd(run, tiny_model_dir, "resume=auto"), env, run, two_step_reference)
    assert f"resumed from {step_1} (step 1)" in stdout
    assert_same_accuracies(run, two_step_reference)


# --------------------------------------------------------------------------------------- a step's update
def test_the_update_checks_are_collective_points_only_inside_an_update():
    try:
        preemption.install()
        os.kill(os.getpid(), signal.SIGTERM)
        preemption.abandon_point()  # between steps (no update in progress): only the flag, no stop
        with pytest.raises(preemption.Preempted) as stopped, preemption.updating(4):
            assert preemption._STATE["phase"] == "update"
            preemption.abandon_point()
            pytest.fail("a signalled update went on past its check")
        assert stopped.value.phase == "update" and preemption._STATE["phase"] == "start-up"
        with preemption.updating(4):
            preemption.committed()  # the first optimizer step: from here the step finishes
            preemption.abandon_point()
            assert preemption._STATE["phase"] == "optimizing"
        assert preemption._STATE["step"] is None
    finally:
        preemption.uninstall()


@pytest.fixture(scope="module")
def float64_policy(tiny_model_dir):
    from rlx.models.load import load_causal_lm

    return load_causal_lm(str(tiny_model_dir), "float32").double().train()


def _signalled_update(policy, signal_at, optimization_num: int):
    """An Updater of several micro-batches per optimizer step (AdamW, lr 0.1) whose `signal_at(plan)`-th
    micro-batch loss (counted from 1 over the whole update; `plan`: micro-batches per optimizer step) sends this
    process SIGTERM."""
    import torch

    from rlx.algos.grpo import GRPOConfig
    from tests.test_update import batch, updater

    up = updater("grpo", GRPOConfig(optimization_num=optimization_num), policy, None, micro_batch_tokens=120)
    up.optimizers = [torch.optim.AdamW(policy.parameters(), lr=0.1)]
    data = batch()
    data = dataclasses.replace(data, old_logp=up.forwards.frozen_logprobs(policy, data.packed))
    plan = len(up.forwards.synced_plan(data.packed))
    assert plan >= 2
    loss_of, calls = up.micro_batch_loss, []

    def micro_batch_loss(*args):
        calls.append(1)
        if len(calls) == signal_at(plan):
            os.kill(os.getpid(), signal.SIGTERM)  # the handler only raises the flag: the check acts on it
        return loss_of(*args)

    up.micro_batch_loss = micro_batch_loss
    return up, data, calls, plan


@pytest.mark.parametrize("last", [False, True], ids=["first-micro-batch", "last-micro-batch"])
def test_a_signal_before_the_first_optimizer_step_abandons_the_update_untouched(float64_policy, last):
    """SIGTERM during the first (or last) micro-batch of the first optimizer step: the next check (before the
    next micro-batch, or before the optimizer step) abandons the step; no weight or optimizer state changed, the
    gradients are dropped: the state is the step before's, to checkpoint."""
    up, data, calls, plan = _signalled_update(float64_policy, lambda plan: plan if last else 1, optimization_num=2)
    before = [p.detach().clone() for p in float64_policy.parameters()]
    try:
        preemption.install()
        with pytest.raises(preemption.Preempted) as stopped, preemption.updating(3):
            up.run(data, step=3)
        assert stopped.value.phase == "update" and len(calls) == (plan if last else 1)
    finally:
        preemption.uninstall()
    assert all(p.equal(b) and p.grad is None for p, b in zip(float64_policy.parameters(), before))
    assert up.optimizers[0].state == {}


def test_a_signal_after_the_first_optimizer_step_lets_the_update_finish(float64_policy):
    """SIGTERM in the second optimizer step (two epochs): the weights have changed, so the step finishes (both
    optimizer steps, every micro-batch) and the loop checkpoints it."""
    up, data, calls, plan = _signalled_update(float64_policy, lambda plan: plan + 1, optimization_num=2)
    before = [p.detach().clone() for p in float64_policy.parameters()]
    try:
        preemption.install()
        with preemption.updating(3):
            metrics = up.run(data, step=3)
            assert preemption._STATE["phase"] == "optimizing" and preemption.requested()
    finally:
        preemption.uninstall()
    assert len(calls) == 2 * plan and metrics["grad_norm"] > 0
    assert not all(p.equal(b) for p, b in zip(float64_policy.parameters(), before))


@pytest.mark.slow
def test_sigterm_in_a_steps_update_abandons_it_within_seconds_and_resumes_exactly(tiny_model_dir, tmp_path,
                                                                                    two_step_reference):
    """A single-process run signalled in step 2's update before its first optimizer step (it used to finish the
    step: 36 s on a loaded machine, past the 30 s before SIGKILL): the step is abandoned at the next micro-batch,
    the checkpoint is step 1's, and `resume=auto` re-runs step 2 to the uninterrupted run's metrics."""

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = tmp_path / "run"
    proc = paused_in(phase_cmd(run, tiny_model_dir), env, "update@2", tmp_path / "update")
    _preempted_after_step_1(proc, run, tmp_path / "update", ABANDONED, within=30)
    step_1 = run / "checkpoints" / "step_1"
    assert ("received SIGTERM during a step's update before its first optimizer step: abandoning the step at the "
            "next micro-batch, then checkpointing the step before") in (tmp_path / "update.err").read_text()
    assert metrics(run) == metrics(two_step_reference)[:2]  # steps 0 and 1: nothing of step 2 logged
    stdout = resume_matches(phase_cmd(run, tiny_model_dir, "resume=auto"), env, run, two_step_reference)
    assert f"resumed from {step_1} (step 1)" in stdout
    assert_same_accuracies(run, two_step_reference)


def _torchrun(run_dir: Path, model_dir: Path, ranks: int, *extra: str) -> list[str]:
    from tests.test_distributed import TORCHRUN, free_port

    return [*TORCHRUN, f"--nproc_per_node={ranks}", f"--master_port={free_port()}",
            *phase_cmd(run_dir, model_dir, *extra)[1:]]  # [1:]: torchrun takes the interpreter's place


def _gone_within(proc: subprocess.Popen, seconds: float) -> float:
    """Seconds until the torchrun agent `proc` and every process under it have exited (at most `seconds`)."""
    import time

    import psutil

    sent = time.monotonic()
    family = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    proc.wait(timeout=600)
    psutil.wait_procs(family, timeout=max(0.0, seconds - (time.monotonic() - sent)))
    assert not [p for p in family if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    return time.monotonic() - sent


ABANDONED = "stopped during a step's update before its first optimizer step"


def _preempted_after_step_1(proc, run: Path, log: Path, reason: str, within: float | None = None,
                            torchrun: bool = False) -> str:
    """Sends `proc` (paused in step 2, or in step 1's evaluation) SIGTERM; asserts it exits with the preemption
    code (a torchrun agent: every process under it is gone) within `within` seconds when given, that step 1 is the
    only checkpoint and that the message names `reason`; returns the run's stdout + stderr."""
    import time

    proc.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    if torchrun:
        assert _gone_within(proc, within or 600) < (within or 600)
    else:
        assert proc.wait(timeout=600) == preemption.EXIT_CODE, log.with_suffix(".err").read_text()[-3000:]
        assert within is None or time.monotonic() - sent < within
    output = log.with_suffix(".out").read_text() + log.with_suffix(".err").read_text()
    step_1 = run / "checkpoints" / "step_1"
    assert complete_checkpoints(run / "checkpoints") == [step_1], output[-3000:]
    assert f"[rlx] preempted after step 1 ({reason}): resumable checkpoint {step_1}" in output
    return output


@pytest.mark.slow
def test_sigterm_to_torchrun_in_the_frozen_forwards_abandons_the_step_on_every_rank(tiny_model_dir, tmp_path):
    """SIGTERM to the torchrun agent while both ranks compute step 2's frozen batch (the reference's log-probs):
    the ranks agree at the next micro-batch (one all-reduce), abandon the step, checkpoint step 1 and exit
    within 30 s (it took 51 s to finish the step); `resume=auto` reproduces the uninterrupted 2-rank run."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    kl = "algo.kl.beta=0.05"  # a reference model: its frozen forwards
    reference = tmp_path / "reference"
    run_to_end(_torchrun(reference, tiny_model_dir, 2, kl), env)
    run = tmp_path / "run"
    proc = paused_in(_torchrun(run, tiny_model_dir, 2, kl), env, "frozen@2", tmp_path / "frozen")
    output = _preempted_after_step_1(proc, run, tmp_path / "frozen", ABANDONED, within=30, torchrun=True)
    assert output.count("received SIGTERM") == 2  # both ranks caught it, neither was killed
    assert metrics(run) == metrics(reference)[:2]
    resume_matches(_torchrun(run, tiny_model_dir, 2, kl, "resume=auto"), env, run, reference)
    digests = {(d / f"rank_{r}.params.sha256").read_text() for d in (run, reference) for r in range(2)}
    assert len(digests) == 1  # resumed replicas identical to each other and to the uninterrupted run's


@pytest.mark.slow
def test_sigterm_to_an_async_run_in_the_update_abandons_the_step_and_every_rank_exits(tiny_model_dir, tmp_path):
    """Trainer + one generation rank, k = 1: SIGTERM to the torchrun agent while the trainer is in step 2's update
    before its first optimizer step. The trainer abandons the step and checkpoints step 1 with the records it
    holds for steps 2 (already taken) and 3, the generation rank stops when told: every process exits within
    30 s; `resume=auto` trains each record once and logs the uninterrupted run's metrics."""
    from tests.test_async import ENV, cmd, without
    from tests.test_async import run as run_ok

    k1 = ("train.steps=3", "train.max_staleness=1")
    reference = tmp_path / "reference"
    run_ok(cmd(reference, tiny_model_dir, *k1))
    run = tmp_path / "run"
    proc = paused_in(cmd(run, tiny_model_dir, *k1), ENV, "update@2", tmp_path / "update")
    output = _preempted_after_step_1(proc, run, tmp_path / "update", ABANDONED, within=30, torchrun=True)
    step_1 = run / "checkpoints" / "step_1"
    assert "generation worker (rank 1) failed" not in output
    assert not re.search(r'File ".*/rlx/', output), output[-3000:]  # no traceback through rlx (torchrun has its own)
    out = run_ok(cmd(run, tiny_model_dir, *k1, "resume=auto"))
    assert f"resumed from {step_1} (step 1)" in out.stdout
    assert without(metrics(run), "time_") == without(metrics(reference), "time_")


@pytest.mark.slow
def test_sigterm_in_an_evaluation_due_at_a_step_checkpoints_the_step_and_evaluates_on_resume(tiny_model_dir,
                                                                                              tmp_path):
    """train.eval_every=1: SIGTERM during step 1's evaluation (500 problems by default: about a minute, which
    the run used to wait for) stops it at once; the checkpoint is step 1's (trained) with its metrics row so far,
    and `resume=auto` runs that evaluation first, logging the row the uninterrupted run logged."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    reference = tmp_path / "reference"
    run_to_end(phase_cmd(reference, tiny_model_dir, "train.eval_every=1"), env)
    run = tmp_path / "run"
    proc = paused_in(phase_cmd(run, tiny_model_dir, "train.eval_every=1"), env, "step_eval", tmp_path / "eval")
    _preempted_after_step_1(proc, run, tmp_path / "eval", "stopped during the evaluation at a step")
    step_1 = run / "checkpoints" / "step_1"
    assert metrics(run) == metrics(reference)[:1]  # step 0 only: step 1's row waits for its evaluation
    assert "test_accuracy" in metrics(reference)[1]
    stdout = resume_matches(phase_cmd(run, tiny_model_dir, "train.eval_every=1", "resume=auto"), env, run, reference)
    assert f"resumed from {step_1} (step 1)" in stdout
    assert_same_accuracies(run, reference)
