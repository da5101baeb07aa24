"""`sampler=hf`: batched generation with transformers models, by rlx's own KV-cached decode loop.

Sampling draws Gumbel noise from a generator seeded per request, so every request samples from its own
stream: results do not depend on how requests were batched, identical prompts with different seeds give
different samples, and temperature-0 requests are exactly greedy (no top-k or other warper).

The decode loop (`decode`) makes exactly the forward calls of transformers `generate` (the same left
padding, position ids, dynamic KV cache and last-position logits), with one difference: rows that are done
(EOS, or their own `max_new_tokens`) leave the batch (their cache rows are dropped), so a batch does not
keep decoding its finished rows until the longest one ends. A row's numbers do not depend on which other
rows share its batch (row-wise matmuls and attention), so this changes no token and no log-prob: the test
compares the loop with `generate` bit for bit. Below `MIN_ROWS` rows a GEMM may take another kernel (a
matrix-vector path at one row), so the batch never shrinks below that (finished rows ride along).
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from transformers import DynamicCache, PreTrainedModel

from rlx.models.precision import autocast_context
from rlx.sampling.base import Generation, GenRequest

_MASK64 = (1 << 64) - 1
MIN_ROWS = 16  # the decoding batch never shrinks below this (see the module doc)


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


class PerRequestSampling:
    """Gumbel-max sampling with a temperature and a seed per request (temperature 0 = argmax)."""

    def __init__(self, temperatures: list[float], seeds: list[int]):
        self.temperatures = torch.tensor(temperatures, dtype=torch.float32)  # [B]
        self.seeds = torch.tensor(seeds, dtype=torch.long)  # [B]

    def choose(self, scores: torch.Tensor, rows: torch.Tensor, position: int) -> torch.Tensor:
        """The next token [b] of requests `rows` [b] from their logits `scores` [b, V] at decode `position`."""
        scores = scores.float()  # [b, V]
        temperatures = self.temperatures[rows].to(scores.device)  # [b]
        seeds = self.seeds[rows].to(scores.device)  # [b]
        uniform = counter_uniform(seeds, position, scores.shape[1])  # [b, V]
        gumbel = -torch.log(-torch.log(uniform)).float()
        sampled = (scores / temperatures.clamp(min=1e-6)[:, None] + gumbel).argmax(-1)  # [b]
        return torch.where(temperatures > 0, sampled, scores.argmax(-1))  # [b]


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
        sampling = PerRequestSampling([r.temperature for r in requests], [r.seed for r in requests])
        device = next(self.model.parameters()).device
        try:
            tokens, logprobs = decode(self.model, input_ids.to(device), attention_mask.to(device), sampling,
                                      [r.max_new_tokens for r in requests], self.eos_token_id)
        finally:
            self.model.train(was_training)
        return [Generation(token_ids=ids, logprobs=lps, finished=bool(ids) and ids[-1] == self.eos_token_id)
                for ids, lps in zip(tokens, logprobs)]

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


def decode(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, sampling: PerRequestSampling,
           budgets: list[int], eos_id: int) -> tuple[list[list[int]], list[list[float]]]:
    """Sample up to budgets[i] new tokens after each left-padded prompt [B, W] (stopping after EOS) ->
    (tokens, raw log-probs) per row. The forward calls are transformers `generate`'s (`_Batch`); rows leave the
    decoding batch when done (see the module doc)."""
    batch = _Batch.start(model, input_ids, attention_mask)
    tokens: list[list[int]] = [[] for _ in budgets]
    logprobs: list[list[float]] = [[] for _ in budgets]
    done = [budget < 1 for budget in budgets]
    for position in range(max(budgets, default=0)):
        logits = batch.next_logits()  # [b, V] fp32
        chosen = sampling.choose(logits, batch.rows, position)  # [b]
        logp = logits.log_softmax(-1).gather(-1, chosen[:, None]).squeeze(-1)  # [b] raw (temperature-1)
        for row, token, lp in zip(batch.rows.tolist(), chosen.tolist(), logp.tolist()):
            if not done[row]:
                tokens[row].append(token)
                logprobs[row].append(lp)
                done[row] = token == eos_id or len(tokens[row]) >= budgets[row]
        if all(done):
            break
        batch.step(chosen, done)
    return tokens, logprobs


class _Batch:
    """The decoding batch: which requests it holds (`rows`), their 2D attention mask, last positions and KV
    cache, and the model outputs of its last forward. The calls mirror transformers `generate` (5.x): position
    ids = cumsum(mask) - 1 (0 on padding), no mask at all when the prompts have no padding, a fresh
    DynamicCache, `logits_to_keep=1`."""

    def __init__(self, lm, rows, mask, positions, cache, extra):
        self.lm, self.rows, self.mask, self.positions, self.cache, self.extra = lm, rows, mask, positions, cache, extra
        self.outputs = None

    @classmethod
    def start(cls, model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> _Batch:
        lm = model.get_base_model() if hasattr(model, "get_base_model") else model  # PEFT: LoRA layers inside
        positions = (attention_mask.cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)  # [B, W]
        mask = None if bool((attention_mask == 1).all()) else attention_mask  # [B, W] | None
        extra = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(lm.forward).parameters else {}
        batch = cls(lm, torch.arange(input_ids.shape[0]), mask, positions[:, -1:], DynamicCache(config=lm.config),
                    extra)
        batch.forward(input_ids, positions)
        return batch

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor) -> None:
        self.outputs = self.lm(input_ids=input_ids, attention_mask=self.mask, position_ids=positions,
                               past_key_values=self.cache, use_cache=True, return_dict=True, **self.extra)

    def next_logits(self) -> torch.Tensor:
        return self.outputs.logits[:, -1].to(copy=True, dtype=torch.float32)  # [b, V]

    def step(self, chosen: torch.Tensor, done: list[bool]) -> None:
        """Feed the chosen tokens [b] (a done row's is ignored) and run the next forward."""
        keep = self.drop_done(done)
        chosen = chosen if keep is None else chosen[keep]  # [b']
        self.positions = self.positions + 1  # [b', 1]
        if self.mask is not None:
            self.mask = torch.cat([self.mask, self.mask.new_ones((self.mask.shape[0], 1))], dim=-1)  # [b, W + t]
        self.forward(chosen[:, None].to(self.positions.device), self.positions)

    def drop_done(self, done: list[bool]) -> torch.Tensor | None:
        """Drop the done rows once they are an eighth of the batch (fewer cache copies), keeping >= MIN_ROWS
        -> the kept batch indices [b'] (None: the batch is unchanged)."""
        rows = self.rows.tolist()
        keep = [i for i, row in enumerate(rows) if not done[row]]
        if len(rows) <= MIN_ROWS or (len(rows) - len(keep)) * 8 < len(rows):
            return None
        if len(keep) < MIN_ROWS:  # finished rows ride along, so the GEMMs keep their kernel
            keep = sorted(keep + [i for i, row in enumerate(rows) if done[row]][: MIN_ROWS - len(keep)])
        index = torch.tensor(keep, device=self.positions.device)
        self.rows = self.rows[torch.tensor(keep)]
        self.positions = self.positions[index]
        self.mask = None if self.mask is None else self.mask[index]
        self.cache.reorder_cache(index)
        return index


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
