"""Sampler settings (`sampler.*`), one dataclass per option of the `sampler` group: typed here, beside the
backends, so `rlx.sampling` never imports the config layer above it (as `rlx.models.config`). These dataclasses
are the one place in code that holds the knobs' defaults; conf/sampler/*.yaml states the same values
(tests/test_config_defaults.py keeps the two equal). Errors name the full key (`sampler.kv_cache_gib`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from rlx.data.configs import _require


@dataclass(frozen=True)
class HFSamplerConfig:
    name: Literal["hf"] = "hf"
    max_batch_size: int = 1024
    num_threads: int = 1  # CPU: torch threads while generating; 0 = keep the process's

    def validate(self) -> None:
        _require(self.max_batch_size >= 1, "sampler.max_batch_size", "must be >= 1", self.max_batch_size)
        _require(self.num_threads >= 0, "sampler.num_threads", "must be >= 0", self.num_threads)


@dataclass(frozen=True)
class VLLMSamplerConfig:
    name: Literal["vllm"] = "vllm"
    dtype: Literal["float32", "bfloat16", "float16"] | None = None  # null = model.dtype
    kv_cache_gib: float = 1.0  # CPU: KV-cache size (VLLM_CPU_KVCACHE_SPACE)
    gpu_memory_utilization: float = 0.5  # GPU: share of memory for weights + KV cache (colocated trainer)
    enable_prefix_caching: bool = True  # branch rollouts share their prefixes' KV blocks
    max_model_len: int | None = None  # null = the model's max_position_embeddings
    block_size: int | None = None  # KV block size in tokens (prefix caching reuses whole blocks)
    enforce_eager: bool = True
    num_threads: int = 1  # CPU: torch threads inside the engine (1 avoids OpenMP spin-waits)
    canary_tolerance: float | None = None  # max |logp_vllm - logp_trainer| after a sync; null = calibrated
    canary_every: int | None = None  # check the 1st and every N-th weight sync (0 = never; null = 1 GPU, 10 CPU)

    def validate(self) -> None:
        _require(self.kv_cache_gib > 0, "sampler.kv_cache_gib", "must be > 0", self.kv_cache_gib)
        _require(0 < self.gpu_memory_utilization <= 1, "sampler.gpu_memory_utilization", "must be in (0, 1]",
                 self.gpu_memory_utilization)
        _require(self.canary_every is None or self.canary_every >= 0, "sampler.canary_every", "must be >= 0 or null",
                 self.canary_every)
        _require(self.canary_tolerance is None or self.canary_tolerance > 0, "sampler.canary_tolerance",
                 "must be > 0", self.canary_tolerance)


SAMPLERS: dict[str, type] = {"hf": HFSamplerConfig, "vllm": VLLMSamplerConfig}
