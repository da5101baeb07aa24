"""The policy's full weights under Hugging Face checkpoint names, one tensor at a time, whatever wraps it.

A sampler (vLLM's `reload_weights`) and anything else that needs the whole model reads it through
`iter_full_parameters`, so the trainer may hold the policy plain, inside `DistributedDataParallel`, or sharded
by FSDP2 (`torch.distributed.fsdp.fully_shard`, whose parameters are `DTensor` shards):
  - plain / DDP: the module's own parameters, detached, never copied (LoRA: merged W + scale * B @ A);
  - FSDP2: each parameter is all-gathered (`DTensor.full_tensor()`) just before it is yielded, so one rank
    never holds more than one full parameter beyond its shard. Every rank must consume the iterator in the
    same order and to the end: each gather is a collective.
With tied embeddings `named_parameters()` lists the shared tensor once, as the input embedding; a sampler
with a separate output head would keep a stale one, so it is yielded again as `lm_head.weight`.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from rlx.models.lora import base_model, is_lora, merged_named_parameters


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside a `DistributedDataParallel` wrapper (and `torch.compile`'s), else `model` itself."""
    while isinstance(model, torch.nn.parallel.DistributedDataParallel) or hasattr(model, "_orig_mod"):
        model = model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model._orig_mod
    return model


def is_sharded(model: torch.nn.Module) -> bool:
    """True when any parameter is a DTensor shard (the model went through FSDP2's `fully_shard`)."""
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in model.parameters())


def full_tensor(p: torch.Tensor) -> torch.Tensor:
    """`p` itself (detached) when it is an ordinary tensor; the all-gathered full tensor of a DTensor shard."""
    from torch.distributed.tensor import DTensor

    return p.full_tensor().detach() if isinstance(p, DTensor) else p.detach()


def reshard(model: torch.nn.Module) -> None:
    """Put every FSDP2 unit of `model` back into its sharded state. FSDP2 leaves the root's parameters gathered
    (plain tensors, not DTensors) after a forward, expecting a backward; reading or saving them then would
    see the wrong objects. A no-op for a model that is not sharded."""
    from torch.distributed.fsdp import FSDPModule

    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.reshard()


def iter_full_parameters(model: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """(HF checkpoint name, full tensor) for every parameter of the policy, one at a time (see module doc)."""
    model = unwrap(model)
    if is_sharded(model):
        if is_lora(model):
            raise NotImplementedError("a LoRA policy sharded with FSDP2 cannot be merged for the sampler: "
                                      "use train.strategy=ddp with model.lora.r > 0")
        reshard(model)
        names = set()
        for name, p in model.named_parameters():
            names.add(name)
            yield name, full_tensor(p)
    else:
        weights = merged_named_parameters(model)
        names = {name for name, _ in weights}
        yield from weights
    config = getattr(base_model(model), "config", None)
    if getattr(config, "tie_word_embeddings", False) and "lm_head.weight" not in names:
        yield "lm_head.weight", full_tensor(base_model(model).get_input_embeddings().weight)
