"""Answer extraction and math equivalence for GSM8K/MATH, graded in a pool of time-limited worker processes.

Model output is untrusted. Extraction (`extract_answer`) is our own linear-time scanning and runs in the
caller's process; anything that needs a computer-algebra system (math-verify -> sympy) runs in a worker
process under a per-answer wall-clock limit. A worker that overruns the limit is killed and replaced, a worker
that dies takes only the answer it was on with it, and both count as a 0 score (see `Grader.stats`).

Cheap decisions come first so that most GSM8K answers never leave the caller's process:
  * equal after `normalize_answer` (strip, drop `$`, thousands commas, trailing `.0`) -> correct;
  * both plain decimal numbers but different -> incorrect (decimals have one exact value, no CAS needed).
Everything else goes to math-verify's `parse`/`verify` with LaTeX and expression extraction configs.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import math
import multiprocessing as mp
import os
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from multiprocessing.connection import Connection, wait
from typing import Any, Literal

log = logging.getLogger(__name__)

Style = Literal["boxed", "gsm8k", "last_number", "auto"]
Status = Literal["ok", "timeout", "crash", "no_answer"]

# `auto` tries the strictest marker first: an explicit \boxed{}, then GSM8K's "####", then any number.
AUTO_STYLES: tuple[str, ...] = ("boxed", "gsm8k", "last_number")
SINGLE_STYLES: frozenset[str] = frozenset(AUTO_STYLES)


# --------------------------------------------------------------------------------------------- extraction

# `\boxed` / `\fbox` not followed by a letter (so `\boxedsymbol` is not a box).
_BOX_COMMAND = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
# Tokens that matter for brace matching: an escaped character (`\{`, `\}`, `\\`) or a bare brace.
_BRACE_TOKEN = re.compile(r"\\.|[{}]", re.DOTALL)
# A number, with thousands separators only in groups of three so that "1,2,3" reads as three numbers.
_NUMBER = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")
# A number at the start of the text after "####" (GSM8K writes "#### 1,234" or "#### $18").
_LEADING_NUMBER = re.compile(r"[$\s]*(-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?)(?![\d/^])")


def _matching_braces(text: str, start: int) -> dict[int, int]:
    """Map each `{` at or after `start` to its closing `}` (one linear pass; escaped braces are ignored).

    The partner of a brace depends only on the text after it, so starting mid-text is exact.
    """
    partner: dict[int, int] = {}
    open_positions: list[int] = []  # an explicit stack: 10 000 nested braces must not recurse
    for token in _BRACE_TOKEN.finditer(text, start):
        if token.group() == "{":
            open_positions.append(token.start())
        elif token.group() == "}" and open_positions:
            partner[open_positions.pop()] = token.start()
    return partner


def _extract_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}`/`\\fbox{...}` whose braces balance (or `\\boxed 5`)."""
    commands = list(_BOX_COMMAND.finditer(text))
    if not commands:
        return None
    partner = _matching_braces(text, commands[0].end())
    for command in reversed(commands):
        pos = command.end()
        while pos < len(text) and text[pos] == " ":
            pos += 1
        if pos < len(text) and text[pos] == "{":
            if pos in partner:  # a truncated box (no closing brace) falls back to the one before it
                return text[pos + 1 : partner[pos]].strip()
        elif command.end() < pos < len(text):  # `\boxed 5`: the argument is one token
            token = re.match(r"[^\s$]+", text[pos : pos + 200])
            if token:
                return token.group()
    return None


def _extract_gsm8k(text: str) -> str | None:
    """The answer after the last `####`: its leading number when there is one, else the rest of the line."""
    marker = text.rfind("####")
    if marker < 0:
        return None
    rest = text[marker + 4 :].lstrip()
    line = rest.split("\n", 1)[0].strip()
    number = _LEADING_NUMBER.match(line)
    if number:
        return number.group(1)
    return line or None


def _extract_last_number(text: str) -> str | None:
    last = None
    for last in _NUMBER.finditer(text):  # noqa: B007 - we want the final match
        pass
    return last.group() if last else None


