"""The weight-sync canary on a real model in bf16 (SmolLM2-135M, 30 layers): calibrated at start-up, a correct sync
never stops the run, while a skipped parameter or a stale tied output head still does."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from rlx.sampling.canary import CALIBRATION_FACTOR, WeightSyncError
from rlx.sampling.config import VLLMSamplerConfig


@pytest.fixture(scope="module")
def bf16_engine(smollm2_dir):
    from rlx.models.load import load_tokenizer
    from rlx.sampling.factory import build_sampler

    policy = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32)
    cfg = VLLMSamplerConfig(dtype="bfloat16", canary_every=1, kv_cache_gib=0.5)
    sampler = build_sampler(cfg, policy, load_tokenizer(str(smollm2_dir)), str(smollm2_dir), "bfloat16")
    yield sampler, policy
    sampler.close()


def test_start_up_calibration_sets_the_tolerance_from_the_bf16_gap(bf16_engine):
    sampler, _ = bf16_engine
    canary = sampler.canary
    assert 0.1 < canary.start_gap < 1.0  # bf16 rounding over 30 layers, before any training
    assert canary.tolerance == pytest.approx(max(0.5, CALIBRATION_FACTOR * canary.start_gap))


def test_correct_bf16_syncs_pass_and_broken_ones_stop_the_run(bf16_engine, smollm2_dir):
    sampler, policy = bf16_engine
    original = {name: p.detach().clone() for name, p in policy.named_parameters()}
    try:
        with torch.no_grad():
            policy.model.embed_tokens.weight.mul_(1.5)  # the tied head moves with it: logits grow, so does rounding
        sampler.sync_weights(policy, step=1)  # a correct sync: no error
        assert sampler.canary.start_gap < sampler.last_canary_gap <= sampler.canary.tolerance
        stale_head = [*policy.named_parameters(), ("lm_head.weight", original["model.embed_tokens.weight"])]
        with pytest.raises(WeightSyncError, match="step 2"):
            sampler.sync_weights(policy, step=2, weights=stale_head)
        with torch.no_grad():
            policy.model.layers[3].self_attn.q_proj.weight.mul_(-1.0)  # trained, but left out of the next sync
        skipped = [(n, p) for n, p in policy.named_parameters() if n != "model.layers.3.self_attn.q_proj.weight"]
        with pytest.raises(WeightSyncError, match="step 3"):
            sampler.sync_weights(policy, step=3, weights=skipped)
    finally:
        with torch.no_grad():
            for name, p in policy.named_parameters():
                p.copy_(original[name])
        sampler.sync_weights(policy)
