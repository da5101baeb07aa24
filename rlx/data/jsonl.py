"""Load problems from local JSONL files (one JSON object per line) with configurable field names.

Also the shared row-reading machinery of the GSM8K and MATH-500 loaders: a malformed row (bad JSON, invalid
UTF-8, a missing or non-text field) either raises `ValueError` naming the file and its 1-based line number
(`on_error="raise"`) or is skipped and counted on the returned `ProblemList` (`on_error="skip"`). Files are
read as bytes and decoded line by line, so one bad byte costs one row, not the file; a UTF-8 byte-order mark
(which Windows editors write at the start of a file, and which `cat` carries into the middle of a
concatenation) is dropped wherever a line starts with one.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

from rlx.data.base import Problem

OnError = Literal["raise", "skip"]
# Turns one decoded row into a Problem; raises KeyError/ValueError/TypeError for a malformed row.
RowConverter = Callable[[dict[str, Any], int], Problem]


class ProblemList(list[Problem]):
    """A plain `list[Problem]` that also reports what loading skipped."""

    def __init__(self, problems: Iterable[Problem] = (), source: str = "") -> None:
        super().__init__(problems)
        self.source = source  # the file (or hub data set) the problems came from
        self.skipped_rows: list[str] = []  # "file:line: reason" for each malformed row skipped

    @property
    def skipped(self) -> int:
        return len(self.skipped_rows)


def check_on_error(on_error: str) -> None:
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")


_BOM = b"\xef\xbb\xbf"


def iter_json_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, raw line bytes without a leading BOM) for every non-blank line. Decoding is the
    row converter's job, so an invalid byte becomes a row error with its line number."""
    with path.open("rb") as lines:
        for line_number, line in enumerate(lines, start=1):
            line = line.removeprefix(_BOM)
            if line.strip():
                yield line_number, line


def convert_rows(
    rows: Iterable[tuple[str, Any]],
    convert: RowConverter,
    on_error: OnError,
    source: str,
) -> ProblemList:
    """Convert `(location, raw_row)` pairs, where `raw_row` is UTF-8 bytes, a JSON string or a decoded dict.

    The row index handed to `convert` counts malformed rows too, so problem ids do not shift when a row is
    skipped.
    """
    check_on_error(on_error)
    problems = ProblemList(source=source)
    for index, (location, raw_row) in enumerate(rows):
        try:
            if isinstance(raw_row, bytes):
                raw_row = raw_row.decode("utf-8")  # UnicodeDecodeError is a ValueError: a malformed row
            # without its line break, a row cut short fails at its own last column, not at "line 2 column 1"
            row = json.loads(raw_row.rstrip("\r\n")) if isinstance(raw_row, str) else raw_row
            if not isinstance(row, dict):
                raise ValueError(f"expected a JSON object, got {type(row).__name__}")
            problems.append(convert(row, index))
        except (ValueError, KeyError, TypeError) as error:
            reason = _describe(error)
            if on_error == "raise":
                raise ValueError(f"{location}: malformed row: {reason}") from error
            problems.skipped_rows.append(f"{location}: {reason}")
    return problems


def load_rows_from_file(path: Path, convert: RowConverter, on_error: OnError) -> ProblemList:
    rows = ((f"{path}:{line_number}", line) for line_number, line in iter_json_lines(path))
    return convert_rows(rows, convert, on_error, source=str(path))


def required_text(row: dict[str, Any], key: str) -> str:
    """`row[key]` as a string; numbers are accepted (some data sets store answers as ints)."""
    if key not in row:
        raise KeyError(f"missing field {key!r}")
    value = row[key]
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise TypeError(f"field {key!r} must be text, got {type(value).__name__}")
    return str(value)


def _describe(error: Exception) -> str:
    if isinstance(error, KeyError):
        return str(error.args[0]) if error.args else "missing field"
    if isinstance(error, json.JSONDecodeError):
        end = len(error.doc)  # the row's last column
        if error.msg.startswith("Unterminated string") or error.pos >= end:  # the row stops mid-value
            return (f"bad JSON (the row ends at column {end} before its JSON does, cut short? "
                    f"{error.msg.removesuffix(' starting at')} at column {error.colno})")
        return f"bad JSON ({error.msg} at column {error.colno})"
    if isinstance(error, UnicodeDecodeError):
        return f"invalid UTF-8 (byte 0x{error.object[error.start]:02x} at column {error.start + 1})"
    return str(error)


def load_jsonl(
    path: str | Path,
    *,
    question_key: str = "question",
    answer_key: str = "answer",
    solution_key: str | None = None,
    id_key: str | None = None,
    id_prefix: str | None = None,
    meta_keys: Sequence[str] | None = None,
    on_error: OnError = "raise",
) -> ProblemList:
    """Problems from any local JSONL file.

    id: `row[id_key]` when given, else `{id_prefix}/{row index}` (prefix defaults to the file's stem).
    meta: the fields named in `meta_keys`; by default every field not used for question/answer/solution/id.
    """
    path = Path(path)
    prefix = id_prefix if id_prefix is not None else path.stem
    used_keys = {question_key, answer_key, solution_key, id_key} - {None}

    def convert(row: dict[str, Any], index: int) -> Problem:
        keys = meta_keys if meta_keys is not None else [k for k in row if k not in used_keys]
        return Problem(
            id=required_text(row, id_key) if id_key else f"{prefix}/{index}",
            question=required_text(row, question_key),
            answer=required_text(row, answer_key).strip(),
            solution=required_text(row, solution_key) if solution_key else "",
            meta={key: row[key] for key in keys if key in row},
        )

    return load_rows_from_file(path, convert, on_error)