_EXTRACTORS: dict[str, Callable[[str], str | None]] = {
    "boxed": _extract_boxed,
    "gsm8k": _extract_gsm8k,
    "last_number": _extract_last_number,
}


def resolve_styles(style: str | Sequence[str]) -> tuple[str, ...]:
    """`"auto"` -> its chain; a single style -> a 1-tuple; a sequence of styles is tried in order."""
    styles = (style,) if isinstance(style, str) else tuple(style)
    expanded: list[str] = []
    for name in styles:
        if name == "auto":
            expanded.extend(AUTO_STYLES)
        elif name in SINGLE_STYLES:
            expanded.append(name)
        else:
            known = sorted(SINGLE_STYLES)
            raise ValueError(f"unknown extraction style {name!r}; use one of {known} or 'auto'")
    return tuple(expanded)


def extract_answer(text: str, style: str | Sequence[str] = "auto") -> str | None:
    """The final answer in `text`, or None. `style`: boxed | gsm8k | last_number | auto, or a list tried in
    order (auto = boxed, then ####, then last number). Linear time in len(text)."""
    if not isinstance(text, str):
        return None
    for name in resolve_styles(style):
        answer = _EXTRACTORS[name](text)
        if answer:
            return answer
    return None


# ------------------------------------------------------------------------------------------ normalisation

_THOUSANDS_NUMBER = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_PLAIN_DECIMAL = re.compile(r"-?\d+(?:\.\d+)?")
# Whitespace is dropped unless it separates two letters ("\pi r" must not become "\pir").
_DROPPABLE_SPACE = re.compile(r"(?<![A-Za-z])\s+|\s+(?![A-Za-z])")


def normalize_answer(answer: str) -> str:
    """A cheap canonical form for string comparison (never a math decision on its own for non-numbers)."""
    text = answer.strip().replace("\\$", "").replace("$", "").replace("\\!", "")
    text = _DROPPABLE_SPACE.sub("", text).rstrip(".")
    if _THOUSANDS_NUMBER.fullmatch(text):  # only number-shaped commas: "(1,2)" must keep its comma
        text = text.replace(",", "")
    if _PLAIN_DECIMAL.fullmatch(text) and "." in text:
        text = text.rstrip("0").rstrip(".")  # "18.00" -> "18"
    if text == "-0":
        text = "0"
    return text


def quick_decision(reference: str, answer: str) -> bool | None:
    """True/False when normalisation alone decides, None when a CAS is needed."""
    ref, ans = normalize_answer(reference), normalize_answer(answer)
    if ref == ans:
        return True
    if _PLAIN_DECIMAL.fullmatch(ref) and _PLAIN_DECIMAL.fullmatch(ans):
        try:
            return Decimal(ref) == Decimal(ans)
        except InvalidOperation:  # pragma: no cover - the regex admits only valid decimals
            return None
    return None


# ------------------------------------------------------------------------------ math-verify (worker side)

_MATH_VERIFY_CONFIGS: Any = None  # built lazily inside the worker; the parent never imports math-verify


def _parse_configs() -> Any:
    global _MATH_VERIFY_CONFIGS
    if _MATH_VERIFY_CONFIGS is None:
        from math_verify import ExprExtractionConfig, LatexExtractionConfig

        _MATH_VERIFY_CONFIGS = [LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()]
    return _MATH_VERIFY_CONFIGS


def _parse_math(answer: str) -> list[Any]:
    from math_verify import parse

    # Wrapping in \boxed{} gives math-verify an anchor, so it reads the whole answer and not a fragment.
    # Its own signal-based timeouts are off: the worker's wall-clock limit (enforced by the parent) rules.
    return parse("\\boxed{" + answer + "}", extraction_config=_parse_configs(), parsing_timeout=None)


