"""GSM8K / MATH-500 / generic JSONL loaders: the real files (subsets in tests/fixtures), malformed rows, encodings,
skip counting, hub path."""

from __future__ import annotations

import json
import sys
import types

import pytest

from rlx.data.gsm8k import load_gsm8k, reference_answer
from rlx.data.jsonl import load_jsonl
from rlx.data.math500 import load_math500


def test_gsm8k_files(fixture_data):
    test = load_gsm8k("test", fixture_data / "gsm8k")
    assert len(test) == 30 and test.skipped == 0
    first = test[0]
    assert first.id == "gsm8k/test/0"
    assert first.question.startswith("Janet’s ducks lay 16 eggs per day.")
    assert first.answer == "18"
    assert first.solution.endswith("#### 18")
    assert len(load_gsm8k("train", fixture_data / "gsm8k" / "train.jsonl")) == 20  # a file works too


def test_gsm8k_reference_answer_drops_commas():
    assert reference_answer("So 1,000 + 234 = 1,234.\n#### 1,234") == "1234"
    with pytest.raises(ValueError, match="no '####'"):
        reference_answer("no marker")


def test_math500_file(fixture_data):
    problems = load_math500("test", fixture_data / "math500")
    assert len(problems) == 40
    first = problems[0]
    assert first.id == "math500/test/precalculus/807.json"
    assert first.answer == "\\left( 3, \\frac{\\pi}{2} \\right)"
    assert first.meta == {"subject": "Precalculus", "level": 2, "unique_id": "test/precalculus/807.json"}
    assert "\\boxed" in first.solution
    assert sorted({p.meta["level"] for p in problems}) == [1, 2, 3, 4, 5]


