"""Preemption-safe runs: SIGTERM, SIGUSR1 or SIGUSR2 in any phase of `rlx train` -> nothing lost, exit EXIT_CODE.

SLURM sends SIGTERM when it preempts or cancels a job, and (`sbatch --signal=USR1@120`, or submitit's
`signal_delay_s`, which uses USR2 by default) a warning signal that long before the time limit. What a signal
does depends on the phase the run is in (`phase`, set by `rlx.train.loop` and `rlx.train.schedule`):

- start-up (CLI, Hydra, run-directory lock, configuration): the handler is installed by the CLI before any
  other import (`launch`), and until the run enters its first phase it ends the process from the handler
  itself (`_leave_now`: the exit functions, such as the run-directory lock's release, then exit), within
  seconds even in the middle of importing torch, where an exception could corrupt the import or abort the
  process in a C++ callback; nothing has started, nothing is lost;
- model load, the first evaluation and the final evaluation (`INTERRUPTIBLE`): the handler raises `Preempted`
  at once, since nothing of a finished step is at stake: the first evaluation precedes step 1 and the final one
  follows the last step, whose resumable checkpoint is then written (`resume=auto` goes straight back into the
  final evaluation, no step redone);
- a step's rollout generation in a single-process synchronous run (`generate`): the handler raises `Preempted`
  at once; nothing of the step is trained yet, so the run checkpoints the step before and exits (the step's
  records are regenerated identically on resume: every sampling seed is a function of (seed, step));
- a step's rollouts under torchrun or from generation ranks (`rollouts`), and its update until its first
  optimizer step (`update`: the frozen batch's forwards, the first optimizer step's forward and backward
  passes): the handler raises a flag, which every trainer rank checks between micro-batches (`abandon_point`:
  one tiny all-reduce, as many on every rank since `Forwards.synced_plan` gives them as many micro-batches).
  The step is abandoned: no weight or optimizer state has changed yet, so the step's start equals the end of the
  step before, and the run checkpoints that one and exits; `resume=auto` re-runs the step identically (its
  sampling seeds and data order are functions of (seed, step)). The wait is one micro-batch, plus, under
  torchrun, the rest of this rank's generation (its forwards may be collectives: it is not cut short);
- the rest of a training step (`optimizing`: its optimizer steps after the first, the weight sync; `training`):
  the handler raises a flag; the loop checks `should_stop()` after the step (all ranks agree through one tiny
  all-reduce), writes a resumable checkpoint and calls `exit()`. The wait is bounded by the step's remaining
  optimizer steps (`algo.optimization_num` x `train.mini_batches` in all) and its weight sync;
- an evaluation due at a step (`step_eval`, after its update): the handler raises `Preempted` at once (on rank
  0, which evaluates; the others learn it from its broadcast), the run checkpoints the step with its metrics row
  so far (`schedule.PENDING_EVAL`), and `resume=auto` runs that evaluation first and logs the row;
- a generation rank of async rollouts (`serving`, rlx/train/rollout/remote.py): a flag; it generates on until
  the trainer, which checkpoints the records it needs, says stop, then exits with EXIT_CODE;
- the end (final checkpoint and summary.json, seconds): the run completes and exits 0: nothing is left to resume.

The handler never raises inside a finaliser (`__del__`, a weakref callback): Python would print "Exception
ignored" and swallow it, and the run would go on. There it re-delivers the signal 50 ms later instead.

Every stop prints what it kept and exits through `exit()`: it hands over to the handler that was installed before
ours, if it is a Python function (submitit's: it requeues the SLURM job, then exits); otherwise the process exits
with EXIT_CODE. `resume=auto` then continues (from the newest checkpoint, or from step 1 if none was written).

Tests pause a run inside a phase with `RLX_PAUSE_AT=<phase>` (`pause_point`) to signal it there, or at a
step's first check in the frozen batch's forwards (`frozen`) or its update's micro-batches (`update`).
"""

from __future__ import annotations

