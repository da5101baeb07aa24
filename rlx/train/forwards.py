"""Micro-batched forward passes: every model forward of a training step goes through here.

Owns the split of a packed batch into micro-batches (`train.micro_batch_tokens`: at most that many padded
prompt+response tokens per forward, longest first, so short sequences share a micro-batch; else
`train.micro_batch_size` sequences) and the no-grad passes that freeze a batch (pi_old and pi_ref
log-probs, critic values), each computed per micro-batch and written back into [B, T] tensors. Forwards
run under `model.dtype` autocast over fp32 weights; the results are fp32 (or the model's wider dtype).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from rlx.models.logprobs import PackedBatch, plan_micro_batches, response_logprobs, select_rows
from rlx.models.precision import autocast_context


class Forwards:
    def __init__(self, micro_batch_tokens: int | None, micro_batch_size: int, dtype: str, device: torch.device,
                 logprob_chunk: int):
        self.micro_batch_tokens = micro_batch_tokens
        self.micro_batch_size = None if micro_batch_tokens is not None else micro_batch_size
        self.dtype = dtype
        self.device = device
        self.logprob_chunk = logprob_chunk

    def autocast(self):
        """Wraps every forward pass (never a backward or the loss): `model.dtype` compute, fp32 weights."""
        return autocast_context(self.dtype, self.device)

    def plan(self, packed: PackedBatch, rows: Sequence[int] | None = None) -> list[list[int]]:
        """Micro-batches of `rows` (default: every row) as lists of row indices of `packed`, in row order."""
        rows = list(range(packed.response_mask.shape[0])) if rows is None else list(rows)
        lengths = packed.attention_mask[rows].sum(-1).tolist()  # prompt + response tokens of each row
        return [[rows[i] for i in part] for part in plan_micro_batches(lengths, self.micro_batch_tokens,
                                                                       self.micro_batch_size)]

    def logprobs(self, model, packed: PackedBatch, with_entropy: bool = False):
        """`response_logprobs` of one (micro-)batch under autocast -> ([B, T], [B, T] | None)."""
        with self.autocast():
            return response_logprobs(model, packed, with_entropy, chunk=self.logprob_chunk)

    def values(self, critic, packed: PackedBatch) -> torch.Tensor:
        with self.autocast():
            return critic(packed)  # [B, T]

    @torch.no_grad()
    def frozen_logprobs(self, model, packed: PackedBatch) -> torch.Tensor:
        """log pi(y_t | ...) of every row, no grad, micro-batched -> [B, T]."""
        return self.over_micro_batches(lambda sub: self.logprobs(model, sub)[0], packed)

    @torch.no_grad()
    def frozen_entropy(self, model, packed: PackedBatch) -> torch.Tensor:
        """Per-token policy entropy H(pi(. | prefix)) of every row, no grad, micro-batched -> [B, T]."""
        return self.over_micro_batches(lambda sub: self.logprobs(model, sub, with_entropy=True)[1], packed)

    @torch.no_grad()
    def frozen_values(self, critic, packed: PackedBatch) -> torch.Tensor:
        """Critic values of every row, no grad, micro-batched -> [B, T]."""
        return self.over_micro_batches(lambda sub: self.values(critic, sub), packed)

    def over_micro_batches(self, fn: Callable[[PackedBatch], torch.Tensor], packed: PackedBatch) -> torch.Tensor:
        """fn on each micro-batch (rows selected, padding trimmed) -> its [b, T'] results written into [B, T]."""
        out = None
        for rows in self.plan(packed):
            part = fn(select_rows(packed, rows))  # [b, T']
            if out is None:
                out = torch.zeros(packed.response_mask.shape, dtype=part.dtype)  # [B, T]
            out[rows, : part.shape[1]] = part
        return out
