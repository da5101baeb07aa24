"""Metrics sinks. `metrics.jsonl` in the run directory always gets every step."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class JsonlLogger:
    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("a", buffering=1)  # line-buffered: a crash loses at most one line

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        self._file.write(json.dumps({"step": step, **metrics}, sort_keys=True) + "\n")

    def close(self) -> None:
        self._file.close()


def build_logger(cfg, run_dir: Path) -> JsonlLogger:
    return JsonlLogger(run_dir / "metrics.jsonl")
