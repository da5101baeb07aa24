"""Mixed precision (bf16 autocast over fp32 weights), gradient checkpointing, and their config keys."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from rlx.config import ConfigError, HFSamplerConfig, ModelConfig, TrainerConfig, VLLMSamplerConfig, to_dataclass
from rlx.models.load import load_causal_lm
from rlx.models.logprobs import pack, response_logprobs
from rlx.models.precision import autocast_context, enable_gradient_checkpointing

from .test_logprobs import PROMPTS, RESPONSES, f64_model, grads_of


def test_autocast_context_is_a_no_op_for_float32_and_autocasts_otherwise():
    with autocast_context("float32", "cpu"):
        assert not torch.is_autocast_enabled("cpu")
    with autocast_context("bfloat16", torch.device("cpu")):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
        assert (torch.ones(2, 3) @ torch.ones(3, 2)).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="model.dtype"):
        autocast_context("int8", "cpu")


def test_bf16_autocast_logprobs_are_close_to_fp32_and_train_fp32_weights(tiny_model_dir):
    model = load_causal_lm(str(tiny_model_dir), "float32").train()
    batch = pack(PROMPTS, RESPONSES, pad_id=0)
    with torch.no_grad():
        exact, exact_entropy = response_logprobs(model, batch, with_entropy=True)  # [4, 6]
    with autocast_context("bfloat16", "cpu"):
        logp, entropy = response_logprobs(model, batch, with_entropy=True)  # [4, 6]
    assert logp.dtype == entropy.dtype == torch.float32  # the loss side stays fp32
    gap = (logp - exact).abs().max().item()
    assert 0 < gap < 0.1, gap  # bf16 matmuls ran (gap > 0) and stayed within the canary's bf16 tolerance
    assert (entropy - exact_entropy).abs().max().item() < 0.1
    (logp.sum() + entropy.sum()).backward()  # outside autocast, as the loop does
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("lora", [False, True])
def test_gradient_checkpointing_gives_the_same_gradients(tiny_model_dir, lora):
    model = f64_model(tiny_model_dir, lora)
    batch = pack(PROMPTS, RESPONSES, pad_id=0)
    plain = grads_of(model, *response_logprobs(model, batch, with_entropy=True))
    enable_gradient_checkpointing(model)
    inner = model.get_base_model() if lora else model
    assert inner.is_gradient_checkpointing
    checkpointed = grads_of(model, *response_logprobs(model, batch, with_entropy=True))
    assert plain.keys() == checkpointed.keys() and len(plain) > 0
    for name, grad in plain.items():
        assert torch.allclose(checkpointed[name], grad, rtol=0, atol=1e-10), name


def test_new_config_keys_default_to_todays_behaviour_and_validate():
    assert ModelConfig().gradient_checkpointing is False and ModelConfig().logprob_chunk == 1024
    assert TrainerConfig().num_threads == 0 and VLLMSamplerConfig().canary_every is None
    assert to_dataclass(ModelConfig, {"gradient_checkpointing": True}, "model").gradient_checkpointing
    with pytest.raises(ConfigError, match="model.logprob_chunk"):
        to_dataclass(ModelConfig, {"logprob_chunk": 0}, "model")
    with pytest.raises(ConfigError, match="model.gradient_checkpointing"):
        to_dataclass(ModelConfig, {"gradient_checkpointing": "yes"}, "model")
    with pytest.raises(ConfigError, match="train.num_threads"):
        to_dataclass(TrainerConfig, {"num_threads": -1}, "train")
    with pytest.raises(ConfigError, match="sampler.canary_every"):
        to_dataclass(VLLMSamplerConfig, {"name": "vllm", "canary_every": -2}, "sampler")
    assert to_dataclass(HFSamplerConfig, {"name": "hf"}, "sampler").num_threads == 1


def test_two_step_bf16_ppo_run_with_checkpointing_end_to_end(tiny_model_dir, tmp_path):
    """PPO exercises every forward under autocast: policy, reference (KL in the reward), critic."""
    run_dir = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    args = ["train", "algo=ppo", "algo.kl.beta=0.05", "sampler=hf", f"model.path={tiny_model_dir}",
            "model.dtype=bfloat16", "model.gradient_checkpointing=true", "model.logprob_chunk=64",
            "train.num_threads=1", "train.steps=2", "train.prompts_per_step=4", "train.eval_size=4",
            "train.eval_every=0", "train.progress_bar=false", f"hydra.run.dir={run_dir}"]
    result = subprocess.run([sys.executable, "-m", "rlx.cli", *args], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "reward_mean" in r]
    assert [r["step"] for r in steps] == [1, 2]
    for row in steps:
        for key in ("loss", "policy_loss", "grad_norm", "entropy"):
            assert math.isfinite(row[key]), (key, row)
    weights = load_file(str(run_dir / "checkpoint" / "model.safetensors"))
    assert {t.dtype for t in weights.values()} == {torch.float32}  # the master weights trained in fp32
