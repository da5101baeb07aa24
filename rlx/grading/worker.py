"""A grader worker process: `python -m rlx.grading.worker FD CHECKER HEADROOM_MB`.

Started by `rlx.grading.grader.Grader` as a fresh interpreter (not a multiprocessing child), so it never
re-imports the caller's `__main__`: a script that grades at top level, without an
`if __name__ == "__main__"` guard, works, and a worker imports only the grader and math-verify (not the
caller's torch). FD is one end of a socket pair carrying multiprocessing `Connection` messages; CHECKER is
`module:function`, the equivalence check to run.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import sys
import time
import warnings
from collections.abc import Callable
from multiprocessing.connection import Connection

_MIB = 1024 * 1024
# One pair per kind of answer math-verify handles, so a fresh worker has imported and compiled everything
# before its first real answer (the first fraction, root, interval, complex or trig answer otherwise costs
# a few hundred ms, which a 0.5 s training limit would count as a timeout).
WARM_UP = [("1", "1"), ("\\frac{1}{2}", "0.5"), ("2\\sqrt{3}", "\\sqrt{12}"), ("(1, 2]", "[1, 2)"),
           ("1 - 2i", "1+2i"), ("\\cot x", "\\frac{\\pi}{6}"), ("x^2+1", "(x+1)^2"), ("\\{1, 2\\}", "(1,2)"),
           ("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "\\begin{pmatrix} 2 \\\\ 1 \\end{pmatrix}"),
           ("90^\\circ", "\\text{(C)}"), ("y = 2x + 3", "2x+3"), ("10", "\\frac{20}{2}")]


def limit_address_space(headroom_mb: int | None) -> None:
    """Cap the worker's address space at (what it uses after imports) + headroom, so a memory bomb raises
    MemoryError instead of starving the machine."""
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


def load_checker(reference: str) -> Callable[[str, str], bool]:
    module, _, name = reference.partition(":")
    return getattr(importlib.import_module(module), name)


def serve(conn: Connection, checker: Callable[[str, str], bool], headroom_mb: int | None) -> None:
    """Receive chunks [(index, reference, answer), ...]; reply ("done", index, correct, status, cpu seconds)
    per item."""
    warnings.filterwarnings("ignore")
    logging.getLogger("math_verify").setLevel(logging.CRITICAL)  # it logs every parse failure it swallows
    for reference, answer in WARM_UP:  # imports, parser build and sympy's caches: not charged to an answer
        with contextlib.suppress(Exception):
            checker(reference, answer)
    limit_address_space(headroom_mb)
    conn.send(("ready", time.process_time()))
    while True:
        try:
            chunk = conn.recv()
        except (EOFError, OSError):
            return
        if chunk is None:
            return
        for index, reference, answer in chunk:
            try:
                verdict, status = bool(checker(reference, answer)), "ok"
            except Exception:  # MemoryError, RecursionError, a parser bug: this answer scores 0
                verdict, status = False, "crash"
            # The CPU time so far lets the parent charge the next answer only for its own CPU seconds.
            conn.send(("done", index, verdict, status, time.process_time()))


def main(argv: list[str]) -> int:
    fd, checker, headroom = int(argv[1]), argv[2], int(argv[3])
    serve(Connection(fd), load_checker(checker), headroom or None)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
