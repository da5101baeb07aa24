"""Multi-process data parallelism: `torchrun --nproc_per_node=N -m rlx.cli train ...`.

Every rank holds the whole policy (and critic) and its own sampler, and runs the same loop on its share of
each step's prompts (rank r takes prompts r, r + N, ...; whole prompts, so GRPO/RLOO groups never straddle
ranks). Where the ranks meet:
  - start: rank 0's weights are broadcast (all ranks start from identical weights);
  - advantages: the algorithm's view of the batch (`AdvantageInputs`: rewards, masks, critic values, branch
    rewards and, for an algorithm that reads the tree, each row's rollout-record tree) is all-gathered and
    every rank computes the advantages of the GLOBAL batch, then keeps its own rows. This is
    exact for every algorithm, including those with batch statistics (`adv_norm: batch` whitening in TRePO
    and PPO, REINFORCE's batch-mean baseline); it costs one small object all-gather per step;
  - backward: the trained modules are wrapped by `rlx.train.infra.parallel` (`train.strategy`: DistributedDataParallel
    by default), whose backward averages the gradients over ranks before clipping, so every rank takes the same
    optimizer step and the replicas stay identical;
  - metrics are averaged over ranks; rank 0 alone logs, evaluates and writes checkpoints (others wait).

With WORLD_SIZE unset or 1 every helper is a no-op, so the single-process path is unchanged.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.distributed as torch_dist

from rlx.algos.base import AdvantageInputs
from rlx.sampling.base import GenRequest, request_seed

T = TypeVar("T")
# Rank 0 evaluates and checkpoints while the others wait in a collective: allow for a long evaluation.
DEFAULT_TIMEOUT_MINUTES = 120

_STATE = {"joined": False, "rollout_workers": 0}


def world_size() -> int:
    """The training ranks: torchrun's processes minus the `train.rollout_workers` generation ranks, which run no
    trainer collective (rlx/train/rollout/remote.py; they are the last ranks, so trainer ranks keep 0 .. W-1)."""
    return torch_dist.get_world_size() - _STATE["rollout_workers"] if torch_dist.is_initialized() else 1


def set_rollout_workers(count: int) -> None:
    """Declare the last `count` ranks generation-only (before `init`)."""
    _STATE["rollout_workers"] = count


def rank() -> int:
    return torch_dist.get_rank() if torch_dist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def init() -> None:
    """Join the process group torchrun describes (WORLD_SIZE > 1): gloo on CPU, NCCL on GPU. Idempotent."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or torch_dist.is_initialized():
        return
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))  # one GPU per rank
    minutes = float(os.environ.get("RLX_DIST_TIMEOUT_MINUTES", DEFAULT_TIMEOUT_MINUTES))
    torch_dist.init_process_group(backend, timeout=timedelta(minutes=minutes))
    _STATE["joined"] = True


def joined() -> bool:
    """True once this process joined torchrun's group through `init` (an in-process vLLM engine may create a
    single-process group of its own, which is not ours to tear down)."""
    return _STATE["joined"]


def close() -> None:
    if joined() and torch_dist.is_initialized():
        _STATE["joined"] = False
        torch_dist.barrier()  # nobody tears the group down while another rank still needs it
        torch_dist.destroy_process_group()


def barrier() -> None:
    """Wait for every training rank (generation ranks never join: one trainer rank with them, async_rollouts)."""
    if world_size() > 1:
        torch_dist.barrier()


def _device() -> torch.device:
    """Where collectives need their tensors: the rank's GPU under NCCL, CPU under gloo."""
    if torch_dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


# -------------------------------------------------------------------- data
def shard(items: Sequence[T]) -> list[T]:
    """This rank's share of a step's prompts: items rank, rank + W, ... (all of them when W == 1)."""
    if len(items) < world_size():
        raise ValueError(f"train.prompts_per_step={len(items)} leaves some of the {world_size()} ranks without "
                         f"a prompt: raise it to at least the number of processes")
    return list(items[rank() :: world_size()])


def global_prompt_index(local_index: int) -> int:
    """Position in the step's full prompt list of this rank's `local_index`-th prompt (inverse of `shard`)."""
    return local_index * world_size() + rank()


def with_global_seeds(requests: list[GenRequest], samples_per_prompt: int, seed: int, step: int) -> list[GenRequest]:
    """Policy requests re-seeded by their GLOBAL index (rollout.policy_requests seeded them by the local one),
    so a prompt is sampled with the same seeds whichever rank serves it and ranks never share a stream."""
    if world_size() == 1:
        return requests
    out = []
    for i, req in enumerate(requests):
        group, k = divmod(i, samples_per_prompt)
        index = global_prompt_index(group) * samples_per_prompt + k
        out.append(dataclasses.replace(req, seed=request_seed(seed, step, "policy", index)))
    return out


# -------------------------------------------------------------------- weights and gradients
def broadcast_parameters(modules: Iterable[torch.nn.Module | None]) -> None:
    """Copy rank 0's parameters to every rank (same seed and model file should already agree; this makes
    it certain, e.g. for randomly initialised LoRA adapters or critic heads)."""
    if world_size() == 1:
        return
    for module in modules:
        if module is None:
            continue
        for p in module.parameters():
            buffer = p.data.to(_device())
            torch_dist.broadcast(buffer, src=0)
            p.data.copy_(buffer)


