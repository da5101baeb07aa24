"""The benchmarks' FLOP count (rlx/models/flops.py) against a hand count on a real tiny Qwen2."""

import torch

from rlx.models.flops import forward_flops, matmul_params, matmul_peak, update_flops
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


def test_matmul_peak_is_a_positive_rate():
    peak = matmul_peak("cpu", torch.float32, size=128, repeats=2)
    assert 1e6 < peak < 1e14  # FLOP/s of a 2-core CPU lies far inside these bounds
