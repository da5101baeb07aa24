"""Grading completions against reference answers in a pool of sandboxed, time-limited worker processes.

Model output is untrusted. Extraction (`rlx.grading.extract`) is our own linear-time scanning and runs in the
caller's process; anything that needs a computer-algebra system (math-verify -> sympy) runs in a worker
process (`rlx.grading.worker`, a fresh interpreter) under a per-answer time limit and a memory cap. A worker
that overruns the limit is killed and replaced, a worker that dies takes only the answer it was on with it,
and both count as a 0 score (see `Grader.stats`): a timeout or an error is never graded correct.

The limit counts the worker's CPU seconds on the answer (Linux: /proc), not wall-clock time, so a loaded
machine (other jobs, vLLM, a training step) does not turn slow-but-honest answers into timeouts; a wall-clock
cap of `wall_factor` x limit + 1 s still catches a worker that hangs without computing.

Cheap decisions come first, in the caller's process:
  * nothing to extract -> "no_answer";
  * string-identical to the reference (up to surrounding whitespace), whatever its length -> correct;
  * longer than `max_answer_chars` -> incorrect, status "screened";
  * a hedge (`rlx.grading.hedge`: `42 \\approx 41.99`, a number in a text remark beside the answer)
    -> incorrect, status "hedged" (several boxes or "7 or 42" are extracted as a set and left to math-verify);
  * equal after `normalize_answer` (strip, drop `$`, thousands commas, trailing `.0`) -> correct;
  * both plain decimal numbers but different -> incorrect (decimals have one exact value, no CAS needed);
  * pathological (`rlx.grading.screen`: length, digits, nesting, exponent towers, huge factorials)
    -> incorrect, status "screened", without waking a worker.
Everything else goes to math-verify (`rlx.grading.verify`).

The per-answer limit is a per-call argument (`grade(..., timeout_s=)`), so the training reward (short
limit) and evaluation (longer limit) share one pool.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import math
import os
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Literal

from rlx.grading.extract import extract_answer, quick_decision, resolve_styles
from rlx.grading.hedge import hedge_reason
from rlx.grading.screen import ScreenLimits, screen_answer
from rlx.grading.verify import check_equivalence

log = logging.getLogger(__name__)

Status = Literal["ok", "timeout", "crash", "no_answer", "screened", "hedged"]

EVAL_TIMEOUT_S = 2.0  # per-answer limit of evaluation (Task.verdicts); the training reward sets its own, shorter
TRAIN_TIMEOUT_S = 0.5  # default per-answer limit of the math rewards (reward_model.timeout_s)
DEFAULT_SCREEN = ScreenLimits()

# ------------------------------------------------------------------------------------------- parent side


@dataclass(frozen=True)
class GradeResult:
    correct: bool
    extracted: str | None
    status: Status


@dataclass
class GraderStats:
    graded: int = 0  # answers returned by grade()
    timeouts: int = 0  # answers whose check overran the wall-clock limit (worker killed)
    crashes: int = 0  # answers whose check raised or killed its worker
    no_answer: int = 0  # completions with nothing to extract
    fast_path: int = 0  # decided by normalisation alone, without math-verify
    screened: int = 0  # pathological answers scored 0 by the pre-screen, without math-verify
    hedged: int = 0  # answers offering a second value math-verify would not see, scored 0 (rlx.grading.hedge)
    workers_replaced: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


class _Process:
    """A worker interpreter: `python -m rlx.grading.worker` holding one end of a socket pair."""

    def __init__(self, checker: str, memory_headroom_mb: int | None) -> None:
        parent_end, child_end = socket.socketpair()
        # The child sees the caller's import path, so a checkout run without installing (scripts/) works too.
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        command = [sys.executable, "-m", "rlx.grading.worker", str(child_end.fileno()), checker,
                   str(memory_headroom_mb or 0)]
        self.popen = subprocess.Popen(command, pass_fds=(child_end.fileno(),), stdin=subprocess.DEVNULL,
                                      stdout=subprocess.DEVNULL, env=env)
        child_end.close()  # the child holds its end; closing ours lets us see EOF when it dies
        self.conn = Connection(parent_end.detach())
        self.pid = self.popen.pid

    def is_alive(self) -> bool:
        return self.popen.poll() is None

    @property
    def exitcode(self) -> int | None:
        return self.popen.poll()

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            self.popen.kill()

    def cpu_seconds(self) -> float | None:
        """User + system CPU seconds of the worker (None where /proc is unavailable)."""
        try:
            with open(f"/proc/{self.pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            return None

    def join(self, timeout: float) -> None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=timeout)


def _checker_name(checker: Callable[[str, str], bool]) -> str:
    """`module:function` for the worker to import; a function defined in `__main__` cannot be found there."""
    module, name = checker.__module__, checker.__qualname__
    if module == "__main__" or "<" in name:
        raise ValueError(f"grader checker must be a top-level function of an importable module, got {name!r}")
    return f"{module}:{name}"


@dataclass
class _Worker:
    process: _Process
    ready: bool = False
    pending: deque[tuple[int, str, str]] = field(default_factory=deque)  # dispatched, not yet answered
    item_started: float = 0.0  # when the first pending item started (as seen by the parent)
    item_cpu: float = 0.0  # the worker's CPU seconds when that item started (as it last reported)

    @property
    def conn(self) -> Connection:
        return self.process.conn


Item = tuple[int, str, str]  # (position in the batch, reference, extracted answer)


class Grader:
    """Grades completions against reference answers; math-verify runs in `num_workers` worker processes.

    Use as a context manager (or call `close()`); the pool starts on first need. Not re-entrant: one
    `grade()` at a time per Grader (a lock serialises concurrent callers).
    """

    def __init__(
        self,
        num_workers: int | None = None,
        timeout_s: float = EVAL_TIMEOUT_S,
        *,
        chunk_size: int = 16,
        max_answer_chars: int = 1000,
        fast_path: bool = True,
        screen: ScreenLimits | None = DEFAULT_SCREEN,
        memory_headroom_mb: int | None = 2048,
        wall_factor: float = 4.0,
        startup_timeout_s: float = 120.0,
        checker: Callable[[str, str], bool] = check_equivalence,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self.num_workers = num_workers or max(1, min(4, os.cpu_count() or 1))
        self.timeout_s = float(timeout_s)  # the default per-answer limit; grade(timeout_s=) overrides it
        self.chunk_size = max(1, chunk_size)
        self.max_answer_chars = max_answer_chars  # longer "answers" are junk: never sent to a CAS
        self.fast_path = fast_path  # False sends every answer to math-verify (used to validate math-verify)
        self.screen = screen  # None sends pathological answers to math-verify too (they then time out)
        self.memory_headroom_mb = memory_headroom_mb
        self.wall_factor = wall_factor  # wall-clock cap = wall_factor * limit + 1 s (a worker blocked, not computing)
        self.startup_timeout_s = startup_timeout_s
        # Workers are fresh interpreters (never fork: the parent may hold torch/vLLM threads), so they import
        # the checker by name.
        self.checker = _checker_name(checker)
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()
        self.stats = GraderStats()

    # -- lifecycle

    def __enter__(self) -> Grader:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    def start(self) -> None:
        while len(self._workers) < self.num_workers:
            self._workers.append(self._spawn_worker())

    def wait_until_ready(self) -> None:
        """Start the pool if needed and block until every worker has finished its imports and warm-up."""
        self.start()
        deadline = time.monotonic() + self.startup_timeout_s
        while not all(worker.ready for worker in self._workers):
            self._wait_for_events(deadline, self.timeout_s)
            for worker in self._workers:
                if self._drain(worker, lambda *_: None):
                    raise RuntimeError("grader worker died while idle")

    def close(self) -> None:
        for worker in self._workers:
            self._stop_worker(worker, graceful=True)
        self._workers = []

    def _spawn_worker(self) -> _Worker:
        return _Worker(process=_Process(self.checker, self.memory_headroom_mb))

    @staticmethod
    def _stop_worker(worker: _Worker, graceful: bool) -> None:
        if graceful and worker.process.is_alive():
            with contextlib.suppress(OSError):
                worker.conn.send(None)
            worker.process.join(timeout=1.0)
        if worker.process.is_alive():
            worker.process.kill()
            worker.process.join(timeout=5.0)
        worker.conn.close()

    # -- grading

    def grade(
        self,
        references: Sequence[str],
        completions: Sequence[str],
        style: str | Sequence[str] = "auto",
        timeout_s: float | None = None,
    ) -> list[GradeResult]:
        """One GradeResult per completion; `references[i]` is the reference answer of `completions[i]`.
        `timeout_s`: the per-answer limit of this call (default: the Grader's `timeout_s`)."""
        limit = self.timeout_s if timeout_s is None else float(timeout_s)
        if limit <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        if len(references) != len(completions):
            raise ValueError(f"{len(references)} references but {len(completions)} completions")
        styles = resolve_styles(style)
        with self._lock:
            results: list[GradeResult | None] = [None] * len(completions)
            extracted = [extract_answer(text, styles) for text in completions]
            to_check = self._decide_cheaply(references, extracted, results)
            if to_check:
                self._check_in_workers(to_check, extracted, results, limit)
            self.stats.graded += len(results)
            return [r for r in results if r is not None]

    def _decide_cheaply(
        self, references: Sequence[str], extracted: list[str | None], results: list[GradeResult | None]
    ) -> list[Item]:
        """Fill `results` where no CAS is needed; return the items that need math-verify."""
        to_check: list[Item] = []
        for index, (reference, answer) in enumerate(zip(references, extracted)):
            if answer is None:
                results[index] = GradeResult(False, None, "no_answer")
                self.stats.no_answer += 1
                continue
            if self.fast_path and answer.strip() == str(reference).strip():  # plain string equality, any length
                results[index] = GradeResult(True, answer, "ok")
                self.stats.fast_path += 1
                continue
            if len(answer) > self.max_answer_chars:  # no real answer is this long: not worth any CPU
                results[index] = GradeResult(False, answer, "screened")
                self.stats.screened += 1
                continue
            if hedge_reason(answer) is not None:  # not a fast path: math-verify would grade it correct
                results[index] = GradeResult(False, answer, "hedged")
                self.stats.hedged += 1
                continue
            decision = quick_decision(str(reference), answer) if self.fast_path else None
            if decision is not None:
                results[index] = GradeResult(decision, answer, "ok")
                self.stats.fast_path += 1
            elif self.screen is not None and screen_answer(answer, self.screen) is not None:
                results[index] = GradeResult(False, answer, "screened")
                self.stats.screened += 1
            else:
                to_check.append((index, str(reference), answer))
        return to_check

    def _check_in_workers(
        self, items: list[Item], extracted: list[str | None], results: list[GradeResult | None], limit: float
    ) -> None:
        self.start()
        todo: deque[Item] = deque(items)
        # Small enough chunks that every worker gets several (load balance), large enough to amortise IPC.
        chunk = max(1, min(self.chunk_size, math.ceil(len(items) / (2 * self.num_workers))))
        startup_deadline = time.monotonic() + self.startup_timeout_s

        def finish(index: int, correct: bool, status: Status) -> None:
            results[index] = GradeResult(correct, extracted[index], status)

        while todo or any(w.pending for w in self._workers):
            self._dispatch(todo, chunk)
            self._wait_for_events(startup_deadline, limit)
            for slot, worker in enumerate(self._workers):
                died = self._drain(worker, finish)
                if died:
                    self._replace(slot, todo, finish, "crash")
                elif worker.pending and self._time_left(worker, limit) <= 0:
                    self._replace(slot, todo, finish, "timeout")

    def _time_left(self, worker: _Worker, limit: float) -> float:
        """Seconds until the worker's current answer overruns: its CPU seconds past `limit`, or the wall clock
        past the cap. Reads /proc only once the wall clock has passed the limit (CPU time <= wall time)."""
        wall = time.monotonic() - worker.item_started
        if wall < limit:
            return limit - wall
        wall_left = limit * self.wall_factor + 1.0 - wall
        cpu = worker.process.cpu_seconds()
        if cpu is None:  # no /proc: the wall clock rules
            return 0.0
        return min(limit - (cpu - worker.item_cpu), wall_left)

    def _dispatch(self, todo: deque[Item], chunk: int) -> None:
        for worker in self._workers:
            if worker.ready and not worker.pending and todo:
                batch = [todo.popleft() for _ in range(min(chunk, len(todo)))]
                worker.pending.extend(batch)
                worker.item_started = time.monotonic()
                worker.conn.send(batch)

    def _wait_for_events(self, startup_deadline: float, limit: float) -> None:
        busy = [w for w in self._workers if w.pending]
        if busy:  # poll at least every 20 ms once a limit is near: CPU time is read, not signalled
            timeout = max(0.02, min(self._time_left(w, limit) for w in busy))
        else:  # every worker is still starting up
            timeout = startup_deadline - time.monotonic()
            if timeout <= 0:
                raise RuntimeError(f"grader workers not ready after {self.startup_timeout_s:.0f} s")
        wait([w.conn for w in self._workers], timeout=timeout)  # a dead worker's socket reads EOF

    def _drain(self, worker: _Worker, finish: Callable[[int, bool, Status], None]) -> bool:
        """Read every message the worker has sent; True if it has died."""
        try:
            while worker.conn.poll():
                message = worker.conn.recv()
                if message[0] == "ready":
                    worker.ready, worker.item_cpu = True, message[1]
                else:
                    _, index, correct, status, worker.item_cpu = message
                    finished = worker.pending.popleft()
                    assert finished[0] == index, "worker answered out of order"
                    if status == "crash":
                        self.stats.crashes += 1
                    finish(index, correct, status)
                    worker.item_started = time.monotonic()  # the next item starts now
        except (EOFError, OSError):
            return True
        if not worker.process.is_alive():
            if not worker.ready:
                code = worker.process.exitcode
                raise RuntimeError(f"grader worker died during start-up (exit code {code})")
            return True
        return False

    def _replace(
        self, slot: int, todo: deque[Item], finish: Callable[[int, bool, Status], None], status: Status
    ) -> None:
        """Kill the worker in `slot`, score its current item 0 (`status`), requeue the rest of its chunk."""
        worker = self._workers[slot]
        if worker.pending:
            index = worker.pending.popleft()[0]
            finish(index, False, status)
            if status == "timeout":
                self.stats.timeouts += 1
            else:
                self.stats.crashes += 1
            log.warning("grader: answer %d -> %s; replacing worker pid %s", index, status, worker.process.pid)
        todo.extendleft(reversed(worker.pending))  # innocent bystanders are graded by another worker
        worker.pending.clear()
        self._stop_worker(worker, graceful=False)
        self._workers[slot] = self._spawn_worker()
        self.stats.workers_replaced += 1


# ------------------------------------------------------------------------------------ one shared pool

_SHARED: dict[int | None, Grader] = {}
_SHARED_LOCK = threading.Lock()


def shared_grader(num_workers: int | None = None) -> Grader:
    """One Grader per `num_workers` per process, so rewards and evaluation share a pool. The per-answer
    limit is not part of the key: pass it to `grade(..., timeout_s=)`."""
    with _SHARED_LOCK:
        if num_workers not in _SHARED:
            _SHARED[num_workers] = Grader(num_workers=num_workers)
        return _SHARED[num_workers]


def close_shared_graders() -> None:
    with _SHARED_LOCK:
        for grader in _SHARED.values():
            grader.close()
        _SHARED.clear()


atexit.register(close_shared_graders)
