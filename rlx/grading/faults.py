"""A grader `checker` that misbehaves on command, to exercise the pool's timeout and crash paths for real."""

from __future__ import annotations

import os
import signal
import time


def faulty_checker(reference: str, answer: str) -> bool:
    """Answer "HANG" sleeps forever, "CRASH" kills its own process, "RAISE" raises; otherwise string equality."""
    if answer == "HANG":
        while True:
            time.sleep(60)
    if answer == "CRASH":
        os.kill(os.getpid(), signal.SIGKILL)
    if answer == "RAISE":
        raise RuntimeError("injected checker failure")
    return reference == answer