def check_equivalence(reference: str, answer: str) -> bool:
    """math-verify equivalence of two extracted answers. Runs only inside grader workers."""
    from math_verify import verify

    gold, pred = _parse_math(reference), _parse_math(answer)
    if not gold or not pred:
        return False
    return bool(verify(gold, pred, timeout_seconds=None))


# ------------------------------------------------------------------------------------------ worker process

_MIB = 1024 * 1024


def _limit_address_space(headroom_mb: int | None) -> None:
    """Cap the worker's address space at (what it uses after imports) + headroom, so a memory bomb raises
    MemoryError instead of starving the machine. Relative, because the spawned child re-imports the parent's
    __main__ module (which may pull in torch) and its baseline varies."""
    if not headroom_mb:
        return
    try:
        import resource

        with open("/proc/self/statm") as statm:
            current = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        limit = current + headroom_mb * _MIB
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (OSError, ValueError, ImportError):  # not Linux, or already limited lower: run without the cap
        pass


def _worker_main(
    conn: Connection, checker: Callable[[str, str], bool], memory_headroom_mb: int | None
) -> None:
    """Receive chunks [(index, reference, answer), ...]; reply ("done", index, correct, status) per item."""
    import warnings

    warnings.filterwarnings("ignore")
    logging.getLogger("math_verify").setLevel(logging.ERROR)  # it warns once that its own timeout is off
    with contextlib.suppress(Exception):  # warm-up: import math-verify/sympy, build the parser
        checker("1", "1")
    _limit_address_space(memory_headroom_mb)
    conn.send(("ready",))
    while True:
        try:
            chunk = conn.recv()
        except (EOFError, OSError):
            return
        if chunk is None:
            return
        for index, reference, answer in chunk:
            try:
                conn.send(("done", index, bool(checker(reference, answer)), "ok"))
            except Exception:  # MemoryError, RecursionError, a parser bug: this answer scores 0
                conn.send(("done", index, False, "crash"))


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
    workers_replaced: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class _Worker:
    process: Any  # multiprocessing.process.BaseProcess
    conn: Connection
    ready: bool = False
    pending: deque[tuple[int, str, str]] = field(default_factory=deque)  # dispatched, not yet answered
    item_started: float = 0.0  # when the first pending item started (as seen by the parent)


Item = tuple[int, str, str]  # (position in the batch, reference, extracted answer)


