"""The vLLM backend's error messages and config plumbing: no engine needed (fast)."""

from __future__ import annotations

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


def test_from_config_passes_every_key_and_falls_back_to_the_model_dtype(monkeypatch):
    from types import SimpleNamespace

    from rlx.sampling import vllm as vllm_module

    seen = {}
    monkeypatch.setattr(vllm_module.VLLMSampler, "__init__",
                        lambda self, path, eos, **options: seen.update(path=path, eos=eos, **options))
    cfg = SimpleNamespace(name="vllm", dtype=None, kv_cache_gib=2.0, gpu_memory_utilization=0.4,
                          enable_prefix_caching=False, max_model_len=512, block_size=32, seed=7, enforce_eager=True,
                          num_threads=1, canary_tolerance=None, canary_every=2)
    vllm_module.VLLMSampler.from_config(cfg, "/models/x", 1, "bfloat16")
    assert seen["dtype"] == "bfloat16" and seen["block_size"] == 32 and seen["canary_every"] == 2
    assert set(seen) == set(vllm_module.CONFIG_KEYS) | {"path", "eos"}


def test_kv_cache_larger_than_free_memory_says_lower_it(monkeypatch):
    from rlx.sampling import vllm as vllm_module

    monkeypatch.setattr(vllm_module, "on_gpu", lambda: False)
    sampler = object.__new__(vllm_module.VLLMSampler)
    sampler.kv_cache_gib, sampler.gpu_memory_utilization = 64, 0.5
    vllm_error = ValueError("Available memory on node 0 (...) on kv cache allocation is less than requested "
                            "memory for kv (64.0 GiB). Decrease --kv-cache-memory-bytes, VLLM_CPU_KVCACHE_SPACE")
    assert "lower sampler.kv_cache_gib" in str(sampler._explain_engine_error(vllm_error))
