"""A real pretrained model through the real CLI: SmolLM2-135M-Instruct (model=smollm2, Llama family) on the chat
arithmetic task. Few, short jobs (2 prompts, 12 new tokens): bf16 + LoRA through vLLM with the canary at every sync,
PPO's critic through SIGTERM and an exact resume, and a rollout tree (step boundaries under a BPE tokenizer)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors import safe_open

from rlx.train.infra import preemption
from tests.helpers import metrics, resume_matches, run_to_end, signal_when

pytestmark = pytest.mark.slow
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def smollm2_cmd(run_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "rlx.cli", "train", "model=smollm2", "data=arith_chat", "train.prompts_per_step=2",
            "algo.samples_per_prompt=2", "train.max_new_tokens=12", "train.eval_size=4", "train.eval_every=0",
            "train.progress_bar=false", f"hydra.run.dir={run_dir}", *extra]


def step_rows(run_dir: Path) -> list[dict]:
    return [row for row in metrics(run_dir) if "policy_loss" in row]


def test_bf16_lora_grpo_through_vllm_passes_the_calibrated_canary_at_every_sync(smollm2_dir, tmp_path):
    run = tmp_path / "bf16"
    result = subprocess.run(smollm2_cmd(run, "algo=grpo", "sampler=vllm", "model.dtype=bfloat16", "model.lora.r=8",
                                        "sampler.canary_every=1", "sampler.kv_cache_gib=0.5", "train.steps=2"),
                            env=ENV, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [row["step"] for row in step_rows(run)] == [1, 2]
    log = (run / "app.log").read_text()
    assert "weight-sync canary: start-up gap" in log and "WeightSyncError" not in log
    config = json.loads((run / "checkpoint" / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["tie_word_embeddings"] is True
    with safe_open(run / "checkpoint" / "model.safetensors", "pt") as saved:  # LoRA merged, tied head stored once
        names = set(saved.keys())
    assert "model.embed_tokens.weight" in names and "lm_head.weight" not in names
    assert not any("lora" in name for name in names)


def test_ppo_critic_on_the_real_model_resumes_exactly_after_sigterm(smollm2_dir, tmp_path):
    cmd = ("algo=ppo", "sampler=hf", "train.steps=2")
    reference = tmp_path / "reference"
    run_to_end(smollm2_cmd(reference, *cmd), ENV)
    run = tmp_path / "preempted"
    proc = signal_when(smollm2_cmd(run, *cmd), ENV, lambda: len(step_rows_if_any(run)) >= 1, signal.SIGTERM,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, stderr = proc.communicate(timeout=600)
    assert proc.returncode == preemption.EXIT_CODE, stderr[-3000:]
    resume_matches(smollm2_cmd(run, *cmd, "resume=auto"), ENV, run, reference)
    assert all(row["vf_loss"] > 0 for row in step_rows(reference))  # the critic head trained at every step


def step_rows_if_any(run_dir: Path) -> list[dict]:
    return step_rows(run_dir) if (run_dir / "metrics.jsonl").exists() else []


def test_a_rollout_tree_forks_at_line_starts_of_the_bpe_tokenizer(smollm2_dir, tmp_path):
    run = tmp_path / "tree"
    result = subprocess.run(smollm2_cmd(run, "algo=tree", "sampler=hf", "train.steps=1", "data=arith_chain",
                                        "train.max_new_tokens=24", "logger.log_samples_every=1"),
                            env=ENV, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    (row,) = step_rows(run)
    assert row["tokens_branch"] > 0
    samples = [json.loads(line) for line in (run / "samples" / "step_000001.jsonl").read_text().splitlines()]
    knots = [(sample["tokens"], knot) for sample in samples for knot in sample["knots"]]
    # knot j (1-based) forks after the first j - 1 tokens: the response start (j = 1, always a knot), or a token
    # that ends a line, although the BPE tokenizer has merged tokens such as ".\n" or "\n\n"
    assert any(knot > 1 for _, knot in knots)
    assert all(knot == 1 or "\n" in tokens[knot - 2] for tokens, knot in knots), knots
