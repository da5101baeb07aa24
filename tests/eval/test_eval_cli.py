"""`rlx eval` end to end through real Hydra composition (`rlx.eval.app.main` with `sys.argv`), with the real
tiny model and `sampler=hf`. Accuracy near zero on GSM8K/MATH-500 is expected: these tests check the
pipeline and its files, not the model."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from rlx.eval import app

pytestmark = pytest.mark.slow

SIZE = 20


def run_eval(monkeypatch, *overrides: str) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setattr(sys, "argv", ["rlx eval", *overrides])
    app.main()


def read_samples(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def check_run(run_dir: Path, data: str, n: int) -> dict:
    result = json.loads((run_dir / "eval.json").read_text())
    samples = read_samples(run_dir / "samples.jsonl")
    assert result["data"] == data and result["num_problems"] == SIZE and result["n"] == n
    assert set(result["pass@k"]) == {"1", "2"} and result["pass@k"]["1"] == pytest.approx(result["accuracy"])
    assert 0.0 <= result["maj@n"] <= result["pass@k"]["2"] <= 1.0
    assert len(result["template_sha256"]) == 12 and result["chat_template_applied"] is False  # char tokenizer
    assert len(samples) == SIZE * n
    assert {"prompt", "completion", "extracted", "answer", "correct", "status", "seed"} <= set(samples[0])
    assert {s["template_sha256"] for s in samples} == {result["template_sha256"]}
    assert len({s["seed"] for s in samples}) == len(samples)  # every request has its own seed
    assert result["accuracy"] == pytest.approx(sum(s["correct"] for s in samples) / len(samples))
    assert result["screened"] == sum(s["status"] == "screened" for s in samples)
    return result


def test_gsm8k_and_math500_in_one_command(monkeypatch, tmp_path, tiny_model_dir, fixture_data):
    run_eval(monkeypatch, "data=gsm8k,math500", f"data.path={fixture_data}", f"model.path={tiny_model_dir}",
             "sampler=hf", f"eval.size={SIZE}", "eval.n=2", "eval.temperature=0.6", "eval.max_new_tokens=24",
             f"hydra.sweep.dir={tmp_path}")
    gsm8k = check_run(tmp_path / "0_gsm8k", "gsm8k", n=2)
    assert gsm8k["prompt_template"] == "gsm8k_chat" and gsm8k["answer_style"] == ["gsm8k", "last_number"]
    math500 = check_run(tmp_path / "1_math500", "math500", n=2)
    assert set(math500["breakdown"]) == {"subject", "level"}
    assert sum(group["n"] for group in math500["breakdown"]["level"].values()) == SIZE
    assert set(math500["breakdown"]["level"]) <= {"1", "2", "3", "4", "5"}
    prompt = read_samples(tmp_path / "1_math500" / "samples.jsonl")[0]["prompt"]
    assert prompt.endswith("put your final answer within \\boxed{}.\n")
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [row["data"] for row in summary] == ["gsm8k", "math500"] and "maj@2" in summary[0]


def test_greedy_arith_keeps_working(monkeypatch, tmp_path, tiny_model_dir):
    run_eval(monkeypatch, f"model.path={tiny_model_dir}", f"eval.size={SIZE}", f"hydra.run.dir={tmp_path}")
    result = json.loads((tmp_path / "eval.json").read_text())
    assert result["data"] == "arith" and result["n"] == 1 and result["temperature"] == 0.0
    assert result["accuracy"] > 0  # the tiny model is warm-started on arith (~35% greedy)
    assert result["pass@k"] == {"1": result["accuracy"]} and result["prompt_template"] == "arith"
    samples = read_samples(tmp_path / "samples.jsonl")
    assert len(samples) == SIZE and all(s["prompt"].endswith("=?\n") for s in samples)


def test_malformed_jsonl_fails_with_file_and_line_before_any_model(monkeypatch, tmp_path):
    import rlx.recipes as load

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "1+1?", "answer": "2"}\n{"question": "2+2?", "answer": \n')

    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded before the data was checked")

    monkeypatch.setattr(load, "resolve_model_path", no_model)
    with pytest.raises(SystemExit) as exit_info:
        run_eval(monkeypatch, "data=jsonl", f"data.path={bad}", f"hydra.run.dir={tmp_path / 'run'}")
    message = str(exit_info.value.code)
    assert f"{bad}:2" in message and "malformed row" in message and message.startswith("rlx eval: bad config")
