"""Preemption-safe runs: SIGTERM, SIGUSR1 or SIGUSR2 in any phase of `rlx train` -> nothing lost, exit EXIT_CODE.

SLURM sends SIGTERM when it preempts or cancels a job, and (`sbatch --signal=USR1@120`, or submitit's
`signal_delay_s`, which uses USR2 by default) a warning signal that long before the time limit. What a signal
does depends on the phase the run is in (`phase`, set by `rlx.train.loop` and `rlx.train.schedule`):

- start-up (CLI, Hydra, run-directory lock, configuration): the handler raises a flag; the run leaves before
  any model loads;
- model load, the first evaluation and the final evaluation (`INTERRUPTIBLE`): the handler raises `Preempted`
  at once, since nothing of a finished step is at stake: the first evaluation precedes step 1 and the final one
  follows the last step, whose resumable checkpoint is then written (`resume=auto` goes straight back into the
  final evaluation, no step redone);
- a training step (with any evaluation due at it): the handler raises a flag; the loop checks `should_stop()`
  after the step (all ranks agree through one tiny all-reduce, since a signal may reach the ranks at different
  steps), writes a resumable checkpoint and calls `exit()`;
- the end (final checkpoint and summary.json, seconds): the run completes and exits 0: nothing is left to resume.

Every stop prints what it kept and exits through `exit()`: it hands over to the handler that was installed before
ours, if it is a Python function (submitit's: it requeues the SLURM job, then exits); otherwise the process exits
with EXIT_CODE. `resume=auto` then continues (from the newest checkpoint, or from step 1 if none was written).

Tests pause a run inside a phase with `RLX_PAUSE_AT=<phase>` (`pause_point`) to signal it there.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

EXIT_CODE = 75  # os.EX_TEMPFAIL, "temporary failure, retry": preempted, nothing lost, resume=auto continues
SIGNALS = ("SIGTERM", "SIGUSR1", "SIGUSR2")
# phase -> (its name in messages, what a signal in it does)
PHASES = {
    "start-up": ("start-up", "stopping before any model loads"),
    "model_load": ("model load", "stopping now"),
    "first_eval": ("the first evaluation", "stopping now (no step has run yet)"),
    "training": ("training", "finishing the current step, then checkpointing"),
    "serving": ("rollout generation", "generating on until the trainer, which checkpoints, says stop"),
    "final_eval": ("the final evaluation", "stopping now, then checkpointing the last step"),
    "end": ("the end of the run", "completing it (final checkpoint and summary.json)"),
}
INTERRUPTIBLE = frozenset({"model_load", "first_eval", "final_eval"})  # the handler raises Preempted at once
PAUSE_ENV = "RLX_PAUSE_AT"  # test hook: comma-separated phases where `pause_point` waits for a signal
PAUSE_SECONDS = 120

_STATE: dict[str, Any] = {"signal": None, "previous": {}, "phase": "start-up"}


class Preempted(BaseException):
    """A preemption signal in an INTERRUPTIBLE phase (a BaseException: library `except Exception` blocks let it
    through). `phase` is the phase it stopped."""

    def __init__(self, phase: str):
        super().__init__(phase)
        self.phase = phase


def _handle(signum: int, frame: Any) -> None:
    phase = _STATE["phase"]
    if _STATE["signal"] is None:
        name, action = PHASES[phase]
        # os.write, not print: a print here could re-enter a print the main thread was in the middle of
        os.write(2, f"[rlx] received {signal.Signals(signum).name} during {name}: {action}\n".encode())
    _STATE["signal"] = signum
    if phase in INTERRUPTIBLE:
        raise Preempted(phase)


def install() -> bool:
    """Catch the preemption signals (main thread only: Python delivers signals there). Idempotent; True when
    this call installed the handler."""
    if threading.current_thread() is not threading.main_thread():
        return False
    installed = False
    for name in SIGNALS:
        number = getattr(signal, name, None)
        if number is not None and number not in _STATE["previous"]:
            _STATE["previous"][number] = signal.signal(number, _handle)
            installed = True
    return installed


def uninstall() -> None:
    """Restore the handlers `install` replaced and forget any received signal."""
    for number, previous in _STATE["previous"].items():
        signal.signal(number, previous)
    _STATE.update(previous={}, signal=None, phase="start-up")


def enter(phase: str) -> None:
    """The run is now in `phase` (a key of PHASES); entering an INTERRUPTIBLE phase after a signal raises."""
    _STATE["phase"] = phase
    if phase in INTERRUPTIBLE and requested():
        raise Preempted(phase)


@contextmanager
def within(phase: str) -> Iterator[None]:
    """`enter(phase)` for the block, then back to the phase before it (also when the block raises)."""
    before = _STATE["phase"]
    try:
        enter(phase)
        yield
    finally:
        _STATE["phase"] = before


def requested() -> bool:
    """True once this process received a preemption signal."""
    return _STATE["signal"] is not None


def should_stop() -> bool:
    """True on every rank when any rank received a preemption signal (a collective: call it on all ranks)."""
    from rlx.train import distributed as dist

    return dist.max_over_ranks(int(requested())) > 0


def pause_point(phase: str) -> None:
    """Test hook: with RLX_PAUSE_AT naming `phase`, say so on stdout and wait here (PAUSE_SECONDS at most) until a
    preemption signal arrives, so that a test can signal the run inside that phase. A no-op otherwise."""
    if phase not in os.environ.get(PAUSE_ENV, "").split(","):
        return
    print(f"[rlx] {PAUSE_ENV}: paused in {PHASES[phase][0]} (pid {os.getpid()})", flush=True)
    deadline = time.monotonic() + PAUSE_SECONDS
    while not requested() and time.monotonic() < deadline:  # in an INTERRUPTIBLE phase the handler raises here
        time.sleep(0.05)


def _is_main() -> bool:
    from rlx.train import distributed as dist

    return dist.is_main() if dist.joined() else int(os.environ.get("RANK", "0")) == 0


def leave_unsaved(phase: str, resume_from: Path | None, close: Callable[[], None] | None = None) -> None:
    """Stop in a phase with no finished step to save (start-up, model load, the first evaluation): `close`
    (the trainer's, if it exists), then `exit()`. `resume_from`: the checkpoint this attempt started from."""
    if _is_main():
        since = f"its checkpoint {resume_from}" if resume_from else "step 1"
        print(f"[rlx] preempted during {PHASES[phase][0]}: no step finished, nothing to save; resume=auto (same run "
              f"directory) starts again from {since}; exit code {EXIT_CODE}", flush=True)
    if close is not None:
        close()
    exit()


def checkpoint_and_exit(trainer, step: int, extra: dict, progress=None, phase: str = "training") -> None:
    """After a preemption signal in training or the final evaluation (`phase`; every rank): a resumable
    checkpoint of `step` through `trainer.checkpoint`, `trainer.close()`, then exit with EXIT_CODE (or the
    previous handler's requeue)."""
    if progress is not None:
        progress.close()
    path = trainer.checkpoint(step, extra)
    if _is_main():
        during = f" (stopped during {PHASES[phase][0]})" if phase != "training" else ""
        print(f"[rlx] preempted after step {step}{during}: resumable checkpoint {path}; continue with resume=auto "
              f"(same run directory); exit code {EXIT_CODE}", flush=True)
    trainer.close()
    exit()


class RunAborted(RuntimeError):
    """A step cannot finish (e.g. a generation worker died or stopped answering): the run stops with a message."""


def checkpoint_and_abort(trainer, step: int, extra: dict, progress, err: Exception) -> None:
    """After `RunAborted` during step + 1: a resumable checkpoint of `step` (the last finished one; none before
    step 1), then SystemExit naming the cause. No collective teardown: the peer that failed may never answer."""
    progress.close()
    where = "nothing to checkpoint"
    if step >= 1:
        where = f"resumable checkpoint {trainer.checkpoint(step, extra)}; continue with resume=auto"
    raise SystemExit(f"rlx train: {err}. Stopped after step {step}: {where}")


def exit() -> None:  # noqa: A001  (the module's verb: preemption.exit())
    """Leave the process after the checkpoint: through the previous handler (submitit requeues the job) when
    there is one, else with EXIT_CODE."""
    signum = _STATE["signal"]
    previous = _STATE["previous"].get(signum)
    uninstall()
    if callable(previous) and signum is not None:
        previous(signum, None)  # submitit's checkpoint_and_try_requeue: requeue, then sys.exit
    sys.stdout.flush()
    sys.exit(EXIT_CODE)
