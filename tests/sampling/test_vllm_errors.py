"""Error messages of the vLLM backend that need no engine (fast)."""

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
