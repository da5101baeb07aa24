"""The weight-sync canary and the sync's weight list, without a vLLM engine (fast)."""

from __future__ import annotations

import copy

import pytest
import torch

from rlx.sampling.canary import WeightSyncCanary, WeightSyncError, default_probe, default_tolerance
from rlx.sampling.hf import HFSampler
from rlx.sampling.vllm import trainer_weights


def as_sampler(model, tokenizer) -> HFSampler:
    return HFSampler(model, tokenizer.eos_token_id, tokenizer.pad_token_id)


def test_canary_passes_on_identical_weights_and_names_the_step_on_a_gap(hf_model, tokenizer):
    canary = WeightSyncCanary(default_probe(len(tokenizer)), tolerance=1e-3)
    stale = copy.deepcopy(hf_model)
    assert canary.check(as_sampler(stale, tokenizer), hf_model, step=1) == 0.0
    with torch.no_grad():
        hf_model.model.norm.weight[3] += 2.0
    with pytest.raises(WeightSyncError, match=r"step 12:.*tolerance 0.001"):
        canary.check(as_sampler(stale, tokenizer), hf_model, step=12)


def test_canary_rejects_nan_gaps(hf_model, tokenizer):
    broken = copy.deepcopy(hf_model)
    with torch.no_grad():
        broken.model.norm.weight.fill_(float("nan"))
    with pytest.raises(WeightSyncError):
        WeightSyncCanary(default_probe(len(tokenizer)), 1e-3).check(as_sampler(broken, tokenizer), hf_model, step=0)


def test_canary_restores_training_mode(hf_model, tokenizer):
    hf_model.train()
    WeightSyncCanary(default_probe(len(tokenizer)), 1e-3).check(as_sampler(hf_model, tokenizer), hf_model, step=0)
    assert hf_model.training


def test_trainer_weights_add_the_tied_output_head(hf_model):
    weights = dict(trainer_weights(hf_model))
    assert hf_model.config.tie_word_embeddings
    assert weights["lm_head.weight"] is not None
    assert weights["lm_head.weight"].data_ptr() == hf_model.model.embed_tokens.weight.data_ptr()
    assert set(weights) == {name for name, _ in hf_model.named_parameters()} | {"lm_head.weight"}


def test_default_tolerance_is_loose_only_for_half_precision():
    assert default_tolerance("float32") <= 1e-3 < default_tolerance("bfloat16")


def test_calibration_scales_the_start_up_gap_keeps_the_floor_and_a_fixed_tolerance(hf_model, tokenizer):
    """The start-up gap here is exact: the 'sampler' is a copy scaled on one norm weight, so its gap is what the
    trainer-side scorer measures against it; calibrated = max(floor, 3 x gap), fixed stays, a huge gap refuses."""
    from rlx.sampling.canary import CALIBRATION_FACTOR

    probe = default_probe(len(tokenizer))
    shifted = copy.deepcopy(hf_model)
    with torch.no_grad():
        shifted.model.norm.weight[3] += 0.05
    gap = WeightSyncCanary(probe, 1.0).gap(as_sampler(shifted, tokenizer), hf_model)
    assert 1e-3 < gap < 0.5
    calibrated = WeightSyncCanary(probe, None, dtype="float32")
    assert calibrated.tolerance == default_tolerance("float32")  # the floor until calibrated
    assert calibrated.calibrate(as_sampler(shifted, tokenizer), hf_model) == pytest.approx(CALIBRATION_FACTOR * gap)
    assert calibrated.start_gap == gap
    trained = copy.deepcopy(hf_model)
    with torch.no_grad():
        trained.model.norm.weight[3] -= 1.0  # a weight that moved but never reached the 'sampler'
    with pytest.raises(WeightSyncError, match=r"calibrated from a start-up gap of"):
        calibrated.check(as_sampler(shifted, tokenizer), trained, step=4)
    same = WeightSyncCanary(probe, None, dtype="bfloat16")
    assert same.calibrate(as_sampler(hf_model, tokenizer), hf_model) == default_tolerance("bfloat16")  # gap 0: floor
    fixed = WeightSyncCanary(probe, 0.25, dtype="bfloat16")
    assert fixed.calibrate(as_sampler(shifted, tokenizer), hf_model) == 0.25  # sampler.canary_tolerance=0.25 wins
    broken = copy.deepcopy(hf_model)
    with torch.no_grad():
        broken.model.embed_tokens.weight.mul_(50.0)  # tied: the output head too
    with pytest.raises(WeightSyncError, match="did not load the same model"):
        WeightSyncCanary(probe, None).calibrate(as_sampler(broken, tokenizer), hf_model)