import atexit
import contextlib
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
    "step_eval": ("the evaluation at a step", "stopping now, then checkpointing the step (the evaluation runs on "
                  "resume)"),
    "training": ("training", "finishing the current step, then checkpointing"),
    "rollouts": ("a step's rollouts", "stopping before its update, then checkpointing the step before"),
    "update": ("a step's update before its first optimizer step",
               "abandoning the step at the next micro-batch, then checkpointing the step before"),
    "optimizing": ("a step's optimizer steps", "finishing the current step, then checkpointing"),
    "generate": ("a step's rollout generation", "stopping now, then checkpointing the step before"),
    "serving": ("rollout generation", "generating on until the trainer, which checkpoints, says stop"),
    "final_eval": ("the final evaluation", "stopping now, then checkpointing the last step"),
    "end": ("the end of the run", "completing it (final checkpoint and summary.json)"),
}
# the handler raises Preempted at once; "generate" (a step's rollout phase, nothing of the step trained yet) only
# in single-process synchronous runs (rlx.train.loop): ranks that stopped in different phases would deadlock
INTERRUPTIBLE = frozenset({"model_load", "first_eval", "step_eval", "final_eval", "generate"})
PAUSE_ENV = "RLX_PAUSE_AT"  # test hook: comma-separated phases where `pause_point` waits for a signal
PAUSE_SECONDS = 120
# pause places that are not phases: the update's checks (`abandon_point`)
PAUSES = {"frozen": "the frozen batch's forwards", "update": "the update's forward and backward passes"}

_STATE: dict[str, Any] = {"signal": None, "previous": {}, "phase": "start-up", "launching": False, "step": None}
REDELIVER_S = 0.05  # a signal that lands in a finaliser is sent again this much later
# after a preemption's checkpoint (or with nothing to save), the teardown (the sampler's engine, the process
# group, the interpreter's exit) gets this long; a hung one is cut short: SLURM, torchrun and Kubernetes SIGKILL
# 30 s after their SIGTERM
TEARDOWN_S = 10.0
_CLI = {"bounded": False}  # set by `launch`: only the `rlx train` process bounds its teardown


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
    if phase == "start-up" and _STATE["launching"]:
        _leave_now(signum)
    if phase in INTERRUPTIBLE:
        if _in_finaliser(frame):  # raised here it would be printed and swallowed: raise it after the finaliser
            timer = threading.Timer(REDELIVER_S, os.kill, (os.getpid(), signum))
            timer.daemon = True
            timer.start()
            return
        raise Preempted(phase)


def _in_finaliser(frame: Any) -> bool:
    """Whether `frame` (where the signal interrupted the main thread) runs inside an object's `__del__` or a
    weakref finaliser, where an exception cannot propagate."""
    depth = 0
    while frame is not None and depth < 200:
        code = frame.f_code
        if code.co_name == "__del__" or (code.co_name == "__call__" and code.co_filename.endswith("weakref.py")):
            return True
        frame, depth = frame.f_back, depth + 1
    return False


def launch() -> None:
    """`rlx train`'s first act (rlx/cli.py): install the handler, which ends the process at once until the run
    enters its first phase (`enter`), so a signal during the imports and the configuration stops it in seconds."""
    install()
    _STATE["launching"] = True
    _CLI["bounded"] = True


def bound_teardown(code: int = EXIT_CODE) -> None:
    """Leave within TEARDOWN_S from now whatever the teardown does (a vLLM engine's shutdown, a barrier with a
    dead peer): a daemon timer ends the process with `code`. Called once nothing is left to save."""
    if not _CLI["bounded"]:
        return

    def cut_short() -> None:
        os.write(2, f"[rlx] the teardown took over {TEARDOWN_S:.0f}s after the checkpoint: exiting without it "
                    f"(exit code {code})\n".encode())
        os._exit(code)

    timer = threading.Timer(TEARDOWN_S, cut_short)
    timer.daemon = True
    timer.start()


def _leave_now(signum: int) -> None:
    """A signal before the run's first phase: say so, hand over to the previous handler (submitit's requeue), run
    the exit functions (the run-directory lock's release), and leave with EXIT_CODE without unwinding."""
    with contextlib.suppress(Exception):  # a print the signal interrupted may hold the stream: then skip it
        sys.stdout.flush()
    os.write(1, f"[rlx] preempted during {PHASES['start-up'][0]}: no step finished, nothing to save; resume=auto "
                f"(same run directory) starts again from step 1; exit code {EXIT_CODE}\n".encode())
    previous = _STATE["previous"].get(signum)
    uninstall()
    if callable(previous):
        with contextlib.suppress(Exception, SystemExit):
            previous(signum, None)
    with contextlib.suppress(Exception):
        atexit._run_exitfuncs()
    os._exit(EXIT_CODE)


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
    _STATE.update(previous={}, signal=None, phase="start-up", launching=False)


