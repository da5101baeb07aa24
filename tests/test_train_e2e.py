"""End to end through the real CLI: Hydra composition, the real tiny model, the HF sampler."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rlx.helptext import group_options

STEP_KEYS = {
    "reward_mean", "train_accuracy", "policy_loss", "clip_frac", "entropy", "adv_mean", "adv_std", "approx_kl",
    "tokens_policy", "tokens_branch", "time_generate", "time_branch", "time_score", "time_train", "wall_seconds",
}


def rlx(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "rlx.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=900)


def short_run(algo: str, run_dir: Path, model_dir: Path, *extra: str,
              sampler: str = "hf") -> subprocess.CompletedProcess:
    return rlx("train", f"algo={algo}", f"sampler={sampler}", f"model.path={model_dir}", "train.steps=2",
               "train.prompts_per_step=4",
               "train.eval_size=16", "train.eval_every=1", "train.progress_bar=false", f"hydra.run.dir={run_dir}",
               *extra, cwd=run_dir.parent)


@pytest.mark.slow
@pytest.mark.parametrize("algo", group_options("algo"))
def test_short_run_of_every_algorithm(algo, tiny_model_dir, tmp_path):
    run_dir = tmp_path / "run"
    extra = ("algo.rollouts_per_branch=2",) if algo == "vineppo" else ()
    result = short_run(algo, run_dir, tiny_model_dir, *extra)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if r.keys() >= STEP_KEYS]
    assert [r["step"] for r in steps] == [1, 2]
    assert all(0.0 <= r["train_accuracy"] <= 1.0 and r["tokens_policy"] > 0 for r in steps)
    evals = [r for r in rows if "test_accuracy" in r]
    assert len(evals) == 3  # before training, after step 1, final
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["accuracy_before"] == evals[0]["test_accuracy"]
    assert summary["accuracy_after"] == evals[-1]["test_accuracy"]
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["algo"]["name"] == algo
    assert (run_dir / "checkpoint" / "config.json").exists()
    assert (run_dir / "checkpoint" / "model.safetensors").exists()


@pytest.mark.slow
@pytest.mark.parametrize("variant", [("algo.supervision=process",),
                                     ("algo.supervision=sentence", "algo.ratio_level=sentence")])
def test_grpo_process_and_sentence_supervision_with_the_step_reward(variant, tiny_model_dir, tmp_path):
    run_dir = tmp_path / "run"
    result = short_run("grpo", run_dir, tiny_model_dir, "reward_model=arith_steps", *variant)
    assert result.returncode == 0, result.stderr[-3000:]
    steps = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()][1:3]
    assert all(row.keys() >= STEP_KEYS and row["adv_std"] > 0 for row in steps)


@pytest.mark.slow
def test_trepo_branches_and_eval_runs_on_the_checkpoint(tiny_model_dir, tmp_path):
    run_dir = tmp_path / "trepo"
    # through the default sampler, vLLM: in-place weight sync and its canary after every step
    result = short_run("trepo", run_dir, tiny_model_dir, "algo.num_branch_points=3", "algo.rollouts_per_branch=2",
                       "algo.branch_selection=uniform_grid", "algo.samples_per_prompt=1", sampler="vllm")
    assert result.returncode == 0, result.stderr[-3000:]
    steps = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()][1:3]
    for row in steps:
        assert row["num_knots"] == 4 * 3  # 4 responses x |D| = 3 (responses are longer than 3 tokens)
        assert row["num_branch_rollouts"] == 4 * 3 * 2
        assert row["tokens_branch"] > 0
    eval_dir = tmp_path / "eval"
    result = rlx("eval", "sampler=hf", f"model.path={run_dir / 'checkpoint'}", "eval.size=16",
                 f"hydra.run.dir={eval_dir}",
                 cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    evaluation = json.loads((eval_dir / "eval.json").read_text())
    assert evaluation["num_problems"] == 16 and 0.0 <= evaluation["accuracy"] <= 1.0
    assert len((eval_dir / "samples.jsonl").read_text().splitlines()) == 16


def test_cli_help_lists_commands_and_groups(tmp_path):
    result = rlx("--help", cwd=tmp_path)
    assert result.returncode == 0
    for word in ("train", "eval", "algo", "trepo", "grpo", "reward_model", "sampler", "logger"):
        assert word in result.stdout


def test_cfg_job_prints_the_composed_config(tmp_path):
    result = rlx("train", "--cfg", "job", "algo=grpo", "algo.clip_eps=0.3", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    assert config["algo"]["name"] == "grpo" and config["algo"]["clip_eps"] == 0.3


def test_unknown_group_option_lists_the_valid_ones(tmp_path):
    result = rlx("train", "algo=nope", cwd=tmp_path)
    assert result.returncode != 0
    assert "Available options in 'algo'" in result.stderr and "trepo" in result.stderr


def test_bad_value_fails_before_any_model_is_loaded(tmp_path):
    model = tmp_path / "model"  # passes the cheap checks (rlx/preflight.py), is never loaded
    model.mkdir()
    (model / "config.json").write_text("{}")
    result = rlx("train", "algo.gamma=1.5", f"model.path={model}", cwd=tmp_path)
    assert result.returncode != 0
    assert "algo.gamma" in result.stderr
    assert not list(tmp_path.rglob("metrics.jsonl"))


@pytest.mark.slow
@pytest.mark.parametrize("extra", [("train.micro_batch_tokens=160",),
                                   ("train.mini_batches=2", "algo.optimization_num=2")],
                         ids=["micro_batches", "mini_batches"])
def test_micro_and_mini_batched_runs(extra, tiny_model_dir, tmp_path):
    """A token budget that forces several micro-batches per forward (16 responses of ~40-75 tokens each),
    and 2 mini-batches x 2 epochs = 4 optimizer steps per training step, both through the real CLI."""
    run_dir = tmp_path / "run"
    result = short_run("grpo", run_dir, tiny_model_dir, "algo.samples_per_prompt=4", "algo.kl.beta=0.05",
                       "algo.entropy_coef=0.01", *extra)
    assert result.returncode == 0, result.stderr[-3000:]
    steps = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()][1:3]
    assert all(row.keys() >= STEP_KEYS and row["tokens_policy"] > 0 for row in steps)
    for row in steps:
        assert all(isinstance(row[k], float) and row[k] == row[k] for k in ("loss", "grad_norm", "kl_ref"))
    if "train.mini_batches=2" in extra:  # the ratio moves away from 1 after the first optimizer step
        assert any(row["approx_kl"] > 0 for row in steps)
