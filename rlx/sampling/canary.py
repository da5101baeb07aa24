"""Weight-sync canary: after the trainer's weights are pushed into a sampler, check they arrived.

A sync can fail silently — with tied embeddings a sync that sends only the input embedding leaves
vLLM's output head stale with only a warning — and the run then trains on samples from a policy it is not optimising.
The canary scores a small fixed batch of token sequences with both the sampler and the trainer model and
raises `WeightSyncError` when their per-token log-probabilities differ by more than a tolerance.
"""

from __future__ import annotations

import torch

from rlx.models.precision import autocast_context
from rlx.sampling.base import Sampler
from rlx.sampling.hf import right_pad

# Largest |log p_sampler - log p_trainer| (nats) on the probe that still counts as "same weights".
# Measured on the tiny model after a correct sync (scripts/bench_canary.py, fp32 trainer weights scored
# under autocast to the engine's dtype): fp32 2e-5; fp16 0.05 max (0.006 mean); bf16 0.34 max (0.04 mean):
# bf16 logits near 16 are spaced 0.125 apart, so max gaps of a few tenths are rounding, not a stale weight.
TOLERANCE = {"float32": 1e-3, "bfloat16": 0.5, "float16": 0.1}
# A real model's rounding gap is larger: SmolLM2-135M (30 layers) shows 0.33 nats in bf16 before any training, 0.52
# after a correct sync of a tied embedding scaled x1.5 (docs/samplers.md). So with `sampler.canary_tolerance: null`
# the tolerance is calibrated once, at start-up, when sampler and trainer hold the same weights by construction:
# max(TOLERANCE[dtype], CALIBRATION_FACTOR x that gap). A skipped parameter or a stale tied head moves log-probs by
# whole nats (tests/sampling/test_canary_real.py), far above either bound.
CALIBRATION_FACTOR = 3.0
# Before any training the two sides load the same file: a gap this large is a wrong model, not rounding.
MAX_START_GAP = 2.0


class WeightSyncError(RuntimeError):
    pass


def default_tolerance(dtype: str) -> float:
    return TOLERANCE.get(dtype, 0.1)


def default_probe(vocab_size: int, num_sequences: int = 4, length: int = 32, seed: int = 1234) -> list[list[int]]:
    """Seeded random token sequences. They need not be natural text: any input exercises every weight
    (embeddings, all layers, the output head), and a fixed probe makes gaps comparable across steps."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab_size, (num_sequences, length), generator=generator).tolist()


@torch.no_grad()
def trainer_logprobs(model: torch.nn.Module, sequences: list[list[int]], dtype: str = "float32") -> list[list[float]]:
    """log p(token_i | tokens_<i), i >= 1, under the trainer's module (eval mode: no dropout), computing
    in `dtype` as the trainer's own forwards do (autocast over its fp32 weights; precision.py)."""
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        ids, mask = right_pad(sequences, pad_id=0)  # [B, L]; padding is masked and never scored
        with autocast_context(dtype, device):
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()  # [B, L, V]
        logp = logits[:, :-1].log_softmax(-1).gather(-1, ids[:, 1:, None].to(device)).squeeze(-1)  # [B, L-1]
    finally:
        model.train(was_training)
    return [logp[i, : len(seq) - 1].tolist() for i, seq in enumerate(sequences)]


def max_gap(a: list[list[float]], b: list[list[float]]) -> float:
    gaps = [abs(x - y) for row_a, row_b in zip(a, b, strict=True) for x, y in zip(row_a, row_b, strict=True)]
    return max(gaps, default=0.0)


class WeightSyncCanary:
    def __init__(self, probe_sequences: list[list[int]], tolerance: float | None, dtype: str = "float32"):
        """`tolerance`: a fixed bound (nats), or None to calibrate it (`calibrate`; the dtype's floor until then)."""
        if not probe_sequences or any(len(s) < 2 for s in probe_sequences):
            raise ValueError("canary probe sequences need at least two tokens each")
        self.probe_sequences = [list(s) for s in probe_sequences]
        self.fixed = tolerance is not None
        self.tolerance = tolerance if tolerance is not None else default_tolerance(dtype)
        self.dtype = dtype  # the sampler's compute dtype: the trainer side scores under autocast to it
        self.start_gap: float | None = None

    def calibrate(self, sampler: Sampler, model: torch.nn.Module) -> float:
        """Measure the gap while sampler and trainer hold the same weights (start-up, before any sync or training);
        an unfixed tolerance becomes max(the dtype's default, CALIBRATION_FACTOR x gap). Returns the tolerance."""
        self.start_gap = self.gap(sampler, model)
        if not self.start_gap <= MAX_START_GAP:  # also NaN
            raise WeightSyncError(
                f"before any training the sampler's log-probs differ from the trainer's by up to {self.start_gap:.3g} "
                f"nats on the probe batch: the two sides did not load the same model (or its dtype overflows)")
        if not self.fixed:
            self.tolerance = max(default_tolerance(self.dtype), CALIBRATION_FACTOR * self.start_gap)
        return self.tolerance

    def gap(self, sampler: Sampler, model: torch.nn.Module) -> float:
        trainer = trainer_logprobs(model, self.probe_sequences, self.dtype)
        return max_gap(sampler.prompt_logprobs(self.probe_sequences), trainer)

    def check(self, sampler: Sampler, model: torch.nn.Module, step: int) -> float:
        """The gap, or `WeightSyncError` if it exceeds the tolerance."""
        gap = self.gap(sampler, model)
        if not gap <= self.tolerance:  # also catches NaN
            raise WeightSyncError(
                f"weight sync check failed at step {step}: the sampler's log-probs differ from the trainer's by "
                f"up to {gap:.3g} nats on the probe batch (tolerance {self.tolerance:.3g}{self._origin()}). "
                f"The sampler is not generating with the trained weights (e.g. a parameter name vLLM did not "
                f"load, or a stale tied output head); raise sampler.canary_tolerance only if the gap is "
                f"numerical noise.")
        return gap

    def _origin(self) -> str:
        if self.fixed or self.start_gap is None:
            return ""
        return f", calibrated from a start-up gap of {self.start_gap:.3g}"
