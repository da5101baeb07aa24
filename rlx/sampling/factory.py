"""Build the configured sampler. Backends are imported lazily: CPU tests never import vLLM needlessly."""

from __future__ import annotations

import dataclasses


def build_sampler(cfg, policy, tokenizer, model_path: str, dtype: str, seed: int = 0):
    if cfg.name == "hf":
        from rlx.sampling.hf import HFSampler

        return HFSampler(policy, tokenizer.eos_token_id, tokenizer.pad_token_id, cfg.max_batch_size, cfg.num_threads,
                         dtype=dtype)
    if cfg.name == "vllm":
        from rlx.sampling.vllm import VLLMSampler

        resolved = dataclasses.replace(cfg, dtype=cfg.dtype or dtype)  # sampler.dtype null = model.dtype
        sampler = VLLMSampler(model_path, tokenizer.eos_token_id, resolved, seed=seed)
        if policy is not None:  # both sides hold model_path's weights here, whatever comes later (resume)
            sampler.calibrate_canary(policy)
        return sampler
    raise ValueError(f"sampler.name: unknown sampler {cfg.name!r}")
