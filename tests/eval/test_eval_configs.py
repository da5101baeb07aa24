"""The math data/reward options compose through real Hydra and validate; tasks, prompts and grading are
wired as documented (no model is loaded here)."""

from __future__ import annotations

import json
import logging

import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from rlx.config import ConfigError, parse_eval_config, parse_run_config
from rlx.data.prompts import BOXED_INSTRUCTION, GSM8K_INSTRUCTION, TEMPLATES, prompt_function
from rlx.data.tasks import build_task, load_task
from rlx.eval.app import with_multirun_for_sweeps
from rlx.rewards.registry import build_reward, check_reward_options

NEW_DATA = ("gsm8k", "math500", "jsonl")
NEW_REWARDS = ("math_verify", "gsm8k", "format", "hf_rm", "composite")


def compose_raw(config: str, *overrides: str) -> dict:
    with initialize_config_module(config_module="rlx.conf", version_base="1.3"):
        cfg = compose(config, overrides=["output_dir=/tmp/rlx-test", *overrides])
    return OmegaConf.to_container(cfg, resolve=True)


def eval_cfg(*overrides: str):
    return parse_eval_config(compose_raw("eval", *overrides))


# ------------------------------------------------------------------------------------------- composition


@pytest.mark.parametrize("data", NEW_DATA)
def test_data_option_composes_and_validates_for_train_and_eval(data):
    assert eval_cfg(f"data={data}").data.name == data
    assert parse_run_config(compose_raw("train", f"data={data}")).data.name == data


def test_issue_train_command_composes_and_validates():
    cfg = parse_run_config(compose_raw("train", "data=gsm8k", "reward_model=math_verify", "model=qwen"))
    assert (cfg.data.name, cfg.reward_model.name, cfg.model.hub_id) == ("gsm8k", "math_verify",
                                                                        "Qwen/Qwen2.5-0.5B-Instruct")
    assert cfg.data.prompt_template == "gsm8k_chat" and cfg.data.answer_style == ("gsm8k", "last_number")


@pytest.mark.parametrize("reward", NEW_REWARDS)
def test_reward_option_composes_and_its_keys_are_the_factorys(reward):
    overrides = ["reward_model.model_path=/rm"] if reward == "hf_rm" else []
    cfg = parse_run_config(compose_raw("train", f"reward_model={reward}", *overrides))
    assert cfg.reward_model.name == reward
    check_reward_options(reward, cfg.reward_model.options)  # every YAML key is a keyword of the factory
    if reward != "hf_rm":  # building the others is cheap (grader processes start lazily)
        assert callable(build_reward(reward, cfg.reward_model.options))


def test_hf_rm_model_path_is_required():
    with initialize_config_module(config_module="rlx.conf", version_base="1.3"):
        cfg = compose("train", overrides=["reward_model=hf_rm"])
    assert OmegaConf.is_missing(cfg.reward_model, "model_path")


