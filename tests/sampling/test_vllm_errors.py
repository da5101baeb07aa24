"""The vLLM backend's error messages and config plumbing: no engine needed (fast)."""

from __future__ import annotations

import dataclasses
import sys

import pytest


@pytest.mark.parametrize("gpu", [False, True])
def test_kv_cache_error_names_the_knob(monkeypatch, gpu):
    from rlx.sampling import vllm as vllm_module

    monkeypatch.setattr(vllm_module, "on_gpu", lambda: gpu)
    sampler = object.__new__(vllm_module.VLLMSampler)
    sampler.kv_cache_gib, sampler.gpu_memory_utilization = 0.25, 0.5
    vllm_error = ValueError("To serve at least one request ... larger than the available KV cache memory")
    message = str(sampler._explain_engine_error(vllm_error))
    assert ("sampler.gpu_memory_utilization=" if gpu else "sampler.kv_cache_gib=") in message
    assert "sampler.max_model_len" in message


def test_missing_vllm_says_make_install(monkeypatch):
    from rlx.sampling import vllm as vllm_module

    monkeypatch.setitem(sys.modules, "vllm", None)  # makes `import vllm` raise ImportError
    with pytest.raises(ImportError, match="make install"):
        vllm_module.import_vllm()


def test_build_sampler_hands_over_the_whole_config_with_a_null_dtype_resolved(monkeypatch):
    from types import SimpleNamespace

    from rlx.sampling import vllm as vllm_module
    from rlx.sampling.config import VLLMSamplerConfig
    from rlx.sampling.factory import build_sampler

    seen = []
    monkeypatch.setattr(vllm_module.VLLMSampler, "__init__",
                        lambda self, path, eos, cfg, seed=0: seen.append((path, eos, cfg, seed)))
    tokenizer = SimpleNamespace(eos_token_id=1, pad_token_id=0)
    cfg = VLLMSamplerConfig(kv_cache_gib=2.0, enable_prefix_caching=False, max_model_len=512, block_size=32,
                            canary_every=2)
    build_sampler(cfg, None, tokenizer, "/models/x", "bfloat16", seed=7)
    build_sampler(VLLMSamplerConfig(dtype="float32"), None, tokenizer, "/models/x", "bfloat16")
    assert seen == [("/models/x", 1, dataclasses.replace(cfg, dtype="bfloat16"), 7),  # null: model.dtype
                    ("/models/x", 1, VLLMSamplerConfig(dtype="float32"), 0)]  # an explicit sampler.dtype wins


def test_unresolved_dtype_fails_before_any_engine_starts(monkeypatch):
    from rlx.sampling import vllm as vllm_module
    from rlx.sampling.config import VLLMSamplerConfig

    monkeypatch.setitem(sys.modules, "vllm", None)  # an engine start would raise ImportError instead
    with pytest.raises(ValueError, match="sampler.dtype null means model.dtype"):
        vllm_module.VLLMSampler("/models/x", 1, VLLMSamplerConfig())


def test_kv_cache_larger_than_free_memory_says_lower_it(monkeypatch):
    from rlx.sampling import vllm as vllm_module

    monkeypatch.setattr(vllm_module, "on_gpu", lambda: False)
    sampler = object.__new__(vllm_module.VLLMSampler)
    sampler.kv_cache_gib, sampler.gpu_memory_utilization = 64, 0.5
    vllm_error = ValueError("Available memory on node 0 (...) on kv cache allocation is less than requested "
                            "memory for kv (64.0 GiB). Decrease --kv-cache-memory-bytes, VLLM_CPU_KVCACHE_SPACE")
    assert "lower sampler.kv_cache_gib" in str(sampler._explain_engine_error(vllm_error))