class Grader:
    """Grades completions against reference answers; math-verify runs in `num_workers` worker processes.

    Use as a context manager (or call `close()`); the pool starts on first need. Not re-entrant: one
    `grade()` at a time per Grader (a lock serialises concurrent callers).
    """

    def __init__(
        self,
        num_workers: int | None = None,
        timeout_s: float = 2.0,
        *,
        start_method: Literal["spawn", "forkserver"] = "spawn",
        chunk_size: int = 16,
        max_answer_chars: int = 1000,
        fast_path: bool = True,
        memory_headroom_mb: int | None = 2048,
        startup_timeout_s: float = 120.0,
        checker: Callable[[str, str], bool] = check_equivalence,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self.num_workers = num_workers or max(1, min(4, os.cpu_count() or 1))
        self.timeout_s = float(timeout_s)
        self.chunk_size = max(1, chunk_size)
        self.max_answer_chars = max_answer_chars  # longer "answers" are junk: never sent to a CAS
        self.fast_path = fast_path  # False sends every answer to math-verify (used to validate math-verify)
        self.memory_headroom_mb = memory_headroom_mb
        self.startup_timeout_s = startup_timeout_s
        self.checker = checker  # must be a picklable top-level function (spawn pickles it by name)
        # spawn/forkserver, never fork: the parent may hold torch/vLLM threads; a forked child can deadlock.
        self._ctx = mp.get_context(start_method)
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
            self._wait_for_events(deadline)
            for worker in self._workers:
                if self._drain(worker, lambda *_: None):
                    raise RuntimeError("grader worker died while idle")

    def close(self) -> None:
        for worker in self._workers:
            self._stop_worker(worker, graceful=True)
        self._workers = []

    def _spawn_worker(self) -> _Worker:
        parent_conn, child_conn = self._ctx.Pipe(duplex=True)
        process = self._ctx.Process(
            target=_worker_main,
            args=(child_conn, self.checker, self.memory_headroom_mb),
            daemon=True,
            name="rlx-grader",
        )
        process.start()
        child_conn.close()  # the child holds its end; closing ours lets us see EOF when it dies
        return _Worker(process=process, conn=parent_conn)

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
        self, references: Sequence[str], completions: Sequence[str], style: str | Sequence[str] = "auto"
    ) -> list[GradeResult]:
        """One GradeResult per completion; `references[i]` is the reference answer of `completions[i]`."""
        if len(references) != len(completions):
            raise ValueError(f"{len(references)} references but {len(completions)} completions")
        styles = resolve_styles(style)
        with self._lock:
            results: list[GradeResult | None] = [None] * len(completions)
            extracted = [extract_answer(text, styles) for text in completions]
            to_check = self._decide_cheaply(references, extracted, results)
            if to_check:
                self._check_in_workers(to_check, extracted, results)
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
            if len(answer) > self.max_answer_chars:  # no real answer is this long: not worth any CPU
                results[index] = GradeResult(False, answer, "ok")
                continue
            decision = quick_decision(str(reference), answer) if self.fast_path else None
            if decision is not None:
                results[index] = GradeResult(decision, answer, "ok")
                self.stats.fast_path += 1
            else:
                to_check.append((index, str(reference), answer))
        return to_check

    def _check_in_workers(
        self, items: list[Item], extracted: list[str | None], results: list[GradeResult | None]
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
            self._wait_for_events(startup_deadline)
            for slot, worker in enumerate(self._workers):
                died = self._drain(worker, finish)
                if died:
                    self._replace(slot, todo, finish, "crash")
                elif worker.pending and time.monotonic() - worker.item_started > self.timeout_s:
                    self._replace(slot, todo, finish, "timeout")

    def _dispatch(self, todo: deque[Item], chunk: int) -> None:
        for worker in self._workers:
            if worker.ready and not worker.pending and todo:
                batch = [todo.popleft() for _ in range(min(chunk, len(todo)))]
                worker.pending.extend(batch)
                worker.item_started = time.monotonic()
                worker.conn.send(batch)

    def _wait_for_events(self, startup_deadline: float) -> None:
        busy = [w for w in self._workers if w.pending]
        if busy:
            next_deadline = min(w.item_started for w in busy) + self.timeout_s
            timeout = max(0.0, next_deadline - time.monotonic()) + 0.001
        else:  # every worker is still starting up
            timeout = startup_deadline - time.monotonic()
            if timeout <= 0:
                raise RuntimeError(f"grader workers not ready after {self.startup_timeout_s:.0f} s")
        handles = [w.conn for w in self._workers] + [w.process.sentinel for w in self._workers]
        wait(handles, timeout=timeout)

    def _drain(self, worker: _Worker, finish: Callable[[int, bool, Status], None]) -> bool:
        """Read every message the worker has sent; True if it has died."""
        try:
            while worker.conn.poll():
                message = worker.conn.recv()
                if message[0] == "ready":
                    worker.ready = True
                else:
                    _, index, correct, status = message
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

_SHARED: dict[tuple[int | None, float], Grader] = {}
_SHARED_LOCK = threading.Lock()


def shared_grader(num_workers: int | None = None, timeout_s: float = 2.0) -> Grader:
    """One Grader per (num_workers, timeout_s) per process, so rewards composed together share a pool."""
    key = (num_workers, float(timeout_s))
    with _SHARED_LOCK:
        if key not in _SHARED:
            _SHARED[key] = Grader(num_workers=num_workers, timeout_s=timeout_s)
        return _SHARED[key]


def close_shared_graders() -> None:
    with _SHARED_LOCK:
        for grader in _SHARED.values():
            grader.close()
        _SHARED.clear()


atexit.register(close_shared_graders)
