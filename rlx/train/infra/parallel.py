"""How a trained module is spread over torchrun's ranks: `train.strategy`.

- `ddp` (default): `torch.nn.parallel.DistributedDataParallel`. Every rank holds the full model, gradients and
  optimizer state; backward all-reduces the gradients (their mean over ranks) in buckets, overlapped with the
  backward pass. Memory per rank: the whole model + gradients + AdamW's two moments (~16 bytes/parameter fp32).
- `fsdp`: FSDP2, `torch.distributed.fsdp.fully_shard` on every decoder layer, then on the root (embeddings,
  final norm, head). Each rank keeps 1/W of every parameter, gradient and optimizer moment; a layer's full
  weights exist only while it runs (all-gather before forward and backward, reduce-scatter of its gradients
  after). `cpu_offload` keeps the shards and optimizer state in CPU memory (optimizer step on the CPU).
  Memory per rank: ~16/W bytes/parameter plus the largest layer's full weights.

With one process both return the module unchanged, so the single-process path is the plain module.
`no_sync` is the gradient-accumulation switch for either wrapper; `rlx.models.full_params.iter_full_parameters`
reads the full weights back (for the sampler) from any of them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import torch

from rlx.train.infra import distributed as dist

STRATEGIES = ("ddp", "fsdp")
T = TypeVar("T")


def decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The transformer blocks: every child of a ModuleList named `layers` (Qwen2/Llama `model.layers`, the
    critic's `base.layers`, a PEFT model's `base_model.model.model.layers`)."""
    return [layer for name, module in model.named_modules()
            if isinstance(module, torch.nn.ModuleList) and name.rsplit(".", 1)[-1] == "layers" for layer in module]


def check_strategy(strategy: str, sampler: str, lora_rank: int) -> None:
    """What FSDP2 cannot serve, said before any model loads. A sharded module's forward is a collective, so
    every rank must run the same number of forwards: the HF sampler generates with the trainer's module,
    rank by rank, and would deadlock; vLLM holds its own full copy."""
    if strategy != "fsdp" or dist.world_size() == 1:
        return
    from rlx.data.configs import ConfigError

    if sampler != "vllm":
        raise ConfigError(f"train.strategy=fsdp under torchrun needs sampler=vllm (got sampler={sampler}): the "
                          f"HF sampler generates with the sharded trainer module itself")
    if lora_rank > 0:
        raise ConfigError("train.strategy=fsdp does not support LoRA (model.lora.r > 0) yet: use train.strategy=ddp")


def wrap(model: torch.nn.Module, strategy: str, cpu_offload: bool = False) -> torch.nn.Module:
    """`model` ready for data-parallel training under `strategy` (see the module doc).

    DDP returns a wrapper around `model` (train through the wrapper; `model` itself stays usable for
    no-grad forwards, saving and weight sync). FSDP2 shards `model` in place and returns it: create the
    optimizer AFTER wrapping (the parameters become DTensor shards), and call every forward on all ranks."""
    if strategy not in STRATEGIES:
        raise ValueError(f"train.strategy must be one of {list(STRATEGIES)}, got {strategy!r}")
    if cpu_offload and strategy != "fsdp":
        raise ValueError("train.cpu_offload needs train.strategy=fsdp")
    if dist.world_size() == 1:
        return model
    if strategy == "ddp":
        if not any(p.requires_grad for p in model.parameters()):
            return model  # a frozen model (the reference) has no gradients to average
        device_ids = [torch.cuda.current_device()] if torch.cuda.is_available() else None
        # broadcast_buffers=False: buffers (rotary tables) are identical on every rank, and a buffer broadcast
        # in every forward would make a forward that only rank 0 runs a deadlock.
        return torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids, broadcast_buffers=False)
    return _fully_shard(model, cpu_offload)


