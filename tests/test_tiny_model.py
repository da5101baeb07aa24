"""The project's tiny model: real Qwen2 classes, a tokenizer that keeps spaces and newlines under every
loader, a deterministic build, and a warm start inside the band RL needs."""

from __future__ import annotations

import json

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen2ForCausalLM

from rlx.data import arith
from rlx.models.charlevel import build_char_tokenizer
from rlx.recipes.tiny import TinyModelSpec, build_tiny_model


def test_tokenizer_round_trips_spaces_and_newlines_through_auto_tokenizer(tmp_path):
    tokenizer = build_char_tokenizer()
    tokenizer.save_pretrained(str(tmp_path))
    loaded = AutoTokenizer.from_pretrained(str(tmp_path))
    text = "12 + 3\n=15\n#### 15"
    assert loaded.encode(text) == tokenizer.encode(text)
    assert len(loaded.encode(text)) == len(text)  # one token per character
    assert loaded.decode(loaded.encode(text)) == text


def test_tiny_model_is_a_qwen2_in_the_warm_start_band(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    assert isinstance(model, Qwen2ForCausalLM)
    info = json.loads((tiny_model_dir / "build_info.json").read_text())
    assert 0.2 <= info["test_accuracy"] <= 0.6, info
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    problem = arith.test_problems()[0]
    assert tokenizer.decode(tokenizer.encode(problem.solution)) == problem.solution


def test_build_is_deterministic_for_a_seed(tmp_path):
    spec = TinyModelSpec(hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2, num_kv_heads=1,
                         sft_max_steps=3, sft_eval_every=2, sft_eval_from=2, sft_batch_size=8, dev_size=4,
                         max_new_tokens=8)
    build_tiny_model(spec, tmp_path / "a")
    build_tiny_model(spec, tmp_path / "b")
    state_a = AutoModelForCausalLM.from_pretrained(str(tmp_path / "a")).state_dict()
    state_b = AutoModelForCausalLM.from_pretrained(str(tmp_path / "b")).state_dict()
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    other = build_tiny_model(TinyModelSpec(**{**spec.__dict__, "seed": 1}), tmp_path / "c")
    assert other["spec"]["seed"] == 1
    state_c = AutoModelForCausalLM.from_pretrained(str(tmp_path / "c")).state_dict()
    assert not all(torch.equal(state_a[k], state_c[k]) for k in state_a)
