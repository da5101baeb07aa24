"""GSM8K (Cobbe et al. 2021): grade-school word problems whose worked answer ends with `#### <int>`."""

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

HUB_NAME = "openai/gsm8k"
HUB_CONFIG = "main"
SPLITS = ("train", "test")


def reference_answer(solution: str) -> str:
    """The final answer of a GSM8K solution: the text after the last `####`, commas removed."""
    marker = solution.rfind("####")
    if marker < 0:
        raise ValueError("answer has no '####' line")
    answer = solution[marker + 4 :].strip().replace(",", "")
    if not answer:
        raise ValueError("nothing after '####'")
    return answer


def _row_to_problem(split: str) -> Any:
    def convert(row: dict[str, Any], index: int) -> Problem:
        solution = required_text(row, "answer")
        return Problem(
            id=f"gsm8k/{split}/{index}",
            question=required_text(row, "question"),
            answer=reference_answer(solution),
            solution=solution,  # keeps the <<calc>> annotations: it is the reference, not a prompt
        )

    return convert


def _local_file(split: str, path: Path) -> Path:
    """`path` may be the file itself or a directory holding `{split}.jsonl`."""
    return path / f"{split}.jsonl" if path.is_dir() else path


def load_gsm8k(
    split: str = "test", path: str | Path | None = None, on_error: OnError = "raise"
) -> ProblemList:
    """GSM8K problems. From a local JSONL file/dir when `path` is given, else from the HF hub (`datasets`).

    Problem.answer is the text after `####` (commas removed); Problem.solution is the full worked answer.
    Ids are `gsm8k/{split}/{row index}` on both paths.
    """
    if split not in SPLITS:
        raise ValueError(f"GSM8K split must be one of {SPLITS}, got {split!r}")
    check_on_error(on_error)
    convert = _row_to_problem(split)
    if path is not None:
        return load_rows_from_file(_local_file(split, Path(path)), convert, on_error)
    return _load_from_hub(split, convert, on_error)


def _load_from_hub(split: str, convert: Any, on_error: OnError) -> ProblemList:
    try:
        import datasets  # lazy: a heavy optional dependency, only needed without a local copy
    except ImportError as error:
        message = "loading GSM8K from the hub needs `pip install datasets` (or pass path=)"
        raise ImportError(message) from error
    rows = datasets.load_dataset(HUB_NAME, HUB_CONFIG, split=split)
    source = f"{HUB_NAME}:{split}"
    located = ((f"{source}:row {index + 1}", dict(row)) for index, row in enumerate(rows))
    return convert_rows(located, convert, on_error, source=source)
