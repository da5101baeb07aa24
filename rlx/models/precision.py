"""Memory knobs of the trainable models: mixed precision (`model.dtype`) and activation checkpointing.

Mixed precision follows TRL / verl: the trainable policy (and critic, and the reference, so that at step 0
pi_ref and pi_theta agree exactly) is loaded in fp32 - master weights, fp32 AdamW state - and forward
passes run under `torch.autocast` in `model.dtype`, which runs the matmuls in bf16/fp16 on fp32 weights
cast on the fly. Backward passes, the loss and the advantages stay fp32 (callers wrap only forwards).
On CPU the same autocast runs (torch's CPU autocast supports bf16; on CPUs without bf16 instructions it
is emulated and slower, but numerically the same recipe), so a CPU run of `model.dtype=bfloat16` is a
faithful small-scale rehearsal of the GPU run. float16 gets no loss scaler: prefer bfloat16.
"""

from __future__ import annotations

import contextlib

import torch

from rlx.models.load import DTYPES

MASTER_DTYPE = "float32"  # weights and optimizer state of everything the trainer trains


def autocast_context(dtype: str, device: torch.device | str):
    """Context for a forward pass computing in `dtype` ("float32": a no-op context, exactly fp32)."""
    if dtype == "float32":
        return contextlib.nullcontext()
    if dtype not in DTYPES:
        raise ValueError(f"model.dtype: unknown dtype {dtype!r}; valid: {sorted(DTYPES)}")
    return torch.autocast(device_type=torch.device(device).type, dtype=DTYPES[dtype])


def enable_gradient_checkpointing(model: torch.nn.Module) -> None:
    """Recompute each decoder layer's activations in the backward pass (transformers' own mechanism,
    non-reentrant: gradients are exactly those without it, and no input needs `requires_grad`, so it
    also works for a PEFT model whose embeddings are frozen). Only active in train mode."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model  # a PeftModel's base
    if not getattr(inner, "supports_gradient_checkpointing", False):
        raise ValueError(f"model.gradient_checkpointing: {type(inner).__name__} does not support it")
    # No KV cache is made in training forwards (response_logprobs passes use_cache=False); `generate`
    # runs in eval mode, where checkpointing is off, and keeps its cache.
    inner.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
