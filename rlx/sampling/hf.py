"""`sampler=hf`: batched generation through transformers `generate`.

Sampling happens in a logits processor that draws Gumbel noise from a generator seeded per request, so
every request samples from its own stream: results do not depend on how requests were batched, identical
prompts with different seeds give different samples, and temperature-0 requests are exactly greedy. The
processor leaves a single finite logit per row, so `generate` runs in greedy mode and applies no
warpers of its own (its default top_k=50 would otherwise truncate the distribution).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from transformers import LogitsProcessor, LogitsProcessorList, PreTrainedModel

from rlx.models.precision import autocast_context
from rlx.sampling.base import Generation, GenRequest

_MASK64 = (1 << 64) - 1


def _signed(value: int) -> int:
    """A uint64 constant as the int64 torch stores (two's complement)."""
    return value - (1 << 64) if value >= 1 << 63 else value


_GOLDEN, _MIX1, _MIX2 = _signed(0x9E3779B97F4A7C15), _signed(0xBF58476D1CE4E5B9), _signed(0x94D049BB133111EB)


def _shift_right(x: torch.Tensor, bits: int) -> torch.Tensor:
    return (x >> bits) & ((1 << (64 - bits)) - 1)  # logical shift on int64


def counter_uniform(seeds: torch.Tensor, position: int, vocab: int) -> torch.Tensor:
    """Uniform(0, 1) noise [B, V] as a pure function of (request seed, decode position, token id).

    splitmix64 of a per-(row, position, token) counter, vectorised over the batch: every request draws
    from its own stream, so a sample does not depend on which other requests share its batch."""
    tokens = torch.arange(vocab, device=seeds.device)[None, :]  # [1, V]
    counter = seeds[:, None] * _GOLDEN + (position * vocab + tokens) * _MIX2  # [B, V]
    z = counter + _GOLDEN
    z = (z ^ _shift_right(z, 30)) * _MIX1
    z = (z ^ _shift_right(z, 27)) * _MIX2
    z = z ^ _shift_right(z, 31)
    return (_shift_right(z, 11).double() + 0.5) / float(1 << 53)  # in (0, 1)


class PerRequestSampling(LogitsProcessor):
    """Gumbel-max sampling with a temperature and a seed per row (temperature 0 = argmax)."""

    def __init__(self, temperatures: list[float], seeds: list[int], prompt_width: int):
        self.temperatures = torch.tensor(temperatures, dtype=torch.float32)  # [B]
        self.seeds = torch.tensor(seeds, dtype=torch.long)  # [B]
        self.prompt_width = prompt_width

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        scores = scores.float()  # [B, V]
        temperatures, seeds = self.temperatures.to(scores.device), self.seeds.to(scores.device)
        position = input_ids.shape[1] - self.prompt_width
        uniform = counter_uniform(seeds, position, scores.shape[1])  # [B, V]
        gumbel = -torch.log(-torch.log(uniform)).float()
        sampled = (scores / temperatures.clamp(min=1e-6)[:, None] + gumbel).argmax(-1)  # [B]
        chosen = torch.where(temperatures > 0, sampled, scores.argmax(-1))  # [B]
        out = torch.full_like(scores, float("-inf"))
        out.scatter_(1, chosen[:, None], 0.0)
        return out


class HFSampler:
    def __init__(self, model: PreTrainedModel, eos_token_id: int, pad_token_id: int, max_batch_size: int = 512,
                 num_threads: int = 1, dtype: str = "float32"):
        self.model = model
        self.dtype = dtype  # compute dtype: fp32 (master) weights generate under autocast, as they train
        self.eos_token_id = eos_token_id
        self.pad_token_id = pad_token_id
        self.max_batch_size = max_batch_size
        self.num_threads = num_threads

    def sync_weights(self, model: torch.nn.Module, weights=None) -> None:
        self.model = model  # generates with the trainer's own module: nothing to copy

    def close(self) -> None:
        pass

    def generate(self, requests: list[GenRequest]) -> list[Generation]:
        results: list[Generation] = []
        with cpu_threads(self.num_threads if next(self.model.parameters()).device.type == "cpu" else 0), \
                self._autocast():
            for start in range(0, len(requests), self.max_batch_size):
                results.extend(self._generate_chunk(requests[start : start + self.max_batch_size]))
        return results

    @torch.no_grad()
    def _generate_chunk(self, requests: list[GenRequest]) -> list[Generation]:
        was_training = self.model.training
        self.model.eval()
        input_ids, attention_mask = left_pad([list(r.prompt_ids) for r in requests], self.pad_token_id)
        processor = PerRequestSampling([r.temperature for r in requests], [r.seed for r in requests],
                                       input_ids.shape[1])
        device = next(self.model.parameters()).device
        out = self.model.generate(
            input_ids=input_ids.to(device),
            attention_mask=attention_mask.to(device),
            max_new_tokens=max(r.max_new_tokens for r in requests),
            do_sample=False,
            logits_processor=LogitsProcessorList([processor]),
            eos_token_id=self.eos_token_id,
            pad_token_id=self.pad_token_id,
            return_dict_in_generate=True,
            output_logits=True,
        )
        self.model.train(was_training)
        new_tokens = out.sequences[:, input_ids.shape[1] :].cpu()  # [B, N]
        raw_logp = torch.stack(out.logits, dim=1).float().log_softmax(-1).cpu()  # [B, N, V]
        token_logp = raw_logp.gather(-1, new_tokens[..., None]).squeeze(-1)  # [B, N]
        return [self._trim(new_tokens[i], token_logp[i], r.max_new_tokens) for i, r in enumerate(requests)]

    def _trim(self, tokens: torch.Tensor, logp: torch.Tensor, max_new_tokens: int) -> Generation:
        ids = tokens.tolist()[:max_new_tokens]
        finished = self.eos_token_id in ids
        length = ids.index(self.eos_token_id) + 1 if finished else len(ids)
        return Generation(token_ids=ids[:length], logprobs=logp[:length].tolist(), finished=finished)

    def _autocast(self):
        """`dtype` compute for fp32 weights (the trainer's master copy); weights already stored in a lower
        precision (`rlx eval model.dtype=bfloat16`) run as they are."""
        weights = next(self.model.parameters())
        return autocast_context(self.dtype if weights.dtype == torch.float32 else "float32", weights.device)

    @torch.no_grad()
    def prompt_logprobs(self, sequences: list[list[int]]) -> list[list[float]]:
        ids, mask = right_pad(sequences, self.pad_token_id)
        device = next(self.model.parameters()).device
        with self._autocast():
            logits = self.model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits  # [B, L, V]
        logits = logits.float().cpu()
        logp = logits[:, :-1].log_softmax(-1).gather(-1, ids[:, 1:, None]).squeeze(-1)  # [B, L-1]
        return [logp[i, : len(seq) - 1].tolist() for i, seq in enumerate(sequences)]


@contextmanager
def cpu_threads(num_threads: int) -> Iterator[None]:
    """Decode with `num_threads` torch threads (0 = leave as is), then restore the process's count.

    A decode step of a small model is many tiny ops: with two threads, OpenMP spin-waits made generation
    up to 13x slower on a busy 2-core machine (bench: 600 vs 8,000 tokens/s on the tiny model)."""
    previous = torch.get_num_threads()
    if num_threads > 0:
        torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def left_pad(sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)  # [B, L]
    mask = torch.zeros((len(sequences), width), dtype=torch.long)  # [B, L]
    for i, seq in enumerate(sequences):
        ids[i, width - len(seq) :] = torch.tensor(seq, dtype=torch.long)
        mask[i, width - len(seq) :] = 1
    return ids, mask


def right_pad(sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)  # [B, L]
    mask = torch.zeros((len(sequences), width), dtype=torch.long)  # [B, L]
    for i, seq in enumerate(sequences):
        ids[i, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[i, : len(seq)] = 1
    return ids, mask