def _fully_shard(model: torch.nn.Module, cpu_offload: bool) -> torch.nn.Module:
    from torch.distributed.fsdp import CPUOffloadPolicy, fully_shard

    # pin_memory speeds host<->GPU copies; it needs an accelerator ("Cannot access accelerator device").
    options = {"offload_policy": CPUOffloadPolicy(pin_memory=torch.cuda.is_available())} if cpu_offload else {}
    layers = decoder_layers(model)
    if not layers:
        raise ValueError(f"train.strategy=fsdp found no decoder layers (a ModuleList named 'layers') in "
                         f"{type(model).__name__}")
    for layer in layers:
        fully_shard(layer, **options)  # one all-gather per layer: only one layer is ever full at a time
    fully_shard(model, **options)  # the rest: embeddings, final norm, output head
    return model


@contextmanager
def no_sync(model: torch.nn.Module, is_last_micro_batch: bool) -> Iterator[None]:
    """Skip the gradient all-reduce / reduce-scatter in the backward passes run inside, except on the last
    micro-batch of an optimizer step: gradients accumulate locally and are averaged over ranks once."""
    from torch.distributed.fsdp import FSDPModule

    if is_last_micro_batch:
        yield
    elif isinstance(model, torch.nn.parallel.DistributedDataParallel):
        with model.no_sync():
            yield
    elif isinstance(model, FSDPModule):
        model.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            model.set_requires_gradient_sync(True)
    else:
        yield

def forward_through(model: torch.nn.Module, fn: Callable[[], T]) -> T:
    """fn() run as the forward of `model`: a plain module just calls it; a DDP wrapper or an FSDP2-sharded
    module runs it in place of its (inner) module's `forward`, inside the wrapper's call. A forward that
    reaches into submodules (the lean log-prob path calls the decoder and the LM head directly) would
    otherwise skip DDP's gradient-sync preparation and FSDP2's root all-gather (embeddings, norm, head)."""
    from torch.distributed.fsdp import FSDPModule

    ddp = isinstance(model, torch.nn.parallel.DistributedDataParallel)
    if not ddp and not isinstance(model, FSDPModule):
        return fn()
    inner = model.module if ddp else model
    inner.forward = lambda *args, **kwargs: fn()  # an instance attribute: `nn.Module.__call__` reads it
    try:
        return model()
    finally:
        del inner.forward  # the class's forward again


# -------------------------------------------------------------------- checkpoints of sharded modules
def is_sharded(model: torch.nn.Module | None) -> bool:
    from rlx.models.full_params import is_sharded as _is_sharded

    return model is not None and _is_sharded(model)


def _full_options(**kwargs):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, **kwargs)


def gather_train_state(policy: torch.nn.Module, optimizers: list[torch.optim.Optimizer],
                       critic: torch.nn.Module | None) -> dict | None:
    """FSDP2: the full (unsharded) state of the policy, its optimizer(s) and the critic, gathered on rank 0 in
    CPU memory (a collective: call it on every rank; other ranks get empty dicts). None when nothing is sharded:
    the checkpoint then reads the modules themselves. optimizers[0] is the policy's, optimizers[1] the critic's."""
    if not is_sharded(policy):
        return None
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

    from rlx.models.full_params import reshard

    for module in (policy, critic):
        if module is not None:
            reshard(module)
    owners = [policy, critic][: len(optimizers)]
    options = _full_options(cpu_offload=True)  # rank 0 alone receives the full tensors, in host memory
    return {"policy": get_model_state_dict(policy, options=options),
            "optimizers": [get_optimizer_state_dict(m, opt, options=options) for m, opt in zip(owners, optimizers)],
            "critic": get_model_state_dict(critic, options=options) if critic is not None else None}


def load_train_state(policy: torch.nn.Module, weights: dict[str, torch.Tensor], optimizers: list,
                     optimizer_states: list[dict], critic: torch.nn.Module | None, critic_state: dict | None) -> None:
    """FSDP2: shard a full checkpoint (every rank read it from disk) into the sharded modules and optimizers."""
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

    set_model_state_dict(policy, weights, options=_full_options(strict=False))  # the tied head is not stored
    owners = [policy, critic][: len(optimizers)]
    for model, opt, opt_state in zip(owners, optimizers, optimizer_states, strict=True):
        set_optimizer_state_dict(model, opt, opt_state, options=_full_options())
    if critic is not None:
        set_model_state_dict(critic, critic_state, options=_full_options())
