"""Lean log-probabilities (hidden states -> chunked LM head) equal the full-logits path; micro-batch plans."""

from __future__ import annotations

import pytest
import torch

from rlx.config import LoRAConfig
from rlx.models.load import load_causal_lm
from rlx.models.logprobs import pack, plan_micro_batches, response_logprobs, select_rows
from rlx.models.lora import maybe_wrap_lora

PROMPTS = [[3, 5, 7, 9], [4, 6], [8, 10, 12, 14, 16, 18], [5, 9, 11]]
RESPONSES = [[11, 13, 15], [20, 21, 22, 23, 24, 25], [], [30]]  # an empty response too


def naive_logprobs(model, batch):
    """The pre-issue-9 path: full [B, L, V] logits, log-softmax, gather (no fp32 downcast of fp64)."""
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits  # [B, L, V]
    index = batch.predict_pos[..., None].expand(-1, -1, logits.shape[-1])  # [B, T, V]
    logp_all = logits.gather(1, index).log_softmax(-1)  # [B, T, V]
    logp = logp_all.gather(-1, batch.response_ids[..., None]).squeeze(-1) * batch.response_mask  # [B, T]
    entropy = -(logp_all.exp() * logp_all).sum(-1) * batch.response_mask  # [B, T]
    return logp, entropy


def f64_model(model_dir, lora: bool = False):
    torch.manual_seed(0)
    model = load_causal_lm(str(model_dir), "float32").double()
    if lora:
        model = maybe_wrap_lora(model, LoRAConfig(r=4, alpha=8.0))
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.normal_(std=0.05)  # B = 0 at init would make the adapters invisible
    return model.train()


def grads_of(model, logp, entropy):
    weights = torch.linspace(-1.0, 1.0, logp.numel(), dtype=logp.dtype).reshape(logp.shape)  # [B, T]
    model.zero_grad(set_to_none=True)
    ((logp * weights).sum() + 0.3 * entropy.sum()).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("lora", [False, True])
def test_lean_logprobs_entropy_and_gradients_equal_the_full_logits_path(tiny_model_dir, lora):
    model = f64_model(tiny_model_dir, lora)
    batch = pack(PROMPTS, RESPONSES, pad_id=0)
    ref_logp, ref_entropy = naive_logprobs(model, batch)
    ref_grads = grads_of(model, ref_logp, ref_entropy)
    logp, entropy = response_logprobs(model, batch, with_entropy=True, chunk=3)  # 10 tokens: 4 chunks
    assert logp.dtype == torch.float64 and logp.shape == ref_logp.shape == (4, 6)
    assert torch.allclose(logp, ref_logp.detach(), rtol=0, atol=1e-10)
    assert torch.allclose(entropy, ref_entropy.detach(), rtol=0, atol=1e-10)
    assert (logp[2] == 0).all() and (logp[3, 1:] == 0).all() and (entropy[0, 3:] == 0).all()  # padding
    grads = grads_of(model, logp, entropy)
    assert grads.keys() == ref_grads.keys() and len(grads) > 0
    for name, grad in grads.items():
        assert torch.allclose(grad, ref_grads[name], rtol=0, atol=1e-10), name


def test_chunk_size_and_no_grad_do_not_change_the_numbers(tiny_model_dir):
    model = f64_model(tiny_model_dir)
    batch = pack(PROMPTS, RESPONSES, pad_id=0)
    with torch.no_grad():
        one, one_h = response_logprobs(model, batch, with_entropy=True, chunk=1)
        whole, _ = response_logprobs(model, batch, chunk=1024)
    assert torch.allclose(one, whole, rtol=0, atol=1e-12) and one_h.shape == (4, 6)
    assert response_logprobs(model, batch)[1] is None
    with pytest.raises(ValueError, match="chunk"):
        response_logprobs(model, batch, chunk=0)


def test_select_rows_trims_padding_and_keeps_the_rows_numbers(tiny_model_dir):
    batch = pack(PROMPTS, RESPONSES, pad_id=0)  # lengths 7, 8, 6, 4; responses 3, 6, 0, 1
    sub = select_rows(batch, [3, 0])
    assert sub.input_ids.tolist() == [[5, 9, 11, 30, 0, 0, 0], [3, 5, 7, 9, 11, 13, 15]]
    assert sub.attention_mask.tolist() == [[1, 1, 1, 1, 0, 0, 0], [1] * 7]
    assert sub.response_ids.tolist() == [[30, 0, 0], [11, 13, 15]]
    assert sub.response_mask.tolist() == [[1.0, 0.0, 0.0], [1.0, 1.0, 1.0]]
    assert sub.predict_pos.tolist() == [[2, 0, 0], [3, 4, 5]]
    empty = select_rows(batch, [2])
    assert empty.response_ids.shape == (1, 1) and empty.input_ids.shape == (1, 6)
    model = f64_model(tiny_model_dir)
    with torch.no_grad():
        full, _ = response_logprobs(model, batch)  # [4, 6]
        part, _ = response_logprobs(model, sub)  # [2, 3]
    assert torch.allclose(part, full[[3, 0], :3], rtol=0, atol=1e-12)


def test_plan_micro_batches_longest_first_by_token_budget():
    lengths = [5, 9, 3, 9, 4, 2]
    # longest first: 1 (9), 3 (9), 0 (5), 4 (4), 2 (3), 5 (2). Budget 18: 1, 3 fill 2 x 9 = 18; 0 opens the
    # next, where 0, 4, 2 take 3 x 5 = 15; adding 5 would make 4 x 5 = 20 > 18, so 5 opens a third
    assert plan_micro_batches(lengths, max_tokens=18, max_seqs=None) == [[1, 3], [0, 2, 4], [5]]
    assert plan_micro_batches(lengths, max_tokens=20, max_seqs=None) == [[1, 3], [0, 2, 4, 5]]
    assert plan_micro_batches(lengths, max_tokens=100, max_seqs=None) == [[0, 1, 2, 3, 4, 5]]
    assert plan_micro_batches(lengths, max_tokens=100, max_seqs=4) == [[0, 1, 3, 4], [2, 5]]


def test_plan_micro_batches_by_rows_oversized_and_degenerate():
    assert plan_micro_batches([5, 9, 3, 9, 4, 2], max_tokens=None, max_seqs=2) == [[1, 3], [0, 4], [2, 5]]
    assert plan_micro_batches([30, 4, 4], max_tokens=10, max_seqs=None) == [[0], [1, 2]]  # 30 > 10 alone
    assert plan_micro_batches([4, 4, 4], max_tokens=None, max_seqs=None) == [[0, 1, 2]]
    assert plan_micro_batches([], max_tokens=8, max_seqs=None) == []
    assert plan_micro_batches([3, 3, 3], max_tokens=3, max_seqs=None) == [[0], [1], [2]]
    with pytest.raises(ValueError, match="max_tokens"):
        plan_micro_batches([3], max_tokens=0, max_seqs=None)