def enter(phase: str) -> None:
    """The run is now in `phase` (a key of PHASES); entering an INTERRUPTIBLE phase after a signal raises."""
    _STATE["phase"], _STATE["launching"] = phase, False  # from the model load on, start-up only raises a flag
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


def generation_phase(rollout_workers: int) -> str:
    """The phase of a step's rollout generation: `generate` (a signal stops it at once) in a single-process
    synchronous run; `rollouts` (a flag, the step is abandoned at the update's first check) when several ranks
    train, which must stop at the same check, or when the rollouts arrive from generation ranks."""
    from rlx.train.infra import distributed as dist

    return "generate" if dist.world_size() == 1 and not rollout_workers else "rollouts"


@contextmanager
def updating(step: int) -> Iterator[None]:
    """Step `step`'s update (phase `update` until its first optimizer step, `committed`): a signal abandons the
    step at the next `abandon_point`. A signal before it (in `rollouts`) abandons it at the first one."""
    _STATE["step"] = step
    try:
        with within("update"):
            yield
    finally:
        _STATE["step"] = None


def abandon_point(pause: str = "update") -> None:
    """Between two micro-batches of a step's update before its first optimizer step: when any trainer rank was
    signalled, every rank raises `Preempted("update")` (a collective: every rank calls it equally often). A no-op
    in any other phase. `pause`: the `RLX_PAUSE_AT` name of this place (`frozen` or `update`)."""
    if _STATE["phase"] != "update":
        return
    pause_point(pause, _STATE["step"])
    if should_stop():
        raise Preempted("update")


def committed() -> None:
    """The step's first optimizer step is taken: the step cannot be abandoned any more, a signal finishes it."""
    if _STATE["phase"] == "update":
        _STATE["phase"] = "optimizing"


def requested() -> bool:
    """True once this process received a preemption signal."""
    return _STATE["signal"] is not None


def should_stop() -> bool:
    """True on every rank when any rank received a preemption signal (a collective: call it on all ranks)."""
    from rlx.train.infra import distributed as dist

    return dist.max_over_ranks(int(requested())) > 0


def pause_point(phase: str, step: int | None = None) -> None:
    """Test hook: with RLX_PAUSE_AT naming `phase` (or `phase@step`), say so on stdout and wait here (PAUSE_SECONDS
    at most) until a preemption signal arrives, so that a test can signal the run inside that phase. A no-op
    otherwise."""
    wanted = os.environ.get(PAUSE_ENV, "").split(",")
    if phase not in wanted and f"{phase}@{step}" not in wanted:
        return
    where = PAUSES.get(phase) or PHASES[phase][0]
    print(f"[rlx] {PAUSE_ENV}: paused in {where} (pid {os.getpid()})", flush=True)
    deadline = time.monotonic() + PAUSE_SECONDS
    while not requested() and time.monotonic() < deadline:  # in an INTERRUPTIBLE phase the handler raises here
        time.sleep(0.05)


def _is_main() -> bool:
    if "rlx.train.infra.distributed" not in sys.modules:  # a stop during the imports: do not import torch to say so
        return int(os.environ.get("RANK", "0")) == 0
    from rlx.train.infra import distributed as dist

    return dist.is_main() if dist.joined() else int(os.environ.get("RANK", "0")) == 0


def leave_unsaved(phase: str, resume_from: Path | None, close: Callable[[], None] | None = None) -> None:
    """Stop in a phase with no finished step to save (start-up, model load, the first evaluation): `close`
    (the trainer's, if it exists), then `exit()`. `resume_from`: the checkpoint this attempt started from."""
    if _is_main():
        since = f"its checkpoint {resume_from}" if resume_from else "step 1"
        print(f"[rlx] preempted during {PHASES[phase][0]}: no step finished, nothing to save; resume=auto (same run "
              f"directory) starts again from {since}; exit code {EXIT_CODE}", flush=True)
    bound_teardown()
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
    bound_teardown()
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
    bound_teardown(1)
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
