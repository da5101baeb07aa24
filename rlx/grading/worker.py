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
import warnings
from collections.abc import Callable
from multiprocessing.connection import Connection

_MIB = 1024 * 1024


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
    """Receive chunks [(index, reference, answer), ...]; reply ("done", index, correct, status) per item."""
    warnings.filterwarnings("ignore")
    logging.getLogger("math_verify").setLevel(logging.CRITICAL)  # it logs every parse failure it swallows
    with contextlib.suppress(Exception):  # warm-up: import math-verify/sympy, build the parser
        checker("1", "1")
    limit_address_space(headroom_mb)
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


def main(argv: list[str]) -> int:
    fd, checker, headroom = int(argv[1]), argv[2], int(argv[3])
    serve(Connection(fd), load_checker(checker), headroom or None)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
