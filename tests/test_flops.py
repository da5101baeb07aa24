"""The benchmarks' FLOP count (rlx/models/flops.py) against a hand count on a real tiny Qwen2."""

import torch

from rlx.models.flops import (
    forward_flops,
    lm_head_params,
    loss_update_flops,
    matmul_params,
    matmul_peak,
    update_flops,
)
from rlx.models.qwen_tokenizer import random_qwen2


def tiny():
    return random_qwen2("0.5b", 2, seed=0, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                        intermediate_size=96)


def test_matmul_params_is_the_hand_count():
    model = tiny()
    h, kv_width, inter, vocab = 64, 2 * 16, 96, model.config.vocab_size
    per_layer = h * h + 2 * h * kv_width + h * h + 3 * h * inter  # q, k, v, o; gate, up, down
    assert matmul_params(model) == 2 * per_layer + vocab * h  # + the LM head, not the embedding


def test_forward_and_update_flops_by_hand():
    model = tiny()
    n = matmul_params(model)
    lengths = [3, 5]
    attention = 2 * 2 * 2 * 64 * (3 * 4 / 2 + 5 * 6 / 2)  # 2 matmuls x 2 FLOPs x 2 layers x width x causal pairs
    assert forward_flops(model, lengths) == 2 * n * 8 + attention
    assert update_flops(model, lengths, frozen_passes=1) == 4 * forward_flops(model, lengths)


def smollm2_shape():
    """SmolLM2-135M-Instruct's shape (model=smollm2) on the meta device: no memory, no weights."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                         num_attention_heads=9, num_key_value_heads=3, tie_word_embeddings=True)
    with torch.device("meta"):
        return LlamaForCausalLM(config)


def test_llama_shape_by_hand_tied_head_counted_once():
    model = smollm2_shape()
    h, kv_width, inter = 576, 3 * 64, 1536
    per_layer = 2 * h * h + 2 * h * kv_width + 3 * h * inter  # q, o; k, v; gate, up, down
    assert per_layer == 3_538_944
    assert lm_head_params(model) == 49152 * 576 == 28_311_552  # the tied head: the embedding's matrix
    assert matmul_params(model) == 30 * per_layer + 28_311_552 == 134_479_872


def test_loss_update_counts_the_head_only_at_response_positions():
    model = smollm2_shape()
    lengths, response_tokens = [150, 162], 24  # two rows, 24 response tokens in all
    body = 2 * 30 * 3_538_944 * 312  # every layer over every real token
    attention = 2 * 2 * 30 * 576 * (150 * 151 / 2 + 162 * 163 / 2)
    head = 2 * 28_311_552 * response_tokens
    assert loss_update_flops(model, lengths, response_tokens) == 3 * (body + attention + head)
    # every position's logits: the whole model's update count
    assert loss_update_flops(model, lengths, sum(lengths)) == update_flops(model, lengths)


def test_matmul_peak_is_a_positive_rate():
    peak = matmul_peak("cpu", torch.float32, size=128, repeats=2)
    assert 1e6 < peak < 1e14  # FLOP/s of a 2-core CPU lies far inside these bounds
