"""MATH-500 (Lightman et al. 2023): the 500-problem MATH test subset, with subject and level."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rlx.data.base import Problem
from rlx.data.jsonl import (
    OnError,
    ProblemList,
    check_on_error,
    convert_rows,
    load_rows_from_file,
    required_text,
)

HUB_NAME = "HuggingFaceH4/MATH-500"
SPLITS = ("test",)


def _row_to_problem(row: dict[str, Any], index: int) -> Problem:
    unique_id = required_text(row, "unique_id")  # e.g. "test/precalculus/807.json": stable across orderings
    level = row.get("level")
    return Problem(
        id=f"math500/{unique_id}",
        question=required_text(row, "problem"),
        answer=required_text(row, "answer").strip(),
        solution=required_text(row, "solution"),
        meta={
            "subject": required_text(row, "subject"),
            "level": int(level) if isinstance(level, (int, str)) and str(level).isdigit() else level,
            "unique_id": unique_id,
        },
    )


def _local_file(split: str, path: Path) -> Path:
    return path / f"{split}.jsonl" if path.is_dir() else path


def load_math500(
    split: str = "test", path: str | Path | None = None, on_error: OnError = "raise"
) -> ProblemList:
    """MATH-500 problems. From a local JSONL file/dir when `path` is given, else from the HF hub (`datasets`).

    meta holds subject, level (int 1-5) and unique_id; ids are `math500/{unique_id}`.
    """
    if split not in SPLITS:
        raise ValueError(f"MATH-500 has only the split(s) {SPLITS}, got {split!r}")
    check_on_error(on_error)
    if path is not None:
        return load_rows_from_file(_local_file(split, Path(path)), _row_to_problem, on_error)
    try:
        import datasets  # lazy: a heavy optional dependency, only needed without a local copy
    except ImportError as error:
        message = "loading MATH-500 from the hub needs `pip install datasets` (or pass path=)"
        raise ImportError(message) from error
    rows = datasets.load_dataset(HUB_NAME, split=split)
    source = f"{HUB_NAME}:{split}"
    located = ((f"{source}:row {index + 1}", dict(row)) for index, row in enumerate(rows))
    return convert_rows(located, _row_to_problem, on_error, source=source)
