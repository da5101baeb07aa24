"""Bad input fails naming its key before any model loads (issue 12 item 2): typos get the closest valid key,
a missing resume path, an unknown composite component, LoRA target modules that match nothing, an
unwritable run directory (one line, no traceback)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from rlx.config import ConfigError, LoRAConfig, parse_run_config
from rlx.sweep_guard import validate_jobs


def compose_train(*overrides: str) -> dict:
    with initialize_config_module(config_module="rlx.conf", version_base="1.3"):
        cfg = compose("train", overrides=["output_dir=/tmp/rlx-test", *overrides])
    return OmegaConf.to_container(cfg, resolve=True)


def test_unknown_key_suggests_the_closest_valid_one():
    with pytest.raises(ConfigError, match=r"algo\.gamam: unknown key.*did you mean 'algo\.gamma'\?"):
        parse_run_config(compose_train("+algo.gamam=0.9"))
    # without `+`, Hydra itself rejects the key: the sweep guard words it the same way
    with pytest.raises(ConfigError, match=r"algo\.gamam:.*did you mean 'algo\.gamma'\?"):
        validate_jobs("train", ["algo.gamam=0.9"], parse_run_config)
    with pytest.raises(ConfigError, match=r"train\.stpes: unknown key; did you mean 'train\.steps'\?"):
        validate_jobs("train", ["train.stpes=3"], parse_run_config)
    with pytest.raises(ConfigError, match=r"algo\.kl\.bta: unknown key; did you mean 'algo\.kl\.beta'\?"):
        validate_jobs("train", ["algo.kl.bta=0.1"], parse_run_config)


def test_no_suggestion_when_nothing_is_close():
    with pytest.raises(ConfigError) as err:
        validate_jobs("train", ["train.zzzzzz=3"], parse_run_config)
    assert str(err.value).startswith("train.zzzzzz: unknown key") and "did you mean" not in str(err.value)


def test_resume_path_that_does_not_exist(tmp_path):
    missing = tmp_path / "runs" / "checkpoints" / "step_7"
    with pytest.raises(ConfigError, match=rf"resume: no checkpoint directory at '{missing}'"):
        parse_run_config(compose_train(f"resume={missing}"))
    assert parse_run_config(compose_train("resume=auto")).resume == "auto"
    assert parse_run_config(compose_train(f"resume={tmp_path}")).resume == str(tmp_path)


def test_unknown_composite_component_names_its_index_and_the_valid_rewards():
    components = "reward_model.components=[{name: math_verify},{name: bogus, weight: 0.5}]"
    with pytest.raises(ConfigError) as err:
        parse_run_config(compose_train("reward_model=composite", components))
    message = str(err.value)
    assert message.startswith("reward_model.components[1].name: unknown reward 'bogus'")
    assert "'format'" in message and "'math_verify'" in message and "'composite'" not in message


def test_unknown_key_of_a_composite_component():
    with pytest.raises(ConfigError, match=r"reward_model\.components\[0\]\.bonsu: unknown key for reward 'format'"):
        parse_run_config(compose_train("reward_model=composite", "reward_model.components=[{name: format, bonsu: 1}]"))


def test_lora_target_modules_that_match_nothing_list_the_linear_modules(tiny_model_dir):
    from rlx.models.load import load_causal_lm
    from rlx.models.lora import maybe_wrap_lora

    model = load_causal_lm(str(tiny_model_dir), "float32")
    with pytest.raises(ConfigError) as err:
        maybe_wrap_lora(model, LoRAConfig(r=4, target_modules=("q_proj", "qkv_proj")))
    message = str(err.value)
    assert message.startswith("model.lora.target_modules: ['qkv_proj'] match no module of the model")
    for name in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head"):
        assert f"'{name}'" in message
    assert maybe_wrap_lora(model, LoRAConfig(r=4, target_modules=("q_proj", "v_proj"))) is not None


@pytest.mark.parametrize("key", ["hydra.run.dir", "output_dir"])
def test_unwritable_run_directory_fails_in_one_line(tmp_path, key):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    run = subprocess.run([sys.executable, "-m", "rlx.cli", "train", "sampler=hf", f"{key}={blocker}/run"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 1
    assert run.stderr.strip() == f"rlx train: {key}: cannot create the run directory {blocker}/run: {blocker} is a file"
    assert "Traceback" not in run.stdout + run.stderr


@pytest.mark.parametrize("override", ["train.samples_per_prompt=4", "+train.samples_per_prompt=4"])
def test_the_cli_names_a_moved_keys_new_home_in_one_line(override):
    run = subprocess.run([sys.executable, "-m", "rlx.cli", "train", "sampler=hf", override],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 1 and "Traceback" not in run.stdout + run.stderr
    assert run.stderr.strip() == ("rlx train: bad config: train.samples_per_prompt: moved to algo.samples_per_prompt "
                                  "(the group size's one owner is the algorithm); set algo.samples_per_prompt=4 "
                                  f"instead (in the job sampler=hf {override})")


def test_unknown_group_option_suggests_the_closest_one():
    with pytest.raises(ConfigError) as err:
        validate_jobs("train", ["data=gsm8kk"], parse_run_config)
    assert str(err.value) == ("data=gsm8kk: no such option. Available options in 'data': arith, arith_chain, "
                              "arith_chat, arith_long, gsm8k, jsonl, math500; did you mean 'data=gsm8k'? "
                              "(in the job data=gsm8kk)")
