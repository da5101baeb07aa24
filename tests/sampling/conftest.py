"""Fixtures for the sampler tests: a random-init tiny model and ONE vLLM engine per test session.

Engine start takes ~25 s on CPU, so every vLLM test shares `vllm_sampler`. Tests that change its
weights must put the original ones back (`pristine_engine` does it after each test that uses it).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen2ForCausalLM

from rlx.models.charlevel import build_char_tokenizer
from rlx.recipes.tiny import TinyModelSpec, _qwen2_config


def build_random_tiny_model(out_dir: Path, seed: int = 0, **dims) -> Path:
    """The tiny model's architecture (tied embeddings, char-level tokenizer) with random weights."""
    torch.manual_seed(seed)
    tokenizer = build_char_tokenizer()
    model = Qwen2ForCausalLM(_qwen2_config(TinyModelSpec(**dims), tokenizer))
    model.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    return out_dir


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_random_tiny_model(tmp_path_factory.mktemp("tiny-random"))


@pytest.fixture(scope="session")
def tokenizer(tiny_model_dir):
    return AutoTokenizer.from_pretrained(str(tiny_model_dir))


@pytest.fixture
def hf_model(tiny_model_dir):
    """A fresh fp32 copy of the model per test: tests may perturb it freely."""
    return AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32).eval()


@pytest.fixture(scope="session")
def vllm_sampler(tiny_model_dir, tokenizer):
    # a core dependency (`make install`): missing, the vLLM tests fail rather than skip
    assert importlib.util.find_spec("vllm") is not None, "vLLM is not installed: run `make install`"
    from rlx.sampling.config import VLLMSamplerConfig
    from rlx.sampling.vllm import VLLMSampler

    sampler = VLLMSampler(str(tiny_model_dir), tokenizer.eos_token_id, VLLMSamplerConfig(dtype="float32"), seed=0)
    yield sampler
    sampler.close()


@pytest.fixture
def pristine_engine(vllm_sampler, tiny_model_dir):
    """The shared engine, with the saved model's weights synced back into it after the test."""
    yield vllm_sampler
    original = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32)
    vllm_sampler.sync_weights(original)