def parameter_digest(module: torch.nn.Module) -> str:
    """sha256 over every parameter's name and bytes: equal digests = identical replicas."""
    from rlx.models.full_params import full_tensor, reshard

    reshard(module)
    digest = hashlib.sha256()
    for name, p in module.named_parameters():
        digest.update(name.encode())
        full = full_tensor(p)  # an FSDP2 shard: the gathered parameter (a collective); else p itself
        digest.update(full.cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def write_parameter_digest(run_dir: Path, module: torch.nn.Module) -> None:
    """`<run_dir>/rank_<r>.params.sha256` when running distributed: lets anyone check the replicas agree."""
    if world_size() > 1:
        (run_dir / f"rank_{rank()}.params.sha256").write_text(parameter_digest(module) + "\n")


# -------------------------------------------------------------------- batch statistics
def global_advantages(advantage_fn: Callable[[AdvantageInputs, Any], torch.Tensor], inputs: AdvantageInputs,
                      cfg: Any) -> torch.Tensor:
    """`advantage_fn(inputs, cfg)` computed on the batch of ALL ranks; returns this rank's rows [B, T].

    Group ids are made globally unique (rank r's local group g is the step's prompt g * W + r)."""
    if world_size() == 1:
        return advantage_fn(inputs, cfg)
    gathered: list[AdvantageInputs | None] = [None] * world_size()
    torch_dist.all_gather_object(gathered, _to_cpu(inputs))
    merged = _concat_inputs([x for x in gathered if x is not None])
    advantages = advantage_fn(merged, cfg)  # [sum of B over ranks, max T]
    start = sum(x.response_mask.shape[0] for x in gathered[: rank()])
    rows, width = inputs.response_mask.shape
    return advantages[start : start + rows, :width].to(inputs.response_mask.device)  # [B, T]


def _to_cpu(inputs: AdvantageInputs) -> AdvantageInputs:
    def move(x: Any) -> Any:
        if isinstance(x, torch.Tensor):
            return x.detach().cpu()
        if isinstance(x, list):
            return [move(v) for v in x]
        return x

    return AdvantageInputs(**{f.name: move(getattr(inputs, f.name)) for f in dataclasses.fields(inputs)})


def _pad_columns(x: torch.Tensor, width: int) -> torch.Tensor:
    return torch.nn.functional.pad(x, (0, width - x.shape[1]))  # [B, width], zeros = padding (mask 0)


def _concat_inputs(parts: list[AdvantageInputs]) -> AdvantageInputs:
    """One AdvantageInputs holding every rank's rows in rank order; [B, T] tensors zero-padded to the widest T."""
    width = max(p.response_mask.shape[1] for p in parts)
    world = len(parts)
    merged: dict[str, Any] = {}
    for f in dataclasses.fields(AdvantageInputs):
        values = [getattr(p, f.name) for p in parts]
        if f.name == "group_ids":
            merged[f.name] = torch.cat([g * world + r for r, g in enumerate(values)])  # [sum B], globally unique
        elif any(v is None for v in values):
            merged[f.name] = None
        elif isinstance(values[0], torch.Tensor):
            merged[f.name] = torch.cat([_pad_columns(v, width) for v in values])
        else:
            merged[f.name] = [row for v in values for row in v]
    return AdvantageInputs(**merged)


def mean_metrics(metrics: Mapping[str, float]) -> dict[str, float]:
    """Each metric averaged over ranks (every rank logs the same keys), so rank 0 logs the global batch's."""
    if world_size() == 1:
        return dict(metrics)
    keys = sorted(metrics)
    values = torch.tensor([float(metrics[k]) for k in keys], dtype=torch.float64, device=_device())  # [K]
    torch_dist.all_reduce(values)
    values /= world_size()
    return dict(zip(keys, values.tolist()))


def max_over_ranks(value: int) -> int:
    """The largest `value` of any rank (one all-reduce; call it on every rank): e.g. a micro-batch count."""
    if world_size() == 1:
        return value
    buffer = torch.tensor([value], dtype=torch.int64, device=_device())
    torch_dist.all_reduce(buffer, op=torch_dist.ReduceOp.MAX)
    return int(buffer.item())


def broadcast_from_main(value: float) -> float:
    """Rank 0's `value` on every rank (e.g. an accuracy only rank 0 measured); also a barrier."""
    if world_size() == 1:
        return value
    buffer = torch.tensor([value], dtype=torch.float64, device=_device())
    torch_dist.broadcast(buffer, src=0)
    return float(buffer.item())


class NullLogger:
    """What ranks other than 0 log to: nothing (one metrics.jsonl per run)."""

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        pass

    def wants_samples(self, step: int) -> bool:
        return False

    def log_samples(self, step: int, rows: Sequence[Mapping[str, Any]]) -> list[Path]:
        return []

    def log_summary(self, summary: Mapping[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass
