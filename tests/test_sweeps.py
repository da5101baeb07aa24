"""Multirun: the launcher configs compose and instantiate, saved sweeps expand to their grids, and (slow) a
real tiny sweep runs end to end through the joblib launcher, W&B offline and `rlx report`."""

from __future__ import annotations

import csv
import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import instantiate
from omegaconf import OmegaConf

from rlx.config import parse_run_config

FAKE_KEY = "0123456789abcdef0123456789abcdef0fakekey"


def compose_with_hydra(*overrides: str, hydra_config: bool = True):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # joblib.yaml shadows the plugin's schema of that name
        with initialize_config_module(config_module="rlx.conf", version_base="1.3"):
            return compose("train", overrides=["output_dir=/tmp/rlx-test", *overrides],
                           return_hydra_config=hydra_config)


def grid_size(params: dict[str, str]) -> int:
    """How many jobs Hydra's basic sweeper makes of `hydra.sweeper.params` (the product of each sweep)."""
    parsed = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in params.items()])
    return math.prod(len(list(o.sweep_iterator())) if o.is_sweep_override() else 1 for o in parsed)


def test_joblib_launcher_composes_and_instantiates():
    cfg = compose_with_hydra("hydra/launcher=joblib")
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("JoblibLauncher")
    assert launcher.n_jobs == 2  # our default, not the plugin's -1 (one torch job per core)
    assert type(instantiate(launcher)).__name__ == "JoblibLauncher"  # every key is one the plugin accepts


def test_slurm_launcher_composes_with_gpu_defaults():
    cfg = compose_with_hydra("hydra/launcher=slurm", "hydra.launcher.partition=gpu")
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert launcher["_target_"].endswith("SlurmLauncher")
    assert (launcher["gpus_per_node"], launcher["tasks_per_node"], launcher["nodes"]) == (1, 1, 1)
    assert launcher["partition"] == "gpu" and launcher["timeout_min"] == 720
    assert "export OMP_NUM_THREADS=8" in launcher["setup"]
    assert type(instantiate(cfg.hydra.launcher)).__name__ == "SlurmLauncher"


def test_slurm_launcher_via_the_cli():
    result = subprocess.run([sys.executable, "-m", "rlx.cli", "train", "--cfg", "hydra", "hydra/launcher=slurm"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "SlurmLauncher" in result.stdout and "gpus_per_node: 1" in result.stdout


def test_gamma_lambda_sweep_is_the_spec_grid():
    cfg = compose_with_hydra("+sweep=gamma_lambda")
    params = dict(cfg.hydra.sweeper.params)
    assert params == {"algo": "trepo,ppo", "algo.gamma": "1.0,0.99,0.95", "algo.lam": "0.0,0.5,0.9,0.95,1.0",
                      "seed": "0,1,2"}
    assert grid_size(params) == 90
    assert "gamma_lambda" in cfg.hydra.sweep.dir  # its own sweep dir, hence its own W&B group
    for algo in ("trepo", "ppo"):  # the grid's corner values validate for both algorithms
        for lam in ("0.0", "1.0"):
            job = compose_with_hydra("+sweep=gamma_lambda", f"algo={algo}", "algo.gamma=0.95", f"algo.lam={lam}",
                                     hydra_config=False)
            parsed = parse_run_config(OmegaConf.to_container(job, resolve=True))
            assert parsed.algo.name == algo and parsed.algo.lam == float(lam)


def test_compare_long_sweep_runs_the_long_task_at_one_budget():
    cfg = compose_with_hydra("+sweep=compare_long")
    params = dict(cfg.hydra.sweeper.params)
    assert params == {"algo": "ppo,trepo,tree,grpo,rloo", "seed": "0,1,2"} and grid_size(params) == 15
    for algo in ("tree", "ppo"):
        job = compose_with_hydra("+sweep=compare_long", f"algo={algo}", hydra_config=False)
        parsed = parse_run_config(OmegaConf.to_container(job, resolve=True))
        assert parsed.model.name == "tiny_long" and (parsed.data.min_ops, parsed.data.max_ops) == (6, 10)
        assert (parsed.train.token_budget, parsed.train.max_new_tokens, parsed.algo.name) == (400_000, 176, algo)


def test_smoke_sweep_is_tiny():
    cfg = compose_with_hydra("+sweep=smoke")
    assert grid_size(dict(cfg.hydra.sweeper.params)) == 4
    assert cfg.train.steps == 2 and cfg.train.eval_size == 16


@pytest.mark.slow
def test_tiny_sweep_end_to_end_with_joblib_wandb_and_report(tiny_model_dir, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline",
           "WANDB_API_KEY": FAKE_KEY}
    sweep_dir = tmp_path / "multirun" / "grp" / "xyz"  # W&B group "grp-xyz": a string no path contains
    result = subprocess.run(
        [sys.executable, "-m", "rlx.cli", "train", "-m", "+sweep=smoke", "hydra/launcher=joblib", "sampler=hf",
         f"model.path={tiny_model_dir}", "logger=wandb", "logger.mode=offline", f"hydra.sweep.dir={sweep_dir}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    # rglob: model.path's slashes nest the job dirs (its override is part of hydra.sweep.subdir)
    run_dirs = sorted(p.parent for p in sweep_dir.rglob("metrics.jsonl"))
    assert len(run_dirs) == 4
    for run_dir in run_dirs:  # every job reached W&B in the sweep's group, and no file holds the key
        offline = list(run_dir.glob("wandb/offline-run-*/run-*.wandb"))
        assert len(offline) == 1 and b"grp-xyz" in offline[0].read_bytes()
        assert not [p for p in run_dir.rglob("*") if p.is_file() and FAKE_KEY.encode() in p.read_bytes()]
    report = subprocess.run([sys.executable, "-m", "rlx.cli", "report", str(sweep_dir)], capture_output=True,
                            text=True, timeout=300)
    assert report.returncode == 0, report.stderr
    with (sweep_dir / "report.csv").open() as f:
        rows = {r["configuration"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"algo=trepo", "algo=grpo"}
    assert all(int(r["n_seeds"]) == 2 and float(r["tokens_policy_mean"]) > 0 for r in rows.values())
    assert float(rows["algo=trepo"]["tokens_branch_mean"]) > 0 == float(rows["algo=grpo"]["tokens_branch_mean"])
    assert Path(sweep_dir / "accuracy_vs_tokens.png").stat().st_size > 1000
