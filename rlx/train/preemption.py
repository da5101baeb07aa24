"""Preemption-safe runs: SIGTERM, SIGUSR1 or SIGUSR2 -> finish the current step, checkpoint, exit with EXIT_CODE.

SLURM sends SIGTERM when it preempts or cancels a job, and (`sbatch --signal=USR1@120`, or submitit's
`signal_delay_s`, which uses USR2 by default) a warning signal that long before the time limit. The handler only
raises a flag: the loop checks `should_stop()` after every step (all ranks agree through one tiny all-reduce,
since a signal may reach the ranks at different steps), writes a resumable checkpoint and calls `exit()`.
`resume=auto` then continues from that checkpoint exactly as from a `train.save_every` one.

`exit()` hands over to the handler that was installed before ours, if it is a Python function (submitit's:
it requeues the SLURM job, then exits); otherwise the process exits with EXIT_CODE.
"""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any

from rlx.train import distributed as dist

EXIT_CODE = 75  # os.EX_TEMPFAIL, "temporary failure, retry": preempted after a checkpoint, resume=auto continues
SIGNALS = ("SIGTERM", "SIGUSR1", "SIGUSR2")

_STATE: dict[str, Any] = {"signal": None, "previous": {}}


def _handle(signum: int, frame: Any) -> None:
    if _STATE["signal"] is None:
        print(f"[rlx] received {signal.Signals(signum).name}: finishing the current step, then checkpointing",
              file=sys.stderr, flush=True)
    _STATE["signal"] = signum


def install() -> None:
    """Catch the preemption signals (main thread only: Python delivers signals there). Idempotent."""
    if threading.current_thread() is not threading.main_thread():
        return
    for name in SIGNALS:
        number = getattr(signal, name, None)
        if number is not None and number not in _STATE["previous"]:
            _STATE["previous"][number] = signal.signal(number, _handle)


def uninstall() -> None:
    """Restore the handlers `install` replaced and forget any received signal."""
    for number, previous in _STATE["previous"].items():
        signal.signal(number, previous)
    _STATE["previous"] = {}
    _STATE["signal"] = None


def requested() -> bool:
    """True once this process received a preemption signal."""
    return _STATE["signal"] is not None


def should_stop() -> bool:
    """True on every rank when any rank received a preemption signal (a collective: call it on all ranks)."""
    return dist.max_over_ranks(int(requested())) > 0


def checkpoint_and_exit(trainer, step: int, extra: dict, progress) -> None:
    """After a preemption signal (every rank): a resumable checkpoint of `step` through `trainer.checkpoint`,
    then exit with EXIT_CODE (or the previous handler's requeue)."""
    progress.close()
    path = trainer.checkpoint(step, extra)
    if dist.is_main():
        print(f"[rlx] preempted after step {step}: resumable checkpoint {path}; continue with resume=auto "
              f"(same run directory); exit code {EXIT_CODE}", flush=True)
        trainer.logger.close()
    trainer.close()
    dist.close()
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
