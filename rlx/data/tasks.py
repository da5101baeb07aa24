"""A task bundles a data set's splits with its prompt format and its correctness check.

`build_task(data_cfg, train_size, seed, tokenizer=None)` serves every `data` option. Correctness of the math
data sets goes through the shared grader pool (math-verify in sandboxed, time-limited workers): grade many
completions with one `Task.grade`/`Task.verdicts` call; `Task.is_correct` stays for single checks.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rlx.data import arith
from rlx.data.base import Problem
from rlx.data.configs import ConfigError
from rlx.data.jsonl import ProblemList
from rlx.data.prompts import TEMPLATES, PromptInfo, PromptTemplate, prompt_function, resolve_template
from rlx.grading import grader as grading
from rlx.grading.arith import arith_correct, extract_final_integer
from rlx.grading.grader import EVAL_TIMEOUT_S, GradeResult

log = logging.getLogger(__name__)

# (problems, completions) -> one GradeResult (correct, extracted answer, grader status) per completion.
Judge = Callable[[Sequence[Problem], Sequence[str]], list[GradeResult]]


@dataclass(frozen=True)
class Task:
    name: str
    train: list[Problem]
    test: list[Problem]
    prompt: Callable[[Problem], str]  # problem -> prompt text fed to the model
    is_correct: Callable[[Problem, str], bool]  # (problem, completion text) -> exact-answer verdict
    judge: Judge | None = None  # batched grading; None = `is_correct` per completion
    template: PromptTemplate | None = None  # what `prompt` renders (re-bound by `with_tokenizer`)
    prompt_info: PromptInfo | None = None
    answer_style: str | tuple[str, ...] = "auto"  # the grader's extraction style (recorded in results)
    breakdown_keys: tuple[str, ...] = ()  # problem fields that result tables are broken down by
    skipped_rows: Mapping[str, int] = field(default_factory=dict)  # split -> malformed rows skipped on load

    @property
    def skipped_total(self) -> int:
        """Malformed rows skipped on load (data.on_error=skip), all splits together: reported in summary.json."""
        return sum(self.skipped_rows.values())

    def verdicts(self, problems: Sequence[Problem], completions: Sequence[str]) -> list[GradeResult]:
        """Grade a whole batch at once (one round through the grader pool)."""
        if self.judge is not None:
            return self.judge(problems, completions)
        return [GradeResult(self.is_correct(p, c), None, "ok") for p, c in zip(problems, completions, strict=True)]

    def grade(self, problems: Sequence[Problem], completions: Sequence[str]) -> list[bool]:
        return [result.correct for result in self.verdicts(problems, completions)]

    def with_tokenizer(self, tokenizer) -> Task:
        """The same task with prompts rendered for `tokenizer` (chat templates need one)."""
        if self.template is None:
            return self
        prompt, info = prompt_function(self.template, tokenizer)
        return dataclasses.replace(self, prompt=prompt, prompt_info=info)


def build_task(data_cfg, train_size: int, seed: int, tokenizer=None) -> Task:
    """The task of a `data` config. `train_size` = 0 skips the train split (evaluation). Without a
    tokenizer, chat templates render as plain text (logged); bind one later with `Task.with_tokenizer`."""
    task = load_task(data_cfg, train_size, seed)
    if tokenizer is None and task.template is not None and task.template.chat:
        log.warning("build_task: no tokenizer, so the chat template %r renders as plain text", task.template.name)
    return task.with_tokenizer(tokenizer)


def load_task(data_cfg, train_size: int, seed: int) -> Task:
    """Load the splits (data errors surface here, before any model is loaded); prompts are plain text."""
    if data_cfg.name == "arith":
        return _arith_task(data_cfg, train_size, seed)
    loaders = {"gsm8k": _gsm8k_splits, "math500": _math500_splits, "jsonl": _jsonl_splits}
    if data_cfg.name not in loaders:
        raise ValueError(f"data.name: unknown data set {data_cfg.name!r}")
    train, test = loaders[data_cfg.name](data_cfg, train_size)
    return _graded_task(data_cfg, train, test, train_size)


# ----------------------------------------------------------------------------------------------- arith


def _arith_task(data_cfg, train_size: int, seed: int) -> Task:
    def judge(problems: Sequence[Problem], completions: Sequence[str]) -> list[GradeResult]:
        results = []
        for problem, completion in zip(problems, completions, strict=True):
            value = extract_final_integer(completion)
            extracted = None if value is None else str(value)
            results.append(GradeResult(value == int(problem.answer), extracted, "ok" if extracted else "no_answer"))
        return results

    spec = data_cfg.spec()
    template = dataclasses.replace(TEMPLATES[data_cfg.prompt_template], system=data_cfg.system_prompt,
                                   examples=arith.few_shot_examples(data_cfg.few_shot, spec))  # arith: as format_prompt
    prompt, info = prompt_function(template)
    return Task("arith", arith.train_problems(train_size, seed, spec), arith.test_problems(spec), prompt,
                arith_correct, judge=judge, template=template, prompt_info=info, answer_style="gsm8k")


# --------------------------------------------------------------------------------------- math data sets

Splits = tuple[list[Problem], list[Problem]]  # (train, test)


def _empty_split_error(data_cfg, split: str, rows: list[Problem]) -> ConfigError:
    """Say why a split is empty: every row was malformed and skipped, the file has no rows, or (train) the data
    set has no train split here."""
    source = getattr(rows, "source", "") or data_cfg.path or "hub"
    key = "data.train_path" if split == "train" and getattr(data_cfg, "train_path", None) else "data.path"
    skipped = getattr(rows, "skipped_rows", [])
    if skipped:
        return ConfigError(f"{key}: all {len(skipped)} rows of {source} were malformed and skipped "
                           f"(data.on_error=skip), so the {split} split is empty; first: {skipped[0]}")
    if isinstance(rows, ProblemList):
        return ConfigError(f"{key}: {source} has no rows, so the {split} split is empty")
    if split == "train":
        return ConfigError(f"data={data_cfg.name} has no train split here (test only or no train file): rlx train "
                           f"needs training problems, e.g. data=gsm8k or data=jsonl data.train_path=FILE")
    return ConfigError(f"data={data_cfg.name}: the test split is empty ({source})")


def _graded_task(data_cfg, train: list[Problem], test: list[Problem], train_size: int) -> Task:
    if train_size > 0 and not train:
        raise _empty_split_error(data_cfg, "train", train)
    if not test:
        raise _empty_split_error(data_cfg, "test", test)
    template = dataclasses.replace(resolve_template(data_cfg.prompt_template), system=data_cfg.system_prompt)
    prompt, info = prompt_function(template)
    judge = _grader_judge(data_cfg.answer_style)

    def is_correct(problem: Problem, completion: str) -> bool:
        return judge([problem], [completion])[0].correct

    loaded = (("train", train), ("test", test)) if train_size > 0 else (("test", test),)
    skipped = {split: getattr(rows, "skipped", 0) for split, rows in loaded}
    for split, count in skipped.items():
        if count:
            log.warning("data=%s: skipped %d malformed %s rows (data.on_error=skip)", data_cfg.name, count, split)
    return Task(data_cfg.name, train[:train_size] if train_size > 0 else [], test, prompt, is_correct,
                judge=judge, template=template, prompt_info=info, answer_style=data_cfg.answer_style,
                breakdown_keys=tuple(getattr(data_cfg, "breakdown", ())), skipped_rows=skipped)


def _grader_judge(style: str | tuple[str, ...]) -> Judge:
    def judge(problems: Sequence[Problem], completions: Sequence[str]) -> list[GradeResult]:
        # The process-wide pool, shared with the math rewards; evaluation's (longer) per-answer limit.
        return grading.shared_grader().grade([p.answer for p in problems], list(completions), style, EVAL_TIMEOUT_S)

    return judge


def _local_path(data_cfg) -> Path:
    """`data.path`, or `data.path/<name>` when the path is a data root holding one folder per data set."""
    path = Path(data_cfg.path).expanduser()
    if not path.exists():
        raise ConfigError(f"data.path: no such file or directory: {path}")
    nested = path / data_cfg.name
    if path.is_dir() and nested.is_dir() and not (path / "test.jsonl").exists():
        return nested
    return path


def _load(data_cfg, what: str, load: Callable[[], list[Problem]]) -> list[Problem]:
    """Run a loader; turn its failures into ConfigErrors that name `data.path` and say what to do."""
    try:
        return load()
    except ValueError as err:  # a malformed row: the message names the file and the line
        raise ConfigError(f"data.path: {err}") from None
    except OSError as err:
        raise ConfigError(f"data.path: cannot read {what}: {err}") from None
    except ImportError as err:  # the hub path needs `datasets`
        raise ConfigError(f"data={data_cfg.name}: {err}") from None


def _hub_load(data_cfg, hub_name: str, load: Callable[[], list[Problem]]) -> list[Problem]:
    try:
        return _load(data_cfg, hub_name, load)
    except ConfigError:
        raise
    except Exception as err:  # offline, DNS, auth: all mean "use a local copy"
        raise ConfigError(f"data.path is null, so data={data_cfg.name} loads {hub_name} from the Hugging Face hub, "
                          f"which failed ({type(err).__name__}: {err}); pass data.path=<local copy>") from None


def _gsm8k_splits(data_cfg, train_size: int) -> Splits:
    from rlx.data import gsm8k

    if data_cfg.path is None:
        def load(split: str) -> list[Problem]:
            return _hub_load(data_cfg, gsm8k.HUB_NAME, lambda: gsm8k.load_gsm8k(split, None, data_cfg.on_error))

        return (load("train") if train_size > 0 else []), load("test")
    path = _local_path(data_cfg)
    if path.is_file():  # one file is the test split; a train run then fails on the empty train split
        return [], _load(data_cfg, str(path), lambda: gsm8k.load_gsm8k("test", path, data_cfg.on_error))
    train = (_load(data_cfg, str(path), lambda: gsm8k.load_gsm8k("train", path, data_cfg.on_error))
             if train_size > 0 and (path / "train.jsonl").exists() else [])
    return train, _load(data_cfg, str(path), lambda: gsm8k.load_gsm8k("test", path, data_cfg.on_error))


def _math500_splits(data_cfg, train_size: int) -> Splits:
    from rlx.data import math500

    if data_cfg.path is None:
        return [], _hub_load(data_cfg, math500.HUB_NAME, lambda: math500.load_math500("test", None, data_cfg.on_error))
    path = _local_path(data_cfg)
    return [], _load(data_cfg, str(path), lambda: math500.load_math500("test", path, data_cfg.on_error))


def _jsonl_splits(data_cfg, train_size: int) -> Splits:
    from rlx.data.jsonl import load_jsonl

    if data_cfg.path is None:
        raise ConfigError("data.path: data=jsonl needs a local JSONL file, e.g. data.path=/data/test.jsonl")

    def load(key: str, file: str) -> list[Problem]:
        path = Path(file).expanduser()
        if not path.is_file():
            raise ConfigError(f"data.{key}: no such file: {path}")
        fields = {"question_key": data_cfg.question_key, "answer_key": data_cfg.answer_key,
                  "solution_key": data_cfg.solution_key, "id_key": data_cfg.id_key,
                  "meta_keys": data_cfg.meta_keys, "on_error": data_cfg.on_error}
        return _load(data_cfg, str(path), lambda: load_jsonl(path, **fields))

    train = load("train_path", data_cfg.train_path) if train_size > 0 and data_cfg.train_path else []
    return train, load("path", data_cfg.path)
