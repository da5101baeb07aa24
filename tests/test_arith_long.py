"""The long-horizon built-in task (`data=arith_long`), its warm-started model (`model=tiny_long`) and the preset
`+experiment=arith_long`; the default tiny model keeps its digest (existing caches and runs stay valid)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from rlx.config import parse_run_config
from rlx.data import arith
from rlx.models.config import ModelConfig
from rlx.recipes.tiny import TINY_LONG, TINY_MODELS, TinyModelSpec, build_tiny_model, greedy_accuracy, tiny_model_path

DEFAULT_TINY_DIGEST = "eec1130745"  # the digest before the task became part of the spec: must never change


def compose_train(*overrides: str) -> dict:
    with initialize_config_module(config_module="rlx.conf", version_base="1.3"):
        cfg = compose("train", overrides=["output_dir=/tmp/rlx-test", *overrides])
    return OmegaConf.to_container(cfg, resolve=True)


def test_long_problems_chain_six_to_ten_steps_one_line_each():
    problems = arith.test_problems(arith.LONG_SPEC)
    first = problems[0]  # by hand: 24+1=25, +1=26, -2=24, +4=28, +1=29, -6=23, +8=31, +2=33, +2=35
    assert (first.question, first.answer) == ("24+1+1-2+4+1-6+8+2+2=?", "35")
    assert first.solution.splitlines() == ["=25+1-2+4+1-6+8+2+2", "=26-2+4+1-6+8+2+2", "=24+4+1-6+8+2+2",
                                           "=28+1-6+8+2+2", "=29-6+8+2+2", "=23+8+2+2", "=31+2+2", "=33+2", "=35",
                                           "#### 35"]
    steps = Counter(len(p.solution.splitlines()) - 1 for p in problems)
    assert sorted(steps) == [6, 7, 8, 9, 10] and steps.total() == 500
    assert all(eval(p.question.removesuffix("=?")) == int(p.answer) for p in problems)  # noqa: S307 - digits, +, -
    response_tokens = [len(p.solution) + 1 for p in problems]  # one token per character, plus EOS
    assert (min(response_tokens), max(response_tokens)) == (56, 143)
    assert 95 <= sum(response_tokens) / len(response_tokens) <= 105


def test_long_train_stream_avoids_the_long_test_split():
    test_questions = {p.question for p in arith.test_problems(arith.LONG_SPEC)}
    train = arith.train_problems(2000, seed=0, spec=arith.LONG_SPEC)
    assert not test_questions & {p.question for p in train}
    assert {len(p.solution.splitlines()) - 1 for p in train} == {6, 7, 8, 9, 10}


def test_default_tiny_model_keeps_its_digest_and_the_long_model_has_its_own():
    assert TinyModelSpec().digest() == DEFAULT_TINY_DIGEST
    assert TINY_MODELS["tiny"] == TinyModelSpec() and TinyModelSpec().task == arith.ArithSpec()
    assert TINY_LONG.task == arith.LONG_SPEC and TINY_MODELS["tiny_long"] is TINY_LONG
    assert TINY_LONG.digest() != DEFAULT_TINY_DIGEST
    only_task_changed = dataclasses.replace(TinyModelSpec(), task=arith.LONG_SPEC)
    assert only_task_changed.digest() not in (DEFAULT_TINY_DIGEST, TINY_LONG.digest())
    assert tiny_model_path(TINY_LONG, Path("/c")) == Path(f"/c/tiny-qwen2-{TINY_LONG.digest()}")


def test_long_model_continues_from_the_default_model_and_its_digest_names_it():
    assert TINY_LONG.init_from == TinyModelSpec() and TinyModelSpec().init_from is None
    assert TINY_LONG.architecture()["init_from"] == DEFAULT_TINY_DIGEST
    assert "init_from" not in TinyModelSpec().architecture()  # the default digest's recipe text is unchanged
    other_source = dataclasses.replace(TINY_LONG, init_from=dataclasses.replace(TinyModelSpec(), seed=1))
    from_scratch = dataclasses.replace(TINY_LONG, init_from=None)
    assert len({TINY_LONG.digest(), other_source.digest(), from_scratch.digest()}) == 3


def test_warm_start_loads_the_source_weights_and_builds_the_source_if_missing(tmp_path):
    from transformers import AutoModelForCausalLM

    source = TinyModelSpec(hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2, num_kv_heads=1,
                           max_position=32, sft_max_steps=2, sft_eval_from=99, sft_batch_size=4, dev_size=2,
                           max_new_tokens=8)
    # lr 0: SFT leaves the weights as loaded, so they must equal the source's bit for bit
    follower = dataclasses.replace(source, max_position=64, init_from=source, sft_lr=0.0, seed=5)
    info = build_tiny_model(follower, tmp_path / "follower", cache_dir=tmp_path)
    assert (tiny_model_path(source, tmp_path) / "build_info.json").is_file()  # built on demand into the cache
    assert info["spec"]["init_from"] == source.digest() and info["spec"]["max_position"] == 64
    loaded = AutoModelForCausalLM.from_pretrained(str(tmp_path / "follower"))
    original = AutoModelForCausalLM.from_pretrained(str(tiny_model_path(source, tmp_path)))
    assert loaded.config.max_position_embeddings == 64 and original.config.max_position_embeddings == 32
    state, source_state = loaded.state_dict(), original.state_dict()
    assert state.keys() == source_state.keys() and all(torch.equal(state[k], source_state[k]) for k in state)


def test_data_option_is_the_long_spec_of_the_arith_task():
    cfg = parse_run_config(compose_train("data=arith_long"))
    assert cfg.data.name == "arith" and cfg.data.spec() == arith.LONG_SPEC


def test_preset_composes_the_long_task_with_its_model():
    cfg = parse_run_config(compose_train("+experiment=arith_long"))
    assert (cfg.model.name, cfg.model.path, cfg.data.spec()) == ("tiny_long", None, arith.LONG_SPEC)
    assert (cfg.train.max_new_tokens, cfg.train.eval_size) == (176, 500)
    assert (cfg.algo.name, cfg.reward_model.name, cfg.sampler.name) == ("trepo", "arith", "vllm")
    longest_prompt = max(len(arith.format_prompt(p)) for p in arith.test_problems(arith.LONG_SPEC))
    assert longest_prompt + cfg.train.max_new_tokens <= TINY_LONG.max_position
    longest_response = max(len(p.solution) + 1 for p in arith.test_problems(arith.LONG_SPEC))
    assert longest_response <= TINY_LONG.max_new_tokens <= cfg.train.max_new_tokens
    overridden = parse_run_config(compose_train("+experiment=arith_long", "algo=grpo", "sampler=hf"))
    assert (overridden.algo.name, overridden.sampler.name, overridden.model.name) == ("grpo", "hf", "tiny_long")


@pytest.fixture(scope="module")
def tiny_long_dir() -> Path:
    """The real long model, built on first use into the rlx cache (as `model=tiny_long` resolves it)."""
    from rlx.recipes import resolve_model_path

    return Path(resolve_model_path(ModelConfig(name="tiny_long")))


@pytest.mark.slow
def test_long_model_starts_in_the_band_rl_needs(tiny_long_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert tiny_long_dir == tiny_model_path(TINY_LONG)
    info = json.loads((tiny_long_dir / "build_info.json").read_text())
    assert info["task"] == dataclasses.asdict(arith.LONG_SPEC) and info["spec"]["init_from"] == DEFAULT_TINY_DIGEST
    assert 0.15 <= info["test_accuracy"] <= 0.40, info
    model = AutoModelForCausalLM.from_pretrained(str(tiny_long_dir))
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_long_dir))
    accuracy = greedy_accuracy(model, tokenizer, arith.test_problems(arith.LONG_SPEC)[:200], TINY_LONG.max_new_tokens)
    assert 0.15 <= accuracy <= 0.40


@pytest.mark.slow
@pytest.mark.parametrize("sampler", ["hf", "vllm"])
def test_preset_trains_end_to_end(sampler, tiny_long_dir, tmp_path):
    run_dir = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "rlx.cli", "train", "+experiment=arith_long", f"sampler={sampler}", "train.steps=2",
         "train.prompts_per_step=2", "algo.rollouts_per_branch=2", "train.eval_size=8", "train.eval_every=1",
         "train.progress_bar=false", f"model.cache_dir={tiny_long_dir.parent}", f"hydra.run.dir={run_dir}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "tokens_policy" in r]
    assert [r["step"] for r in steps] == [1, 2]
    # 2 prompts x 4 samples of ~100-token responses: far beyond what the short task's 56-token cap allows
    assert all(r["tokens_policy"] > 8 * 56 for r in steps)
    assert len([r for r in rows if "test_accuracy" in r]) == 3