def test_unknown_reward_key_is_rejected_with_its_name():
    with pytest.raises(ValueError, match=r"reward_model\.timeout"):  # at config time, before any model
        parse_run_config(compose_raw("train", "reward_model=math_verify", "+reward_model.timeout=3"))


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["data=gsm8k", "+data.split=train"], "data.split"),
        (["data=math500", "data.prompt_template=fancy"], "data.prompt_template"),
        (["data=math500", "data.answer_style=lastnum"], "data.answer_style"),
        (["data=jsonl", "data.on_error=ignore"], "data.on_error"),
        (["eval.n=4"], "eval.n"),  # greedy (temperature 0) samples are identical
        (["eval.n=0", "eval.temperature=0.6"], "eval.n"),
        (["eval.temperature=-0.1"], "eval.temperature"),
        (["eval.size=0"], "eval.size"),
    ],
)
def test_bad_values_name_their_key(overrides, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        eval_cfg(*overrides)


def test_sampling_settings_parse():
    cfg = eval_cfg("data=gsm8k", "eval.n=8", "eval.temperature=0.6", "eval.max_new_tokens=512", "eval.size=null")
    assert (cfg.eval.n, cfg.eval.temperature, cfg.eval.max_new_tokens, cfg.eval.size) == (8, 0.6, 512, None)


# ------------------------------------------------------------------------------------------------- tasks


def test_gsm8k_and_math500_load_from_a_data_root(fixture_data):
    gsm8k = load_task(eval_cfg("data=gsm8k", f"data.path={fixture_data}").data, train_size=0, seed=0)
    assert len(gsm8k.test) == 30 and gsm8k.train == [] and gsm8k.test[0].answer.isdigit()
    math500 = load_task(eval_cfg("data=math500", f"data.path={fixture_data}").data, train_size=0, seed=0)
    assert len(math500.test) == 40 and math500.breakdown_keys == ("subject", "level")
    train = load_task(eval_cfg("data=gsm8k", f"data.path={fixture_data / 'gsm8k'}").data, train_size=10, seed=0)
    assert len(train.train) == 10


def test_train_on_a_test_only_data_set_fails_naming_data(fixture_data):
    cfg = parse_run_config(compose_raw("train", "data=math500", f"data.path={fixture_data}"))
    with pytest.raises(ConfigError, match=r"data=math500 has no train split"):
        build_task(cfg.data, cfg.train.train_size, cfg.seed)


def test_jsonl_needs_a_path():
    with pytest.raises(ConfigError, match=r"data\.path"):
        load_task(eval_cfg("data=jsonl").data, train_size=0, seed=0)


def test_jsonl_field_names_breakdown_and_skipped_rows(tmp_path):
    rows = [{"q": "1+1?", "a": "2", "topic": "add"}, "not json", {"q": "2*3?", "a": "6", "topic": "mul"}]
    path = tmp_path / "mine.jsonl"
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    cfg = eval_cfg("data=jsonl", f"data.path={path}", "data.question_key=q", "data.answer_key=a",
                   "data.breakdown=[topic]", "data.on_error=skip")
    task = load_task(cfg.data, train_size=0, seed=0)
    assert [p.question for p in task.test] == ["1+1?", "2*3?"] and task.test[1].meta == {"topic": "mul"}
    assert task.skipped_rows == {"test": 1} and task.breakdown_keys == ("topic",)
    assert task.grade(task.test, ["\\boxed{2}", "so 7"]) == [True, False]


def test_grading_is_batched_through_one_shared_pool(fixture_data, monkeypatch):
    from rlx.grading import grader as grader_module

    calls = []
    real = grader_module.Grader(num_workers=1)  # numbers are decided in-process: no worker starts here

    class CountingGrader:
        def grade(self, references, completions, style, timeout_s=None):
            calls.append((len(completions), timeout_s))
            return real.grade(references, completions, style, timeout_s)

    monkeypatch.setattr(grader_module, "shared_grader", lambda *a, **k: CountingGrader())
    task = load_task(eval_cfg("data=gsm8k", f"data.path={fixture_data}").data, train_size=0, seed=0)
    problems = task.test[:3]
    completions = [f"so\n#### {p.answer}" for p in problems[:2]] + ["no idea"]
    verdicts = task.verdicts(problems, completions)
    assert calls == [(3, 2.0)]  # one grader call for the whole batch, with evaluation's per-answer limit
    assert [v.correct for v in verdicts] == [True, True, False]
    assert verdicts[0].extracted == problems[0].answer and verdicts[2].status == "no_answer"
    assert task.grade(problems, completions) == [True, True, False]
    real.close()


def test_arith_keeps_its_prompt_and_exact_check():
    from rlx.data.arith import format_prompt

    task = build_task(eval_cfg().data, train_size=4, seed=0)
    problem = task.test[0]
    assert task.prompt(problem) == format_prompt(problem) and len(task.train) == 4
    assert task.is_correct(problem, f"#### {problem.answer}") and not task.is_correct(problem, "#### -1")
    [verdict] = task.verdicts([problem], [f"x\n#### {problem.answer}"])
    assert verdict.correct and verdict.extracted == problem.answer


# ----------------------------------------------------------------------------------------------- prompts


class ChatTokenizer:
    chat_template = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}<|assistant|>"

    def apply_chat_template(self, messages, tokenize, add_generation_prompt):
        assert not tokenize and add_generation_prompt
        return "".join(f"<|{m['role']}|>{m['content']}" for m in messages) + "<|assistant|>"


class PlainTokenizer:
    chat_template = None


def test_builtin_templates_carry_the_reference_instructions():
    assert GSM8K_INSTRUCTION == 'Let\'s think step by step and output the final answer after "####".'
    assert BOXED_INSTRUCTION in TEMPLATES["boxed_chat"].text and TEMPLATES["gsm8k_chat"].chat


def test_chat_template_goes_through_the_tokenizer_and_falls_back_with_a_log(caplog):
    from rlx.data.base import Problem

    problem = Problem("p/0", "What is 2+2?", "4")
    chat, chat_info = prompt_function(TEMPLATES["gsm8k_chat"], ChatTokenizer())
    assert chat(problem) == f"<|user|>What is 2+2? {GSM8K_INSTRUCTION}<|assistant|>" and chat_info.chat_applied
    with caplog.at_level(logging.WARNING, logger="rlx.data.prompts"):
        plain, plain_info = prompt_function(TEMPLATES["gsm8k_chat"], PlainTokenizer())
    assert "has none: using its plain text" in caplog.text
    assert plain(problem) == f"What is 2+2? {GSM8K_INSTRUCTION}\n" and not plain_info.chat_applied
    assert len({chat_info.sha256, plain_info.sha256, prompt_function(TEMPLATES["gsm8k"])[1].sha256}) == 2
    assert plain_info.sha256 == prompt_function(TEMPLATES["gsm8k"])[1].sha256  # same text, same hash


def test_custom_template_text():
    cfg = eval_cfg("data=math500", "data.prompt_template='Problem: {question} Answer:'")
    assert cfg.data.prompt_template == "Problem: {question} Answer:"


# ------------------------------------------------------------------------------------ multi-data-set eval


def test_a_data_sweep_runs_as_a_multirun():
    argv = with_multirun_for_sweeps(["rlx eval", "data=gsm8k,math500", "data.path=/d", "eval.n=4"])
    assert argv == ["rlx eval", "--multirun", "data=gsm8k,math500", "++data.path=/d", "eval.n=4"]
    assert with_multirun_for_sweeps(["rlx eval", "data=gsm8k", "data.path=/d"]) == [
        "rlx eval", "data=gsm8k", "data.path=/d"]
    assert with_multirun_for_sweeps(["rlx eval", "-m", "data=gsm8k,math500"]) == ["rlx eval", "-m",
                                                                                   "data=gsm8k,math500"]
