"""Config groups compose through real Hydra and validate; bad values fail naming the key, before any model."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from rlx.config import ConfigError, parse_eval_config, parse_run_config
from rlx.helptext import GROUPS, group_options
from rlx.sweep_guard import validate_jobs


def compose_train(*overrides: str) -> dict:
    with initialize_config_module(config_module="rlx.conf", version_base="1.3"):
        cfg = compose("train", overrides=["output_dir=/tmp/rlx-test", *overrides])
    return OmegaConf.to_container(cfg, resolve=True)


REQUIRED_KEYS = {  # options with a required (???) key get a value here
    ("reward_model", "hf_rm"): ("reward_model.model_path=/models/rm",),
    ("data", "jsonl"): ("data.path=/data/any.jsonl",),
}
# options that set another option's data set (longer chains; the chat forms for model=smollm2)
NAMES = {("data", "arith_long"): "arith", ("data", "arith_chat"): "arith", ("data", "arith_chain"): "arith"}


@pytest.mark.parametrize("group", GROUPS)
def test_every_group_option_composes_and_validates(group):
    options = group_options(group)
    assert options, f"conf/{group} has no options"
    for option in options:
        extra = REQUIRED_KEYS.get((group, option), ())
        cfg = parse_run_config(compose_train(f"{group}={option}", *extra))
        assert getattr(cfg, group).name == NAMES.get((group, option), option)


def test_defaults_are_the_default_job():
    cfg = parse_run_config(compose_train())
    assert (cfg.algo.name, cfg.model.name, cfg.data.name, cfg.reward_model.name) == ("trepo", "tiny", "arith", "arith")
    assert cfg.algo.samples_per_prompt == 4  # the group size has one owner, the algorithm
    assert parse_run_config(compose_train("algo=grpo")).algo.samples_per_prompt == 8
    assert (cfg.train.micro_batch_tokens, cfg.train.micro_batch_size, cfg.train.mini_batches) == (2048, 1024, 1)


def test_eval_config_composes():
    with initialize_config_module(config_module="rlx.conf", version_base="1.3"):
        cfg = compose("eval", overrides=["output_dir=/tmp/rlx-test"])
    parsed = parse_eval_config(OmegaConf.to_container(cfg, resolve=True))
    assert parsed.eval.size == 500 and parsed.data.name == "arith"


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("algo.rollouts_per_branch=0", "algo.rollouts_per_branch"),
        ("algo.gamma=1.5", "algo.gamma"),
        ("algo.gamma=0.0", "algo.gamma"),
        ("algo.lam=-0.1", "algo.lam"),
        ("algo.lam=1.01", "algo.lam"),
        ("algo.num_branch_points=0", "algo.num_branch_points"),
        ("algo.clip_eps=0", "algo.clip_eps"),
        ("algo.clip_eps=-0.2", "algo.clip_eps"),
        ("algo.pooling=mean", "algo.pooling"),
        ("train.lr=-1e-5", "train.lr"),
        ("train.steps=0", "train.steps"),
        ("train.max_new_tokens=abc", "train.max_new_tokens"),
        ("algo.clip_eps=nan", "algo.clip_eps"),
        ("algo.tau_max=inf", "algo.tau_max"),
        ("train.lr=-inf", "train.lr"),
        ("algo.kl.beta=nan", "algo.kl.beta"),
        ("train.micro_batch_tokens=0", "train.micro_batch_tokens"),
        ("train.micro_batch_size=0", "train.micro_batch_size"),
        ("train.mini_batches=0", "train.mini_batches"),
        ("train.mini_batches=33", "train.mini_batches"),  # more mini-batches than groups (32 prompts)
    ],
)
def test_bad_values_name_their_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        parse_run_config(compose_train(override))


def test_non_finite_numbers_are_rejected_naming_the_key():
    with pytest.raises(ConfigError, match=r"algo\.clip_eps: must be a finite number, got nan"):
        parse_run_config(compose_train("algo.clip_eps=nan"))


@pytest.mark.parametrize(("algo", "extra"), [("grpo", ()), ("rloo", ()), ("trepo", ("algo.adv_norm=group",)),
                                             ("reinforce", ("algo.baseline=group_mean",))])
def test_group_baseline_with_one_sample_per_prompt_is_rejected_naming_both_keys(algo, extra):
    with pytest.raises(ConfigError, match=rf"algo\.samples_per_prompt=1 with algo\.name={algo}"):
        parse_run_config(compose_train(f"algo={algo}", "algo.samples_per_prompt=1", *extra))


MOVED = ("train.samples_per_prompt: moved to algo.samples_per_prompt (the group size's one owner is the algorithm); "
         "set algo.samples_per_prompt=2 instead")


@pytest.mark.parametrize("prefix", ["", "+", "++"])
def test_train_samples_per_prompt_names_its_new_home_in_the_first_error(prefix):
    """Without `+` Hydra rejects the key (the sweep guard words that error); with `+` the parser does: both say
    where the key lives now, with the value to set there."""
    with pytest.raises(ConfigError) as err:
        validate_jobs("train", [f"{prefix}train.samples_per_prompt=2"], parse_run_config)
    assert str(err.value) == f"{MOVED} (in the job {prefix}train.samples_per_prompt=2)"
    if prefix:
        with pytest.raises(ConfigError) as err:
            parse_run_config(compose_train(f"{prefix}train.samples_per_prompt=2"))
        assert str(err.value) == MOVED


@pytest.mark.parametrize(("old", "new"), [("critic_lr", "critic.lr"), ("vf_coef", "critic.vf_coef"),
                                          ("vf_clip", "critic.vf_clip")])
def test_ppo_critic_keys_name_their_section(old, new):
    for override in (f"algo.{old}=0.5", f"+algo.{old}=0.5"):
        with pytest.raises(ConfigError, match=rf"^algo\.{old}: moved to algo\.{new} .*; set algo\.{new}=0\.5 instead"):
            validate_jobs("train", ["algo=ppo", override], parse_run_config)


def test_key_unknown_to_the_algorithm_is_rejected_with_its_name():
    with pytest.raises(ConfigError, match=r"algo\.lam.*'grpo'"):
        parse_run_config(compose_train("algo=grpo", "+algo.lam=0.95"))


def test_qwen_without_network_or_path_says_how_to_point_at_a_local_copy(monkeypatch):
    from rlx.recipes import resolve_model_path

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = parse_run_config(compose_train("model=qwen", "model.cache_dir=/tmp/rlx-empty-hub-cache"))
    with pytest.raises(ConfigError, match=r"model\.path=DIR") as err:
        resolve_model_path(cfg.model)
    assert "Qwen/Qwen2.5-0.5B-Instruct" in str(err.value)


def test_model_path_that_is_not_a_model_directory(tmp_path):
    from rlx.recipes import resolve_model_path

    cfg = parse_run_config(compose_train(f"model.path={tmp_path}"))
    with pytest.raises(ConfigError, match=r"model\.path"):
        resolve_model_path(cfg.model)


def test_required_reward_key_must_be_set():
    with pytest.raises(ConfigError, match=r"reward_model\.model_path: required"):
        parse_run_config(compose_train("reward_model=hf_rm"))


def test_unknown_reward_key_fails_at_config_time():
    with pytest.raises(ConfigError, match=r"reward_model\.bogus"):
        parse_run_config(compose_train("+reward_model.bogus=1"))


def test_declared_inputs_are_checked_before_any_model_loads():
    from rlx.algos import get
    from rlx.rewards.registry import build_reward
    from rlx.train.setup import check_inputs

    cfg = parse_run_config(compose_train("algo=grpo", "algo.supervision=process"))
    assert get("grpo").requires(cfg.algo) == {"step_rewards"}
    with pytest.raises(ConfigError, match=r"algo\.name=grpo needs per-step rewards.*reward_model\.name=arith"):
        check_inputs(get("grpo"), cfg, build_reward("arith", {}))
    check_inputs(get("grpo"), cfg, build_reward("arith_steps", {}))  # a process reward provides them
    trepo = parse_run_config(compose_train())
    assert get("trepo").requires(trepo.algo) == {"branch_rollouts"} and get("ppo").requires(None) == {"critic_values"}