def _write(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


GOOD = json.dumps({"question": "1+1?", "answer": "1+1=2\n#### 2"})


@pytest.mark.parametrize(
    ("bad_line", "reason"),
    [
        ('{"question": "x", "answer": ', "bad JSON"),
        (json.dumps({"question": "x"}), "missing field 'answer'"),
        (json.dumps({"question": "x", "answer": "no marker"}), "no '####'"),
        (json.dumps(["not", "an", "object"]), "expected a JSON object"),
        (json.dumps({"question": None, "answer": "#### 3"}), "field 'question' must be text"),
    ],
)
def test_malformed_row_names_file_and_line(tmp_path, bad_line, reason):
    path = _write(tmp_path / "test.jsonl", [GOOD, "", bad_line, GOOD])  # line 2 is blank: line 3 is bad
    with pytest.raises(ValueError) as error:
        load_gsm8k("test", tmp_path)
    assert f"{path}:3: malformed row" in str(error.value)
    assert reason in str(error.value)


def test_skip_counts_malformed_rows_and_keeps_ids_stable(tmp_path):
    path = _write(tmp_path / "test.jsonl", [GOOD, "{oops", GOOD, json.dumps({"answer": "#### 1"}), GOOD])
    problems = load_gsm8k("test", path, on_error="skip")
    assert [p.id for p in problems] == ["gsm8k/test/0", "gsm8k/test/2", "gsm8k/test/4"]
    assert problems.skipped == 2
    assert [row.split(": ")[0] for row in problems.skipped_rows] == [f"{path}:2", f"{path}:4"]


def test_math500_malformed_row(tmp_path):
    row = {"problem": "p", "solution": "s", "answer": "1", "subject": "Algebra", "level": 1}  # no unique_id
    path = _write(tmp_path / "test.jsonl", [json.dumps(row)])
    with pytest.raises(ValueError, match=f"{path}:1: malformed row: missing field 'unique_id'"):
        load_math500("test", tmp_path)
    assert load_math500("test", path, on_error="skip").skipped == 1


def test_generic_jsonl_with_custom_keys(tmp_path):
    rows = [
        {"uid": "a", "prompt": "2+2?", "final": 4, "work": "2+2=4", "topic": "arith"},
        {"uid": "b", "prompt": "3*3?", "final": "9", "work": "", "topic": "arith"},
    ]
    path = _write(tmp_path / "mine.jsonl", [json.dumps(r) for r in rows])
    problems = load_jsonl(path, question_key="prompt", answer_key="final", solution_key="work", id_key="uid")
    assert [(p.id, p.question, p.answer, p.solution, p.meta) for p in problems] == [
        ("a", "2+2?", "4", "2+2=4", {"topic": "arith"}),
        ("b", "3*3?", "9", "", {"topic": "arith"}),
    ]
    by_index = load_jsonl(path, question_key="prompt", answer_key="final", meta_keys=[])
    assert [(p.id, p.meta) for p in by_index] == [("mine/0", {}), ("mine/1", {})]
    with pytest.raises(ValueError, match=f"{path}:1: malformed row: missing field 'question'"):
        load_jsonl(path)


def test_on_error_must_be_known(tmp_path):
    with pytest.raises(ValueError, match="on_error"):
        load_gsm8k("test", tmp_path, on_error="ignore")


def test_hub_path_uses_datasets_lazily(monkeypatch):
    """Without `path` the loaders go through `datasets.load_dataset` (faked here: tests never download)."""
    calls = []

    def load_dataset(name, config=None, split=None):
        calls.append((name, config, split))
        if name == "openai/gsm8k":
            return [{"question": "q0", "answer": "w\n#### 1,500"}, {"question": "q1"}]
        return [
            {
                "problem": "p",
                "solution": "s",
                "answer": "7",
                "subject": "Algebra",
                "level": 3,
                "unique_id": "test/algebra/1.json",
            }
        ]

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    with pytest.raises(ValueError, match="openai/gsm8k:test:row 2: malformed row: missing field 'answer'"):
        load_gsm8k("test")
    problems = load_gsm8k("test", on_error="skip")
    assert [(p.id, p.answer) for p in problems] == [("gsm8k/test/0", "1500")] and problems.skipped == 1
    [problem] = load_math500()
    assert (problem.id, problem.meta["level"]) == ("math500/test/algebra/1.json", 3)
    assert calls[-1] == ("HuggingFaceH4/MATH-500", None, "test")
    assert calls[0] == ("openai/gsm8k", "main", "test")


# ------------------------------------------------------------------------------------ encodings (issue 12)

BAD_UTF8 = b'{"question": "caf\xe9?", "answer": "#### 1"}'  # Latin-1 bytes: not UTF-8


def test_a_utf8_bom_is_dropped(tmp_path):
    path = tmp_path / "test.jsonl"
    # A BOM at the start of the file (Windows editors) and at the start of a later line (`cat a b`).
    path.write_bytes(b"\xef\xbb\xbf" + GOOD.encode() + b"\n\xef\xbb\xbf" + GOOD.encode() + b"\n")
    problems = load_gsm8k("test", path)
    assert [(p.question, p.answer) for p in problems] == [("1+1?", "2"), ("1+1?", "2")] and problems.skipped == 0


def test_invalid_utf8_names_file_and_line(tmp_path):
    path = tmp_path / "test.jsonl"
    path.write_bytes(GOOD.encode() + b"\n" + BAD_UTF8 + b"\n" + GOOD.encode() + b"\n")
    with pytest.raises(ValueError, match=f"{path}:2: malformed row: invalid UTF-8 \\(byte 0xe9 at column 18\\)"):
        load_gsm8k("test", path)
    problems = load_gsm8k("test", path, on_error="skip")
    assert [p.id for p in problems] == ["gsm8k/test/0", "gsm8k/test/2"] and problems.skipped == 1
    assert problems.skipped_rows == [f"{path}:2: invalid UTF-8 (byte 0xe9 at column 18)"]


def test_invalid_utf8_in_a_jsonl_task_is_counted_on_the_task(tmp_path):
    from rlx.data.configs import JsonlDataConfig
    from rlx.data.tasks import load_task

    test, train = tmp_path / "test.jsonl", tmp_path / "train.jsonl"
    test.write_bytes(b'{"question": "q", "answer": "1"}\n' + BAD_UTF8 + b"\n")
    train.write_bytes(BAD_UTF8 + b"\n" + b'{"question": "q", "answer": "2"}\n' + b"\xff\xfe\n")
    cfg = JsonlDataConfig(path=str(test), train_path=str(train), on_error="skip")
    task = load_task(cfg, train_size=5, seed=0)
    assert [p.answer for p in task.train] == ["2"] and [p.answer for p in task.test] == ["1"]
    assert dict(task.skipped_rows) == {"train": 2, "test": 1} and task.skipped_total == 3


def test_a_train_file_whose_rows_all_lack_the_answer_key_names_the_real_cause(tmp_path):
    from rlx.data.configs import ConfigError, JsonlDataConfig
    from rlx.data.tasks import load_task

    test, train = tmp_path / "test.jsonl", tmp_path / "train.jsonl"
    test.write_text(json.dumps({"question": "q", "answer": "1"}) + "\n")
    train.write_text("".join(json.dumps({"question": f"q{i}", "solution": "1"}) + "\n" for i in range(3)))
    cfg = JsonlDataConfig(path=str(test), train_path=str(train), on_error="skip")
    with pytest.raises(ConfigError) as error:
        load_task(cfg, train_size=5, seed=0)
    message = str(error.value)
    assert message.startswith(f"data.train_path: all 3 rows of {train} were malformed and skipped")
    assert f"first: {train}:1: missing field 'answer'" in message and "no train split" not in message
    train.write_text("")
    with pytest.raises(ConfigError, match=f"data.train_path: {train} has no rows, so the train split is empty"):
        load_task(cfg, train_size=5, seed=0)
    with pytest.raises(ConfigError, match="data=jsonl has no train split here"):  # no train_path at all
        load_task(JsonlDataConfig(path=str(test)), train_size=5, seed=0)
