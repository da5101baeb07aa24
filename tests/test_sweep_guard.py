"""A gamma/lambda sweep is accepted for PPO and TRePO and rejected, before any job runs, for
algorithms whose advantages have no gamma/lambda (GRPO, RLOO, ReMax)."""

from __future__ import annotations

import pytest

from rlx.config import ConfigError, parse_run_config
from rlx.sweep_guard import job_overrides, validate_jobs


def test_sweep_expands_to_every_combination():
    jobs = job_overrides(["-m", "algo=trepo,ppo", "algo.gamma=0.95,1.0", "algo.lam=0,0.95", "seed=0"])
    assert len(jobs) == 8
    assert ["algo=ppo", "algo.gamma=1.0", "algo.lam=0.95", "seed=0"] in jobs


def test_gamma_lambda_sweep_is_accepted_for_trepo_and_ppo():
    assert validate_jobs("train", ["-m", "algo=trepo,ppo", "algo.gamma=0.95,1.0", "algo.lam=0,0.95"],
                         parse_run_config) == 8


@pytest.mark.parametrize("algo", ["grpo", "rloo", "remax"])
def test_lambda_sweep_is_rejected_naming_key_and_algorithm(algo):
    with pytest.raises(ConfigError, match=rf"algo\.lam.*'{algo}'"):
        validate_jobs("train", ["-m", f"algo=trepo,{algo}", "algo.lam=0,0.95"], parse_run_config)


def test_out_of_range_value_in_any_job_is_caught():
    with pytest.raises(ConfigError, match=r"algo\.gamma.*algo\.gamma=1\.5"):
        validate_jobs("train", ["-m", "algo.gamma=0.9,1.5"], parse_run_config)
