"""Per-token log-probabilities and entropies of responses under a causal LM."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class PackedBatch:
    """Prompt+response sequences, right-padded, with where each response token sits."""

    input_ids: torch.Tensor  # [B, L]
    attention_mask: torch.Tensor  # [B, L]
    response_ids: torch.Tensor  # [B, T] response tokens, pad = 0
    response_mask: torch.Tensor  # [B, T] float, 1.0 on valid response tokens
    predict_pos: torch.Tensor  # [B, T] position in input_ids whose logits predict response token t


def pack(prompts: list[list[int]], responses: list[list[int]], pad_id: int) -> PackedBatch:
    batch = len(prompts)
    seq_len = max(len(p) + len(r) for p, r in zip(prompts, responses))
    resp_len = max(1, max(len(r) for r in responses))
    input_ids = torch.full((batch, seq_len), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((batch, seq_len), dtype=torch.long)
    response_ids = torch.zeros((batch, resp_len), dtype=torch.long)
    response_mask = torch.zeros((batch, resp_len))
    predict_pos = torch.zeros((batch, resp_len), dtype=torch.long)
    for i, (prompt, response) in enumerate(zip(prompts, responses)):
        full = prompt + response
        input_ids[i, : len(full)] = torch.tensor(full, dtype=torch.long)
        attention_mask[i, : len(full)] = 1
        response_ids[i, : len(response)] = torch.tensor(response, dtype=torch.long)
        response_mask[i, : len(response)] = 1.0
        predict_pos[i, : len(response)] = torch.arange(len(prompt) - 1, len(full) - 1)
    return PackedBatch(input_ids, attention_mask, response_ids, response_mask, predict_pos)


def model_device(model) -> torch.device:
    return next(model.parameters()).device


def response_logprobs(model, batch: PackedBatch, with_entropy: bool = False):
    """log pi(y_t | prompt, y_<t) for every response token: [B, T] (and the entropy [B, T]).

    The forward pass runs on the model's device; the [B, T] results come back to the CPU (differentiably),
    where the algorithms' small tensor math runs, so the loop has one device story on CPU and GPU alike."""
    device = model_device(model)
    logits = model(input_ids=batch.input_ids.to(device), attention_mask=batch.attention_mask.to(device)).logits
    index = batch.predict_pos.to(device)[..., None].expand(-1, -1, logits.shape[-1])  # [B, T, V]
    logp_all = logits.gather(1, index).float().log_softmax(-1)  # [B, T, V]
    response_ids = batch.response_ids.to(device)[..., None]
    logp = logp_all.gather(-1, response_ids).squeeze(-1).cpu() * batch.response_mask  # [B, T]
    if not with_entropy:
        return logp, None
    entropy = -(logp_all.exp() * logp_all).sum(-1).cpu() * batch.response_mask  # [B, T]
    return logp, entropy
