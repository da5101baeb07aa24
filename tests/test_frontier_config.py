"""The frontier options compose through the real Hydra config and bad values are rejected naming the key."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from rlx.config import ConfigError, parse_run_config
from rlx.helptext import group_options


def run_cfg(*overrides: str):
    with initialize_config_module(config_module="rlx.conf", version_base="1.3"):
        cfg = compose("train", overrides=["output_dir=/tmp/rlx-test", *overrides])
    return parse_run_config(OmegaConf.to_container(cfg, resolve=True))


def test_defaults_leave_every_option_off():
    for algo in ("trepo", "vineppo", "grpo", "rloo", "ppo", "reinforce", "remax", "cispo"):
        cfg = run_cfg(f"algo={algo}")
        assert cfg.algo.rollout_correction.mode == "none" and cfg.algo.rollout_correction.cap == 2.0
    cfg = run_cfg()
    assert (cfg.train.token_budget, cfg.train.time_budget_s, cfg.train.eval_every_tokens) == (0, 0.0, 0)
    assert (cfg.train.dynamic_sampling, cfg.train.overlong_filter) == (False, False)
    assert cfg.reward_model.overlong_penalty.cache == 0 and "overlong_penalty" not in cfg.reward_model.options
    assert cfg.algo.clip_range() == (0.2, 0.2)


def test_options_compose():
    cfg = run_cfg("algo=grpo", "algo.clip_eps_high=0.28", "algo.rollout_correction.mode=tis",
                  "algo.rollout_correction.cap=3", "train.dynamic_sampling=true", "train.max_refill_rounds=2",
                  "train.overlong_filter=true", "reward_model.overlong_penalty.cache=8", "train.token_budget=1000",
                  "train.time_budget_s=60", "train.eval_every_tokens=500")
    assert cfg.algo.clip_range() == (0.2, 0.28)
    assert (cfg.algo.rollout_correction.mode, cfg.algo.rollout_correction.cap) == ("tis", 3.0)
    assert cfg.reward_model.overlong_penalty.cache == 8 and cfg.reward_model.overlong_penalty.max_len is None
    assert (cfg.train.token_budget, cfg.train.time_budget_s, cfg.train.eval_every_tokens) == (1000, 60.0, 500)
    assert run_cfg("algo=cispo").algo.clip_range() == (0.2, 0.28)
    assert run_cfg("algo=vineppo", "algo.branch_selection=entropy").algo.branch_selection == "entropy"
    assert run_cfg("algo=trepo", "algo.branch_selection=low_prob").algo.branch_selection == "low_prob"


def test_every_reward_model_takes_the_one_shared_overlong_penalty():
    """conf/train.yaml holds `reward_model.overlong_penalty` once; it composes onto every reward_model option."""
    for option in group_options("reward_model"):
        extra = ("reward_model.model_path=/models/rm",) if option == "hf_rm" else ()
        off = run_cfg(f"reward_model={option}", *extra).reward_model
        assert (off.name, off.overlong_penalty.max_len, off.overlong_penalty.cache) == (option, None, 0)
        assert "overlong_penalty" not in off.options
        on = run_cfg(f"reward_model={option}", "reward_model.overlong_penalty.max_len=40",
                     "reward_model.overlong_penalty.cache=8", *extra).reward_model
        assert (on.overlong_penalty.max_len, on.overlong_penalty.cache) == (40, 8) and on.options == off.options


@pytest.mark.parametrize(("overrides", "key"), [
    (("algo.rollout_correction.mode=bogus",), "algo.rollout_correction.mode"),
    (("algo.rollout_correction.cap=0.5",), "algo.rollout_correction.cap"),
    (("algo=grpo", "algo.clip_eps_low=1.0"), "algo.clip_eps_low"),
    (("algo=ppo", "algo.clip_eps_high=0"), "algo.clip_eps_high"),
    (("algo.branch_selection=attention",), "algo.branch_selection"),
    (("train.token_budget=-1",), "train.token_budget"),
    (("train.time_budget_s=-5",), "train.time_budget_s"),
    (("train.eval_every_tokens=-1",), "train.eval_every_tokens"),
    (("train.max_refill_rounds=-1",), "train.max_refill_rounds"),
    (("algo=reinforce", "algo.samples_per_prompt=1", "train.dynamic_sampling=true"), "train.dynamic_sampling"),
    (("reward_model.overlong_penalty.cache=-1",), "reward_model.overlong_penalty.cache"),
    (("reward_model.overlong_penalty.cache=100",), "reward_model.overlong_penalty.cache"),  # > max_new_tokens
    (("reward_model.overlong_penalty.max_len=0",), "reward_model.overlong_penalty.max_len"),
    (("algo=rloo", "+algo.clip_eps_high=0.3"), "algo.clip_eps_high"),
    (("algo.adaptive_rollouts=true", "algo.adaptive_first_round=5"), "algo.adaptive_first_round"),  # > M = 4
    (("algo=vineppo", "algo.adaptive_first_round=0"), "algo.adaptive_first_round"),  # RLOO has no clipped ratio
])
def test_bad_values_name_the_key(overrides, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        run_cfg(*overrides)
