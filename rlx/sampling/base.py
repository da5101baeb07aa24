"""One interface for every generation backend (transformers `generate`, vLLM).

The trainer talks only to `Sampler`; it never knows which backend it has. Prompts are token ids, never
text, so that a branch rollout continues from exactly the prefix the policy produced
(docs/algorithms.md, "TRePO", step 2).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Protocol

import torch


@dataclass(frozen=True)
class GenRequest:
    prompt_ids: tuple[int, ...]  # prompt (+ response prefix for a branch rollout), as token ids
    temperature: float  # 0.0 = greedy
    max_new_tokens: int
    seed: int  # per-request seed, derived from (run seed, step, phase, request index)


@dataclass
class Generation:
    token_ids: list[int]  # new tokens, EOS included when the model emitted it
    logprobs: list[float]  # raw (temperature-1) log-probabilities of the sampled tokens under the sampler's weights
    finished: bool  # True if generation stopped at EOS, False if it hit max_new_tokens


class Sampler(Protocol):
    def generate(self, requests: list[GenRequest]) -> list[Generation]:
        """One generation per request, in request order, from a single batched call."""
        ...

    def sync_weights(self, model: torch.nn.Module, weights=None) -> None:
        """Make the sampler generate with `model`'s current weights (after each optimizer step). `weights`:
        the (name, tensor) pairs under the checkpoint's names, when they are not `model.named_parameters()`
        (a LoRA policy's merged weights, handed over by the trainer)."""
        ...

    def prompt_logprobs(self, sequences: list[list[int]]) -> list[list[float]]:
        """log p(token_i | tokens_<i) for i >= 1 of each sequence (the weight-sync canary's probe)."""
        ...

    def close(self) -> None: ...


def request_seed(run_seed: int, step: int, phase: str, index: int) -> int:
    """A distinct, reproducible 63-bit seed per request: identical prompts never share a seed by accident."""
    digest = hashlib.blake2b(f"{run_seed}/{step}/{phase}/{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)
