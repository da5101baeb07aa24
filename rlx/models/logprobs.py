"""Per-token log-probabilities and entropies of responses under a causal LM, memory-bounded.

The naive path (`model(...).logits` then a log-softmax) materialises [B, L, V] logits and at least one
fp32 copy of them: with Qwen2.5's 151,936-token vocabulary that is ~20 GB for 64 x 512 tokens. Here the
decoder runs to hidden states only, the hidden states are gathered at the positions that predict a
response token (N of them, N <= B x T), and the LM head + log-softmax + entropy run over chunks of
`chunk` positions. With gradients on, each chunk is recomputed in the backward pass
(`torch.utils.checkpoint`), so only its [chunk, H] input is kept: the peak logits memory is
O(chunk x V) in the forward and the backward alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.checkpoint import checkpoint

from rlx.models.prefix import SharedLayout, build_layout

DEFAULT_CHUNK = 1024  # positions per LM-head chunk: 1024 x 151,936 fp32 logits = 0.6 GB


@dataclass
class PackedBatch:
    """Prompt+response sequences, right-padded, with where each response token sits."""

    input_ids: torch.Tensor  # [B, L]
    attention_mask: torch.Tensor  # [B, L]
    response_ids: torch.Tensor  # [B, T] response tokens, pad = 0
    response_mask: torch.Tensor  # [B, T] float, 1.0 on valid response tokens
    predict_pos: torch.Tensor  # [B, T] position in input_ids whose logits predict response token t
    layout: SharedLayout | None = None  # set: forwards compute the shared prefixes once (rlx/models/prefix.py)


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


def select_rows(batch: PackedBatch, rows) -> PackedBatch:
    """The sub-batch of `rows` (in the given order), its padding trimmed to its own longest sequence and
    longest response (at least one response column, like `pack`). Right padding is causal-invisible, so
    the trimmed rows give the same per-token numbers as in the full batch."""
    index = torch.as_tensor(list(rows), dtype=torch.long)  # [b]
    attention_mask = batch.attention_mask[index]  # [b, L]
    response_mask = batch.response_mask[index]  # [b, T]
    seq_len = int(attention_mask.sum(-1).max()) if len(index) else 0
    resp_len = max(1, int(response_mask.sum(-1).max()) if len(index) else 1)
    return PackedBatch(
        input_ids=batch.input_ids[index, :seq_len],  # [b, L']
        attention_mask=attention_mask[:, :seq_len],  # [b, L']
        response_ids=batch.response_ids[index, :resp_len],  # [b, T']
        response_mask=response_mask[:, :resp_len],  # [b, T']
        predict_pos=batch.predict_pos[index, :resp_len],  # [b, T']
    )


def share_prefixes(batch: PackedBatch, segments: list[list[int]]) -> PackedBatch:
    """`batch` whose forwards run as `segments` (lists of its row indices), each packed sequence computing its rows'
    shared prefixes once: the same per-token numbers as `batch` (rlx/models/prefix.py)."""
    lengths = batch.attention_mask.sum(-1).tolist()  # [b] real tokens of each row (right-padded)
    rows = [ids[:n] for ids, n in zip(batch.input_ids.tolist(), lengths)]
    return PackedBatch(batch.input_ids, batch.attention_mask, batch.response_ids, batch.response_mask,
                       batch.predict_pos, build_layout(rows, segments, pad_id=0))


def decoder_states(decoder, batch: PackedBatch, device) -> tuple[torch.Tensor, torch.Tensor]:
    """The decoder's hidden states over `batch`, flattened: [M, H] (M = B x L, or S x W for a shared layout),
    and for every response token the index of the state that predicts it: [B, T]."""
    layout = batch.layout
    if layout is None:
        hidden = decoder(input_ids=batch.input_ids.to(device), attention_mask=batch.attention_mask.to(device),
                         use_cache=False).last_hidden_state  # [B, L, H]
        width = batch.input_ids.shape[1]
        index = torch.arange(batch.input_ids.shape[0])[:, None] * width + batch.predict_pos  # [B, T]
        return hidden.flatten(0, 1), index
    hidden = decoder(input_ids=layout.input_ids.to(device), position_ids=layout.position_ids.to(device),
                     attention_mask=_block_mask(decoder, layout.attend.to(device)),
                     use_cache=False).last_hidden_state  # [S, W, H]
    return hidden.flatten(0, 1), layout.token_at.gather(1, batch.predict_pos)  # [S*W, H], [B, T]


def _block_mask(decoder, attend: torch.Tensor) -> torch.Tensor:
    """The layout's [S, 1, W, W] mask as the decoder's attention takes a custom 4D mask: SDPA reads booleans
    (True: attend), eager attention adds it to the scores. transformers' masking_utils returns a 4D mask as is,
    for every decoder built on `create_causal_mask` (the Qwen2 and Llama families among them)."""
    implementation = getattr(decoder.config, "_attn_implementation", "sdpa")
    if implementation == "sdpa":
        return attend
    if implementation == "eager":
        return torch.zeros(attend.shape).masked_fill(~attend, torch.finfo(torch.float32).min)
    raise NotImplementedError(f"train.share_prefix: attention '{implementation}' takes no custom 4D mask; "
                              "use sdpa or eager, or set train.share_prefix=false")


def plan_micro_batches(lengths: list[int], max_tokens: int | None, max_seqs: int | None) -> list[list[int]]:
    """Split sequence indices into micro-batches whose padded size fits the budget.

    Longest first, next-fit: sequences are visited in decreasing length (ties: lower index first), and a
    sequence joins the open micro-batch while rows x padded length (= its first, longest member's length)
    stays <= `max_tokens` and rows <= `max_seqs`; otherwise it opens a new one. A `None` bound is no bound
    (both None: one micro-batch). A sequence longer than `max_tokens` alone gets a micro-batch of its own.
    Each micro-batch lists its indices in increasing order; micro-batches come longest first."""
    _check_bound(max_tokens, "max_tokens")
    _check_bound(max_seqs, "max_seqs")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    plan: list[list[int]] = []
    for i in order:
        current = plan[-1] if plan else None
        fits = current is not None
        if fits and max_seqs is not None:
            fits = len(current) + 1 <= max_seqs
        if fits and max_tokens is not None:
            fits = (len(current) + 1) * lengths[current[0]] <= max_tokens  # current[0] is its longest
        if fits:
            current.append(i)
        else:
            plan.append([i])
    return [sorted(group) for group in plan]


def _check_bound(value: int | None, name: str) -> None:
    if value is not None and value < 1:
        raise ValueError(f"plan_micro_batches: {name} must be >= 1 or None, got {value}")


def model_device(model) -> torch.device:
    return next(model.parameters()).device


def causal_lm_parts(model) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(decoder returning hidden states, LM head) of a transformers causal LM, or of a PEFT-wrapped one
    (whose LoRA layers are injected into the base model's own modules, so its parts carry them)."""
    lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    lm = getattr(lm, "_orig_mod", lm)  # torch.compile'd
    if getattr(lm.config, "final_logit_softcapping", None):  # logits = f(head(h)): the naive path applies f
        raise NotImplementedError("response_logprobs: models with final_logit_softcapping are not supported")
    return lm.get_decoder(), lm.get_output_embeddings()


def attention_pair_cost(model) -> float:
    """The FLOPs of one (query, key) pair of attention (QK^T and AV: 4 x width per layer) over those of one token
    through the decoder's linear layers (2 per weight): what packing rows into one longer sequence costs against
    the tokens it saves (`prefix.worth_joining`)."""
    decoder, _ = causal_lm_parts(model)
    config = getattr(decoder, "config", None) or model.config
    linear = sum(m.weight.numel() for m in decoder.modules() if isinstance(m, torch.nn.Linear))
    return 4.0 * config.hidden_size * config.num_hidden_layers / max(2.0 * linear, 1.0)


def response_logprobs(model, batch: PackedBatch, with_entropy: bool = False, chunk: int = DEFAULT_CHUNK):
    """log pi(y_t | prompt, y_<t) for every response token: [B, T] (and the entropy [B, T], else None).

    Same numbers as `log_softmax(model(...).logits)` gathered at the response positions, computed without
    [B, L, V] logits (see the module docstring). The forward pass runs on the model's device; the [B, T]
    results come back to the CPU (differentiably), where the algorithms' small tensor math runs, in at
    least fp32 whatever the model's dtype (fp64 models stay fp64)."""
    device = model_device(model)
    decoder, head = causal_lm_parts(model)
    hidden, index = decoder_states(decoder, batch, device)  # [M, H], [B, T]
    rows, cols = batch.response_mask.bool().nonzero(as_tuple=True)  # [N], [N] valid response tokens
    positions, targets = index[rows, cols], batch.response_ids[rows, cols]  # [N], [N]
    if batch.layout is not None:  # rows sharing a prefix and its next token: that log-prob computed once
        pairs, inverse = torch.unique(torch.stack([positions, targets]), dim=1, return_inverse=True)  # [2, U], [N]
        positions, targets = pairs[0], pairs[1]  # [U], [U]
    states = hidden[positions.to(device)]  # [N or U, H]
    logp, entropy = _chunked_head(head, states, targets.to(device), with_entropy, chunk)  # [N or U]
    if batch.layout is not None:
        logp, entropy = logp[inverse.to(device)], (None if entropy is None else entropy[inverse.to(device)])  # [N]
    shape = batch.response_mask.shape
    rows, cols = rows.cpu(), cols.cpu()  # a DDP wrapper may have moved the batch to the model's device
    logp = torch.zeros(shape, dtype=logp.dtype).index_put((rows, cols), logp.cpu())  # [B, T], 0 on padding
    if entropy is not None:
        entropy = torch.zeros(shape, dtype=entropy.dtype).index_put((rows, cols), entropy.cpu())  # [B, T]
    return logp, entropy


def _chunked_head(head, states: torch.Tensor, targets: torch.Tensor, with_entropy: bool, chunk: int):
    """Per-position log p(target) [N] (and entropy [N]) from hidden states [N, H], `chunk` rows at a time."""
    if chunk < 1:
        raise ValueError(f"response_logprobs: chunk must be >= 1, got {chunk}")
    recompute = torch.is_grad_enabled()  # keep only each chunk's input for the backward pass
    logps, entropies = [], []
    for start in range(0, states.shape[0], chunk):
        args = (head, states[start : start + chunk], targets[start : start + chunk], with_entropy)
        logp, entropy = checkpoint(_head_logprobs, *args, use_reentrant=False) if recompute else _head_logprobs(*args)
        logps.append(logp)
        entropies.append(entropy)
    out_dtype = torch.promote_types(states.dtype, torch.float32)
    if not logps:  # no response tokens at all
        empty = states.new_zeros(0, dtype=out_dtype)  # [0]
        return empty, (empty if with_entropy else None)
    return torch.cat(logps), (torch.cat(entropies) if with_entropy else None)


def _head_logprobs(head, states: torch.Tensor, targets: torch.Tensor, with_entropy: bool):
    logits = head(states)  # [c, V], the model's (or autocast's) dtype
    logp_all = logits.to(torch.promote_types(logits.dtype, torch.float32)).log_softmax(-1)  # [c, V]
    logp = logp_all.gather(-1, targets[:, None]).squeeze(-1)  # [c]
    if not with_entropy:
        return logp, None
    return logp, -(logp_all.exp() * logp_all).sum(-1)  # [c]
