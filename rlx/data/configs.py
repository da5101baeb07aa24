"""Typed configs of the `data` group, one dataclass per option (selected by `name`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal


class ConfigError(ValueError):
    """A bad configuration value; the message names the key."""


def _require(ok: bool, key: str, rule: str, value: Any) -> None:
    if not ok:
        raise ConfigError(f"{key} {rule}, got {value!r}")


@dataclass(frozen=True)
class ArithDataConfig:
    name: Literal["arith"] = "arith"
    min_ops: int = 1
    max_ops: int = 3
    start_min: int = 10
    start_max: int = 99
    operand_min: int = 1
    operand_max: int = 9
    test_size: int = 500
    operators: str = "+-"  # operations drawn: any of + - * ("*" multiplies the running total)
    # arith = the tiny model's plain format; arith_chat = "Compute <question>" as a chat turn (data=arith_chat)
    prompt_template: Literal["arith", "arith_chat"] = "arith"
    few_shot: int = 0  # worked examples as chat turns before the question (arith_chat)
    system_prompt: str | None = None  # the chat's system turn; null = the chat template's default, "" = empty

    def validate(self) -> None:
        _require(bool(self.operators) and set(self.operators) <= set("+-*") and len(set(self.operators)) ==
                 len(self.operators), "data.operators", "must be distinct characters of '+-*'", self.operators)
        _require(self.few_shot >= 0, "data.few_shot", "must be >= 0", self.few_shot)
        _require(self.prompt_template == "arith_chat" or (self.few_shot == 0 and self.system_prompt is None),
                 "data.prompt_template", "must be arith_chat for few_shot/system_prompt", self.prompt_template)
        _require(1 <= self.min_ops <= self.max_ops, "data.min_ops", "must be in [1, data.max_ops]", self.min_ops)
        _require(0 <= self.start_min <= self.start_max, "data.start_min", "must be in [0, data.start_max]",
                 self.start_min)
        _require(0 <= self.operand_min <= self.operand_max, "data.operand_min",
                 "must be in [0, data.operand_max]", self.operand_min)
        _require(self.test_size >= 1, "data.test_size", "must be >= 1", self.test_size)

    def spec(self):
        from rlx.data.arith import ArithSpec

        return ArithSpec(min_ops=self.min_ops, max_ops=self.max_ops, start_min=self.start_min,
                         start_max=self.start_max, operand_min=self.operand_min, operand_max=self.operand_max,
                         test_size=self.test_size, operators=self.operators)


OnError = Literal["raise", "skip"]
AnswerStyle = str | tuple[str, ...]  # a grader extraction style, or several tried in order


def _validate_common(cfg) -> None:
    """Checks shared by the math data sets: prompt template and answer extraction style."""
    from rlx.data.prompts import resolve_template
    from rlx.grading.extract import resolve_styles

    try:
        resolve_template(cfg.prompt_template)
    except ValueError as err:
        raise ConfigError(f"data.prompt_template {err}") from None
    try:
        resolve_styles(cfg.answer_style)
    except ValueError as err:
        raise ConfigError(f"data.answer_style: {err}") from None


@dataclass(frozen=True)
class Gsm8kDataConfig:
    """GSM8K. `path`: a directory with train.jsonl/test.jsonl, a data root with gsm8k/, or one file (read as
    the test split; no train split). null = the Hugging Face hub (openai/gsm8k)."""

    name: Literal["gsm8k"] = "gsm8k"
    path: str | None = None
    on_error: OnError = "raise"
    prompt_template: str = "gsm8k_chat"
    answer_style: AnswerStyle = ("gsm8k", "last_number")  # what reward_model=gsm8k extracts
    system_prompt: str | None = None  # chat templates: the system turn; null = the template's default, "" = empty

    def validate(self) -> None:
        _validate_common(self)


@dataclass(frozen=True)
class Math500DataConfig:
    """MATH-500 (test split only). `path` as for GSM8K; null = HuggingFaceH4/MATH-500 from the hub."""

    name: Literal["math500"] = "math500"
    path: str | None = None
    on_error: OnError = "raise"
    prompt_template: str = "boxed_chat"
    answer_style: AnswerStyle = "auto"  # boxed, then ####, then the last number (as reward_model=math_verify)
    system_prompt: str | None = None  # chat templates: the system turn; null = the template's default, "" = empty
    breakdown: tuple[str, ...] = ("subject", "level")  # result tables by these problem fields

    def validate(self) -> None:
        _validate_common(self)


@dataclass(frozen=True)
class JsonlDataConfig:
    """Any local JSONL file, one problem per line, with configurable field names."""

    name: Literal["jsonl"] = "jsonl"
    path: str | None = None  # the test file (required; checked when the task is built)
    train_path: str | None = None  # optional train file with the same fields
    question_key: str = "question"
    answer_key: str = "answer"
    solution_key: str | None = None
    id_key: str | None = None  # null = "<file stem>/<row index>"
    meta_keys: tuple[str, ...] | None = None  # null = every other field
    breakdown: tuple[str, ...] = ()  # result tables by these meta fields
    on_error: OnError = "raise"
    prompt_template: str = "boxed"
    answer_style: AnswerStyle = "auto"
    system_prompt: str | None = None  # chat templates: the system turn; null = the template's default, "" = empty

    def validate(self) -> None:
        _validate_common(self)
        _require(bool(self.question_key) and bool(self.answer_key), "data.question_key/answer_key",
                 "must be non-empty", (self.question_key, self.answer_key))


DATASETS: dict[str, type] = {
    "arith": ArithDataConfig,
    "gsm8k": Gsm8kDataConfig,
    "math500": Math500DataConfig,
    "jsonl": JsonlDataConfig,
}
