"""LoRA policies (`model.lora.r > 0`): adapters train, samplers and checkpoints see merged weights."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from rlx.config import ConfigError, LoRAConfig, ModelConfig, to_dataclass
from rlx.models.load import load_causal_lm, load_tokenizer
from rlx.models.lora import (
    ADAPTER_DIR,
    is_lora,
    maybe_wrap_lora,
    merged_named_parameters,
    save_policy,
    trainable_parameters,
)
from rlx.sampling.vllm import trainer_weights
from rlx.train.infra.checkpoint import load_checkpoint, save_checkpoint

R, ALPHA = 4, 8.0


def lora_policy(model_dir: Path, seed: int = 0, nonzero_b: bool = True) -> torch.nn.Module:
    """The tiny model with LoRA adapters; B (zero at init, which would make merging trivial) randomised."""
    torch.manual_seed(seed)
    policy = maybe_wrap_lora(load_causal_lm(str(model_dir), "float32"), LoRAConfig(r=R, alpha=ALPHA))
    if nonzero_b:
        with torch.no_grad():
            for name, p in policy.named_parameters():
                if "lora_B" in name:
                    p.normal_(std=0.05)
    return policy


def short_run(run_dir: Path, model_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    """A 2-step GRPO run through the real CLI (as tests/test_train_e2e.py does)."""
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "HF_HUB_OFFLINE": "1"}
    args = ["train", "algo=grpo", "sampler=hf", f"model.path={model_dir}", "train.steps=2", "train.prompts_per_step=4",
            "train.eval_size=8", "train.eval_every=1", "train.progress_bar=false", f"hydra.run.dir={run_dir}"]
    return subprocess.run([sys.executable, "-m", "rlx.cli", *args, *extra], cwd=run_dir.parent, env=env,
                          capture_output=True, text=True, timeout=900)


def probe_ids() -> torch.Tensor:
    return torch.randint(0, 40, (2, 12), generator=torch.Generator().manual_seed(0))  # [B, L]


def test_lora_config_defaults_off_and_validates():
    cfg = to_dataclass(ModelConfig, {"name": "tiny", "lora": {"r": 16, "target_modules": ["q_proj"]}}, "model")
    assert cfg.lora.r == 16 and cfg.lora.target_modules == ("q_proj",)
    assert ModelConfig().lora.r == 0 and "down_proj" in ModelConfig().lora.target_modules
    with pytest.raises(ConfigError, match="model.lora.r"):
        to_dataclass(ModelConfig, {"lora": {"r": -1}}, "model")
    with pytest.raises(ConfigError, match="model.lora.rank"):
        to_dataclass(ModelConfig, {"lora": {"rank": 8}}, "model")


def test_r_zero_leaves_the_model_alone(tiny_model_dir):
    model = load_causal_lm(str(tiny_model_dir), "float32")
    assert maybe_wrap_lora(model, LoRAConfig(r=0)) is model and not is_lora(model)


def test_only_adapters_are_trainable(tiny_model_dir):
    policy = lora_policy(tiny_model_dir)
    names = {n for n, p in policy.named_parameters() if p.requires_grad}
    assert names and all(".lora_A." in n or ".lora_B." in n for n in names)
    assert len(trainable_parameters(policy)) == len(names)


def test_merged_weights_are_w_plus_scaled_ba_under_base_names(tiny_model_dir):
    policy = lora_policy(tiny_model_dir)
    base = load_causal_lm(str(tiny_model_dir), "float32")
    merged = dict(merged_named_parameters(policy))
    assert set(merged) == {n for n, _ in base.named_parameters()}
    layer = policy.get_base_model().model.layers[0].self_attn.q_proj
    a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight  # [r, in], [out, r]
    expected = base.model.layers[0].self_attn.q_proj.weight + (ALPHA / R) * b @ a  # [out, in]
    torch.testing.assert_close(merged["model.layers.0.self_attn.q_proj.weight"], expected)
    torch.testing.assert_close(merged["model.embed_tokens.weight"], base.model.embed_tokens.weight)
    # the trainer's own W is untouched (merging happens on the side)
    torch.testing.assert_close(layer.base_layer.weight, base.model.layers[0].self_attn.q_proj.weight)
    # vLLM receives the merged tensors plus the tied output head
    sent = dict(trainer_weights(policy, merged_named_parameters(policy)))  # as the trainer hands them over
    assert set(sent) == set(merged) | {"lm_head.weight"}
    torch.testing.assert_close(sent["model.layers.0.self_attn.q_proj.weight"], expected)


def test_saved_lora_checkpoint_loads_both_ways_with_identical_logits(tiny_model_dir, tmp_path):
    from peft import PeftModel

    policy = lora_policy(tiny_model_dir).eval()
    save_policy(policy, tmp_path)
    full = AutoModelForCausalLM.from_pretrained(str(tmp_path)).eval()
    adapted = PeftModel.from_pretrained(load_causal_lm(str(tiny_model_dir), "float32"), str(tmp_path / ADAPTER_DIR))
    with torch.no_grad():
        ids = probe_ids()
        logits = [m(input_ids=ids).logits for m in (policy, full, adapted.eval())]  # [B, L, V] each
    torch.testing.assert_close(logits[2], logits[0], atol=0, rtol=0)  # same adapter, same computation
    # merged (W + sBA) x vs W x + s B (A x): equal up to fp32 summation order
    torch.testing.assert_close(logits[1], logits[0], atol=1e-4, rtol=1e-5)


def test_resumable_checkpoint_restores_adapters_and_optimizer(tiny_model_dir, tmp_path):
    policy = lora_policy(tiny_model_dir, seed=0)
    optimizer = torch.optim.AdamW(trainable_parameters(policy), lr=1e-2)
    policy(input_ids=probe_ids()).logits.mean().backward()
    optimizer.step()
    path = save_checkpoint(tmp_path, 1, policy, load_tokenizer(str(tiny_model_dir)), [optimizer], None, {}, 2)
    restored = lora_policy(tiny_model_dir, seed=1)  # different adapter init
    restored_opt = torch.optim.AdamW(trainable_parameters(restored), lr=1e-2)
    step, _ = load_checkpoint(path, restored, [restored_opt], None)
    assert step == 1
    for (name, p), (_, q) in zip(policy.named_parameters(), restored.named_parameters(), strict=True):
        torch.testing.assert_close(q, p, msg=name)
    assert len(restored_opt.state_dict()["state"]) == len(trainable_parameters(policy))


@pytest.mark.slow
def test_two_step_lora_run_end_to_end(tiny_model_dir, tmp_path):
    run_dir = tmp_path / "run"
    result = short_run(run_dir, tiny_model_dir, "model.lora.r=4", "model.lora.alpha=8",
                       "train.lr=1e-2", "algo.samples_per_prompt=4")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "reward_mean" in r] == [1, 2]
    ckpt = run_dir / "checkpoint"
    from peft import PeftModel

    full = AutoModelForCausalLM.from_pretrained(str(ckpt)).eval()
    adapted = PeftModel.from_pretrained(load_causal_lm(str(tiny_model_dir), "float32"), str(ckpt / ADAPTER_DIR))
    base = load_causal_lm(str(tiny_model_dir), "float32").eval()
    with torch.no_grad():
        ids = probe_ids()
        full_logits, adapted_logits = full(input_ids=ids).logits, adapted.eval()(input_ids=ids).logits
        base_logits = base(input_ids=ids).logits
    torch.testing.assert_close(adapted_logits, full_logits, atol=1e-4, rtol=1e-5)  # fp32 summation order
    assert not torch.allclose(full_logits, base_logits, atol=1e-4)  # the adapters did train
    eval_dir = tmp_path / "eval"  # the merged checkpoint is a plain HF model: `rlx eval` needs no PEFT
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-m", "rlx.cli", "eval", "sampler=hf", f"model.path={ckpt}", "eval.size=8",
                             f"hydra.run.dir={eval_dir}"], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((eval_dir / "eval.json").read_text())["num_problems"] == 8


@pytest.mark.slow
def test_vllm_receives_merged_lora_weights_and_the_canary_passes(tiny_model_dir):
    assert importlib.util.find_spec("vllm") is not None, "vLLM is not installed: run `make install`"
    from rlx.sampling.canary import WeightSyncCanary, WeightSyncError, default_probe
    from rlx.sampling.config import VLLMSamplerConfig
    from rlx.sampling.vllm import VLLMSampler

    tokenizer = load_tokenizer(str(tiny_model_dir))
    sampler = VLLMSampler(str(tiny_model_dir), tokenizer.eos_token_id, VLLMSamplerConfig(dtype="float32"), seed=0)
    try:
        policy = lora_policy(tiny_model_dir)  # merged weights differ from the engine's base weights
        canary = WeightSyncCanary(default_probe(len(tokenizer)), tolerance=1e-3)
        with pytest.raises(WeightSyncError):
            canary.check(sampler, policy, step=0)  # the engine still has the base model
        sampler.sync_weights(policy, weights=merged_named_parameters(policy))  # canary vs the PEFT log-probs
        assert sampler.last_canary_gap is not None and sampler.last_canary_gap < 1e-3
    finally:
        sampler.close()
