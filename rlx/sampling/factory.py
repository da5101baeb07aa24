"""Build the configured sampler. Backends are imported lazily: CPU tests never import vLLM needlessly."""

from __future__ import annotations


def build_sampler(cfg, policy, tokenizer, model_path: str, dtype: str):
    if cfg.name == "hf":
        from rlx.sampling.hf import HFSampler

        return HFSampler(policy, tokenizer.eos_token_id, tokenizer.pad_token_id, cfg.max_batch_size)
    raise ValueError(f"sampler.name: unknown sampler {cfg.name!r}")
