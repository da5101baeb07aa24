"""HFSampler's decode loop against transformers `generate`: the same tokens and log-probs, bit for bit."""

from __future__ import annotations

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from rlx.sampling.base import GenRequest
from rlx.sampling.hf import MIN_ROWS, HFSampler, PerRequestSampling, cpu_threads, left_pad


class _AsProcessor(LogitsProcessor):
    """`PerRequestSampling` as a transformers logits processor: one finite logit per row, so `generate` in
    greedy mode picks exactly the sampled token (the sampler's former path)."""

    def __init__(self, sampling: PerRequestSampling, prompt_width: int):
        self.sampling, self.prompt_width = sampling, prompt_width

    def __call__(self, input_ids, scores):
        rows = torch.arange(scores.shape[0])
        chosen = self.sampling.choose(scores, rows, input_ids.shape[1] - self.prompt_width)  # [B]
        return torch.full_like(scores, float("-inf")).scatter_(1, chosen[:, None], 0.0)


def generate_reference(model, requests: list[GenRequest], eos: int, pad: int) -> list[tuple[list[int], list[float]]]:
    """What `generate` gives for `requests`, trimmed at EOS and at each request's own max_new_tokens."""
    ids, mask = left_pad([list(r.prompt_ids) for r in requests], pad)
    sampling = PerRequestSampling([r.temperature for r in requests], [r.seed for r in requests])
    processors = LogitsProcessorList([_AsProcessor(sampling, ids.shape[1])])
    with cpu_threads(1):  # as the sampler decodes (a GEMM's bits may depend on the thread count)
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max(r.max_new_tokens for r in requests),
                             do_sample=False, logits_processor=processors,
                             eos_token_id=eos, pad_token_id=pad, return_dict_in_generate=True, output_logits=True)
    new = out.sequences[:, ids.shape[1]:]  # [B, N]
    logp = torch.stack(out.logits, dim=1).float().log_softmax(-1).gather(-1, new[..., None]).squeeze(-1)  # [B, N]
    result = []
    for i, r in enumerate(requests):
        tokens = new[i].tolist()[: r.max_new_tokens]
        length = tokens.index(eos) + 1 if eos in tokens else len(tokens)
        result.append((tokens[:length], logp[i, :length].tolist()))
    return result


def requests_of(tokenizer, count: int, seed: int) -> list[GenRequest]:
    """Prompts of 2-12 tokens, budgets of 1-40 tokens, a third greedy: rows finish at many different steps."""
    g = torch.Generator().manual_seed(seed)
    vocab = [i for i in range(len(tokenizer)) if i not in (tokenizer.eos_token_id, tokenizer.pad_token_id)]
    out = []
    for i in range(count):
        length = int(torch.randint(2, 13, (1,), generator=g))
        prompt = tuple(vocab[int(j)] for j in torch.randint(len(vocab), (length,), generator=g))
        budget = int(torch.randint(1, 41, (1,), generator=g))
        out.append(GenRequest(prompt, 0.0 if i % 3 == 0 else 1.0, budget, 1000 + i))
    return out


def test_decode_loop_equals_generate_bit_for_bit(hf_model, tokenizer):
    requests = requests_of(tokenizer, 96, seed=0)  # > MIN_ROWS: the batch shrinks many times
    assert len(requests) > 4 * MIN_ROWS
    expected = generate_reference(hf_model, requests, tokenizer.eos_token_id, tokenizer.pad_token_id)
    got = HFSampler(hf_model, tokenizer.eos_token_id, tokenizer.pad_token_id).generate(requests)
    lengths = {len(g.token_ids) for g in got}
    assert len(lengths) > 10  # rows really finished at different steps
    for (tokens, logprobs), gen, req in zip(expected, got, requests):
        assert gen.token_ids == tokens
        assert gen.logprobs == logprobs  # exact float equality
        assert gen.finished == (tokenizer.eos_token_id in tokens)
        assert len(tokens) <= req.max_new_tokens


def test_unpadded_prompts_and_a_small_batch_equal_generate(hf_model, tokenizer):
    """Equal-length prompts (transformers then passes no attention mask) and a batch below MIN_ROWS."""
    base = requests_of(tokenizer, 5, seed=1)
    requests = [GenRequest(base[0].prompt_ids, r.temperature, r.max_new_tokens, r.seed) for r in base]
    expected = generate_reference(hf_model, requests, tokenizer.eos_token_id, tokenizer.pad_token_id)
    got = HFSampler(hf_model, tokenizer.eos_token_id, tokenizer.pad_token_id).generate(requests)
    assert [(g.token_ids, g.logprobs) for g in got] == expected


def test_generation_does_not_depend_on_the_batch(hf_model, tokenizer):
    """A request samples the same tokens alone, in a small batch and in a large one (its own seed stream)."""
    requests = requests_of(tokenizer, 40, seed=2)
    sampler = HFSampler(hf_model, tokenizer.eos_token_id, tokenizer.pad_token_id)
    together = sampler.generate(requests)
    alone = [sampler.generate([r])[0] for r in requests[:6]]
    assert [g.token_ids for g in alone] == [g.token_ids for g in together[:6]]
    assert hf_model.training is False  # the fixture's eval mode is restored
