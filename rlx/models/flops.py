"""Achieved FLOP/s of an update as a share of the machine's measured matmul peak (the benchmarks' MFU).

The count is the usual dense-transformer estimate (Kaplan et al. 2020, "Scaling Laws for Neural Language
Models", Sec. 2.1; PaLM's MFU, Chowdhery et al. 2022, App. B): a forward pass costs 2 FLOPs per matmul
parameter per token, a backward pass twice that, plus the attention scores and their weighted sum (2 x 2 x
layers x context x width per token, halved for a causal mask). Matmul parameters are the weights of every
`nn.Linear` (the LM head included; the embedding lookup is not a matmul). Only real tokens count, not padding,
so the share also falls when a batch is mostly padding: that is the point of measuring it.
"""

from __future__ import annotations

import time

import torch
from torch import nn


def matmul_params(model: nn.Module) -> int:
    """Weights that take part in a matmul per token: every nn.Linear's weight matrix."""
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))


def forward_flops(model: nn.Module, lengths: list[int]) -> float:
    """FLOPs of one forward pass over sequences of these real lengths (causal attention)."""
    config = model.config
    layers, width = config.num_hidden_layers, config.hidden_size
    dense = 2.0 * matmul_params(model) * sum(lengths)
    # QK^T and AV: 2 matmuls x 2 FLOPs x width per (query, key) pair; a causal mask keeps ~half the pairs
    attention = sum(2.0 * 2.0 * layers * width * n * (n + 1) / 2 for n in lengths)
    return dense + attention


def update_flops(model: nn.Module, lengths: list[int], frozen_passes: int = 0) -> float:
    """One update: forward + backward (3 forward passes' worth) plus `frozen_passes` no-grad forwards."""
    return (3 + frozen_passes) * forward_flops(model, lengths)


def lm_head_params(model: nn.Module) -> int:
    """Weights of the output projection (the LM head; a tied head is the embedding's matrix, counted here once)."""
    head = model.get_output_embeddings()
    return head.weight.numel() if isinstance(head, nn.Linear) else 0


def loss_update_flops(model: nn.Module, lengths: list[int], response_tokens: int) -> float:
    """One policy-gradient update as its loss needs it: forward + backward through every layer over every real
    token, but the LM head only at the `response_tokens` positions that predict a response token (a prompt
    position's logits enter no loss term, so rlx's lean log-probs never compute them; on a few-shot prompt
    with a 49k vocabulary those would be ~20% of all FLOPs)."""
    head = 2.0 * lm_head_params(model)
    return 3.0 * (forward_flops(model, lengths) - head * sum(lengths) + head * response_tokens)


def matmul_peak(device: str, dtype: torch.dtype, size: int | None = None, repeats: int = 5,
                clock=time.perf_counter) -> float:
    """Measured FLOP/s of a square matmul on this device and dtype: the ceiling the update is compared with.
    Random data (zeros run faster on some GPUs); the best of `repeats` after a warm-up. `clock=time.process_time`
    on a CPU shared with other jobs: the seconds this process computed, not those it waited for a core."""
    size = size or (8192 if device == "cuda" else 1024)
    gen = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(size, size, device=device, dtype=dtype, generator=gen)  # [n, n]
    b = torch.randn(size, size, device=device, dtype=dtype, generator=gen)  # [n, n]
    best = float("inf")
    for i in range(repeats + 1):
        if device == "cuda":
            torch.cuda.synchronize()
        start = clock()
        a @ b
        if device == "cuda":
            torch.cuda.synchronize()
        if i:  # the first product is the warm-up
            best = min(best, clock() - start)
    return 2.0 * size**3 / best
